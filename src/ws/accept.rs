//! The application's say in a handshake: [`Handler::on_handshake`](super::Handler::on_handshake)
//! sees the upgrade request before the 101 and accepts it (optionally with data the client
//! carries for its lifetime) or rejects it with a status and a body.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use tungstenite::http::{header, HeaderMap, StatusCode, Uri};

use super::handshake::Refusal;
use crate::hub::ClientData;

/// An upgrade request, as [`Handler::on_handshake`](super::Handler::on_handshake) sees it.
///
/// It runs after the server's own checks (path, origin, connection limit, key) and before the
/// `101 Switching Protocols`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HandshakeRequest<'a> {
    /// The peer's address, when known: always with [`Server::serve`](super::Server::serve)
    /// and [`Server::serve_connection`](super::Server::serve_connection), and behind an HTTP
    /// server when it was passed to
    /// [`Server::upgrade_response_from`](super::Server::upgrade_response_from) (or axum's
    /// `ConnectInfo` was set up). Behind a reverse proxy this is the proxy.
    pub peer: Option<SocketAddr>,
    /// The request URI (path and query).
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

impl<'a> HandshakeRequest<'a> {
    /// The value of cookie `name` from the `Cookie` headers, as sent (not percent-decoded).
    ///
    /// ```
    /// # use wshub::ws::HandshakeRequest;
    /// # use tungstenite::http::{HeaderMap, Uri, header};
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::COOKIE, "theme=dark; name=ada".parse().unwrap());
    /// let uri: Uri = "/ws?room=lobby".parse().unwrap();
    /// let req = HandshakeRequest::new(None, &uri, &headers);
    /// assert_eq!(req.cookie("name"), Some("ada"));
    /// assert_eq!(req.cookie("missing"), None);
    /// assert_eq!(req.query("room"), Some("lobby"));
    /// ```
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The value of query parameter `name`, as sent (not percent-decoded); `Some("")` for a
    /// parameter without `=`.
    pub fn query(&self, name: &str) -> Option<&'a str> {
        self.uri
            .query()?
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// A request view from its parts (for tests of a handler's `on_handshake`).
    pub fn new(peer: Option<SocketAddr>, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        HandshakeRequest { peer, uri, headers }
    }
}

/// The handshake may proceed; the client may carry application data.
#[derive(Default)]
pub struct Accept {
    pub(crate) data: Option<ClientData>,
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept")
            .field("data", &self.data.is_some())
            .finish()
    }
}

impl Accept {
    /// Accepts with no data.
    pub fn new() -> Self {
        Accept::default()
    }

    /// Accepts, and the client carries `data` for its lifetime: read it with
    /// [`ClientHandle::data`](crate::ClientHandle::data) in every [`Handler`](super::Handler)
    /// call.
    pub fn with_data<T: std::any::Any + Send + Sync>(data: T) -> Self {
        Accept {
            data: Some(Arc::new(data)),
        }
    }
}

/// The handshake is refused: the client gets `status` with `body` (plain text) and no
/// connection is made. Nothing is registered and no connection slot stays taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub(crate) status: StatusCode,
    pub(crate) body: Cow<'static, str>,
}

impl Reject {
    /// `401 Unauthorized`: no credentials, or invalid ones.
    pub fn unauthorized(body: impl Into<Cow<'static, str>>) -> Self {
        Reject::new(StatusCode::UNAUTHORIZED, body)
    }

    /// `403 Forbidden`: the credentials are fine but not for this.
    pub fn forbidden(body: impl Into<Cow<'static, str>>) -> Self {
        Reject::new(StatusCode::FORBIDDEN, body)
    }

    /// Any status. A status that is not an error (below 400) is sent as 403 instead: a
    /// rejection must not look like success.
    pub fn new(status: StatusCode, body: impl Into<Cow<'static, str>>) -> Self {
        let status = if status.as_u16() >= 400 {
            status
        } else {
            StatusCode::FORBIDDEN
        };
        Reject {
            status,
            body: body.into(),
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Reject> for Refusal {
    fn from(r: Reject) -> Refusal {
        Refusal {
            status: r.status,
            reason: r.body,
        }
    }
}
