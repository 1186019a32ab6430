//! Accepting connections: the TCP accept loop, the handshake with its checks, the connection
//! limit and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};
use tungstenite::Message;

use super::config::Config;
use super::conn::{ControlQueue, Driver};
use super::handshake::{self, PathCheck, Refusal};
use super::HandshakeRequest;
use super::{ConnInfo, Disconnect, Handler};
use crate::error::{Error, Result};
use crate::hub::{ClientData, Hub};

struct Inner {
    hub: Hub<Message>,
    config: Config,
    handler: Arc<dyn Handler>,
    /// Connections handshaking or open.
    active: AtomicUsize,
    drained: Notify,
    stopping: AtomicBool,
    stop_tx: watch::Sender<bool>,
}

/// Serves WebSocket connections into a [`Hub<Message>`](crate::Hub).
///
/// Cheap to clone; clones share the connection count and the shutdown state. Use
/// [`Server::serve`] for a plain TCP listener, [`Server::serve_connection`] for any stream you
/// accepted yourself (TLS, a Unix socket), or [`Server::upgrade_response`] and
/// [`Server::serve_upgraded`] behind an HTTP server such as hyper. On axum, the `axum`
/// feature's `ws::axum::route` and `ws::axum::WsUpgrade` do both steps for you.
///
/// The connection limit ([`Config::max_connections`]) counts every connection from the moment
/// it is admitted (before its handshake is answered) until it ends.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.inner.config)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

/// Counts one connection for as long as it lives.
struct ActiveGuard(Arc<Inner>);

/// A connection slot, taken by [`Server::upgrade_response`] before it answers
/// `101 Switching Protocols`, and handed to [`Server::serve_upgraded`] with the upgraded
/// stream.
///
/// It counts as a connection (toward [`Config::max_connections`], in
/// [`Server::connection_count`], and for [`Server::shutdown`], which waits for it) until the
/// connection it was taken for ends. Dropping it without serving (say, the HTTP upgrade
/// failed) frees the slot.
#[must_use = "dropping the admission frees the connection slot: pass it to `Server::serve_upgraded`"]
pub struct Admission {
    guard: ActiveGuard,
    /// What [`Handler::on_handshake`] accepted the connection with.
    data: Option<ClientData>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Binds a TCP listener for [`Server::serve`] with a listen backlog of 1024.
///
/// `TcpListener::bind` uses a backlog of 128: when more clients than that connect at once (a
/// reconnect storm after a restart), the kernel drops the excess SYNs and those clients wait a
/// second or more for their retry. Also sets `SO_REUSEADDR`, so a restarted server can bind
/// while old connections linger in `TIME_WAIT`.
///
/// # Errors
///
/// The address does not resolve, or no resolved address could be bound.
pub async fn listen(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        let bound = socket
            .set_reuseaddr(true)
            .and_then(|()| socket.bind(addr))
            .and_then(|()| socket.listen(LISTEN_BACKLOG));
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "address resolved to nothing",
        )
    }))
}

/// Pending connections the kernel queues for [`listen`].
const LISTEN_BACKLOG: u32 = 1024;

/// What [`Server::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections still open when the grace period ended (0 for a clean shutdown).
    pub remaining: usize,
    /// Messages discarded because the grace period ended before they were written.
    pub discarded: usize,
}

impl Server {
    /// A server for `hub`, with `config`, handing every inbound message to `handler`.
    pub fn new(hub: Hub<Message>, config: Config, handler: impl Handler) -> Self {
        let (stop_tx, _) = watch::channel(false);
        Server {
            inner: Arc::new(Inner {
                hub,
                config,
                handler: Arc::new(handler),
                active: AtomicUsize::new(0),
                drained: Notify::new(),
                stopping: AtomicBool::new(false),
                stop_tx,
            }),
        }
    }

