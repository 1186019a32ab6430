//! One client's view of the hub: its cursor into the shared log, its private queue for direct
//! sends, and the receiving end ([`Mailbox`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::engine::{Counters, Inner, State};
use super::rooms::Memberships;
use super::wait::{Parkable, NOT_PARKED};
use super::ClientId;
use crate::sync::{lock, AtomicBool, AtomicU64, AtomicUsize, Mutex};

/// The cursor of a client that no longer reads the log (unregistered, evicted, shut down).
pub(crate) const DETACHED: u64 = u64::MAX;

/// Orders messages for one client: broadcast `seq` is `(seq, 1)`; a direct send made while the
/// log head was `h` is `(h, 0)`, so it comes after every broadcast made before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key(u64, u8);

impl Key {
    pub(crate) fn log(seq: u64) -> Key {
        Key(seq, 1)
    }
    pub(crate) fn direct(head: u64) -> Key {
        Key(head, 0)
    }
}

/// Why a mailbox stopped delivering.
///
/// Returned by [`Mailbox::recv`] once everything that was queued before the close has been
/// taken out (for [`CloseReason::Shutdown`] and [`CloseReason::Unregistered`]), or at once for
/// [`CloseReason::Evicted`], whose backlog was discarded (and counted as dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client's handle was dropped or [`ClientHandle::unregister`](super::ClientHandle::unregister)
    /// was called. A WebSocket connection closes with 1000 (normal closure).
    Unregistered,
    /// The backlog reached the capacity under
    /// [`OverflowPolicy::Disconnect`](super::OverflowPolicy::Disconnect): the client was too
    /// slow. A WebSocket connection closes with 1008 (policy violation).
    Evicted,
    /// The hub is shutting down. A WebSocket connection closes with 1001 (going away).
    Shutdown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Unregistered => "unregistered",
            CloseReason::Evicted => "evicted: mailbox full (slow client)",
            CloseReason::Shutdown => "hub shutting down",
        })
    }
}

pub(crate) struct SlotState<M> {
    /// Direct sends, and the backlog of a client taken off the log, in `Key` order once sorted.
    pub(crate) private: VecDeque<(Key, M)>,
    pub(crate) waker: Option<Waker>,
    pub(crate) closed: Option<CloseReason>,
}

/// The hub's record of one client.
pub(crate) struct Slot<M> {
    pub(crate) id: ClientId,
    /// Next log sequence to read; `DETACHED` once off the log. Written by the receiver under
    /// the log's read lock, by the hub under its write lock.
    pub(crate) cursor: AtomicU64,
    /// `state.private.len()`, readable without the lock.
    pub(crate) private_len: AtomicUsize,
    /// Off the log under DropNewest, skipping broadcasts until its private queue drains.
    pub(crate) lagging: AtomicBool,
    /// The log head when it started skipping.
    pub(crate) skip_from: AtomicU64,
    /// Broadcasts on this log that excluded this client (`broadcast_except`), and how many of
    /// them its receiver has passed: a gap it cannot see any more is counted without them.
    pub(crate) except_total: AtomicU64,
    pub(crate) except_seen: AtomicU64,
    /// Position in the log's waiter list, or `NOT_PARKED`.
    pos: AtomicUsize,
    pub(crate) state: Mutex<SlotState<M>>,
}

impl<M> Parkable for Slot<M> {
    fn pos(&self) -> &AtomicUsize {
        &self.pos
    }

    fn wake(&self) {
        Slot::wake(self);
    }
}

