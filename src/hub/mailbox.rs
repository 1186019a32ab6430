//! The per-client mailbox: a bounded queue shared by the hub (many pushers) and one receiver.
//!
//! A `Mutex<VecDeque>` plus one stored waker. Pushing takes an uncontended lock, appends and
//! wakes the receiver only if it is parked, so a burst of broadcasts costs one wake-up per
//! client, not one per message. The receiver drains everything queued under one lock, which is
//! what lets the WebSocket writer flush a whole backlog with one syscall.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::{ClientId, OverflowPolicy};

/// Why a mailbox stopped delivering.
///
/// Returned by [`Mailbox::recv`] once everything that was queued before the close has been
/// taken out (for [`CloseReason::Shutdown`] and [`CloseReason::Unregistered`]), or at once for
/// [`CloseReason::Evicted`], whose queue was discarded (and counted as dropped) by the eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client's handle was dropped or [`ClientHandle::unregister`](super::ClientHandle::unregister)
    /// was called. A WebSocket connection closes with 1000 (normal closure).
    Unregistered,
    /// The mailbox was full under [`OverflowPolicy::Disconnect`]: the client was too slow.
    /// A WebSocket connection closes with 1008 (policy violation).
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

/// What happened to one pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued; nothing was dropped.
    Queued,
    /// Queued, and the oldest queued message was dropped to make room.
    QueuedDroppedOldest,
    /// Not queued: the mailbox was full and the policy drops the newest.
    DroppedNewest,
    /// Not queued: the mailbox was full and the client was evicted. `discarded` messages that
    /// were waiting in the queue were dropped with it (the new one not included).
    Evicted { discarded: usize },
    /// Not queued: the mailbox is already closed.
    Closed,
}

/// Hub-wide counters, shared by the hub and every mailbox receiver.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) accepted: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

struct State<M> {
    queue: VecDeque<M>,
    waker: Option<Waker>,
    closed: Option<CloseReason>,
}

/// The hub's side of one client's mailbox.
pub(crate) struct Slot<M> {
    pub(crate) id: ClientId,
    capacity: usize,
    state: Mutex<State<M>>,
}

