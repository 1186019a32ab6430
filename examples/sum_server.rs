//! The seed's sum service over WebSocket.
//!
//! ```sh
//! cargo run --example sum_server                      # 0.0.0.0:5657, path /add
//! cargo run --example sum_server -- --addr 127.0.0.1:9000 --idle-timeout 60
//! ```
//! Send `{"A":7,"B":4}` as a text message to `ws://localhost:5657/add`; the reply is
//! `{"Sum":11}`. Bad input gets `{"error":"..."}` and the connection stays open; a connection
//! silent for the idle timeout (default 20 s) is closed.

#[path = "common/mod.rs"]
mod common;
#[path = "sum/service.rs"]
mod service;

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let addr: String = common::flag("--addr", "0.0.0.0:5657".to_string());
    let idle: u64 = common::flag("--idle-timeout", service::DEFAULT_IDLE_TIMEOUT.as_secs());
    if idle == 0 {
        return Err("--idle-timeout must be at least 1 second".into());
    }
    let listener = wshub::ws::listen(&addr).await?;
    let server = service::server(Duration::from_secs(idle));
    println!(
        "sum server listening on ws://{}/add",
        listener.local_addr()?
    );

    let serving = server.clone();
    tokio::select! {
        result = serving.serve(listener) => result?,
        _ = tokio::signal::ctrl_c() => {
            println!("shutting down");
            server.shutdown(Duration::from_secs(5)).await;
        }
    }
    Ok(())
}
