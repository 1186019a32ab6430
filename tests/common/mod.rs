//! Helpers shared by the integration tests: a server on 127.0.0.1 and real WebSocket clients.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wshub::ws::{Config, Handler, Server};
use wshub::{CloseCode, Hub, HubConfig, Message};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Long enough for anything that should happen; a test waiting this long has failed.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Starts a server on a free loopback port.
pub async fn start(
    hub_config: HubConfig,
    config: Config,
    handler: impl Handler,
) -> (Server, SocketAddr) {
    let listener = wshub::ws::listen("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::new(Hub::with_config(hub_config), config, handler);
    let s = server.clone();
    tokio::spawn(async move { s.serve(listener).await });
    (server, addr)
}

/// A relay: every inbound message is broadcast to every client.
pub fn relay(client: &wshub::ws::Client, msg: Message) -> Result<(), wshub::ws::HandlerError> {
    client.hub().broadcast(msg);
    Ok(())
}

/// A handler that ignores inbound messages.
pub fn ignore(_: &wshub::ws::Client, _: Message) -> Result<(), wshub::ws::HandlerError> {
    Ok(())
}

pub async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("connect");
    ws
}

/// Connects `n` clients and waits until the hub has registered them all.
pub async fn connect_many(server: &Server, addr: SocketAddr, n: usize) -> Vec<Ws> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(connect(addr, "/").await);
    }
    wait_for(|| server.hub().client_count() == n).await;
    clients
}

/// Polls `cond` until it holds; panics after `PATIENCE`.
pub async fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next data message (text), skipping control frames.
pub async fn next_text<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("read error");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns its code (None if the stream just ended).
pub async fn close_code<S>(ws: &mut WebSocketStream<S>) -> Option<CloseCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let next = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("timed out waiting for close");
        match next {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Sends a text message.
pub async fn send_text<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.expect("send");
}

/// True when nothing arrives within `wait`.
pub async fn silent_for(ws: &mut Ws, wait: Duration) -> bool {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => return false,
        }
    }
}

/// The next message in a hub mailbox, as text.
pub async fn next_in_mailbox(mail: &mut wshub::Mailbox<Message>) -> String {
    let msg = tokio::time::timeout(PATIENCE, mail.recv())
        .await
        .expect("timed out")
        .expect("closed");
    msg.to_text().expect("text").to_string()
}

/// True when nothing arrives in the mailbox within 200 ms.
pub async fn mailbox_quiet(mail: &mut wshub::Mailbox<Message>) -> bool {
    tokio::time::timeout(Duration::from_millis(200), mail.recv())
        .await
        .is_err()
}

/// Dials and expects an HTTP refusal; returns its status and body.
pub async fn refused(url: String, origin: Option<&'static str>) -> (u16, String) {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", HeaderValue::from_static(o));
    }
    refused_request(req).await
}

/// Sends the upgrade `req` and expects an HTTP refusal; returns its status and body.
pub async fn refused_request(req: Request) -> (u16, String) {
    let dialed = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
        .await
        .expect("timed out waiting for the handshake response");
    match dialed {
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

/// A raw HTTP/1.1 GET of `path` on `addr`; returns the whole response text (status line,
/// headers, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut out))
        .await
        .expect("timed out reading the response")
        .expect("read");
    out
}
