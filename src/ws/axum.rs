//! Mounting a [`Server`] on an [axum](https://docs.rs/axum/0.8) route (feature `axum`).
//!
//! An upgrade that reaches the route gets the same checks as on [`Server::serve`]: origin
//! (403), connection limit and shutdown (503), and a valid WebSocket upgrade with exactly
//! one well-formed `Sec-WebSocket-Key` (400). `101 Switching Protocols` is answered only once
//! the connection holds its slot under [`Config::max_connections`](super::Config::max_connections),
//! so a peer told 101 is always served.
//!
//! The path is the router's business: [`Config::path`](super::Config::path) is not checked
//! here. A route nested with `Router::nest("/api", …)` sees its path with the prefix
//! stripped; checking it again would refuse every upgrade with 404.
//!
//! Serving runs on a task of its own, spawned when the 101 response is built: there is no
//! future to await in the handler (awaiting the upgrade there would wait for a response the
//! handler has not returned yet, and hang).
//!
//! # Example
//!
//! A chat relay on `/ws`, the mount in three lines:
//!
//! ```no_run
//! use axum::Router;
//! use wshub::ws::{Client, Config, Server};
//! use wshub::{Hub, Message};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(Hub::new(), Config::default(), |client: &Client, msg: Message| {
//!     client.hub().broadcast(msg);
//!     Ok(())
//! });
//! let app = Router::new().route("/ws", wshub::ws::axum::route(server));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! [`WsUpgrade`] is the same thing as an extractor, for a handler that looks at the request
//! first (a room name, a session); the router's state must provide the [`Server`]
//! (`Server: FromRef<S>`). Layers in front of the route (authentication, headers, tracing)
//! run as for any other route; a layer that refuses the request means no upgrade and no slot
//! taken.
//!
//! ```
//! use axum::http::{StatusCode, Uri};
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::get;
//! use axum::Router;
//! use wshub::ws::axum::WsUpgrade;
//! use wshub::ws::Server;
//!
//! async fn chat(uri: Uri, upgrade: WsUpgrade) -> Response {
//!     if uri.query().is_some_and(|q| q.len() > 100) {
//!         return StatusCode::BAD_REQUEST.into_response(); // the slot is released
//!     }
//!     upgrade.into_response() // 101, and the connection is served on its own task
//! }
//!
//! fn app(server: Server) -> Router {
//!     Router::new().route("/ws", get(chat)).with_state(server)
//! }
//! # let _: Router = app(Server::new(wshub::Hub::new(), Default::default(),
//! #     |_: &wshub::ws::Client, _: wshub::Message| Ok(())));
//! ```
//!
//! # Connection details
//!
//! [`Handler::on_connect`](super::Handler::on_connect) gets a [`ConnInfo`] with the URI the
//! client asked for (before any `nest` stripped it), the request headers, and the peer address
//! when the app is served with
//! `app.into_make_service_with_connect_info::<SocketAddr>()`.
//!
//! # Shutdown
//!
//! [`Server::shutdown`] closes the connections served through this route, like any other;
//! the route answers 503 from then on. To stop axum accepting as well, pass
//! [`Server::stopping`] to `axum::serve(..).with_graceful_shutdown(..)`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, OriginalUri, Request};
use axum::http;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::handshake::{PathCheck, Refusal};
use super::{Admission, ConnInfo, Server};

/// The three-line mount: a `GET` route that upgrades to WebSocket and serves the connection
/// with `server`, for a router with any state.
///
/// ```
/// # use axum::Router;
/// # let server = wshub::ws::Server::new(wshub::Hub::new(), Default::default(),
/// #     |_: &wshub::ws::Client, _: wshub::Message| Ok(()));
/// let app: Router = Router::new().route("/ws", wshub::ws::axum::route(server));
/// # drop(app);
/// ```
///
/// Refusals are answered with a plain-text body: 403 (origin), 503 (connection limit or
/// shutdown), 400 (not a valid WebSocket upgrade), 426 (the HTTP connection cannot be
/// upgraded, e.g. it was not served by `axum::serve` or hyper `with_upgrades`); other
/// methods get axum's 405.
pub fn route<S>(server: Server) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move |req: Request| {
        let (mut parts, _body) = req.into_parts();
        let answer = match accept(&server, &mut parts) {
            Ok(upgrade) => upgrade.into_response(),
            Err(refusal) => refusal,
        };
        std::future::ready(answer)
    })
}

