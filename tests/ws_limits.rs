//! Bad input over real sockets: wrong path, foreign origin, oversize messages, invalid UTF-8,
//! handler errors, the connection limit, abrupt disconnects.

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use wshub::ws::{Config, ConnInfo, OriginPolicy, Server};
use wshub::{CloseCode, Hub, HubConfig, Message};

#[tokio::test]
async fn wrong_path_gets_404_with_a_readable_body() {
    let (_server, addr) = start(HubConfig::default(), Config::default().path("/ws"), ignore).await;
    let (status, body) = refused(format!("ws://{addr}/nope"), None).await;
    assert_eq!(status, 404);
    assert!(body.contains("path does not exist"), "{body}");
    // The right path, with a query string, works.
    let _ok = connect(addr, "/ws?room=x").await;
}

#[tokio::test]
async fn foreign_origin_gets_403_and_same_origin_is_accepted() {
    let (server, addr) = start(HubConfig::default(), Config::default(), ignore).await;
    let (status, body) = refused(format!("ws://{addr}/"), Some("http://evil.example")).await;
    assert_eq!(status, 403);
    assert!(body.contains("cross-origin"), "{body}");

    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    let same = HeaderValue::from_str(&format!("http://{addr}")).unwrap();
    req.headers_mut().insert("origin", same);
    let (_ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("same origin");
    wait_for(|| server.hub().client_count() == 1).await;
}

#[tokio::test]
async fn allow_list_admits_a_listed_origin() {
    let config =
        Config::default().origin(OriginPolicy::AllowList(vec!["https://app.example".into()]));
    let (_server, addr) = start(HubConfig::default(), config, ignore).await;
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", HeaderValue::from_static("https://app.example"));
    tokio_tungstenite::connect_async(req)
        .await
        .expect("listed origin");
    let (status, _) = refused(format!("ws://{addr}/"), Some("https://other.example")).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn oversize_message_closes_with_1009_and_others_are_unaffected() {
    let config = Config::default().max_message_size(1024);
    let (server, addr) = start(HubConfig::default(), config, relay).await;
    let mut big = connect(addr, "/").await;
    let mut other = connect(addr, "/").await;
    wait_for(|| server.hub().client_count() == 2).await;
    send_text(&mut big, &"x".repeat(2000)).await;
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Size));
    wait_for(|| server.hub().client_count() == 1).await;
    send_text(&mut other, "small").await;
    assert_eq!(next_text(&mut other).await, "small");
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let (_server, addr) = start(HubConfig::default(), Config::default(), ignore).await;
    let mut ws = connect(addr, "/").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
}

#[tokio::test]
async fn handler_error_closes_with_1011() {
    let failing = |_: &wshub::ws::Client, _: Message| -> Result<(), wshub::ws::HandlerError> {
        Err("boom".into())
    };
    let (server, addr) = start(HubConfig::default(), Config::default(), failing).await;
    let mut ws = connect(addr, "/").await;
    send_text(&mut ws, "anything").await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Error));
    wait_for(|| server.hub().client_count() == 0).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_503() {
    let (server, addr) = start(
        HubConfig::default(),
        Config::default().max_connections(2),
        ignore,
    )
    .await;
    let _a = connect(addr, "/").await;
    let b = connect(addr, "/").await;
    wait_for(|| server.connection_count() == 2).await;
    let (status, body) = refused(format!("ws://{addr}/"), None).await;
    assert_eq!(status, 503);
    assert!(body.contains("too many"), "{body}");
    // A slot frees when a connection ends.
    drop(b);
    wait_for(|| server.connection_count() == 1).await;
    let _c = connect(addr, "/").await;
}

#[tokio::test]
async fn abrupt_tcp_drop_unregisters_the_client() {
    let (server, addr) = start(HubConfig::default(), Config::default(), ignore).await;
    let clients = connect_many(&server, addr, 10).await;
    // Dropping the stream closes the TCP connection without a closing handshake.
    drop(clients);
    wait_for(|| server.hub().client_count() == 0).await;
    wait_for(|| server.connection_count() == 0).await;
    // Broadcasting to nobody is fine.
    assert_eq!(server.hub().broadcast(Message::text("anyone?")), 0);
}

#[tokio::test]
async fn client_initiated_close_is_answered_and_unregisters() {
    let (server, addr) = start(HubConfig::default(), Config::default(), ignore).await;
    let mut ws = connect(addr, "/").await;
    wait_for(|| server.hub().client_count() == 1).await;
    ws.close(None).await.unwrap();
    // The server echoes the close; the stream then ends.
    assert_eq!(close_code(&mut ws).await, None);
    wait_for(|| server.hub().client_count() == 0).await;
}

/// A valid upgrade request, as an HTTP server (hyper, axum) would hand it over.
fn upgrade_request() -> tokio_tungstenite::tungstenite::http::Request<()> {
    tokio_tungstenite::tungstenite::http::Request::builder()
        .uri("/")
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn upgrade_response_takes_the_slot_before_the_101() {
    let server = Server::new(Hub::new(), Config::default().max_connections(1), relay);
    let (switching, admission) = server
        .upgrade_response(&upgrade_request())
        .expect("the first upgrade is admitted");
    assert_eq!(switching.status(), 101);
    assert_eq!(server.connection_count(), 1);
    // The second is refused before any 101: the first holds the only slot.
    let refusal = server
        .upgrade_response(&upgrade_request())
        .expect_err("the second upgrade is refused");
    assert_eq!(refusal.status(), 503);
    assert!(refusal.body().contains("too many"), "{}", refusal.body());

    // The admitted connection is served in the slot it holds.
    let (server_io, client_io) = tokio::io::duplex(4096);
    let s = server.clone();
    let info = ConnInfo::new(None, "/".parse().unwrap(), HeaderMap::new());
    let served = tokio::spawn(async move { s.serve_upgraded(admission, server_io, info).await });
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    client.send(Message::text("hi")).await.unwrap();
    let echoed = tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("no reply")
        .expect("stream ended")
        .expect("read error");
    assert_eq!(echoed, Message::text("hi"));
    assert_eq!(server.connection_count(), 1);
    assert!(server.upgrade_response(&upgrade_request()).is_err());

    // The slot frees when the connection ends, and when an admission is dropped unserved.
    client.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, client.next()).await {}
    tokio::time::timeout(PATIENCE, served)
        .await
        .expect("serve_upgraded did not return")
        .unwrap()
        .expect("served");
    assert_eq!(server.connection_count(), 0);
    let (_, admission) = server.upgrade_response(&upgrade_request()).unwrap();
    assert_eq!(server.connection_count(), 1);
    drop(admission);
    assert_eq!(server.connection_count(), 0);
}

#[test]
fn concurrent_upgrade_responses_admit_no_more_than_the_limit() {
    const THREADS: usize = 8;
    let server = Server::new(Hub::new(), Config::default().max_connections(2), ignore);
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (server, barrier) = (server.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                server
                    .upgrade_response(&upgrade_request())
                    .map(|(_, admission)| admission)
                    .map_err(|refusal| refusal.status().as_u16())
            })
        })
        .collect();
    // Every admission is kept until all threads are done.
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(503))));
    assert_eq!(server.connection_count(), 2);
    drop(results);
    assert_eq!(server.connection_count(), 0);
}