impl<M> Slot<M> {
    pub(crate) fn new(id: ClientId, capacity: usize) -> Self {
        Slot {
            id,
            capacity,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                waker: None,
                closed: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<M>> {
        // A panic while holding this lock cannot leave the queue inconsistent (every critical
        // section is a single VecDeque operation), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Non-blocking push under `policy`. Never waits for the receiver.
    pub(crate) fn push(&self, msg: M, policy: OverflowPolicy) -> Push {
        let mut state = self.lock();
        if state.closed.is_some() {
            return Push::Closed;
        }
        let outcome = if state.queue.len() < self.capacity {
            state.queue.push_back(msg);
            Push::Queued
        } else {
            match policy {
                OverflowPolicy::DropNewest => return Push::DroppedNewest,
                OverflowPolicy::DropOldest => {
                    state.queue.pop_front();
                    state.queue.push_back(msg);
                    Push::QueuedDroppedOldest
                }
                OverflowPolicy::Disconnect => {
                    let discarded = state.queue.len();
                    state.queue = VecDeque::new();
                    state.closed = Some(CloseReason::Evicted);
                    Push::Evicted { discarded }
                }
            }
        };
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        outcome
    }

    /// Closes the mailbox. With `keep_queued` the receiver still gets what is queued; otherwise
    /// the queue is discarded and its length returned (for the dropped counter).
    pub(crate) fn close(&self, reason: CloseReason, keep_queued: bool) -> usize {
        let mut state = self.lock();
        let mut discarded = 0;
        if !keep_queued {
            discarded = state.queue.len();
            state.queue = VecDeque::new();
        }
        if state.closed.is_none() {
            state.closed = Some(reason);
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        discarded
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

/// The receiving end of one client's bounded mailbox.
///
/// Obtained from [`Hub::register`](super::Hub::register) next to the client's
/// [`ClientHandle`](super::ClientHandle). Whatever the hub queued for the client comes out here,
/// in order. Dropping the mailbox discards what it still holds (counted as dropped) and makes
/// later sends to the client fail.
pub struct Mailbox<M> {
    slot: Arc<Slot<M>>,
    counters: Arc<Counters>,
}

impl<M> fmt::Debug for Mailbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("client", &self.slot.id)
            .field("capacity", &self.slot.capacity)
            .finish_non_exhaustive()
    }
}

impl<M> Mailbox<M> {
    pub(crate) fn new(slot: Arc<Slot<M>>, counters: Arc<Counters>) -> Self {
        Mailbox { slot, counters }
    }

    /// The client this mailbox belongs to.
    pub fn id(&self) -> ClientId {
        self.slot.id
    }

    /// The most messages this mailbox holds before the overflow policy applies.
    pub fn capacity(&self) -> usize {
        self.slot.capacity
    }

    /// Number of messages waiting.
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves up to `limit` queued messages into `out`, or registers the task to be woken when
    /// one arrives.
    ///
    /// Returns `Ready(Ok(n))` with `n >= 1` messages appended, or `Ready(Err(reason))` once the
    /// mailbox is closed and (unless the client was evicted) drained.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut impl Extend<M>,
        limit: usize,
    ) -> Poll<Result<usize, CloseReason>> {
        let mut state = self.slot.lock();
        let n = state.queue.len().min(limit.max(1));
        if n > 0 {
            // The queue keeps its capacity (at most `capacity` slots): releasing it after every
            // drain would cost an allocation per client per burst on the broadcast path.
            out.extend(state.queue.drain(..n));
            drop(state);
            Counters::add(&self.counters.delivered, n);
            return Poll::Ready(Ok(n));
        }
        park(&mut state, cx)
    }

    /// Takes everything queued into `buf`, or registers the task to be woken when a message
    /// arrives. Like [`Mailbox::poll_recv_many`] without a limit, but when `buf` is empty the
    /// two queues are swapped in O(1) under the lock: the drained `buf` goes back as the
    /// mailbox's next queue, so in steady state nothing is copied or allocated, and the
    /// publisher never waits behind a receiver copying a backlog. This is how the WebSocket
    /// writer drains.
    pub fn poll_recv_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut VecDeque<M>,
    ) -> Poll<Result<usize, CloseReason>> {
        if !buf.is_empty() {
            return self.poll_recv_many(cx, buf, usize::MAX);
        }
        let mut state = self.slot.lock();
        let n = state.queue.len();
        if n > 0 {
            std::mem::swap(&mut state.queue, buf);
            drop(state);
            Counters::add(&self.counters.delivered, n);
            return Poll::Ready(Ok(n));
        }
        park(&mut state, cx)
    }

    /// Waits until at least one message is queued, then takes everything queued into `buf`
    /// (see [`Mailbox::poll_recv_all`]) and returns how many.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: messages are moved only in the poll that completes the future.
    pub async fn recv_all(&mut self, buf: &mut VecDeque<M>) -> Result<usize, CloseReason> {
        std::future::poll_fn(|cx| self.poll_recv_all(cx, buf)).await
    }

    /// Waits for the next message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no message is taken out.
    pub async fn recv(&mut self) -> Result<M, CloseReason> {
        let mut one = One(None);
        std::future::poll_fn(|cx| self.poll_recv_many(cx, &mut one, 1)).await?;
        // `poll_recv_many` returned Ok(1), so exactly one message was stored.
        one.0.ok_or(CloseReason::Unregistered)
    }

    /// Waits until at least one message is queued, then moves up to `limit` of them into `out`
    /// and returns how many. This is how a writer drains a backlog with one lock.
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

/// Nothing queued: report the close, or store the waker (unless it is already stored).
fn park<M>(state: &mut State<M>, cx: &Context<'_>) -> Poll<Result<usize, CloseReason>> {
    if let Some(reason) = state.closed {
        return Poll::Ready(Err(reason));
    }
    match &mut state.waker {
        Some(w) if w.will_wake(cx.waker()) => {}
        w => *w = Some(cx.waker().clone()),
    }
    Poll::Pending
}

/// Holds the single message `recv` asks for, without allocating.
struct One<M>(Option<M>);

impl<M> Extend<M> for One<M> {
    fn extend<I: IntoIterator<Item = M>>(&mut self, iter: I) {
        self.0 = iter.into_iter().next();
    }
}

impl<M> Drop for Mailbox<M> {
    fn drop(&mut self) {
        let discarded = self.slot.close(CloseReason::Unregistered, false);
        Counters::add(&self.counters.dropped, discarded);
    }
}
