//! WebSocket glue over tokio-tungstenite: accept connections into a [`Hub`](crate::Hub) and
//! drive each one.
//!
//! A [`Server`] checks each upgrade (path → 404, origin → 403, connection limit → 503,
//! handshake timeout), registers the connection as a client of its hub, and runs it on one
//! task that
//!
//! - reads: every text or binary message goes to your [`Handler`] (the sum service replies to
//!   the sender, a chat broadcasts); every inbound frame pushes the read deadline forward;
//! - writes: drains everything queued in the client's mailbox, writes each message as its own
//!   frame and flushes once per drained batch;
//! - pings on the [`Heartbeat`] schedule and closes with a code that says why.
//!
//! # Close codes
//!
//! | code | when |
//! |------|------|
//! | 1000 | the application unregistered the client, or the read deadline passed (reason `"read timeout"`) |
//! | 1001 | server shutdown ([`Server::shutdown`]) |
//! | 1008 | slow client evicted by [`OverflowPolicy::Disconnect`](crate::OverflowPolicy::Disconnect) |
//! | 1009 | inbound message larger than [`Config::max_message_size`] |
//! | 1007 / 1002 | invalid UTF-8 in a text message / protocol error |
//! | 1011 | the handler returned an error |
//!
//! A write blocked past the write timeout drops the connection without a close frame (nothing
//! can be written to it). Whatever the cause, the client is unregistered from the hub exactly
//! once, as soon as the close begins.
//!
//! # Example
//!
//! An echo-to-everyone server (a chat relay) in a few lines:
//!
//! ```no_run
//! use wshub::ws::{Client, Config, Server};
//! use wshub::{Hub, Message};
//!
//! # #[tokio::main] async fn main() -> wshub::Result<()> {
//! let hub = Hub::new();
//! let server = Server::new(hub, Config::default().path("/ws"), |client: &Client, msg: Message| {
//!     client.hub().broadcast(msg);
//!     Ok(())
//! });
//! server.serve(wshub::ws::listen("127.0.0.1:8080").await?).await
//! # }
//! ```
//!
//! Behind an HTTP server of your own, [`Server::upgrade_response`] checks an upgrade request
//! and [`Server::serve_upgraded`] serves the upgraded stream (`examples/chat` does this with
//! hyper). With the `axum` feature, `ws::axum` mounts a server on an axum route in one line.

mod accept;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod config;
mod conn;
mod frame;
mod handshake;
mod server;

use std::net::SocketAddr;

use tungstenite::http::{HeaderMap, Uri};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

use crate::hub::{ClientHandle, ClientId, CloseReason};

pub use accept::{Accept, HandshakeRequest, Reject};
pub use config::{Config, Heartbeat, OriginPolicy};
pub use conn::End;
pub use server::{listen, Admission, Server, ShutdownReport};

/// A WebSocket client of a hub.
pub type Client = ClientHandle<Message>;

/// What a [`Handler`] may fail with; the connection then closes with 1011.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The application's side of each connection.
///
/// The methods run on the connection's task and must not block: send with
/// [`ClientHandle::send`] or [`Hub::broadcast`](crate::Hub::broadcast) (neither waits), and
/// spawn a task for slow work. A closure `Fn(&Client, Message) -> Result<(), HandlerError>`
/// is a handler that only implements [`Handler::on_message`].
pub trait Handler: Send + Sync + 'static {
    /// An upgrade request passed the server's checks (path, origin, connection limit, key):
    /// accept it, optionally with data the client then carries for its lifetime
    /// ([`Accept::with_data`], read with [`ClientHandle::data`]), or reject it with a status
    /// and a body ([`Reject::unauthorized`], [`Reject::forbidden`]). Runs before the
    /// `101 Switching Protocols` on every way in (`Server::serve`, `serve_connection`,
    /// `upgrade_response`, axum). The default accepts every request, with no data.
    ///
    /// It runs on the accepting task, during the handshake: keep it quick (check a signed
    /// cookie or token; no network round trips).
    ///
    /// ```
    /// use wshub::ws::{Accept, Client, HandshakeRequest, Handler, HandlerError, Reject};
    /// use wshub::Message;
    ///
    /// struct User(String);
    /// struct Chat;
    ///
    /// impl Handler for Chat {
    ///     fn on_handshake(&self, req: &HandshakeRequest<'_>) -> Result<Accept, Reject> {
    ///         match req.cookie("name") {
    ///             Some(name) if !name.is_empty() => Ok(Accept::with_data(User(name.to_string()))),
    ///             _ => Err(Reject::unauthorized("log in first")),
    ///         }
    ///     }
    ///
    ///     fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError> {
    ///         let name = client.data::<User>().map_or("?", |u| u.0.as_str());
    ///         client.hub().broadcast(Message::text(format!("{name}: {}", msg.to_text()?)));
    ///         Ok(())
    ///     }
    /// }
    /// # let _server = wshub::ws::Server::new(wshub::Hub::new(), wshub::ws::Config::default(), Chat);
    /// ```
    fn on_handshake(&self, req: &HandshakeRequest<'_>) -> Result<Accept, Reject> {
        let _ = req;
        Ok(Accept::new())
    }

    /// A connection completed its handshake and was registered as `client`.
    fn on_connect(&self, client: &Client, info: &ConnInfo) {
        let _ = (client, info);
    }

    /// A text or binary message arrived from `client`. Control frames (ping, pong, close) are
    /// handled by the driver and never reach here.
    ///
    /// # Errors
    ///
    /// An error closes the connection with 1011 (internal error) and is logged.
    fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError>;

    /// The connection ended; the client is no longer registered.
    fn on_disconnect(&self, disconnect: &Disconnect) {
        let _ = disconnect;
    }
}

impl<F> Handler for F
where
    F: Fn(&Client, Message) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError> {
        self(client, msg)
    }
}

/// What the server knew of a connection when it was accepted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The peer's address, when known.
    pub peer: Option<SocketAddr>,
    /// The request URI of the upgrade (path and query).
    pub uri: Uri,
    /// The upgrade request's headers.
    pub headers: HeaderMap,
}

impl ConnInfo {
    /// Connection details for [`Server::serve_upgraded`], from the parts of the request your
    /// HTTP server upgraded.
    pub fn new(peer: Option<SocketAddr>, uri: Uri, headers: HeaderMap) -> Self {
        ConnInfo { peer, uri, headers }
    }
}

/// How a connection ended, given to [`Handler::on_disconnect`] and returned by
/// [`Server::serve_connection`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Disconnect {
    /// The client the connection was registered as.
    pub client: ClientId,
    /// How the stream ended.
    pub end: End,
    /// The close code the server sent, if it started the close.
    pub sent_code: Option<CloseCode>,
    /// The close code the peer sent, if any.
    pub peer_code: Option<CloseCode>,
    /// Why the client's mailbox closed, when that started the close.
    pub close_reason: Option<CloseReason>,
    /// True when the read deadline (pong or idle timeout) passed.
    pub timed_out: bool,
}
