//! The axum integration (`ws::axum`) over real sockets: `axum::serve` on 127.0.0.1, real
//! tokio-tungstenite clients.
#![cfg(feature = "axum")]

#[path = "../examples/axum_chat/app.rs"]
mod axum_chat;
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceExt;
use wshub::ws::{Client, Config, ConnInfo, Handler, HandlerError, Heartbeat, Server};
use wshub::{CloseCode, Hub, HubConfig, Message};

/// Serves `app` on a free loopback port with `axum::serve` (peer addresses on).
async fn serve(app: Router) -> SocketAddr {
    let listener = wshub::ws::listen("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    addr
}

fn relay_server(config: Config) -> Server {
    Server::new(Hub::with_config(HubConfig::default()), config, relay)
}

/// A relay that also records what each connection's `on_connect` saw, and the URI each
/// `on_handshake` saw.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<ConnInfo>>>, Arc<Mutex<Vec<String>>>);

impl Handler for Recorder {
    fn on_handshake(
        &self,
        req: &wshub::ws::HandshakeRequest<'_>,
    ) -> Result<wshub::ws::Accept, wshub::ws::Reject> {
        self.1.lock().unwrap().push(req.uri.to_string());
        Ok(wshub::ws::Accept::new())
    }

    fn on_connect(&self, _: &Client, info: &ConnInfo) {
        self.0.lock().unwrap().push(info.clone());
    }

    fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError> {
        relay(client, msg)
    }
}

#[tokio::test]
async fn the_example_relays_between_two_clients_in_a_room() {
    let server = axum_chat::chat::ws_server(Heartbeat::default(), 100);
    let addr = serve(axum_chat::router(server.clone())).await;

    let mut a = connect(addr, "/ws?room=team").await;
    let mut b = connect(addr, "/ws?room=team").await;
    let mut other = connect(addr, "/ws").await; // the lobby
    wait_for(|| server.hub().client_count() == 3).await;

    send_text(&mut a, "hello from a").await;
    assert_eq!(next_text(&mut a).await, "hello from a");
    assert_eq!(next_text(&mut b).await, "hello from a");
    send_text(&mut b, "hi a").await;
    assert_eq!(next_text(&mut a).await, "hi a");
    assert_eq!(next_text(&mut b).await, "hi a");
    assert!(silent_for(&mut other, std::time::Duration::from_millis(100)).await);

    // The handler's own refusal (a bad room name) takes no slot.
    let (status, body) = refused(format!("ws://{addr}/ws?room=no%20spaces"), None).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid room name"), "{body}");
    assert_eq!(server.connection_count(), 3);
}

#[tokio::test]
async fn the_route_serves_and_reports_the_peer() {
    let recorder = Recorder::default();
    let server = Server::new(Hub::new(), Config::default(), recorder.clone());
    let app = Router::new().route("/ws", wshub::ws::axum::route(server.clone()));
    let addr = serve(app).await;

    let mut ws = connect(addr, "/ws?x=1").await;
    wait_for(|| server.hub().client_count() == 1).await;
    send_text(&mut ws, "echo").await;
    assert_eq!(next_text(&mut ws).await, "echo");

    let info = recorder.0.lock().unwrap()[0].clone();
    assert_eq!(info.uri, "/ws?x=1");
    let peer = info.peer.expect("peer address from ConnectInfo");
    assert_eq!(peer.ip(), addr.ip());
    assert!(info.headers.contains_key("sec-websocket-key"));
}

#[tokio::test]
async fn a_nested_route_is_not_refused_by_the_path_check() {
    // `Config::path` names the public URL; axum strips the "/api" prefix before the route.
    let recorder = Recorder::default();
    let server = Server::new(
        Hub::new(),
        Config::default().path("/api/ws"),
        recorder.clone(),
    );
    let api = Router::new().route("/ws", wshub::ws::axum::route(server.clone()));
    let addr = serve(Router::new().nest("/api", api)).await;

    let mut ws = connect(addr, "/api/ws").await;
    wait_for(|| server.hub().client_count() == 1).await;
    send_text(&mut ws, "nested").await;
    assert_eq!(next_text(&mut ws).await, "nested");
    // on_connect sees the URI the client asked for, not the stripped one.
    assert_eq!(recorder.0.lock().unwrap()[0].uri, "/api/ws");
    assert_eq!(
        *recorder.1.lock().unwrap(),
        ["/api/ws"],
        "and so does on_handshake"
    );
    // Routing stays axum's: another path is axum's 404, not an upgrade.
    let (status, _) = refused(format!("ws://{addr}/api/other"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_middleware_in_front_runs_and_may_refuse() {
    async fn token_required(req: Request, next: Next) -> Response {
        if req.headers().get("authorization").map(|v| v.as_bytes()) != Some(b"Bearer ok") {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let mut resp = next.run(req).await;
        resp.headers_mut()
            .insert("x-checked-by", HeaderValue::from_static("middleware"));
        resp
    }
    let server = relay_server(Config::default());
    let app = Router::new()
        .route("/ws", wshub::ws::axum::route(server.clone()))
        .layer(middleware::from_fn(token_required));
    let addr = serve(app).await;

    let (status, _) = refused(format!("ws://{addr}/ws"), None).await;
    assert_eq!(status, 401);
    assert_eq!(server.connection_count(), 0);

    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", HeaderValue::from_static("Bearer ok"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["x-checked-by"], "middleware");
    send_text(&mut ws, "through the layer").await;
    assert_eq!(next_text(&mut ws).await, "through the layer");
}

#[tokio::test]
async fn a_layer_that_replaces_the_101_frees_the_slot() {
    let server = relay_server(Config::default().max_connections(1));
    let app = Router::new()
        .route("/ws", wshub::ws::axum::route(server.clone()))
        .layer(middleware::map_response(|mut resp: Response| async move {
            *resp.status_mut() = StatusCode::FORBIDDEN;
            resp
        }));
    let addr = serve(app).await;

    let (status, _) = refused(format!("ws://{addr}/ws"), None).await;
    assert_eq!(status, 403);
    // The serving task sees the upgrade fail and drops the admission.
    wait_for(|| server.connection_count() == 0).await;
    assert_eq!(server.hub().client_count(), 0);
}

#[tokio::test]
async fn a_foreign_origin_gets_403() {
    let server = relay_server(Config::default());
    let app = Router::new().route("/ws", wshub::ws::axum::route(server.clone()));
    let addr = serve(app).await;

    let (status, body) = refused(format!("ws://{addr}/ws"), Some("http://evil.example")).await;
    assert_eq!(status, 403);
    assert!(body.contains("cross-origin"), "{body}");
    assert_eq!(server.connection_count(), 0);

    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    let same = HeaderValue::from_str(&format!("http://{addr}")).unwrap();
    req.headers_mut().insert("origin", same);
    tokio_tungstenite::connect_async(req)
        .await
        .expect("same origin");
}

#[tokio::test]
async fn the_connection_limit_answers_503_without_a_101() {
    let server = relay_server(Config::default().max_connections(1));
    let app = Router::new().route("/ws", wshub::ws::axum::route(server.clone()));
    let addr = serve(app).await;

    let mut first = connect(addr, "/ws").await;
    wait_for(|| server.hub().client_count() == 1).await;
    let (status, body) = refused(format!("ws://{addr}/ws"), None).await;
    assert_eq!(status, 503);
    assert!(body.contains("too many connections"), "{body}");
    // The first connection is untouched, and its slot is free again once it closes.
    send_text(&mut first, "still here").await;
    assert_eq!(next_text(&mut first).await, "still here");
    first.close(None).await.unwrap();
    wait_for(|| server.connection_count() == 0).await;
    let _again = connect(addr, "/ws").await;
    wait_for(|| server.hub().client_count() == 1).await;
}

#[tokio::test]
async fn a_bad_sec_websocket_key_gets_400() {
    let server = relay_server(Config::default());
    let app = Router::new().route("/ws", wshub::ws::axum::route(server.clone()));
    let addr = serve(app).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        while !String::from_utf8_lossy(&resp).contains("upgrade request\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&resp));
            resp.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("no response");
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains("not a valid WebSocket upgrade request"),
        "{resp}"
    );
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn shutdown_closes_with_1001_and_then_refuses_with_503() {
    let server = relay_server(Config::default());
    let app = Router::new().route("/ws", wshub::ws::axum::route(server.clone()));
    let addr = serve(app).await;

    let mut ws = connect(addr, "/ws").await;
    wait_for(|| server.hub().client_count() == 1).await;
    // The client reads the close and hangs up while the server waits for it.
    let reader = tokio::spawn(async move { close_code(&mut ws).await });
    let report = server.shutdown(PATIENCE).await;
    assert_eq!(report.remaining, 0);
    assert_eq!(reader.await.unwrap(), Some(CloseCode::Away));
    let (status, body) = refused(format!("ws://{addr}/ws"), None).await;
    assert_eq!(status, 503);
    assert!(body.contains("shutting down"), "{body}");
}

#[tokio::test]
async fn a_connection_hyper_cannot_upgrade_gets_426_and_no_slot() {
    // No HTTP server in front: the request carries no hyper upgrade handle.
    let server = relay_server(Config::default());
    let app = Router::new().route("/ws", wshub::ws::axum::route(server.clone()));
    let req = axum::http::Request::get("/ws")
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(server.connection_count(), 0);
}