/// An extractor for a WebSocket upgrade that passed the [`Server`]'s checks and holds a
/// connection slot. Return it from the handler (it is [`IntoResponse`]): that answers
/// `101 Switching Protocols` and serves the connection on a task of its own. Dropping it
/// instead (returning another response) releases the slot.
///
/// The extraction fails with the refusal response (403, 503, 400 or 426, see [`route`]).
/// The [`Server`] comes from the router's state: `Router::with_state(server)`, or a state
/// struct with `impl FromRef<AppState> for Server`.
#[must_use = "return the upgrade from the handler: that answers 101 and serves the connection"]
pub struct WsUpgrade {
    server: Server,
    admission: Admission,
    switching: http::Response<()>,
    on_upgrade: OnUpgrade,
    info: ConnInfo,
}

impl std::fmt::Debug for WsUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsUpgrade")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl WsUpgrade {
    /// What the connection's [`Handler::on_connect`](super::Handler::on_connect) will see:
    /// the URI the client asked for, the request headers and, when known, the peer address.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl<S> FromRequestParts<S> for WsUpgrade
where
    Server: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        accept(&Server::from_ref(state), parts)
    }
}

impl IntoResponse for WsUpgrade {
    /// Spawns the task that waits for the upgraded connection and serves it, and returns
    /// the 101 response. Outside a tokio runtime, answers 500 and serves nothing.
    fn into_response(self) -> Response {
        let WsUpgrade {
            server,
            admission,
            switching,
            on_upgrade,
            info,
        } = self;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return refusal(&Refusal::NO_RUNTIME);
        };
        runtime.spawn(async move {
            let peer = info.peer;
            // Resolves once hyper has sent the 101; fails (and the admission frees the slot)
            // if the response was replaced on its way out or the client went away.
            match on_upgrade.await {
                Ok(upgraded) => {
                    if let Err(e) = server
                        .serve_upgraded(admission, TokioIo::new(upgraded), info)
                        .await
                    {
                        tracing::debug!(?peer, error = %e, "websocket not served");
                    }
                }
                Err(e) => tracing::debug!(?peer, error = %e, "upgrade failed"),
            }
        });
        switching.map(|()| Body::empty())
    }
}

/// Checks the upgrade with [`Server::upgrade_response_with`] (the path already routed) and
/// takes its slot and hyper's upgrade handle.
// The refusal is axum's rejection, a `Response` by value.
#[allow(clippy::result_large_err)]
fn accept(server: &Server, parts: &mut Parts) -> Result<WsUpgrade, Response> {
    // The shared check reads a request: lend it the parts (moved, not copied), then take
    // them back.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    // The URI the client asked for (before `nest` stripped a prefix): what `on_handshake` and
    // `on_connect` see. The path is not checked here, so lending it is harmless.
    let uri = match parts.extensions.get::<OriginalUri>() {
        Some(OriginalUri(uri)) => uri.clone(),
        None => parts.uri.clone(),
    };
    let routed = std::mem::replace(&mut parts.uri, uri.clone());
    let lent = std::mem::replace(parts, http::Request::new(()).into_parts().0);
    let req = http::Request::from_parts(lent, ());
    let answered = server.upgrade_response_with(&req, PathCheck::Routed, peer);
    *parts = req.into_parts().0;
    parts.uri = routed;
    let (switching, admission) = answered.map_err(|refused| refused.map(Body::from))?;
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        // `admission` is dropped here: the slot is released.
        return Err(refusal(&Refusal::NOT_UPGRADABLE));
    };
    Ok(WsUpgrade {
        server: server.clone(),
        admission,
        switching,
        on_upgrade,
        info: ConnInfo::new(peer, uri, parts.headers.clone()),
    })
}

fn refusal(refusal: &Refusal) -> Response {
    refusal
        .response()
        .map(|body| Body::from(body.unwrap_or_default()))
}
