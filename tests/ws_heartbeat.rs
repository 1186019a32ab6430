//! Liveness over real sockets: pong timeout, a live client staying, idle timeout.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::time::Instant;
use wshub::ws::{Config, Heartbeat};
use wshub::{CloseCode, HubConfig, Message};

#[tokio::test]
async fn client_that_stops_answering_pings_is_dropped_within_the_pong_timeout() {
    let pong_timeout = Duration::from_millis(400);
    let config =
        Config::default().heartbeat(Heartbeat::ping(Duration::from_millis(100), pong_timeout));
    let (server, addr) = start(HubConfig::default(), config, ignore).await;
    let started = Instant::now();
    // Never polled: tungstenite answers pings only while reading, so this peer looks dead.
    let _silent = connect(addr, "/").await;
    wait_for(|| server.hub().client_count() == 1).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        server.hub().client_count(),
        1,
        "dropped before the pong timeout"
    );
    wait_for(|| server.hub().client_count() == 0).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= pong_timeout, "dropped after {elapsed:?}");
    assert!(
        elapsed < pong_timeout + Duration::from_millis(1500),
        "dropped only after {elapsed:?}"
    );
}

#[tokio::test]
async fn client_that_answers_pings_stays_connected() {
    let config = Config::default().heartbeat(Heartbeat::ping(
        Duration::from_millis(100),
        Duration::from_millis(300),
    ));
    let (server, addr) = start(HubConfig::default(), config, ignore).await;
    let mut ws = connect(addr, "/").await;
    wait_for(|| server.hub().client_count() == 1).await;
    // Reading answers each ping with a pong (tungstenite does it while reading).
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        let until = Instant::now() + Duration::from_millis(1500);
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, ws.next()).await {
            match msg {
                Message::Ping(_) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        (pings, ws)
    });
    let (pings, _ws) = reader.await.unwrap();
    assert!(
        pings >= 5,
        "only {pings} pings in 1.5 s at a 100 ms interval"
    );
    assert_eq!(server.hub().client_count(), 1, "a live client was dropped");
}

#[tokio::test]
async fn idle_timeout_closes_an_idle_client_with_1000_and_activity_keeps_it() {
    let idle = Duration::from_millis(300);
    let config = Config::default().heartbeat(Heartbeat::idle_timeout(idle));
    let (server, addr) = start(HubConfig::default(), config, ignore).await;

    // Active: a message every 100 ms keeps the deadline moving.
    let mut active = connect(addr, "/").await;
    // Idle: sends nothing.
    let mut idle_ws = connect(addr, "/").await;
    let started = Instant::now();
    wait_for(|| server.hub().client_count() == 2).await;

    let keep_alive = tokio::spawn(async move {
        for _ in 0..10 {
            send_text(&mut active, "still here").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        active
    });
    assert_eq!(close_code(&mut idle_ws).await, Some(CloseCode::Normal));
    assert!(started.elapsed() >= idle);
    let _active = keep_alive.await.unwrap();
    assert_eq!(
        server.hub().client_count(),
        1,
        "the active client was closed"
    );
}
