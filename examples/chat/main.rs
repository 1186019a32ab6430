//! A browser chat room: every message reaches every participant.
//!
//! ```sh
//! cargo run --example chat                       # http://127.0.0.1:8080/
//! cargo run --example chat -- --addr 0.0.0.0:9000 --max-connections 15000
//! # two processes, one conversation, through Redis:
//! cargo run --example chat --features redis -- --addr 127.0.0.1:8080 --redis redis://127.0.0.1:6379
//! cargo run --example chat --features redis -- --addr 127.0.0.1:8081 --redis redis://127.0.0.1:6379
//! # Prometheus metrics at http://127.0.0.1:9090/metrics:
//! cargo run --example chat --features metrics -- --metrics 127.0.0.1:9090
//! ```
//! Open the printed URL in two browser windows and talk. Any WebSocket client can join at
//! `ws://127.0.0.1:8080/ws`: every text message it sends is relayed verbatim to everyone.

#[path = "app.rs"]
mod app;
#[path = "../common/mod.rs"]
mod common;

use std::io::Write;

use wshub::ws::Heartbeat;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let addr: String = common::flag("--addr", "127.0.0.1:8080".to_string());
    let listener = wshub::ws::listen(&addr).await?;
    let local = listener.local_addr()?;
    let shown = common::shown(local, "127.0.0.1");
    println!("chat room: open http://{shown}/ in a browser (WebSocket at ws://{shown}/ws)");
    std::io::stdout().flush()?;
    // After the line above (scripts read the chat's address from the first URL printed),
    // before serving, so every connection is counted.
    let metrics: String = common::flag("--metrics", String::new());
    if !metrics.is_empty() {
        serve_metrics(&metrics).await?;
    }

    let max_connections: usize = common::flag("--max-connections", 10_000);
    if max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    let redis: String = common::flag("--redis", String::new());
    let ws = if redis.is_empty() {
        app::ws_server(Heartbeat::default(), max_connections)
    } else {
        with_redis(&redis, max_connections)?
    };
    let serving = tokio::spawn(app::serve(listener, ws.clone()));
    common::serve_until_signal(&ws).await;
    serving.abort();
    Ok(())
}

/// The chat on a Redis backplane: rooms shared with every chat process on the same Redis.
#[cfg(feature = "redis")]
fn with_redis(
    url: &str,
    max_connections: usize,
) -> Result<wshub::ws::Server, Box<dyn std::error::Error>> {
    use wshub::backplane::{Node, RedisBackplane, RedisConfig};
    let hub = app::chat_hub();
    let node = Node::new(hub.clone(), RedisBackplane::new(RedisConfig::new(url))?);
    println!("sharing rooms through {url}");
    Ok(app::ws_server_on(
        hub,
        Some(node),
        Heartbeat::default(),
        max_connections,
    ))
}

#[cfg(not(feature = "redis"))]
fn with_redis(_: &str, _: usize) -> Result<wshub::ws::Server, Box<dyn std::error::Error>> {
    Err(
        "--redis needs the redis feature: cargo run --example chat --features redis -- --redis URL"
            .into(),
    )
}

/// Installs the Prometheus recorder and serves `/metrics` on `addr`.
#[cfg(feature = "metrics")]
async fn serve_metrics(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let local = app::serve_metrics(addr).await?;
    println!("metrics: http://{local}/metrics");
    std::io::stdout().flush()?;
    Ok(())
}

#[cfg(not(feature = "metrics"))]
async fn serve_metrics(_: &str) -> Result<(), Box<dyn std::error::Error>> {
    Err(
        "--metrics needs the metrics feature: cargo run --example chat --features metrics -- --metrics ADDR"
            .into(),
    )
}
