//! Bad input over real sockets: wrong path, foreign origin, oversize messages, invalid UTF-8,
//! handler errors, the connection limit, abrupt disconnects.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Error as WsError;
use wshub::ws::{Config, OriginPolicy};
use wshub::{CloseCode, HubConfig, Message};

/// Dials and expects an HTTP refusal; returns its status and body.
async fn refused(url: String, origin: Option<&'static str>) -> (u16, String) {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", HeaderValue::from_static(o));
    }
    match tokio_tungstenite::connect_async(req).await {
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            (resp.status().as_u16(), body.unwrap_or_default())
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

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