    /// The hub connections are registered in.
    pub fn hub(&self) -> &Hub<Message> {
        &self.inner.hub
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Connections handshaking or open right now, counting every unserved [`Admission`].
    pub fn connection_count(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Accepts TCP connections until [`Server::shutdown`] is called, serving each on its own
    /// task. Accept errors (such as running out of file descriptors) are logged and retried
    /// after a short pause.
    ///
    /// # Errors
    ///
    /// None at present; the `Result` leaves room for listener failures that cannot be retried.
    pub async fn serve(&self, listener: TcpListener) -> Result<()> {
        let stopping = self.stopping();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = &mut stopping => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let server = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = server.serve_connection(stream, Some(peer)).await {
                                tracing::debug!(%peer, error = %e, "connection not served");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Resolves once [`Server::shutdown`] has begun: the signal for an accept loop of your own
    /// (behind hyper or axum) to stop accepting.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stopping(&self) {
        let mut stop = self.inner.stop_tx.subscribe();
        // `wait_for` checks the current value first, so a shutdown that already began counts.
        let _ = stop.wait_for(|stopping| *stopping).await;
    }

    /// Takes a connection slot, or refuses.
    fn admit(&self) -> Result<ActiveGuard, Refusal> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(Refusal::SHUTTING_DOWN);
        }
        let max = self.inner.config.get_max_connections();
        let prev = self.inner.active.fetch_add(1, Ordering::AcqRel);
        let guard = ActiveGuard(self.inner.clone());
        if prev >= max {
            return Err(Refusal::TOO_MANY);
        }
        Ok(guard)
    }

    /// Performs the WebSocket handshake on `stream` (checking path, origin, the connection
    /// limit and the handshake timeout), then serves the connection until it ends.
    ///
    /// For `wss://`, complete the TLS handshake first (with a deadline of its own) and pass the
    /// TLS stream, such as a `tokio_rustls::server::TlsStream`: see the crate documentation's
    /// "Serving wss://" and `examples/wss_chat`. The connection counts toward the limit from
    /// this call on.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] when the request was answered with an HTTP error (404, 403, 503),
    /// [`Error::HandshakeTimeout`], or [`Error::WebSocket`] for a malformed handshake.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the connection without a close frame and unregisters the
    /// client.
    // tungstenite's handshake callback returns its (large) `ErrorResponse` by value.
    #[allow(clippy::result_large_err)]
    pub async fn serve_connection<S>(
        &self,
        stream: S,
        peer: Option<SocketAddr>,
    ) -> Result<Disconnect>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let admitted = self.admit();
        let mut info = None;
        let mut data = None;
        let mut refused = None;
        let config = &self.inner.config;
        let handler = &self.inner.handler;
        let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let checked = admitted
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|_| handshake::check_request(config, req.uri(), req.headers()))
                .and_then(|()| {
                    let view = HandshakeRequest::new(peer, req.uri(), req.headers());
                    handler.on_handshake(&view).map_err(Refusal::from)
                });
            match checked {
                Ok(accepted) => {
                    data = accepted.data;
                    info = Some(ConnInfo {
                        peer,
                        uri: req.uri().clone(),
                        headers: req.headers().clone(),
                    });
                    Ok(resp)
                }
                Err(refusal) => {
                    let response = refusal.response();
                    refused = Some(refusal);
                    Err(response)
                }
            }
        };
        let handshake = tokio_tungstenite::accept_hdr_async_with_config(
            ControlQueue::new(stream),
            callback,
            Some(config.websocket_config()),
        );
        // Boxed: the handshake's state is large and short-lived; inline, this future (held for
        // the connection's whole life) would keep room for it.
        let handshake = Box::pin(handshake);
        let ws = match tokio::time::timeout(config.get_handshake_timeout(), handshake).await {
            Err(_) => return Err(Error::HandshakeTimeout),
            Ok(Err(e)) => {
                return Err(match refused {
                    Some(r) => {
                        tracing::debug!(?peer, status = %r.status, reason = %r.reason, "upgrade refused");
                        Error::Refused {
                            status: r.status.as_u16(),
                            reason: r.reason.to_string(),
                        }
                    }
                    None => e.into(),
                })
            }
            Ok(Ok(ws)) => ws,
        };
        let (Ok(guard), Some(info)) = (admitted, info) else {
            return Err(Error::Shutdown); // unreachable: the callback refused
        };
        self.drive(ws, info, guard, data).await
    }

    /// Checks an upgrade request that reached your HTTP server and takes a connection slot
    /// for it: returns the `101 Switching Protocols` response to send and the [`Admission`]
    /// that holds the slot, or the refusal (503 at the connection limit or during shutdown,
    /// 404, 403, 400 for a request that is not a valid WebSocket upgrade, or what
    /// [`Handler::on_handshake`] rejected it with) with a plain-text body. After sending the
    /// 101, hand the upgraded connection and the admission to [`Server::serve_upgraded`].
    ///
    /// `on_handshake` sees no peer address here; use [`Server::upgrade_response_from`] to
    /// give it one.
    ///
    /// The slot is taken before the 101 is built, so a connection that was told 101 is never
    /// turned away at the limit afterwards.
    ///
    /// See `examples/chat/app.rs` for a complete hyper server.
    ///
    /// # Errors
    ///
    /// The refusal response, ready to send.
    #[allow(clippy::result_large_err)]
    pub fn upgrade_response<B>(
        &self,
        req: &http::Request<B>,
    ) -> std::result::Result<(http::Response<()>, Admission), http::Response<String>> {
        self.upgrade_response_with(req, PathCheck::Config, None)
    }

    /// [`Server::upgrade_response`] for a request from `peer`, which
    /// [`Handler::on_handshake`] then sees in [`HandshakeRequest::peer`].
    ///
    /// # Errors
    ///
    /// The refusal response, ready to send.
    #[allow(clippy::result_large_err)]
    pub fn upgrade_response_from<B>(
        &self,
        req: &http::Request<B>,
        peer: Option<SocketAddr>,
    ) -> std::result::Result<(http::Response<()>, Admission), http::Response<String>> {
        self.upgrade_response_with(req, PathCheck::Config, peer)
    }

    /// [`Server::upgrade_response`], with the path check on or off: the one place an upgrade
    /// that reached an HTTP server is checked, admitted and answered (`ws::axum` routes its
    /// upgrades here with [`PathCheck::Routed`]).
    #[allow(clippy::result_large_err)]
    pub(crate) fn upgrade_response_with<B>(
        &self,
        req: &http::Request<B>,
        path: PathCheck,
        peer: Option<SocketAddr>,
    ) -> std::result::Result<(http::Response<()>, Admission), http::Response<String>> {
        let refuse = |r: Refusal| r.response().map(Option::unwrap_or_default);
        let guard = self.admit().map_err(refuse)?;
        let switching =
            handshake::upgrade_response(&self.inner.config, req, path).map_err(refuse)?;
        let view = HandshakeRequest::new(peer, req.uri(), req.headers());
        let accepted = self
            .inner
            .handler
            .on_handshake(&view)
            .map_err(|r| refuse(r.into()))?;
        Ok((
            switching,
            Admission {
                guard,
                data: accepted.data,
            },
        ))
    }

    /// Serves a connection whose HTTP upgrade already happened (the 101 from
    /// [`Server::upgrade_response`] was sent), such as hyper's `Upgraded` wrapped in
    /// `hyper_util::rt::TokioIo`, in the slot `admission` holds.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] if the server shut down since the admission: the connection is
    /// closed with 1001 (going away). [`Error::Refused`] (500) if `admission` was taken by
    /// another `Server` (a bug in the caller); the stream is dropped.
    pub async fn serve_upgraded<S>(
        &self,
        admission: Admission,
        stream: S,
        info: ConnInfo,
    ) -> Result<Disconnect>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !Arc::ptr_eq(&admission.guard.0, &self.inner) {
            return Err(Error::Refused {
                status: 500,
                reason: "the admission belongs to another server".to_string(),
            });
        }
        let ws = WebSocketStream::from_raw_socket(
            ControlQueue::new(stream),
            Role::Server,
            Some(self.inner.config.websocket_config()),
        )
        .await;
        self.drive(ws, info, admission.guard, admission.data).await
    }

    /// Registers the connection and returns the future that runs it to its end. Built before
    /// anything is awaited, so the connection's task holds the driver once (an `async fn`
    /// would also keep its arguments and a moved-from copy of the driver: 2 KB more per
    /// connection, measured).
    fn drive<S>(
        &self,
        ws: WebSocketStream<ControlQueue<S>>,
        info: ConnInfo,
        guard: ActiveGuard,
        data: Option<ClientData>,
    ) -> Serving<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.inner.hub.register_data(data) {
            Ok((client, mailbox)) => {
                self.inner.handler.on_connect(&client, &info);
                let driver = Driver::new(
                    ws,
                    client,
                    mailbox,
                    self.inner.handler.clone(),
                    self.inner.config.get_heartbeat(),
                    self.inner.config.get_write_buffer_size(),
                );
                Serving::Open {
                    driver,
                    _guard: guard,
                }
            }
            // Shut down between handshake and registration: say goodbye properly.
            Err(e) => Serving::Refused {
                ws: Box::new(ws),
                close_sent: false,
                error: Some(e),
                _guard: guard,
            },
        }
    }

    /// Shuts down gracefully: stops accepting, lets every connection write what its mailbox
    /// already holds and close with 1001 (going away), and waits up to `grace` for them.
    /// Connections still open after `grace` have their queues discarded (counted as dropped).
    /// An [`Admission`] not yet served counts as an open connection until it is served (and
    /// then closes with 1001) or dropped.
    ///
    /// # Cancel safety
    ///
    /// Shutdown starts when this is first polled and continues if the future is dropped; only
    /// the waiting (and the discard after `grace`) is cancelled.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.stop_tx.send_replace(true);
        self.inner.hub.shutdown();
        let drained = self.wait_drained();
        if tokio::time::timeout(grace, drained).await.is_ok() {
            return ShutdownReport {
                remaining: 0,
                discarded: 0,
            };
        }
        let discarded = self.inner.hub.abort();
        // Connections whose queues were just discarded close at once; give them a moment.
        let _ = tokio::time::timeout(Duration::from_millis(100), self.wait_drained()).await;
        ShutdownReport {
            remaining: self.connection_count(),
            discarded,
        }
    }

    async fn wait_drained(&self) {
        crate::util::wait_until(&self.inner.drained, || self.connection_count() == 0).await;
    }
}