impl<M> Slot<M> {
    /// True once the client has left the hub (unregistered, evicted, shut down).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    /// Wakes the receiver, if parked (it has something new to look at, such as a room).
    pub(crate) fn wake(&self) {
        let waker = lock(&self.state).waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn new(id: ClientId, cursor: u64) -> Self {
        Slot {
            id,
            cursor: AtomicU64::new(cursor),
            private_len: AtomicUsize::new(0),
            lagging: AtomicBool::new(false),
            skip_from: AtomicU64::new(0),
            except_total: AtomicU64::new(0),
            except_seen: AtomicU64::new(0),
            pos: AtomicUsize::new(NOT_PARKED),
            state: Mutex::new(SlotState {
                private: VecDeque::new(),
                waker: None,
                closed: None,
            }),
        }
    }
}

/// The receiving end of one client's bounded mailbox.
///
/// Obtained from [`Hub::register`](super::Hub::register) next to the client's
/// [`ClientHandle`](super::ClientHandle). Whatever the hub accepted for the client comes out
/// here, in order. Dropping the mailbox unregisters the client and discards what it still held
/// (counted as dropped).
// `M: Clone` on the type because dropping it needs it: the drop unregisters the client
// through the engine, whose detach path clones.
pub struct Mailbox<M: Clone> {
    slot: Arc<Slot<M>>,
    hub: Arc<Inner<M>>,
    /// The client's rooms (None for a room's own membership mailbox).
    rooms: Option<Arc<Memberships<M>>>,
    /// Taken out of the hub but not yet handed to the caller (`recv`, `recv_many`).
    pending: VecDeque<M>,
    /// `poll_recv_with` reads the rooms before the client's own log this time.
    rooms_first: bool,
}

impl<M: Clone> fmt::Debug for Mailbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("client", &self.slot.id)
            .finish_non_exhaustive()
    }
}

impl<M: Clone> Mailbox<M> {
    pub(crate) fn new(slot: Arc<Slot<M>>, hub: Arc<Inner<M>>) -> Self {
        Mailbox {
            slot,
            hub,
            rooms: None,
            pending: VecDeque::new(),
            rooms_first: false,
        }
    }

    pub(crate) fn with_rooms(mut self, rooms: Arc<Memberships<M>>) -> Self {
        self.rooms = Some(rooms);
        self
    }

    /// Polls each room membership with `each` (given the budget left, if any); returns what
    /// they yielded and whether one of them evicted the client (which then leaves the hub
    /// too).
    fn poll_rooms(
        &mut self,
        mut budget: Option<usize>,
        mut each: impl FnMut(&mut Mailbox<M>, usize) -> Poll<Result<usize, CloseReason>>,
    ) -> (usize, bool) {
        let Some(rooms) = &self.rooms else {
            return (0, false);
        };
        let mut n = 0;
        let mut evicted = false;
        for sub in rooms.lock().iter_mut() {
            if budget == Some(0) {
                break;
            }
            match each(&mut sub.mailbox, budget.unwrap_or(usize::MAX)) {
                Poll::Ready(Ok(k)) => {
                    n += k;
                    budget = budget.map(|b| b.saturating_sub(k));
                }
                Poll::Ready(Err(CloseReason::Evicted)) => evicted = true,
                _ => {}
            }
        }
        if evicted {
            // Too slow in a room is too slow: the client goes, as for the hub's own log.
            self.hub.remove(self.slot.id, CloseReason::Evicted, false);
        }
        (n, evicted)
    }

    /// An evicted client leaves its rooms at once, so they stop holding messages for it.
    fn leave_rooms_if_evicted(&self, own: &Poll<Result<usize, CloseReason>>) {
        if let (Poll::Ready(Err(CloseReason::Evicted)), Some(rooms)) = (own, &self.rooms) {
            rooms.leave_all();
        }
    }

