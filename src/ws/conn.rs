//! The per-connection driver: one task that reads, writes, pings and closes.
//!
//! One task, not two: an idle connection then costs one task allocation, and reading and
//! writing share the tungstenite state without a lock. Each poll runs the timers, reads
//! (bounded), then writes everything the mailbox holds and flushes once.
//!
//! Reading and writing are independent: tungstenite never writes to the socket. Everything it
//! writes (pong replies, our pings, close frames) lands in a small bounded control queue
//! ([`ControlQueue`]) in front of the stream, and the driver moves those bytes onto the wire
//! only between its own frames. So reading goes on while a write is blocked (inbound
//! messages, pongs, the peer's close are all seen), and no frame can be split by another: by
//! construction, not by care at each call site.
//!
//! Data frames do not go through tungstenite's writer: the mailbox hands each broadcast out
//! by reference and [`frame::encode`] copies it into this connection's write buffer (the
//! payload is copied once per connection into that buffer; no reference count is touched per
//! client, one syscall per batch, and a buffer that grew during a burst is released once
//! written).
//!
//! The write timeout is a progress timeout: it fires when no byte could be written for that
//! long, so a client that reads steadily, however slowly, is never cut off by it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
/// Bytes of control frames tungstenite may queue while our own frames are being written.
/// tungstenite keeps only the latest pong reply when it cannot write, so a ping flood from a
/// peer that does not read costs at most this much.
const CONTROL_LIMIT: usize = 4 * 1024;

/// The stream as tungstenite sees it: reads go straight to the socket; once the connection
/// is open, writes go into a bounded queue that the driver puts on the wire between its own
/// frames (see the module docs). During the handshake, writes pass through.
#[derive(Debug)]
pub(crate) struct ControlQueue<S> {
    stream: S,
    queued: Vec<u8>,
    queueing: bool,
}

