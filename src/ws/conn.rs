//! The per-connection driver: one task that reads, writes, pings and closes.
//!
//! One task, not two: an idle connection then costs one task allocation, and reading and
//! writing share the tungstenite state without a lock. Each poll runs the timers, then reads
//! (bounded), then writes everything the mailbox holds and flushes once.
//!
//! Data frames do not go through tungstenite's writer: the mailbox hands each broadcast out
//! by reference and [`frame::encode`] appends it to this connection's own buffer (no
//! reference count touched per client, one syscall per batch, and the buffer is released when
//! a burst has been written). tungstenite still reads, and writes the control frames (pings,
//! pong replies, close). The two never interleave inside a frame: tungstenite is called only
//! while our buffer is fully written, and our buffer is filled only after tungstenite's
//! pending control frames are flushed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use super::config::Heartbeat;
use super::frame;
use super::{Client, Disconnect, Handler};
use crate::hub::{CloseReason, Mailbox};

/// Inbound messages handled per poll before yielding to other tasks.
const READ_BUDGET: usize = 64;
/// Outbound messages encoded per batch (one write), and per poll before yielding.
const BATCH: usize = 256;
const WRITE_BUDGET: usize = 1024;
/// How long to wait for the peer's close frame when no write timeout is set.
const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

enum Phase {
    Open,
    /// A close is under way. `frame` is still to be sent (None once sent or when the peer
    /// started the close and tungstenite replies itself).
    Closing {
        frame: Option<CloseFrame>,
        deadline: Instant,
    },
}

pub(crate) struct Driver<S> {
    ws: WebSocketStream<S>,
    client: Option<Client>,
    mailbox: Mailbox<Message>,
    handler: Arc<dyn Handler>,
    heartbeat: Heartbeat,
    /// Encoded data frames; `wbuf[wpos..]` is not written yet.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Capacity `wbuf` keeps between batches; a larger buffer (after a burst) is released.
    wbuf_spare: usize,
    /// Data was written to the stream and not flushed yet (matters for TLS streams).
    data_unflushed: bool,
    ping_due: bool,
    phase: Phase,
    /// False after a read error that leaves the stream mid-frame.
    can_read: bool,
    /// tungstenite holds control frames (pong reply, ping, close) to flush.
    needs_flush: bool,
    last_read: Instant,
    next_ping: Option<Instant>,
    /// When the oldest unfinished write started.
    blocked_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    result: Disconnect,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(
        ws: WebSocketStream<S>,
        client: Client,
        mailbox: Mailbox<Message>,
        handler: Arc<dyn Handler>,
        heartbeat: Heartbeat,
        wbuf_spare: usize,
    ) -> Self {
        let now = Instant::now();
        let next_ping = heartbeat.get_ping_interval().map(|i| now + i);
        let id = client.id();
        let mut driver = Driver {
            ws,
            client: Some(client),
            mailbox,
            handler,
            heartbeat,
            wbuf: Vec::new(),
            wpos: 0,
            wbuf_spare,
            data_unflushed: false,
            ping_due: false,
            phase: Phase::Open,
            can_read: true,
            needs_flush: false,
            last_read: now,
            next_ping,
            blocked_since: None,
            timer: Box::pin(tokio::time::sleep_until(now)),
            timer_at: now,
            result: Disconnect::new(id),
        };
        let first = driver
            .next_deadline()
            .unwrap_or(now + Duration::from_secs(3600));
        driver.timer.as_mut().reset(first);
        driver.timer_at = first;
        driver
    }

    /// Runs the connection to its end.
    pub(crate) async fn run(mut self) -> Disconnect {
        if let Some(client) = &self.client {
            tracing::debug!(client = %client.id(), "connection open");
        }
        let end = std::future::poll_fn(|cx| self.poll_once(cx)).await;
        self.finish(end)
    }

    fn finish(mut self, end: End) -> Disconnect {
        self.result.end = end;
        // Unregister now if a close did not already.
        self.client = None;
        let d = self.result.clone();
        tracing::debug!(client = %d.client, end = ?d.end, peer_code = ?d.peer_code,
            sent_code = ?d.sent_code, "connection closed");
        self.handler.on_disconnect(&d);
        d
    }

    fn poll_once(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let now = Instant::now();
        if let Some(end) = self.on_timers(now) {
            return Poll::Ready(end);
        }
        // Reading may make tungstenite write (pong replies): only between our frames.
        let read_polled = self.wbuf.is_empty();
        if read_polled {
            if let Some(end) = self.poll_read(cx) {
                return Poll::Ready(end);
            }
        }
        if let Some(end) = self.poll_write(cx, now) {
            return Poll::Ready(end);
        }
        if !read_polled && self.wbuf.is_empty() {
            // The read side was skipped while a frame was half written and nothing has
            // registered this task for inbound data since: poll again to read.
            cx.waker().wake_by_ref();
        }
        self.arm_timer(cx, now);
        Poll::Pending
    }

