//! The chat room: a hyper HTTP server that serves the page at `/` and hands WebSocket upgrades
//! on `/ws` to a wshub [`Server`], which relays every text message to every participant of the
//! sender's room (`/ws?room=NAME`, default `lobby`).
//!
//! Shared by `examples/chat/main.rs` and the end-to-end tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use wshub::backplane::Node;
use wshub::ws::{Client, Config, ConnInfo, Handler, HandlerError, Heartbeat, Server};
use wshub::{Hub, HubConfig, Message};

/// The page, embedded so the example works from any directory and offline.
pub const PAGE: &str = include_str!("index.html");

/// Chat messages larger than this close the sender's connection with 1009.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// The room a connection asked for with `/ws?room=NAME`; `lobby` without one. `None` for a
/// name that is not 1–64 of `A-Z a-z 0-9 _ -`.
pub fn room_from_query(query: Option<&str>) -> Option<String> {
    let requested = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("room="));
    match requested {
        None => Some(DEFAULT_ROOM.to_string()),
        Some(name)
            if (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Some(name.to_string())
        }
        Some(_) => None,
    }
}

/// The room of a connection without `?room=`.
pub const DEFAULT_ROOM: &str = "lobby";

/// The relay: every text message goes to everyone in the sender's room, the sender included
/// (as gorilla's chat does).
struct Relay {
    node: Option<Node>,
}

impl Handler for Relay {
    fn on_connect(&self, client: &Client, info: &ConnInfo) {
        // The route checked the name before upgrading.
        let room = room_from_query(info.uri.query()).unwrap_or_else(|| DEFAULT_ROOM.into());
        if let Err(e) = client.join(&room) {
            tracing::debug!(client = %client.id(), error = %e, "could not join");
        }
    }

    fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError> {
        match msg {
            Message::Text(_) => {
                for room in client.rooms() {
                    match &self.node {
                        Some(node) => node.broadcast_to(&room, msg.clone()),
                        None => client.hub().broadcast_to(&room, msg.clone()),
                    };
                }
            }
            _ => tracing::debug!(client = %client.id(), "ignored a binary message"),
        }
        Ok(())
    }
}

/// The wshub side: hub with slow-client eviction, heartbeat on, message size limit.
pub fn ws_server(heartbeat: Heartbeat, max_connections: usize) -> Server {
    ws_server_on(chat_hub(), None, heartbeat, max_connections)
}

/// The chat's hub: slow clients (256 messages behind) are evicted.
pub fn chat_hub() -> Hub<Message> {
    Hub::with_config(HubConfig::default().mailbox_capacity(256))
}

/// The wshub side on a given hub; with a backplane `node` (built on that hub), rooms are
/// shared with every other chat process on the same backplane.
pub fn ws_server_on(
    hub: Hub<Message>,
    node: Option<Node>,
    heartbeat: Heartbeat,
    max_connections: usize,
) -> Server {
    let config = Config::default()
        .path("/ws")
        .heartbeat(heartbeat)
        .max_connections(max_connections)
        .max_message_size(MAX_MESSAGE_BYTES);
    Server::new(hub, config, Relay { node })
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

async fn route(
    ws: Server,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match req.uri().path() {
        "/" => Ok(text_response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            PAGE,
        )),
        "/ws" if room_from_query(req.uri().query()).is_none() => Ok(text_response(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            "invalid room name: use 1-64 of A-Z a-z 0-9 _ -\n",
        )),
        "/ws" => Ok(upgrade(ws, peer, req)),
        _ => Ok(text_response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        )),
    }
}

/// Checks the upgrade with wshub, answers 101, and serves the upgraded connection.
fn upgrade(ws: Server, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // The admission holds this connection's slot under the limit from before the 101 is sent
    // until the connection ends (or until it is dropped, if the upgrade fails).
    let (switching, admission) = match ws.upgrade_response_from(&req, Some(peer)) {
        Ok(pair) => pair,
        Err(refusal) => return refusal.map(|body| Full::new(Bytes::from(body))),
    };
    let info = ConnInfo::new(Some(peer), req.uri().clone(), req.headers().clone());
    // The task lives as long as the connection: give it the upgrade handle, not the request.
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = ws
                    .serve_upgraded(admission, TokioIo::new(upgraded), info)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "websocket not served");
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "upgrade failed"),
        }
    });
    switching.map(|()| Full::new(Bytes::new()))
}

/// Serves `ws` on a free loopback port, on a task of its own, and returns the address (for
/// the tests, which run several chat servers side by side).
pub async fn serve_on_free_port(ws: Server) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, ws));
    Ok(addr)
}

/// Serves HTTP on `listener` until the wshub server shuts down.
pub async fn serve(listener: TcpListener, ws: Server) {
    let stopping = ws.clone();
    let mut stopped = std::pin::pin!(stopping.stopping());
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ws = ws.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(ws.clone(), peer, req));
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http connection failed");
            }
        });
    }
}

/// Installs a Prometheus recorder for wshub's metrics and serves them as Prometheus text at
/// `http://ADDR/metrics` (any other path: 404). Returns the address it listens on, so
/// `127.0.0.1:0` works. Call it before serving, so every connection is counted.
#[cfg(feature = "metrics")]
pub async fn serve_metrics(addr: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // Mailbox depths as a real histogram (buckets up to the chat's capacity of 256) rather
    // than the exporter's default summary.
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("mailbox_depth".into()),
            &[0.0, 1.0, 4.0, 16.0, 64.0, 128.0, 256.0],
        )?
        .install_recorder()?;
    wshub::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let resp = match req.uri().path() {
                        "/metrics" => text_response(
                            StatusCode::OK,
                            "text/plain; version=0.0.4; charset=utf-8",
                            handle.render(),
                        ),
                        _ => text_response(
                            StatusCode::NOT_FOUND,
                            "text/plain; charset=utf-8",
                            "not found\n",
                        ),
                    };
                    std::future::ready(Ok::<_, Infallible>(resp))
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "metrics connection failed");
                }
            });
        }
    });
    Ok(local)
}
