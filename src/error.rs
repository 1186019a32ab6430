//! The crate's error type.

use crate::hub::ClientId;

/// Everything that can go wrong in `wshub`.
///
/// Each variant says what the caller can do next. None of them is a reason to panic: a
/// misbehaving peer costs its own connection and nothing else.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The hub is shut down: it accepts no new clients and no new messages. Stop publishing.
    #[error("the hub is shut down")]
    Shutdown,
    /// No client with this id is registered (it left, or was evicted). Safe to ignore.
    #[error("no client {0} is registered")]
    NoSuchClient(ClientId),
    /// The client's mailbox is full and the hub's policy is
    /// [`OverflowPolicy::DropNewest`](crate::OverflowPolicy::DropNewest): this message was
    /// dropped (and counted). The client stays connected.
    #[error("mailbox of client {0} is full: message dropped")]
    MailboxFull(ClientId),
    /// The client's mailbox was full under
    /// [`OverflowPolicy::Disconnect`](crate::OverflowPolicy::Disconnect): the client has been
    /// evicted and its connection is being closed. Nothing more can be sent to it.
    #[error("client {0} was evicted: its mailbox was full")]
    Evicted(ClientId),
    /// The client's mailbox is closed (its connection ended or it was unregistered).
    #[error("client {0} is closed")]
    ClientClosed(ClientId),
    /// The peer did not complete the WebSocket handshake within the configured timeout; the
    /// connection was dropped.
    #[error("WebSocket handshake timed out")]
    HandshakeTimeout,
    /// The upgrade request was refused with this HTTP status (wrong path 404, foreign origin
    /// 403, connection limit or shutdown 503). The peer got the status and a readable body.
    #[error("upgrade refused with HTTP {status}: {reason}")]
    Refused {
        /// The HTTP status sent to the peer.
        status: u16,
        /// Why, as sent in the response body.
        reason: String,
    },
    /// A WebSocket protocol error from tungstenite. The connection is unusable: drop it.
    #[error("WebSocket error: {0}")]
    WebSocket(#[source] Box<tungstenite::Error>),
    /// The backplane could not be set up (e.g. an invalid Redis URL).
    #[error("backplane: {0}")]
    Backplane(String),
    /// The metrics settings could not be applied: they were already fixed (see
    /// `metrics::MetricsConfig::install`, feature `metrics`). The earlier settings stay.
    #[cfg(feature = "metrics")]
    #[error("metrics: {0}")]
    Metrics(&'static str),
    /// An I/O error on the underlying stream. The connection is unusable: drop it.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        Error::WebSocket(Box::new(e))
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A message [`ClientHandle::send`](crate::ClientHandle::send) or
/// [`Hub::send_to`](crate::Hub::send_to) could not queue, given back with the reason (as
/// tokio's `mpsc::error::TrySendError<T>`): retry it elsewhere, log it, or drop it.
///
/// Why one error type with the message beside it, rather than an error enum per operation:
/// the reasons a send fails are the crate's [`Error`] variants (each says what to do next),
/// and only sending has a value to give back. So `SendError` pairs the two, and `?` still
/// turns it into an [`Error`] (the message is dropped then).
#[derive(thiserror::Error)]
#[error("{reason}")]
pub struct SendError<M> {
    reason: Error,
    msg: M,
}

impl<M> SendError<M> {
    pub(crate) fn new(reason: Error, msg: M) -> Self {
        SendError { reason, msg }
    }

    /// Why the message was not queued: [`Error::MailboxFull`] (counted as dropped under
    /// `DropNewest`), [`Error::Evicted`] (the client was evicted under `Disconnect`),
    /// [`Error::ClientClosed`], [`Error::NoSuchClient`] or [`Error::Shutdown`].
    pub fn reason(&self) -> &Error {
        &self.reason
    }

    /// The message that was not queued.
    pub fn into_inner(self) -> M {
        self.msg
    }

    /// The reason and the message.
    pub fn into_parts(self) -> (Error, M) {
        (self.reason, self.msg)
    }
}

/// Shows the reason only, so any message type can be sent.
impl<M> std::fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendError")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl<M> From<SendError<M>> for Error {
    fn from(e: SendError<M>) -> Error {
        e.reason
    }
}
