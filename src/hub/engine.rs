//! The fan-out engine: one shared log per hub, a cursor per client.
//!
//! A broadcast appends the message to a ring of `capacity` entries (one write, no clone) and
//! wakes the receivers that are parked. Each receiver clones what lies between its cursor and
//! the head, in one read-locked pass. So the publisher's cost does not grow with the number of
//! clients, and the per-delivery work (one reference-count bump) runs on the receivers' tasks,
//! in parallel.
//!
//! A client's backlog is `head - cursor`. When the ring is full, the oldest entry can only be
//! dropped once every cursor has passed it; a client still at that entry is exactly a client
//! whose backlog reached the capacity, and the overflow policy applies to it:
//!
//! - `Disconnect`: the client is evicted (removed, its backlog counted as dropped).
//! - `DropOldest`: its cursor moves past the oldest entry (one drop counted).
//! - `DropNewest`: its backlog is copied into its private queue (it keeps the oldest
//!   `capacity` messages) and new broadcasts skip it, each counted, until it has drained.
//!
//! Clients that hit the limit are kept in a short `laggers` list, and `scanned_to` remembers a
//! lower bound of every other cursor, so the full member scan runs only when a new client may
//! have fallen behind, not on every broadcast.
//!
//! Direct sends (`send_to`) go to the client's private queue, tagged with the log head at the
//! time of sending, so the receiver merges them with broadcasts in the order they were made.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::Waker;

use tokio::sync::Notify;

use super::mailbox::{Key, Slot, DETACHED};
use super::members::Members;
use super::{ClientId, CloseReason, HubConfig, OverflowPolicy};
use crate::error::{Error, Result};

/// Hub-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) sent: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

pub(crate) struct Entry<M> {
    pub(crate) msg: M,
    pub(crate) except: Option<ClientId>,
}

pub(crate) struct State<M> {
    pub(crate) members: Members<M>,
    pub(crate) log: VecDeque<Entry<M>>,
    /// Sequence number of `log[0]`.
    pub(crate) base: u64,
    /// Every member not in `laggers` has a cursor at least this high.
    scanned_to: u64,
    /// Members whose backlog reached the capacity (DropOldest / DropNewest only).
    laggers: Vec<Arc<Slot<M>>>,
}

