//! The sum service example, end to end over a real socket.

mod common;
#[path = "../examples/sum/client.rs"]
mod sum_client;
#[path = "../examples/sum/service.rs"]
mod sum_service;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio::net::TcpListener;
use wshub::{CloseCode, Message};

async fn start_sum(idle: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = sum_service::server(idle);
    tokio::spawn(async move { server.serve(listener).await });
    addr
}

fn options(url: String) -> sum_client::Options {
    sum_client::Options {
        url,
        cookie_name: "zcy".into(),
        count: 10,
        interval: Duration::from_millis(10),
    }
}

#[tokio::test]
async fn the_ten_request_exchange_of_the_seed_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, names) = sum_service::server_recording(Duration::from_secs(20));
    tokio::spawn(async move { server.serve(listener).await });
    let mut out = Vec::new();
    let sums = sum_client::run(
        &options(format!("ws://localhost:{}/add", addr.port())),
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(sums, vec![11; 10]);
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("connected: HTTP 101"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("sec-websocket-accept:"),
        "{out}"
    );
    assert_eq!(out.matches("Sum: 11").count(), 10);
    // The handshake hook saw the client's `Cookie: name=zcy`.
    assert_eq!(*names.lock().unwrap(), vec!["zcy".to_string()]);
}

#[tokio::test]
async fn bad_input_gets_an_error_reply_and_the_connection_stays_open() {
    let addr = start_sum(Duration::from_secs(20)).await;
    let mut ws = connect(addr, "/add").await;
    let bad = [
        ("not json", "expected"),
        (r#"{"A":1}"#, "missing field `B`"),
        (r#"{"A":1.5,"B":2}"#, "expected"),
        (r#"{"A":"7","B":4}"#, "expected"),
        (r#"{"A":9223372036854775807,"B":1}"#, "overflows"),
        (r#"{"A":99999999999999999999,"B":1}"#, "expected"),
        (r#"{"A":1,"B":2,"C":3}"#, "unknown field"),
    ];
    for (request, expected) in bad {
        send_text(&mut ws, request).await;
        let reply: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        let error = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{request}: {reply}"));
        assert!(error.contains(expected), "{request}: {error}");
        // Still open: a good request right after gets its sum.
        send_text(&mut ws, r#"{"A":-3,"B":5}"#).await;
        assert_eq!(next_text(&mut ws).await, r#"{"Sum":2}"#);
    }
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert!(next_text(&mut ws)
        .await
        .contains("binary messages are not supported"));
    send_text(&mut ws, r#"{"A":7,"B":4}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"{"Sum":11}"#);
}

#[tokio::test]
async fn wrong_path_is_404_and_the_client_reports_it() {
    let addr = start_sum(Duration::from_secs(20)).await;
    let err = sum_client::run(
        &options(format!("ws://127.0.0.1:{}/sub", addr.port())),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(err.contains("the requested path does not exist"), "{err}");
}

#[tokio::test]
async fn idle_connection_is_closed_after_the_deadline() {
    let idle = Duration::from_millis(300);
    let addr = start_sum(idle).await;
    let mut ws = connect(addr, "/add").await;
    let started = tokio::time::Instant::now();
    send_text(&mut ws, r#"{"A":1,"B":1}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"{"Sum":2}"#);
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Normal));
    assert!(started.elapsed() >= idle);
}

#[tokio::test]
async fn oversize_request_closes_with_1009() {
    let addr = start_sum(Duration::from_secs(20)).await;
    let mut ws = connect(addr, "/add").await;
    let huge = format!(
        r#"{{"A":1,"B":2,"pad":"{}"}}"#,
        "x".repeat(sum_service::MAX_REQUEST_BYTES)
    );
    send_text(&mut ws, &huge).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
}