    fn next_deadline(&self) -> Option<Instant> {
        let hb = &self.heartbeat;
        let blocked = self
            .blocked_since
            .zip(hb.get_write_timeout())
            .map(|(t, d)| t + d);
        match &self.phase {
            Phase::Open => {
                let read = hb.get_read_timeout().map(|d| self.last_read + d);
                [read, self.next_ping, blocked].into_iter().flatten().min()
            }
            Phase::Closing { deadline, .. } => {
                Some(blocked.map_or(*deadline, |b| b.min(*deadline)))
            }
        }
    }

    fn on_timers(&mut self, now: Instant) -> Option<End> {
        if let Some(write_timeout) = self.heartbeat.get_write_timeout() {
            if self.blocked_since.is_some_and(|t| now >= t + write_timeout) {
                return Some(End::WriteTimeout);
            }
        }
        match &self.phase {
            Phase::Closing { deadline, .. } => (now >= *deadline).then_some(End::CloseTimeout),
            Phase::Open => {
                if let Some(read_timeout) = self.heartbeat.get_read_timeout() {
                    if now >= self.last_read + read_timeout {
                        self.result.timed_out = true;
                        self.start_close(now, CloseCode::Normal, "read timeout");
                        return None;
                    }
                }
                if let (Some(at), Some(interval)) =
                    (self.next_ping, self.heartbeat.get_ping_interval())
                {
                    if now >= at {
                        self.ping_due = true;
                        self.next_ping = Some(now + interval);
                    }
                }
                None
            }
        }
    }

