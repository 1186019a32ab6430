//! The comparison for `examples/loadgen.rs` (issue 4): a broadcast chat relay written the way
//! it is usually written with tokio-tungstenite today, without wshub.
//!
//! ```sh
//! cargo run --release --example baseline_server -- --addr 127.0.0.1:8081
//! ```
//!
//! - `accept_async` with tungstenite's default `WebSocketConfig`, on any path;
//! - one `tokio::sync::broadcast` channel (capacity 1024) for the room;
//! - per connection, `split()` into sink and stream: a reader loop that sends every text
//!   message into the channel, and a writer task that does `sink.send(msg).await` (one write
//!   and one flush) per message it receives from the channel;
//! - a receiver that falls more than 1024 messages behind gets `Lagged` and skips what it
//!   missed, as typical code does (`continue`); the skipped messages are counted and printed;
//! - no pings, no timeouts, no connection or size limits (beyond tungstenite's defaults).
//!
//! `TCP_NODELAY` is set as wshub does: with one flush per message, Nagle's algorithm would
//! otherwise hold small frames back and the comparison would measure Nagle, not the design.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let addr: String = common::flag("--addr", "127.0.0.1:8081".to_string());
    let listener = TcpListener::bind(&addr).await?;
    println!("baseline listening on ws://{}/ws", listener.local_addr()?);
    std::io::stdout().flush()?;

    let (tx, _) = broadcast::channel::<Message>(1024);
    let skipped = Arc::new(AtomicU64::new(0));
    tokio::spawn(report_lag(skipped.clone()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // e.g. out of file descriptors: wait a little rather than exit.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(handle(stream, tx.clone(), skipped.clone(), peer));
    }
}

async fn handle(
    stream: TcpStream,
    tx: broadcast::Sender<Message>,
    skipped: Arc<AtomicU64>,
    peer: std::net::SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let ws = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "handshake failed");
            return;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let mut rx = tx.subscribe();

    let writer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    skipped.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                Err(RecvError::Closed) => break,
            }
        }
    });

    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_text() {
            let _ = tx.send(msg);
        }
    }
    writer.abort();
}

/// Prints the total of messages skipped by lagging receivers whenever it grows.
async fn report_lag(skipped: Arc<AtomicU64>) {
    let mut shown = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = skipped.load(Ordering::Relaxed);
        if now != shown {
            eprintln!("baseline: lagging receivers skipped {now} messages in total");
            shown = now;
        }
    }
}
