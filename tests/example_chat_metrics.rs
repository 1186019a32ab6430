//! The chat example's `--metrics`: real clients drive real traffic through the chat, and the
//! Prometheus text scraped over HTTP follows it (feature `metrics`).
//!
//! One test in its own binary: the metrics recorder is process-wide.
#![cfg(feature = "metrics")]

#[path = "../examples/chat/app.rs"]
mod chat;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wshub::metrics::MetricsConfig;
use wshub::ws::Heartbeat;

/// Scrapes `http://addr/metrics`; returns the body.
async fn scrape(addr: SocketAddr) -> String {
    let out = common::http_get(addr, "/metrics").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of the sample `series` (name and labels exactly as rendered), 0 when absent.
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().unwrap())
        .next()
        .unwrap_or(0.0)
}

/// Scrapes until `cond` holds for the body; panics with the last body after `PATIENCE`.
async fn scrape_until(addr: SocketAddr, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let body = scrape(addr).await;
        if cond(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not seen in time; last scrape:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_scraped_numbers_follow_real_traffic() {
    // As `--metrics` does in the example, with a short interval so the test is quick.
    MetricsConfig::default()
        .interval(Duration::from_millis(50))
        .install()
        .unwrap();
    let metrics = chat::serve_metrics("127.0.0.1:0").await.unwrap();
    let ws = chat::ws_server(Heartbeat::default(), 100);
    let addr = chat::serve_on_free_port(ws.clone()).await.unwrap();

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(addr, "/ws").await);
    }
    wait_for(|| ws.hub().client_count() == 3).await;
    let body = scrape_until(metrics, "3 connections open", |b| {
        value(b, "wshub_connections_open") == 3.0
    })
    .await;
    assert_eq!(value(&body, "wshub_connects_total"), 3.0);

    // 20 messages from the first client reach all three.
    const MESSAGES: usize = 20;
    for i in 0..MESSAGES {
        send_text(&mut clients[0], &format!("message {i}")).await;
    }
    let mut received = 0;
    for client in &mut clients {
        for i in 0..MESSAGES {
            assert_eq!(next_text(client).await, format!("message {i}"));
            received += 1;
        }
    }
    // Every delivered frame went over a socket: at least the payloads and a 2-byte header.
    let payload: usize = (0..MESSAGES)
        .map(|i| format!("message {i}").len() + 2)
        .sum();
    let body = scrape_until(metrics, "the deliveries and their bytes", |b| {
        value(b, "wshub_messages_delivered_total") >= received as f64
            && value(b, "wshub_written_bytes_total") >= (3 * payload) as f64
    })
    .await;
    assert!(value(&body, "wshub_messages_sent_total") >= received as f64);
    assert_eq!(value(&body, "wshub_messages_dropped_total"), 0.0);
    assert_eq!(value(&body, "wshub_evictions_total"), 0.0);
    // Each client's depth was sampled.
    assert!(value(&body, "wshub_mailbox_depth_count") >= 3.0, "{body}");

    // A client closes with 1000; another sends more than the chat's 8 KiB and is closed by
    // the server with 1009.
    let mut leaving = clients.pop().unwrap();
    leaving
        .send(tokio_tungstenite::tungstenite::Message::Close(Some(
            CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    assert_eq!(close_code(&mut leaving).await, Some(CloseCode::Normal));
    let mut big = clients.pop().unwrap();
    send_text(&mut big, &"x".repeat(chat::MAX_MESSAGE_BYTES + 1)).await;
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Size));

    let body = scrape_until(metrics, "both disconnects", |b| {
        value(b, "wshub_connections_open") == 1.0
            && value(b, "wshub_disconnects_total{code=\"1009\"}") == 1.0
    })
    .await;
    assert_eq!(value(&body, "wshub_disconnects_total{code=\"1000\"}"), 1.0);
    assert!(body.contains("# TYPE wshub_messages_delivered_total counter"));
    assert!(body.contains("# TYPE wshub_connections_open gauge"));
    assert!(body.contains("# TYPE wshub_mailbox_depth histogram"));
    // The last one goes without a close frame: counted as 1006.
    drop(clients);
    scrape_until(metrics, "the dropped connection", |b| {
        value(b, "wshub_connections_open") == 0.0
            && value(b, "wshub_disconnects_total{code=\"1006\"}") == 1.0
    })
    .await;
    // A plain GET on the WebSocket path is refused with 400, and counted (at once).
    let plain = common::http_get(addr, "/ws").await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    let body = scrape(metrics).await;
    assert_eq!(
        value(&body, "wshub_upgrades_refused_total{status=\"400\"}"),
        1.0,
        "{body}"
    );

    // Two more chat servers sharing rooms through a backplane: a message in a shared room is
    // published by one node and received by the other.
    let bus = wshub::backplane::InMemoryBackplane::new();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let hub = chat::chat_hub();
        let node = wshub::backplane::Node::new(hub.clone(), bus.clone());
        let ws = chat::ws_server_on(hub, Some(node), Heartbeat::default(), 100);
        let addr = chat::serve_on_free_port(ws.clone()).await.unwrap();
        nodes.push((ws, addr));
    }
    let mut on1 = connect(nodes[0].1, "/ws?room=team").await;
    let mut on2 = connect(nodes[1].1, "/ws?room=team").await;
    wait_for(|| nodes.iter().all(|(ws, _)| ws.hub().room_count("team") == 1)).await;
    send_text(&mut on1, "across nodes").await;
    assert_eq!(next_text(&mut on1).await, "across nodes");
    assert_eq!(next_text(&mut on2).await, "across nodes");
    let body = scrape_until(metrics, "the backplane traffic", |b| {
        value(b, "wshub_backplane_published_total") == 1.0
            && value(b, "wshub_backplane_received_total") == 1.0
    })
    .await;
    assert_eq!(value(&body, "wshub_backplane_publish_errors_total"), 0.0);
    assert_eq!(value(&body, "wshub_connections_open"), 2.0);
}