    fn arm_timer(&mut self, cx: &mut Context<'_>, now: Instant) {
        let Some(next) = self.next_deadline() else {
            return;
        };
        // Deadlines that moved later (every read pushes the read deadline) are not re-armed
        // until the old one fires: one timer reset per period, not per message.
        if next != self.timer_at && (next < self.timer_at || self.timer_at <= now) {
            self.timer.as_mut().reset(next);
            self.timer_at = next;
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }

    /// Begins the closing handshake: unregister from the hub (no more broadcasts), send what
    /// is already taken from the mailbox, then `code`.
    fn start_close(&mut self, now: Instant, code: CloseCode, reason: &'static str) {
        if matches!(self.phase, Phase::Closing { .. }) {
            return;
        }
        self.client = None;
        self.result.sent_code = Some(code);
        let wait = self
            .heartbeat
            .get_write_timeout()
            .unwrap_or(DEFAULT_CLOSE_TIMEOUT);
        self.phase = Phase::Closing {
            frame: Some(CloseFrame {
                code,
                reason: reason.into(),
            }),
            deadline: now + wait.min(DEFAULT_CLOSE_TIMEOUT),
        };
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Option<End> {
        if !self.can_read {
            return None;
        }
        for _ in 0..READ_BUDGET {
            let msg = match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => return None,
                Poll::Ready(None) => return Some(End::Closed),
                Poll::Ready(Some(Ok(msg))) => msg,
                Poll::Ready(Some(Err(e))) => return self.on_read_error(e),
            };
            // Any inbound frame proves the peer alive.
            self.last_read = Instant::now();
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    let (Phase::Open, Some(client)) = (&self.phase, &self.client) else {
                        continue; // closing: data is discarded
                    };
                    if let Err(e) = self.handler.on_message(client, msg) {
                        tracing::warn!(client = %client.id(), error = %e, "handler failed");
                        self.start_close(Instant::now(), CloseCode::Error, "internal error");
                    }
                }
                // tungstenite queued the pong; it goes out with the next flush.
                Message::Ping(_) => self.needs_flush = true,
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    self.result.peer_code = frame.map(|f| f.code);
                    // tungstenite queued the reply (echoing the code); flush it, then the
                    // stream ends.
                    self.needs_flush = true;
                    if let Phase::Open = self.phase {
                        self.client = None;
                        self.phase = Phase::Closing {
                            frame: None,
                            deadline: Instant::now() + DEFAULT_CLOSE_TIMEOUT,
                        };
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        None
    }

    fn on_read_error(&mut self, e: WsError) -> Option<End> {
        let now = Instant::now();
        let (code, reason) = match &e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                (CloseCode::Size, "message too big")
            }
            WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
            WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                return Some(End::Reset);
            }
            WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
            WsError::ConnectionClosed | WsError::AlreadyClosed => return Some(End::Closed),
            _ => {
                tracing::debug!(error = %e, "read failed");
                return Some(End::Reset);
            }
        };
        tracing::debug!(error = %e, ?code, "closing after bad input");
        // The stream may be mid-frame: read nothing more, close with the code.
        self.can_read = false;
        self.start_close(now, code, reason);
        None
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant) -> Option<End> {
        let mut budget = WRITE_BUDGET;
        loop {
            // 1. Our encoded data frames.
            while self.wpos < self.wbuf.len() {
                match Pin::new(self.ws.get_mut()).poll_write(cx, &self.wbuf[self.wpos..]) {
                    Poll::Pending => {
                        self.blocked_since.get_or_insert(now);
                        return None;
                    }
                    Poll::Ready(Ok(0)) => return Some(End::Reset),
                    Poll::Ready(Ok(n)) => self.wpos += n,
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "write failed");
                        return Some(End::Reset);
                    }
                }
            }
            if !self.wbuf.is_empty() {
                self.wbuf.clear();
                self.wpos = 0;
                self.data_unflushed = true;
                if self.wbuf.capacity() > self.wbuf_spare {
                    self.wbuf = Vec::new();
                }
            }
            // 2. Control frames, through tungstenite, between our frames.
            if self.ping_due && matches!(self.phase, Phase::Open) {
                if let Some(end) = self.send_control(cx, now, Message::Ping(Default::default())) {
                    return end;
                }
                self.ping_due = false;
            }
            if let Phase::Closing { frame, .. } = &mut self.phase {
                if let Some(f) = frame.take() {
                    let close = Message::Close(Some(f.clone()));
                    if let Some(end) = self.send_control(cx, now, close) {
                        // Not sent yet: keep it for the next poll.
                        if let Phase::Closing { frame, .. } = &mut self.phase {
                            *frame = Some(f);
                        }
                        return end;
                    }
                }
            }
            if self.needs_flush {
                match Pin::new(&mut self.ws).poll_flush(cx) {
                    Poll::Pending => {
                        self.blocked_since.get_or_insert(now);
                        return None;
                    }
                    Poll::Ready(Err(e)) => return Some(write_end(e)),
                    Poll::Ready(Ok(())) => self.needs_flush = false,
                }
            }
            // 3. The next batch from the mailbox, while open.
            if !matches!(self.phase, Phase::Open) || budget == 0 {
                break;
            }
            let wbuf = &mut self.wbuf;
            let polled = self.mailbox.poll_recv_with(cx, BATCH.min(budget), |msg| {
                let encoded = frame::encode(msg, wbuf);
                if !encoded {
                    tracing::debug!("not sent: close and raw frames cannot be broadcast");
                }
                encoded
            });
            match polled {
                Poll::Ready(Ok(n)) => budget = budget.saturating_sub(n),
                Poll::Ready(Err(reason)) => {
                    let (code, text) = match reason {
                        CloseReason::Evicted => (CloseCode::Policy, "slow client evicted"),
                        CloseReason::Shutdown => (CloseCode::Away, "server shutting down"),
                        _ => (CloseCode::Normal, "closed by server"),
                    };
                    self.result.close_reason = Some(reason);
                    self.start_close(now, code, text);
                }
                Poll::Pending => break,
            }
            if self.wbuf.is_empty() && budget == 0 {
                break;
            }
        }
        if budget == 0 {
            cx.waker().wake_by_ref();
        }
        if self.data_unflushed {
            match Pin::new(self.ws.get_mut()).poll_flush(cx) {
                Poll::Pending => {
                    self.blocked_since.get_or_insert(now);
                    return None;
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "flush failed");
                    return Some(End::Reset);
                }
                Poll::Ready(Ok(())) => self.data_unflushed = false,
            }
        }
        self.blocked_since = None;
        // A close we sent is complete once flushed if we may not read the peer's reply.
        if !self.can_read && matches!(self.phase, Phase::Closing { frame: None, .. }) {
            return Some(End::Closed);
        }
        None
    }

    /// Queues a control frame in tungstenite. `Some(result)` means: stop here and return
    /// `result` from `poll_write` (pending on a full socket, or the connection ended).
    #[allow(clippy::option_option)]
    fn send_control(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        msg: Message,
    ) -> Option<Option<End>> {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Pending => {
                self.blocked_since.get_or_insert(now);
                return Some(None);
            }
            Poll::Ready(Err(e)) => return Some(Some(write_end(e))),
            Poll::Ready(Ok(())) => {}
        }
        if let Err(e) = Pin::new(&mut self.ws).start_send(msg) {
            return Some(Some(write_end(e)));
        }
        self.needs_flush = true;
        None
    }
}

fn write_end(e: WsError) -> End {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::Closed,
        e => {
            tracing::debug!(error = %e, "write failed");
            End::Reset
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum End {
    /// The closing handshake completed (or the peer closed the stream after it).
    Closed,
    /// The stream failed or was cut without a closing handshake.
    Reset,
    /// A write stayed blocked longer than the write timeout; the connection was dropped.
    WriteTimeout,
    /// The peer did not answer our close frame in time; the connection was dropped.
    CloseTimeout,
}

impl Disconnect {
    fn new(client: crate::hub::ClientId) -> Self {
        Disconnect {
            client,
            end: End::Closed,
            sent_code: None,
            peer_code: None,
            close_reason: None,
            timed_out: false,
        }
    }
}
