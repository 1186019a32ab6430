//! The browser chat room of `examples/chat`, served by axum: the same page, the same relay,
//! mounted on an axum `Router` with wshub's `WsUpgrade` extractor.
//!
//! ```sh
//! cargo run --example axum_chat --features axum        # http://127.0.0.1:8080/
//! cargo run --example axum_chat --features axum -- --addr 0.0.0.0:9000
//! ```
//! Open the printed URL in two browser windows and talk; `?room=NAME` picks a room. Ctrl-C
//! (or SIGTERM) closes every connection with 1001.

#[path = "app.rs"]
mod app;
#[path = "../common/mod.rs"]
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use wshub::ws::Heartbeat;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let addr: String = common::flag("--addr", "127.0.0.1:8080".to_string());
    let max_connections: usize = common::flag("--max-connections", 10_000);
    if max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    let listener = wshub::ws::listen(&addr).await?;
    let local = listener.local_addr()?;
    let shown = common::shown(local, "127.0.0.1");
    println!("chat room (axum): open http://{shown}/ in a browser (WebSocket at ws://{shown}/ws)");
    std::io::stdout().flush()?;

    let ws = app::chat::ws_server(Heartbeat::default(), max_connections);
    // With connect info, each connection's `ConnInfo::peer` is its address.
    let service = app::router(ws.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stopping = ws.clone();
    let serving = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async move { stopping.stopping().await })
            .await
    });
    common::serve_until_signal(&ws).await;
    // axum stopped accepting when the shutdown began; its last HTTP requests get a moment.
    if let Ok(served) = tokio::time::timeout(Duration::from_secs(1), serving).await {
        served??;
    }
    Ok(())
}