impl<S> ControlQueue<S> {
    /// Wraps `stream`, passing writes through until the driver takes over.
    pub(crate) fn new(stream: S) -> Self {
        ControlQueue {
            stream,
            queued: Vec::new(),
            queueing: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ControlQueue<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ControlQueue<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.queueing {
            return Pin::new(&mut self.stream).poll_write(cx, buf);
        }
        // All or nothing, so the queue holds whole frames. Full: tungstenite keeps the frame
        // and retries when the driver flushes it after draining the queue (no waker needed:
        // the driver is the only one who drains it, in the same task).
        if !self.queued.is_empty() && self.queued.len() + buf.len() > CONTROL_LIMIT {
            return Poll::Pending;
        }
        self.queued.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.queueing {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

enum Phase {
    Open,
    /// A close is under way. `frame` is still to be sent (None once sent or when the peer
    /// started the close and tungstenite replies itself).
    Closing {
        frame: Option<CloseFrame>,
        deadline: Instant,
    },
}

/// What writing the buffered bytes came to.
enum Written {
    /// Everything is on the wire.
    Done,
    /// The socket is full; the task will be woken when it drains.
    Blocked,
    /// The connection is gone.
    Failed(End),
}

pub(crate) struct Driver<S> {
    ws: WebSocketStream<ControlQueue<S>>,
    client: Option<Client>,
    mailbox: Mailbox<Message>,
    handler: Arc<dyn Handler>,
    heartbeat: Heartbeat,
    /// Bytes for the wire, whole frames only; `wbuf[wpos..]` is not written yet.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Capacity `wbuf` keeps between batches; a larger buffer (after a burst) is released.
    wbuf_spare: usize,
    /// Data was written to the stream and not flushed yet (matters for TLS streams).
    data_unflushed: bool,
    ping_due: bool,
    phase: Phase,
    /// False after a read error that leaves the stream mid-frame, or once the stream ended.
    can_read: bool,
    /// tungstenite may hold control frames (pong reply, ping, close) to flush.
    needs_flush: bool,
    /// The WebSocket is over (closing handshake done, or tungstenite closed): once what is
    /// buffered is written, the connection ends this way.
    finished: Option<End>,
    last_read: Instant,
    next_ping: Option<Instant>,
    /// Since when no write could make progress.
    blocked_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    result: Disconnect,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::ConnMetrics,
}

/// `t + d`, or None when that is beyond what `Instant` can hold (a deadline that never comes).
fn deadline(t: Instant, d: Duration) -> Option<Instant> {
    t.checked_add(d)
}

/// The driver is the connection's future, and nothing more: a task serving a connection holds
/// this struct and no copy of it (an `async fn` wrapper would keep a second one).
impl<S: AsyncRead + AsyncWrite + Unpin> Future for Driver<S> {
    type Output = Disconnect;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Disconnect> {
        let this = self.get_mut();
        let end = std::task::ready!(this.poll_once(cx));
        Poll::Ready(this.finish(end))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(
        mut ws: WebSocketStream<ControlQueue<S>>,
        client: Client,
        mailbox: Mailbox<Message>,
        handler: Arc<dyn Handler>,
        heartbeat: Heartbeat,
        wbuf_spare: usize,
    ) -> Self {
        ws.get_mut().queueing = true;
        let now = Instant::now();
        let next_ping = heartbeat.get_ping_interval().and_then(|i| deadline(now, i));
        let id = client.id();
        #[cfg(feature = "metrics")]
        let metrics = crate::metrics::ConnMetrics::open(client.hub());
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
            finished: None,
            last_read: now,
            next_ping,
            blocked_since: None,
            timer: Box::pin(tokio::time::sleep_until(now)),
            timer_at: now,
            result: Disconnect::new(id),
            #[cfg(feature = "metrics")]
            metrics,
        };
        let first = driver
            .next_deadline()
            .unwrap_or(now + Duration::from_secs(3600));
        driver.timer.as_mut().reset(first);
        driver.timer_at = first;
        tracing::debug!(client = %id, "connection open");
        driver
    }

    /// Ends the connection: unregisters the client (if a close did not already) and tells the
    /// handler.
    fn finish(&mut self, end: End) -> Disconnect {
        self.result.end = end;
        self.client = None;
        let d = self.result.clone();
        #[cfg(feature = "metrics")]
        self.metrics.closed(&d);
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
        // Reading never writes to the socket, so it goes on whatever the write side is doing.
        if let Some(end) = self.poll_read(cx) {
            return Poll::Ready(end);
        }
        if let Some(end) = self.poll_write(cx, now) {
            return Poll::Ready(end);
        }
        self.arm_timer(cx, now);
        Poll::Pending
    }

    fn next_deadline(&self) -> Option<Instant> {
        let hb = &self.heartbeat;
        let blocked = self
            .blocked_since
            .zip(hb.get_write_timeout())
            .and_then(|(t, d)| deadline(t, d));
        match &self.phase {
            Phase::Open => {
                let read = hb
                    .get_read_timeout()
                    .and_then(|d| deadline(self.last_read, d));
                [read, self.next_ping, blocked].into_iter().flatten().min()
            }
            Phase::Closing { deadline, .. } => {
                Some(blocked.map_or(*deadline, |b| b.min(*deadline)))
            }
        }
    }

    fn on_timers(&mut self, now: Instant) -> Option<End> {
        let write_deadline = self
            .blocked_since
            .zip(self.heartbeat.get_write_timeout())
            .and_then(|(t, d)| deadline(t, d));
        if write_deadline.is_some_and(|at| now >= at) {
            return Some(End::WriteTimeout);
        }
        match &self.phase {
            Phase::Closing { deadline, .. } => (now >= *deadline).then_some(End::CloseTimeout),
            Phase::Open => {
                let read_deadline = self
                    .heartbeat
                    .get_read_timeout()
                    .and_then(|d| deadline(self.last_read, d));
                if read_deadline.is_some_and(|at| now >= at) {
                    self.result.timed_out = true;
                    self.start_close(now, CloseCode::Normal, "read timeout");
                    return None;
                }
                if let (Some(at), Some(interval)) =
                    (self.next_ping, self.heartbeat.get_ping_interval())
                {
                    if now >= at {
                        self.ping_due = true;
                        self.next_ping = deadline(now, interval);
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
                Poll::Ready(None) => {
                    // The closing handshake is over: write what is queued (our close reply),
                    // then end.
                    self.can_read = false;
                    self.finished.get_or_insert(End::Closed);
                    return None;
                }
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
                // tungstenite queued the pong; it reaches the control queue at the next flush.
                Message::Ping(_) => self.needs_flush = true,
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    self.result.peer_code = frame.map(|f| f.code);
                    // tungstenite queued the reply (echoing the code); flush it, then the
                    // stream ends.
                    self.needs_flush = true;
                    if let Phase::Open = self.phase {
                        // What was queued before the peer's close (such as the replies to
                        // its last messages) goes out before our close reply.
                        while let Poll::Ready(Ok(_)) = self.encode_batch(cx, BATCH) {}
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
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                self.can_read = false;
                self.finished.get_or_insert(End::Closed);
                return None;
            }
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

    /// Writes `wbuf[wpos..]` to the socket. Any progress restarts the write timeout.
    fn write_buffered(&mut self, cx: &mut Context<'_>, now: Instant) -> Written {
        while self.wpos < self.wbuf.len() {
            let socket = &mut self.ws.get_mut().stream;
            match Pin::new(socket).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Pending => {
                    self.blocked_since.get_or_insert(now);
                    return Written::Blocked;
                }
                Poll::Ready(Ok(0)) => return Written::Failed(End::Reset),
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    self.blocked_since = None;
                    #[cfg(feature = "metrics")]
                    self.metrics.written(n);
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "write failed");
                    return Written::Failed(End::Reset);
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
        Written::Done
    }

    /// Control frames from tungstenite: ours (ping, close) handed to it, and whatever it has
    /// queued (pong replies, the close reply) flushed into the control queue. Returns an end
    /// when tungstenite reports the connection over.
    fn pump_control(&mut self, cx: &mut Context<'_>) -> Option<End> {
        if self.finished.is_some() {
            return None; // tungstenite is done; only our buffers are left to write
        }
        if self.ping_due && matches!(self.phase, Phase::Open) {
            match self.send_control(cx, Message::Ping(Default::default())) {
                Ok(true) => self.ping_due = false,
                Ok(false) => return None,
                Err(end) => return self.tungstenite_ended(end),
            }
        }
        if let Phase::Closing { frame, .. } = &mut self.phase {
            if let Some(f) = frame.take() {
                match self.send_control(cx, Message::Close(Some(f.clone()))) {
                    Ok(true) => {}
                    Ok(false) => {
                        // Not taken yet: keep it for the next round.
                        if let Phase::Closing { frame, .. } = &mut self.phase {
                            *frame = Some(f);
                        }
                        return None;
                    }
                    Err(end) => return self.tungstenite_ended(end),
                }
            }
        }
        if self.needs_flush {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                // The control queue is full: it is drained before the next round.
                Poll::Pending => {}
                Poll::Ready(Err(e)) => return self.tungstenite_ended(write_end(e)),
                Poll::Ready(Ok(())) => self.needs_flush = false,
            }
        }
        None
    }

    /// tungstenite will write no more: end once our buffers are on the wire (`Closed`), or
    /// at once (`Reset`).
    fn tungstenite_ended(&mut self, end: End) -> Option<End> {
        match end {
            End::Closed => {
                self.finished.get_or_insert(End::Closed);
                None
            }
            end => Some(end),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant) -> Option<End> {
        let mut budget = WRITE_BUDGET;
        loop {
            // 1. Whole frames already in the buffer go out first.
            match self.write_buffered(cx, now) {
                Written::Done => {}
                Written::Blocked => return None,
                Written::Failed(end) => return Some(end),
            }
            // 2. Control frames go next, between our frames.
            if let Some(end) = self.pump_control(cx) {
                return Some(end);
            }
            let queued = &mut self.ws.get_mut().queued;
            if !queued.is_empty() {
                self.wbuf.extend_from_slice(queued);
                *queued = Vec::new();
                continue;
            }
            if let Some(end) = self.finished {
                return self.flush_socket(cx, now).or(Some(end));
            }
            // 3. The next batch from the mailbox, while open.
            if !matches!(self.phase, Phase::Open) || budget == 0 {
                break;
            }
            match self.encode_batch(cx, BATCH.min(budget)) {
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
        if let Some(end) = self.flush_socket(cx, now) {
            return Some(end);
        }
        // A close we sent is complete once flushed if we may not read the peer's reply.
        if !self.can_read
            && !self.data_unflushed
            && matches!(self.phase, Phase::Closing { frame: None, .. })
            && !self.needs_flush
        {
            return Some(End::Closed);
        }
        None
    }

    /// Encodes up to `max` messages from the mailbox into the write buffer.
    fn encode_batch(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<usize, CloseReason>> {
        let wbuf = &mut self.wbuf;
        self.mailbox.poll_recv_with(cx, max, |msg| {
            let encoded = frame::encode(msg, wbuf);
            if !encoded {
                tracing::debug!("not sent: close and raw frames cannot be broadcast");
            }
            encoded
        })
    }

    /// Flushes the socket if data was written since the last flush. `Some` only when the
    /// connection failed.
    fn flush_socket(&mut self, cx: &mut Context<'_>, now: Instant) -> Option<End> {
        if !self.data_unflushed {
            return None;
        }
        match Pin::new(&mut self.ws.get_mut().stream).poll_flush(cx) {
            Poll::Pending => {
                self.blocked_since.get_or_insert(now);
                None
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "flush failed");
                Some(End::Reset)
            }
            Poll::Ready(Ok(())) => {
                self.data_unflushed = false;
                self.blocked_since = None;
                None
            }
        }
    }

    /// Hands a control frame to tungstenite, which writes it into the control queue.
    /// `Ok(false)`: not taken yet (the queue is full); `Err`: the connection ended.
    fn send_control(&mut self, cx: &mut Context<'_>, msg: Message) -> Result<bool, End> {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Pending => return Ok(false),
            Poll::Ready(Err(e)) => return Err(write_end(e)),
            Poll::Ready(Ok(())) => {}
        }
        Pin::new(&mut self.ws).start_send(msg).map_err(write_end)?;
        self.needs_flush = true;
        Ok(true)
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
