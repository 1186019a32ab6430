//! The chat example end to end: the page over HTTP, the relay over WebSocket (via hyper).

#[path = "../examples/chat/app.rs"]
mod chat;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use wshub::ws::{Heartbeat, Server};
use wshub::CloseCode;

async fn start_chat() -> (Server, SocketAddr) {
    let ws = chat::ws_server(Heartbeat::default(), 100);
    let addr = chat::serve_on_free_port(ws.clone()).await.unwrap();
    (ws, addr)
}

#[tokio::test]
async fn the_page_is_served_and_other_paths_are_404() {
    let (_ws, addr) = start_chat().await;
    let page = http_get(addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html"));
    assert!(page.contains("id=\"log\""));
    let missing = http_get(addr, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // A plain GET on /ws is not an upgrade: 400 with a readable body.
    let plain = http_get(addr, "/ws").await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains("not a valid WebSocket upgrade"), "{plain}");
}

#[tokio::test]
async fn a_message_from_one_reaches_both_and_a_late_joiner_gets_what_follows() {
    let (ws, addr) = start_chat().await;
    let mut a = connect(addr, "/ws").await;
    let mut b = connect(addr, "/ws").await;
    wait_for(|| ws.hub().client_count() == 2).await;

    let hello = r#"{"name":"a","text":"hello"}"#;
    send_text(&mut a, hello).await;
    assert_eq!(
        next_text(&mut a).await,
        hello,
        "the sender gets its own message"
    );
    assert_eq!(next_text(&mut b).await, hello);

    let mut c = connect(addr, "/ws").await;
    wait_for(|| ws.hub().client_count() == 3).await;
    send_text(&mut b, "second").await;
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(next_text(client).await, "second");
    }
    // The late joiner never saw "hello".
    assert!(silent_for(&mut c, Duration::from_millis(100)).await);
}

#[tokio::test]
async fn cross_origin_upgrade_through_hyper_is_403() {
    let (_ws, addr) = start_chat().await;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", HeaderValue::from_static("http://evil.example"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_closes_browsers_with_1001() {
    let (ws, addr) = start_chat().await;
    let mut a = connect(addr, "/ws").await;
    wait_for(|| ws.hub().client_count() == 1).await;
    // The browser keeps reading, so it answers the close at once.
    let browser = tokio::spawn(async move { close_code(&mut a).await });
    let started = tokio::time::Instant::now();
    let report = ws.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.remaining, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(browser.await.unwrap(), Some(CloseCode::Away));
}

#[tokio::test]
async fn rooms_from_the_url_keep_conversations_apart() {
    let (ws, addr) = start_chat().await;
    let mut a1 = connect(addr, "/ws?room=alpha").await;
    let mut a2 = connect(addr, "/ws?room=alpha").await;
    let mut lobby = connect(addr, "/ws").await;
    wait_for(|| ws.hub().room_count("alpha") == 2 && ws.hub().room_count("lobby") == 1).await;

    send_text(&mut a1, "in alpha").await;
    assert_eq!(next_text(&mut a1).await, "in alpha");
    assert_eq!(next_text(&mut a2).await, "in alpha");
    assert!(silent_for(&mut lobby, Duration::from_millis(150)).await);

    send_text(&mut lobby, "in the lobby").await;
    assert_eq!(next_text(&mut lobby).await, "in the lobby");
    assert!(silent_for(&mut a2, Duration::from_millis(150)).await);

    // Leaving empties the room, which is then removed.
    drop(a1);
    drop(a2);
    wait_for(|| ws.hub().room_count("alpha") == 0).await;
    assert!(!ws.hub().rooms().iter().any(|r| &**r == "alpha"));
}

#[tokio::test]
async fn an_invalid_room_name_is_refused_with_400() {
    let (_ws, addr) = start_chat().await;
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?room=no%20spaces")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400)
        }
        other => panic!("expected 400, got {other:?}"),
    }
}

/// Two chat servers on two ports sharing rooms through a backplane.
async fn start_chat_on(bus: &wshub::backplane::InMemoryBackplane) -> (Server, SocketAddr) {
    let hub = chat::chat_hub();
    let node = wshub::backplane::Node::new(hub.clone(), bus.clone());
    let ws = chat::ws_server_on(hub, Some(node), Heartbeat::default(), 100);
    let addr = chat::serve_on_free_port(ws.clone()).await.unwrap();
    (ws, addr)
}

#[tokio::test]
async fn two_chat_servers_on_one_backplane_serve_one_conversation() {
    let bus = wshub::backplane::InMemoryBackplane::new();
    let (ws1, addr1) = start_chat_on(&bus).await;
    let (ws2, addr2) = start_chat_on(&bus).await;
    let mut on1 = connect(addr1, "/ws?room=team").await;
    let mut on2 = connect(addr2, "/ws?room=team").await;
    let mut elsewhere = connect(addr2, "/ws").await;
    wait_for(|| ws1.hub().room_count("team") == 1 && ws2.hub().room_count("team") == 1).await;

    send_text(&mut on1, "from server 1").await;
    assert_eq!(next_text(&mut on1).await, "from server 1");
    assert_eq!(next_text(&mut on2).await, "from server 1");
    send_text(&mut on2, "from server 2").await;
    assert_eq!(next_text(&mut on2).await, "from server 2");
    assert_eq!(next_text(&mut on1).await, "from server 2");
    for ws in [&mut on1, &mut on2, &mut elsewhere] {
        assert!(
            silent_for(ws, Duration::from_millis(150)).await,
            "duplicate or leak"
        );
    }
}