    /// Combines this mailbox's own poll with what its rooms yielded.
    fn combine(
        own: Poll<Result<usize, CloseReason>>,
        rooms: usize,
        evicted: bool,
    ) -> Poll<Result<usize, CloseReason>> {
        match own {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n + rooms)),
            _ if rooms > 0 => Poll::Ready(Ok(rooms)),
            _ if evicted => Poll::Ready(Err(CloseReason::Evicted)),
            other => other,
        }
    }

    /// `fill` for this mailbox and its rooms.
    fn fill_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut VecDeque<M>,
    ) -> Poll<Result<usize, CloseReason>> {
        let own = self.fill(cx, buf);
        self.leave_rooms_if_evicted(&own);
        let (n, evicted) = self.poll_rooms(None, |m, _| m.fill(cx, buf));
        Self::combine(own, n, evicted)
    }

    /// The client this mailbox belongs to.
    pub fn id(&self) -> ClientId {
        self.slot.id
    }

    /// Messages queued for this client (its rooms' included): the same number as
    /// [`ClientHandle::queued`](super::ClientHandle::queued). "Queued" is the crate's one
    /// name for it ([`Hub::max_queued`](super::Hub::max_queued) is the largest).
    pub fn queued(&self) -> usize {
        let rooms = self
            .rooms
            .as_ref()
            .map_or(0, |r| r.lock().iter().map(|s| s.mailbox.queued()).sum());
        self.hub.backlog(&self.slot) + self.pending.len() + rooms
    }

    /// Messages queued: renamed [`Mailbox::queued`], the name the hub and the handle use.
    #[deprecated(since = "0.2.0", note = "use `Mailbox::queued`")]
    pub fn len(&self) -> usize {
        self.queued()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued() == 0
    }

    /// Reads the log from `cursor` to the head under `st` (the read lock), calling `each`
    /// with every entry meant for this client, in order, until it returns false. Counts what
    /// the ring no longer holds as dropped. Returns the sequence read up to and whether the
    /// caller must trim the log once the lock is released.
    fn read_log(
        &self,
        st: &State<M>,
        cursor: u64,
        mut each: impl FnMut(u64, &M) -> bool,
    ) -> (u64, bool) {
        let lost = self.hub.lost(st, &self.slot, cursor);
        Counters::add(&self.hub.counters.dropped, lost);
        let id = self.slot.id;
        let mut next = cursor.max(st.base);
        let mut excepted = 0;
        for (seq, e) in st.entries_from(cursor) {
            if e.except == Some(id) {
                excepted += 1;
            } else if !each(seq, &e.msg) {
                break;
            }
            next = seq + 1;
        }
        if excepted > 0 {
            self.slot.except_seen.fetch_add(excepted, Ordering::AcqRel);
        }
        let trim = self.hub.advance(st, &self.slot, cursor, next);
        (next, trim)
    }

    /// Moves everything waiting into `buf` (appending), or registers the task to be woken.
    /// Does not count deliveries.
    fn fill(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut VecDeque<M>,
    ) -> Poll<Result<usize, CloseReason>> {
        let mut trim = false;
        let polled = self.fill_locked(cx, buf, &mut trim);
        if trim {
            self.hub.trim();
        }
        polled
    }

    fn fill_locked(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut VecDeque<M>,
        trim: &mut bool,
    ) -> Poll<Result<usize, CloseReason>> {
        let before = buf.len();
        let mut force_lock = false;
        if self.slot.lagging.load(Ordering::Acquire)
            && self.slot.private_len.load(Ordering::Acquire) == 0
        {
            // Drained after skipping under DropNewest: back on the log, at the head.
            self.hub.rejoin(&self.hub.read(), &self.slot);
        }
        loop {
            let cursor = self.slot.cursor.load(Ordering::Acquire);
            let behind = cursor != DETACHED && cursor < self.hub.head.load(Ordering::SeqCst);
            let log = (behind || force_lock).then(|| self.hub.read());
            // Log entries since the cursor, cloned straight into `buf` (in sequence order).
            let mut read_from = None;
            if let Some(st) = &log {
                let cursor = self.slot.cursor.load(Ordering::Acquire);
                if cursor != DETACHED {
                    let (_, t) = self.read_log(st, cursor, |_, m| {
                        buf.push_back(m.clone());
                        true
                    });
                    *trim |= t;
                    read_from = Some(cursor);
                }
            }
            if buf.len() > before && self.slot.private_len.load(Ordering::Acquire) == 0 {
                // The common case: broadcasts only. A direct send made before the last
                // broadcast we read is visible here (it stored `private_len` before that
                // broadcast took the write lock), so skipping the slot lock loses no order.
                return Poll::Ready(Ok(buf.len() - before));
            }
            let mut ss = lock(&self.slot.state);
            if !ss.private.is_empty() {
                // A direct send must not overtake a broadcast made before it: if the log moved
                // on since we looked, read it first (under the lock, for a consistent merge).
                let cursor = self.slot.cursor.load(Ordering::Acquire);
                if log.is_none()
                    && cursor != DETACHED
                    && cursor < self.hub.head.load(Ordering::SeqCst)
                {
                    force_lock = true;
                    continue;
                }
                let mut private = std::mem::take(&mut ss.private);
                self.slot.private_len.store(0, Ordering::Release);
                drop(ss);
                private.make_contiguous().sort_by_key(|(k, _)| *k);
                match (&log, read_from) {
                    (Some(st), Some(from)) if buf.len() > before => {
                        let id = self.slot.id;
                        // The same snapshot gives the sequence numbers of what we just read.
                        let seqs = st
                            .entries_from(from)
                            .filter(|(_, e)| e.except != Some(id))
                            .map(|(seq, _)| seq);
                        let read: Vec<(u64, M)> = seqs.zip(buf.drain(before..)).collect();
                        merge(read, private, buf);
                    }
                    _ => buf.extend(private.into_iter().map(|(_, m)| m)),
                }
                return Poll::Ready(Ok(buf.len() - before));
            }
            drop(log);
            if buf.len() > before {
                return Poll::Ready(Ok(buf.len() - before));
            }
            if let Some(reason) = ss.closed {
                return Poll::Ready(Err(reason));
            }
            match &mut ss.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            drop(ss);
            // Broadcasts wake through the log's waiter list, where this slot is registered at
            // most once. Re-check after registering, so a broadcast between our read and the
            // registration is not missed.
            let cursor = self.slot.cursor.load(Ordering::Acquire);
            if cursor != DETACHED {
                self.hub.park(&self.slot);
                if self.hub.head.load(Ordering::SeqCst) > cursor {
                    cx.waker().wake_by_ref();
                }
            }
            return Poll::Pending;
        }
    }

    /// Takes everything waiting into `buf`, or registers the task to be woken when a message
    /// arrives. Returns `Ready(Ok(n))` with `n >= 1` messages appended, or `Ready(Err(reason))`
    /// once the mailbox is closed and drained.
    ///
    /// Broadcasts are read from the hub's shared log in one pass under a read lock: one clone
    /// (a reference-count bump for `Message` / `Bytes`) per message.
    pub fn poll_recv_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut VecDeque<M>,
    ) -> Poll<Result<usize, CloseReason>> {
        let n = if self.pending.is_empty() {
            match self.fill_all(cx, buf) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            }
        } else {
            let n = self.pending.len();
            buf.append(&mut self.pending);
            n
        };
        Counters::add(&self.hub.counters.delivered, n);
        Poll::Ready(Ok(n))
    }

    /// Hands up to `max` waiting messages to `f` by reference, in order, or registers the task
    /// to be woken. Returns `Ready(Ok(n))` with `1 <= n <= max` messages handed over, or
    /// `Ready(Err(reason))` once the mailbox is closed and drained.
    ///
    /// `f` returns whether it could use the message: one it refuses (e.g. a WebSocket writer
    /// given a message that is not a data frame) is counted in [`Stats::dropped`] instead of
    /// [`Stats::delivered`](super::Stats::delivered).
    ///
    /// Broadcasts are read in place from the hub's shared log: nothing is cloned, so no
    /// reference count is touched per client. The WebSocket writer encodes each frame
    /// straight from here into its write buffer. The client's own log and its rooms take
    /// turns going first, so neither starves the other.
    ///
    /// # Deadlocks
    ///
    /// `f` runs while the hub's log is read-locked: it must be quick and must not call into
    /// the hub (no `broadcast`, `send_to`, `register`, no dropping a `ClientHandle`).
    ///
    /// [`Stats::dropped`]: super::Stats::dropped
    pub fn poll_recv_with(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        mut f: impl FnMut(&M) -> bool,
    ) -> Poll<Result<usize, CloseReason>> {
        let max = max.max(1);
        self.rooms_first = !self.rooms_first;
        // A room membership has no rooms of its own: its own log and direct sends are all.
        let (own, n, evicted) = if self.rooms_first && self.rooms.is_some() {
            let (n, evicted) =
                self.poll_rooms(Some(max), |m, budget| m.poll_own_with(cx, budget, &mut f));
            let own = if n < max {
                self.poll_own_with(cx, max - n, &mut f)
            } else {
                Poll::Ready(Ok(0))
            };
            (own, n, evicted)
        } else {
            let own = self.poll_own_with(cx, max, &mut f);
            let left = match own {
                Poll::Ready(Ok(k)) => max - k,
                _ => max,
            };
            let (n, evicted) =
                self.poll_rooms(Some(left), |m, budget| m.poll_own_with(cx, budget, &mut f));
            (own, n, evicted)
        };
        self.leave_rooms_if_evicted(&own);
        Self::combine(own, n, evicted)
    }

    /// `poll_recv_with` for the hub's own log and direct sends.
    fn poll_own_with(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        f: &mut impl FnMut(&M) -> bool,
    ) -> Poll<Result<usize, CloseReason>> {
        let max = max.max(1);
        let cursor = self.slot.cursor.load(Ordering::Acquire);
        let behind = cursor != DETACHED && cursor < self.hub.head.load(Ordering::SeqCst);
        if self.pending.is_empty() && behind {
            let st = self.hub.read();
            let cursor = self.slot.cursor.load(Ordering::Acquire);
            // Checked under the lock: a direct send made before any broadcast we are about to
            // read is visible now, and then the owned path merges the two in order.
            if cursor != DETACHED && self.slot.private_len.load(Ordering::Acquire) == 0 {
                let (mut used, mut refused) = (0, 0);
                let (_, trim) = self.read_log(&st, cursor, |_, m| {
                    if used + refused == max {
                        return false;
                    }
                    if f(m) {
                        used += 1;
                    } else {
                        refused += 1;
                    }
                    true
                });
                drop(st);
                if trim {
                    self.hub.trim();
                }
                if used + refused > 0 {
                    Counters::add(&self.hub.counters.delivered, used);
                    Counters::add(&self.hub.counters.dropped, refused);
                    return Poll::Ready(Ok(used + refused));
                }
            }
        }
        // Direct sends waiting, leftovers, nothing at all, or closed: the owned path.
        if self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            let filled = self.fill(cx, &mut pending);
            self.pending = pending;
            match filled {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(_)) => {}
            }
        }
        let n = self.pending.len().min(max);
        let used = self.pending.drain(..n).filter(|m| f(m)).count();
        Counters::add(&self.hub.counters.delivered, used);
        Counters::add(&self.hub.counters.dropped, n - used);
        Poll::Ready(Ok(n))
    }

    /// Moves up to `limit` waiting messages into `out`, or registers the task to be woken
    /// when one arrives. Returns `Ready(Ok(n))` with `n >= 1`, or `Ready(Err(reason))` once
    /// the mailbox is closed and drained.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut impl Extend<M>,
        limit: usize,
    ) -> Poll<Result<usize, CloseReason>> {
        if self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            let filled = self.fill_all(cx, &mut pending);
            self.pending = pending;
            if let Poll::Ready(Err(e)) = filled {
                return Poll::Ready(Err(e));
            }
            if self.pending.is_empty() {
                return Poll::Pending;
            }
        }
        let n = self.pending.len().min(limit.max(1));
        out.extend(self.pending.drain(..n));
        Counters::add(&self.hub.counters.delivered, n);
        Poll::Ready(Ok(n))
    }

    /// Waits until at least one message is waiting, then takes everything into `buf` (see
    /// [`Mailbox::poll_recv_all`]) and returns how many.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: messages are moved only in the poll that completes the future.
    pub async fn recv_all(&mut self, buf: &mut VecDeque<M>) -> Result<usize, CloseReason> {
        std::future::poll_fn(|cx| self.poll_recv_all(cx, buf)).await
    }

    /// Takes the next message if one is waiting, without waiting: `Err(TryRecvError::Empty)`
    /// when none is, `Err(TryRecvError::Closed(reason))` once the mailbox is closed and
    /// drained.
    pub fn try_recv(&mut self) -> Result<M, TryRecvError> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut one = One(None);
        match self.poll_recv_many(&mut cx, &mut one, 1) {
            Poll::Ready(Ok(_)) => one.0.ok_or(TryRecvError::Empty),
            Poll::Ready(Err(reason)) => Err(TryRecvError::Closed(reason)),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }

    /// Waits for the next message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message taken from the hub but not returned stays in the mailbox.
    pub async fn recv(&mut self) -> Result<M, CloseReason> {
        let mut one = One(None);
        std::future::poll_fn(|cx| self.poll_recv_many(cx, &mut one, 1)).await?;
        // `poll_recv_many` returned Ok(1), so exactly one message was stored.
        one.0.ok_or(CloseReason::Unregistered)
    }

    /// Waits until at least one message is waiting, then moves up to `limit` of them into
    /// `out` and returns how many.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: messages are moved only in the poll that completes the future.
    pub async fn recv_many(
        &mut self,
        out: &mut Vec<M>,
        limit: usize,
    ) -> Result<usize, CloseReason> {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, out, limit)).await
    }
}