impl<M> State<M> {
    pub(crate) fn head(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    /// Log entries from sequence `from` on, with their sequence numbers.
    pub(crate) fn entries_from(&self, from: u64) -> impl Iterator<Item = (u64, &Entry<M>)> {
        let start = from.max(self.base);
        let skip = (start - self.base) as usize;
        self.log
            .iter()
            .skip(skip)
            .zip(start..)
            .map(|(e, seq)| (seq, e))
    }
}

pub(crate) struct Inner<M> {
    pub(crate) config: HubConfig,
    state: RwLock<State<M>>,
    /// `state.head()`, readable without the lock.
    pub(crate) head: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
    has_waiters: AtomicBool,
    /// Shared by a hub and its rooms.
    pub(crate) counters: Arc<Counters>,
    next_id: AtomicU64,
    pub(crate) shut_down: AtomicBool,
    pub(crate) connected: AtomicUsize,
    pub(crate) emptied: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few container operations that cannot panic halfway,
    // so a poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<M: Clone> Inner<M> {
    pub(crate) fn new(config: HubConfig, counters: Arc<Counters>) -> Self {
        Inner {
            config,
            state: RwLock::new(State {
                members: Members::default(),
                log: VecDeque::new(),
                base: 0,
                scanned_to: 0,
                laggers: Vec::new(),
            }),
            head: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
            has_waiters: AtomicBool::new(false),
            counters,
            next_id: AtomicU64::new(1),
            shut_down: AtomicBool::new(false),
            connected: AtomicUsize::new(0),
            emptied: Notify::new(),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State<M>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State<M>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn capacity(&self) -> usize {
        self.config.get_mailbox_capacity()
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    pub(crate) fn register(&self) -> Result<Arc<Slot<M>>> {
        self.register_as(ClientId(self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    /// Registers a client under an id it already has (a hub client joining a room).
    pub(crate) fn register_as(&self, id: ClientId) -> Result<Arc<Slot<M>>> {
        let mut st = self.write();
        // Under the write lock that shutdown also takes: no client slips in after it.
        if self.is_shutdown() {
            return Err(Error::Shutdown);
        }
        let slot = Arc::new(Slot::new(id, st.head()));
        st.members.insert(slot.clone());
        self.connected.store(st.members.len(), Ordering::Release);
        Ok(slot)
    }

    /// Takes `slot` off the log: its unread entries move to its private queue (`keep`) or are
    /// discarded (returned count), and it is closed with `reason` unless already closed.
    fn detach(&self, st: &State<M>, slot: &Slot<M>, reason: CloseReason, keep: bool) -> usize {
        let cursor = slot.cursor.swap(DETACHED, Ordering::AcqRel);
        let mut ss = lock(&slot.state);
        let mut discarded = 0;
        if cursor != DETACHED {
            for (seq, e) in st.entries_from(cursor) {
                if e.except == Some(slot.id) {
                    continue;
                }
                if keep {
                    ss.private.push_back((Key::log(seq), e.msg.clone()));
                } else {
                    discarded += 1;
                }
            }
        }
        if !keep {
            discarded += ss.private.len();
            ss.private = VecDeque::new();
        }
        slot.private_len.store(ss.private.len(), Ordering::Release);
        if ss.closed.is_none() {
            ss.closed = Some(reason);
        }
        let waker = ss.waker.take();
        drop(ss);
        if let Some(w) = waker {
            w.wake();
        }
        discarded
    }

    /// Unregisters `id`; false if it was not registered.
    pub(crate) fn remove(&self, id: ClientId, reason: CloseReason, keep: bool) -> bool {
        let mut st = self.write();
        let Some(slot) = self.unlink(&mut st, id) else {
            return false;
        };
        let discarded = self.detach(&st, &slot, reason, keep);
        Counters::add(&self.counters.dropped, discarded);
        true
    }

    /// The receiver went away: unregister the client (if still registered) and discard its
    /// backlog, counted as dropped.
    pub(crate) fn drop_receiver(&self, slot: &Arc<Slot<M>>) {
        let mut st = self.write();
        self.unlink(&mut st, slot.id);
        let discarded = self.detach(&st, slot, CloseReason::Unregistered, false);
        Counters::add(&self.counters.dropped, discarded);
    }

    /// Takes `id` out of the member set (and the laggers), keeps `connected` in step and wakes
    /// `wait_empty` when the last member goes. `None` if it was not a member.
    fn unlink(&self, st: &mut State<M>, id: ClientId) -> Option<Arc<Slot<M>>> {
        let slot = st.members.remove(id)?;
        st.laggers.retain(|s| s.id != id);
        self.connected.store(st.members.len(), Ordering::Release);
        if st.members.is_empty() {
            self.emptied.notify_waiters();
        }
        Some(slot)
    }

    /// Appends `msg` for every member but `except`; returns how many it was offered to.
    pub(crate) fn broadcast(&self, except: Option<ClientId>, msg: M) -> usize {
        let cap = self.capacity();
        let mut st = self.write();
        if self.is_shutdown() || st.members.is_empty() {
            return 0;
        }
        if st.log.len() >= cap {
            self.make_room(&mut st);
        }
        let head = st.head();
        // DropNewest laggers whose private queue is still full skip this message.
        let mut skipped = 0;
        if self.config.get_overflow() == OverflowPolicy::DropNewest && !st.laggers.is_empty() {
            let State {
                laggers,
                scanned_to,
                ..
            } = &mut *st;
            laggers.retain(|s| {
                let full = s.private_len.load(Ordering::Acquire) >= cap;
                if full {
                    s.cursor.store(head + 1, Ordering::Release);
                    if except != Some(s.id) {
                        skipped += 1;
                    }
                } else {
                    // Drained enough: it rejoins the log at the head, under the scan again.
                    *scanned_to = (*scanned_to).min(head);
                    s.lagging.store(false, Ordering::Release);
                }
                full
            });
        }
        st.log.push_back(Entry { msg, except });
        self.head.store(head + 1, Ordering::SeqCst);
        let excluded = except.map_or(0, |id| usize::from(st.members.get(id).is_some()));
        let offered = st.members.len() - excluded - skipped;
        drop(st);
        Counters::add(&self.counters.dropped, skipped);
        Counters::add(&self.counters.sent, offered + skipped);
        self.wake_waiters();
        offered
    }

    /// The ring is full: apply the overflow policy to every client still at the oldest entry,
    /// then drop that entry.
    fn make_room(&self, st: &mut State<M>) {
        let base = st.base;
        let policy = self.config.get_overflow();
        let mut dropped = 0;
        // Known laggers (DropOldest): step past the oldest entry, or leave the list.
        if policy == OverflowPolicy::DropOldest {
            let first_except = st.log.front().and_then(|e| e.except);
            let scanned_to = &mut st.scanned_to;
            st.laggers.retain(|s| {
                if s.cursor.load(Ordering::Acquire) <= base {
                    s.cursor.store(base + 1, Ordering::Release);
                    if first_except != Some(s.id) {
                        dropped += 1;
                    }
                    true
                } else {
                    // Caught up: back under the scan, which must not skip past its cursor.
                    *scanned_to = (*scanned_to).min(s.cursor.load(Ordering::Acquire));
                    s.lagging.store(false, Ordering::Release);
                    false
                }
            });
        }
        if st.scanned_to <= base {
            let mut min = st.head();
            let mut behind = Vec::new();
            for slot in st.members.iter() {
                if slot.lagging.load(Ordering::Acquire) {
                    continue;
                }
                let c = slot.cursor.load(Ordering::Acquire);
                if c <= base {
                    behind.push(slot.clone());
                } else {
                    min = min.min(c);
                }
            }
            for slot in behind {
                match policy {
                    OverflowPolicy::Disconnect => self.evict_locked(st, &slot, 0),
                    OverflowPolicy::DropOldest => {
                        slot.cursor.store(base + 1, Ordering::Release);
                        if st.log.front().and_then(|e| e.except) != Some(slot.id) {
                            dropped += 1;
                        }
                        slot.lagging.store(true, Ordering::Release);
                        st.laggers.push(slot);
                    }
                    OverflowPolicy::DropNewest => {
                        // Keep its backlog (the oldest messages) privately; skip new ones.
                        self.detach_to_private(st, &slot);
                        slot.lagging.store(true, Ordering::Release);
                        st.laggers.push(slot);
                    }
                }
            }
            st.scanned_to = min;
        }
        Counters::add(&self.counters.dropped, dropped);
        st.log.pop_front();
        st.base += 1;
    }

    /// Copies a lagging client's unread entries into its private queue and moves its cursor
    /// to the head.
    fn detach_to_private(&self, st: &State<M>, slot: &Slot<M>) {
        let cursor = slot.cursor.load(Ordering::Acquire);
        let mut ss = lock(&slot.state);
        for (seq, e) in st.entries_from(cursor) {
            if e.except != Some(slot.id) {
                ss.private.push_back((Key::log(seq), e.msg.clone()));
            }
        }
        slot.private_len.store(ss.private.len(), Ordering::Release);
        slot.cursor.store(st.head(), Ordering::Release);
    }

    /// Evicts a member while the write lock is held; `extra` more messages are counted as
    /// dropped (a direct send that did not fit).
    fn evict_locked(&self, st: &mut State<M>, slot: &Arc<Slot<M>>, extra: usize) {
        if self.unlink(st, slot.id).is_none() {
            return;
        }
        let discarded = self.detach(st, slot, CloseReason::Evicted, false);
        Counters::add(&self.counters.dropped, discarded + extra);
        Counters::add(&self.counters.evicted, 1);
        tracing::debug!(client = %slot.id, discarded, "evicted slow client");
    }

    fn wake_waiters(&self) {
        if self.has_waiters.swap(false, Ordering::SeqCst) {
            let mut waiters = lock(&self.waiters);
            for w in waiters.drain(..) {
                w.wake();
            }
        }
    }

    /// Parks a receiver until the next broadcast. The caller re-checks the head afterwards.
    pub(crate) fn park(&self, waker: &Waker) {
        let mut waiters = lock(&self.waiters);
        waiters.push(waker.clone());
        self.has_waiters.store(true, Ordering::SeqCst);
    }

    /// Queues `msg` for one client, under the overflow policy.
    pub(crate) fn send_to(&self, slot: &Arc<Slot<M>>, msg: M) -> Result<()> {
        if self.is_shutdown() {
            return Err(Error::Shutdown);
        }
        let cap = self.capacity();
        let key = Key::direct(self.head.load(Ordering::SeqCst));
        let mut ss = lock(&slot.state);
        if ss.closed.is_some() {
            return Err(Error::ClientClosed(slot.id));
        }
        // From here on the message is the hub's: it ends up delivered or counted as dropped.
        Counters::add(&self.counters.sent, 1);
        if ss.private.len() >= cap {
            match self.config.get_overflow() {
                OverflowPolicy::DropNewest => {
                    Counters::add(&self.counters.dropped, 1);
                    return Err(Error::MailboxFull(slot.id));
                }
                OverflowPolicy::DropOldest => {
                    ss.private.pop_front();
                    Counters::add(&self.counters.dropped, 1);
                }
                OverflowPolicy::Disconnect => {
                    drop(ss);
                    let mut st = self.write();
                    self.evict_locked(&mut st, slot, 1);
                    return Err(Error::Evicted(slot.id));
                }
            }
        }
        ss.private.push_back((key, msg));
        slot.private_len.store(ss.private.len(), Ordering::Release);
        let waker = ss.waker.take();
        drop(ss);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Messages waiting for `slot`.
    pub(crate) fn backlog(&self, slot: &Slot<M>) -> usize {
        let cursor = slot.cursor.load(Ordering::Acquire);
        let in_log = if cursor == DETACHED {
            0
        } else {
            self.head.load(Ordering::Acquire).saturating_sub(cursor) as usize
        };
        in_log + slot.private_len.load(Ordering::Acquire)
    }

    pub(crate) fn max_backlog(&self) -> usize {
        let st = self.read();
        st.members
            .iter()
            .map(|s| self.backlog(s))
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn shutdown(&self) {
        let mut st = self.write();
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Each member keeps what it has not read yet, privately; the log is no longer needed.
        for slot in st.members.iter() {
            self.detach(&st, slot, CloseReason::Shutdown, true);
        }
        st.log = VecDeque::new();
        st.laggers = Vec::new();
        drop(st);
        self.wake_waiters();
    }

    pub(crate) fn abort(&self) -> usize {
        self.shut_down.store(true, Ordering::Release);
        let st = self.read();
        let mut discarded = 0;
        for slot in st.members.iter() {
            discarded += self.detach(&st, slot, CloseReason::Shutdown, false);
        }
        drop(st);
        Counters::add(&self.counters.dropped, discarded);
        self.wake_waiters();
        discarded
    }
}
