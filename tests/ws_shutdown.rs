//! Graceful shutdown under a stream of broadcasts.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use wshub::ws::Config;
use wshub::{CloseCode, HubConfig, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_everything_accepted_then_1001_to_all() {
    const CLIENTS: usize = 20;
    let hub_config = HubConfig::default().mailbox_capacity(100_000);
    let (server, addr) = start(hub_config, Config::default(), ignore).await;
    let clients = connect_many(&server, addr, CLIENTS).await;

    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    match tokio::time::timeout(PATIENCE, ws.next())
                        .await
                        .expect("stalled")
                    {
                        Some(Ok(Message::Text(t))) => got.push(t.parse::<usize>().unwrap()),
                        Some(Ok(Message::Close(frame))) => return (got, frame.map(|f| f.code)),
                        Some(Ok(_)) => {}
                        other => panic!("stream ended without a close frame: {other:?}"),
                    }
                }
            })
        })
        .collect();

    let accepted = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let hub = server.hub().clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            for i in 0.. {
                match hub.broadcast(Message::text(i.to_string())) {
                    0 => break,
                    n => {
                        assert_eq!(n, CLIENTS);
                        accepted.store(i + 1, Ordering::SeqCst);
                    }
                }
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = server.shutdown(Duration::from_secs(5)).await;
    publisher.await.unwrap();
    assert_eq!(report.remaining, 0);
    assert_eq!(report.discarded, 0);

    let accepted = accepted.load(Ordering::SeqCst);
    assert!(accepted > 0, "the publisher never got going");
    for r in readers {
        let (got, code) = r.await.unwrap();
        assert_eq!(code, Some(CloseCode::Away));
        assert_eq!(
            got.len(),
            accepted,
            "a client missed messages accepted before shutdown"
        );
        assert!(got.iter().enumerate().all(|(i, &n)| i == n), "out of order");
    }
    let stats = server.hub().stats();
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.connected, 0);

    // After shutdown: no new connections.
    assert!(tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .is_err());
}