// Nothing in a mailbox is pinned in place: its messages are moved freely.
impl<M: Clone> Unpin for Mailbox<M> {}

/// A mailbox is a stream of its messages, ending once it is closed and drained (why it closed
/// is what [`Mailbox::recv`] returns then).
impl<M: Clone> futures_core::Stream for Mailbox<M> {
    type Item = M;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<M>> {
        let mut one = One(None);
        match self.get_mut().poll_recv_many(cx, &mut one, 1) {
            Poll::Ready(Ok(_)) => Poll::Ready(one.0),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why [`Mailbox::try_recv`] returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is waiting now; the mailbox is open.
    #[error("no message waiting")]
    Empty,
    /// The mailbox is closed and everything it held was taken.
    #[error("mailbox closed: {0}")]
    Closed(CloseReason),
}

/// Merges log entries (`(seq, msg)`, in order) with private entries (sorted by key) into `out`.
fn merge<M>(log: Vec<(u64, M)>, private: VecDeque<(Key, M)>, out: &mut VecDeque<M>) {
    let mut private = private.into_iter().peekable();
    for (seq, msg) in log {
        while let Some((_, m)) = private.next_if(|(k, _)| *k < Key::log(seq)) {
            out.push_back(m);
        }
        out.push_back(msg);
    }
    out.extend(private.map(|(_, m)| m));
}

/// Holds the single message `recv` asks for, without allocating.
struct One<M>(Option<M>);

impl<M> Extend<M> for One<M> {
    fn extend<I: IntoIterator<Item = M>>(&mut self, iter: I) {
        self.0 = iter.into_iter().next();
    }
}

impl<M: Clone> Drop for Mailbox<M> {
    fn drop(&mut self) {
        Counters::add(&self.hub.counters.dropped, self.pending.len());
        // Unregisters the client (if its handle has not already) and discards its backlog.
        // Closed first, so a `join` racing with this drop is refused rather than left behind.
        self.hub.drop_receiver(&self.slot);
        if let Some(rooms) = &self.rooms {
            rooms.leave_all();
        }
    }
}