/// One connection from registration to its end: the future [`Server::drive`] returns.
// The large variant is the one that lives: boxing it would add an allocation per connection.
#[allow(clippy::large_enum_variant)]
enum Serving<S> {
    /// Registered: the driver runs it.
    Open {
        driver: Driver<S>,
        _guard: ActiveGuard,
    },
    /// The hub refused it (shut down): a close with 1001, then the error.
    Refused {
        ws: Box<WebSocketStream<ControlQueue<S>>>,
        close_sent: bool,
        error: Option<Error>,
        _guard: ActiveGuard,
    },
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Serving<S> {
    type Output = Result<Disconnect>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Serving::Open { driver, .. } => Pin::new(driver).poll(cx).map(Ok),
            Serving::Refused {
                ws,
                close_sent,
                error,
                ..
            } => {
                // A failed goodbye changes nothing: the connection is refused either way.
                if !*close_sent {
                    if let Ok(()) = ready!(Pin::new(&mut **ws).poll_ready(cx)) {
                        let _ = Pin::new(&mut **ws).start_send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Away,
                            reason: "server shutting down".into(),
                        })));
                    }
                    *close_sent = true;
                }
                let _ = ready!(Pin::new(&mut **ws).poll_close(cx));
                Poll::Ready(Err(error.take().unwrap_or(Error::Shutdown)))
            }
        }
    }
}
