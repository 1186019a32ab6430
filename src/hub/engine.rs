//! The fan-out engine: one shared log per hub (and per room), a cursor per client.
//!
//! A broadcast appends the message to a ring of at most `capacity` entries (one write, no
//! clone) and wakes the receivers that are parked. Each receiver reads what lies between its
//! cursor and the head, in one read-locked pass. So the publisher's cost does not grow with
//! the number of clients, and the per-delivery work runs on the receivers' tasks, in parallel.
//!
//! A client's backlog is `head - cursor`. When the ring is full the oldest entry goes; a
//! client still at that entry is exactly a client whose backlog reached the capacity, and the
//! overflow policy applies to it:
//!
//! - `Disconnect`: the client is evicted (removed, its backlog counted as dropped). Found by a
//!   scan of the members that runs once per many broadcasts: `scanned_to` remembers a lower
//!   bound of every cursor.
//! - `DropNewest`: found by the same scan; its backlog (the oldest `capacity` messages) is
//!   copied into its private queue and it leaves the log. Broadcasts made meanwhile are
//!   skipped for it; when it has drained its queue it rejoins at the head and counts what it
//!   skipped as dropped (`Slot::lost`). No per-broadcast work.
//! - `DropOldest`: nothing at all on the publisher's side, as tokio's `Lagged(n)`: the ring
//!   moves on, and a receiver whose cursor fell below the ring's base counts its own gap as
//!   dropped when it next reads.
//!
//! Entries everyone has read are released, not kept until overwritten: `pending` counts the
//! readers whose cursor is below `mark`; the reader that brings it to 0 trims the log below
//! the lowest cursor and sets the next mark (`Inner::trim_locked`). That costs one atomic
//! decrement per reader per mark, not per message.
//!
//! Direct sends (`send_to`) go to the client's private queue, tagged with the log head at the
//! time of sending, so the receiver merges them with broadcasts in the order they were made.
//!
//! Every count is exact: each message offered to a client is counted once in `sent` and, in
//! the end, once in `delivered` or `dropped` (`except_total` / `except_seen` let a receiver
//! count a gap of entries it can no longer see, minus those that were never meant for it).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use tokio::sync::Notify;

use super::mailbox::{Key, Slot, DETACHED};
use super::members::Members;
use super::wait::WaitList;
use super::{ClientId, CloseReason, HubConfig, OverflowPolicy};
use crate::error::{Error, Result, SendError};
use crate::sync::{
    lock, AtomicBool, AtomicU64, AtomicUsize, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// Hub-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) sent: AtomicU64,
    /// The metrics task publishing these counters has been started.
    #[cfg(feature = "metrics")]
    pub(crate) metrics_reporter: std::sync::atomic::AtomicBool,
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
    /// Every member on the log has a cursor at least this high (Disconnect / DropNewest scan).
    scanned_to: u64,
    /// The trim checkpoint: `Inner::pending` readers have a cursor below it.
    mark: u64,
    /// `pending` reached 0 during this write-locked operation: trim before unlocking.
    trim_due: bool,
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

    /// Entries still in the log that exclude `id`.
    fn excepted_in_log(&self, id: ClientId) -> u64 {
        self.log.iter().filter(|e| e.except == Some(id)).count() as u64
    }
}

pub(crate) struct Inner<M> {
    pub(crate) config: HubConfig,
    state: RwLock<State<M>>,
    /// `state.head()`, readable without the lock.
    pub(crate) head: AtomicU64,
    waiters: WaitList<Slot<M>>,
    /// Readers (members on the log) whose cursor is below `state.mark`.
    pending: AtomicUsize,
    /// Members off the log under DropNewest (skipping broadcasts until they drain).
    skipping: AtomicUsize,
    /// Shared by a hub and its rooms.
    pub(crate) counters: Arc<Counters>,
    next_id: AtomicU64,
    pub(crate) shut_down: AtomicBool,
    pub(crate) connected: AtomicUsize,
    pub(crate) emptied: Notify,
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
                mark: 0,
                trim_due: false,
            }),
            head: AtomicU64::new(0),
            waiters: WaitList::default(),
            pending: AtomicUsize::new(0),
            skipping: AtomicUsize::new(0),
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
        // At the head, so not below the trim mark: `pending` is unchanged.
        let slot = Arc::new(Slot::new(id, st.head()));
        st.members.insert(slot.clone());
        self.connected.store(st.members.len(), Ordering::Release);
        Ok(slot)
    }

    /// Messages for `slot` that the log no longer holds: skipped while it was off the log
    /// (DropNewest), or below the ring's base (DropOldest). Settles the bookkeeping; the
    /// caller moves the cursor to the head, to `max(cursor, base)`, or off the log. Called
    /// under the write lock, or under the read lock by the slot's own receiver.
    pub(crate) fn lost(&self, st: &State<M>, slot: &Slot<M>, cursor: u64) -> usize {
        let total = slot.except_total.load(Ordering::Acquire);
        let seen = slot.except_seen.load(Ordering::Acquire);
        if cursor == DETACHED {
            if !slot.lagging.swap(false, Ordering::AcqRel) {
                return 0;
            }
            self.skipping.fetch_sub(1, Ordering::AcqRel);
            slot.except_seen.store(total, Ordering::Release);
            let skipped = st.head() - slot.skip_from.load(Ordering::Acquire);
            return (skipped - (total - seen)) as usize;
        }
        if cursor >= st.base {
            return 0;
        }
        // Entries below the base that excluded this client were never its to lose.
        let in_log = st.excepted_in_log(slot.id);
        let excepted_gone = total - seen - in_log;
        slot.except_seen.store(total - in_log, Ordering::Release);
        (st.base - cursor - excepted_gone) as usize
    }

    /// Moves a reader's cursor from `from` to `to` (the caller holds the read lock and read
    /// those entries). Returns true if it was the last reader below the trim mark: the caller
    /// then calls [`Inner::trim`] once the read lock is released.
    pub(crate) fn advance(&self, st: &State<M>, slot: &Slot<M>, from: u64, to: u64) -> bool {
        slot.cursor.store(to, Ordering::Release);
        from < st.mark && to >= st.mark && self.pending.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Releases the entries every reader has passed (see the module docs).
    pub(crate) fn trim(&self) {
        let mut st = self.write();
        if self.pending.load(Ordering::Acquire) == 0 {
            self.trim_locked(&mut st);
        }
    }

    /// With `pending` at 0: drops the log below the lowest cursor, and sets the next mark at
    /// the head with the readers still below it.
    fn trim_locked(&self, st: &mut State<M>) {
        st.trim_due = false;
        let head = st.head();
        let mut min = head;
        let mut below = 0;
        for slot in st.members.iter() {
            let c = slot.cursor.load(Ordering::Acquire);
            if c == DETACHED {
                continue;
            }
            min = min.min(c);
            below += usize::from(c < head);
        }
        while st.base < min && st.log.pop_front().is_some() {
            st.base += 1;
        }
        if st.log.is_empty() {
            // Release the memory of a ring that once was full.
            st.log = VecDeque::new();
        }
        st.scanned_to = st.scanned_to.max(min.min(st.base));
        st.mark = head;
        self.pending.store(below, Ordering::Release);
    }

    /// Takes `slot` off the log: its unread entries move to its private queue (`keep`) or are
    /// discarded (returned count), and it is closed with `reason` unless already closed.
    fn detach(&self, st: &State<M>, slot: &Slot<M>, reason: CloseReason, keep: bool) -> usize {
        // The cursor leaves the log under the slot lock, in one step with the copy below: a
        // receiver holding only that lock (taking direct sends) then sees either the cursor
        // on the log, or DETACHED with the unread entries already in its private queue, never
        // DETACHED with them missing (a direct send would overtake them; found by loom).
        let mut ss = lock(&slot.state);
        let cursor = slot.cursor.swap(DETACHED, Ordering::AcqRel);
        // Whatever the log no longer holds for it is lost, kept or not.
        let mut discarded = self.lost(st, slot, cursor);
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
        self.trim_if_due(&mut st);
        true
    }

    /// The receiver went away: unregister the client (if still registered) and discard its
    /// backlog, counted as dropped.
    pub(crate) fn drop_receiver(&self, slot: &Arc<Slot<M>>) {
        let mut st = self.write();
        self.unlink(&mut st, slot.id);
        let discarded = self.detach(&st, slot, CloseReason::Unregistered, false);
        Counters::add(&self.counters.dropped, discarded);
        self.trim_if_due(&mut st);
    }

    fn trim_if_due(&self, st: &mut State<M>) {
        if st.trim_due {
            self.trim_locked(st);
        }
    }

    /// A reader leaves the log (unregistered, or DropNewest taking it off): it no longer
    /// counts towards the trim mark.
    fn leave_log(&self, st: &mut State<M>, cursor: u64) {
        if cursor != DETACHED
            && cursor < st.mark
            && self.pending.fetch_sub(1, Ordering::AcqRel) == 1
        {
            st.trim_due = true;
        }
    }

    /// Takes `id` out of the member set, keeps `connected` in step and wakes `wait_empty` when
    /// the last member goes. `None` if it was not a member. O(1).
    fn unlink(&self, st: &mut State<M>, id: ClientId) -> Option<Arc<Slot<M>>> {
        let slot = st.members.remove(id)?;
        self.leave_log(st, slot.cursor.load(Ordering::Acquire));
        self.waiters.remove(&slot);
        self.connected.store(st.members.len(), Ordering::Release);
        if st.members.is_empty() {
            self.emptied.notify_waiters();
        }
        Some(slot)
    }

    /// Appends `msg` for every member but `except`; returns how many accepted it.
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
        st.log.push_back(Entry { msg, except });
        self.head.store(head + 1, Ordering::SeqCst);
        let skipping = self.skipping.load(Ordering::Acquire);
        // Members skipping under DropNewest are offered the message (and count it as dropped
        // when they rejoin) but do not accept it.
        let (excluded, excluded_skipping) = match except.and_then(|id| st.members.get(id)) {
            Some(slot) => {
                slot.except_total.fetch_add(1, Ordering::AcqRel);
                (1, usize::from(slot.lagging.load(Ordering::Acquire)))
            }
            None => (0, 0),
        };
        let offered = st.members.len() - excluded;
        let accepted = offered - (skipping - excluded_skipping);
        if self.pending.load(Ordering::Acquire) == 0 {
            // Arm the next trim: every reader is below the new head.
            st.mark = head + 1;
            self.pending
                .store(st.members.len() - skipping, Ordering::Release);
        }
        self.trim_if_due(&mut st);
        drop(st);
        Counters::add(&self.counters.sent, offered);
        self.waiters.wake_all();
        accepted
    }

    /// The ring is full: apply the overflow policy to every client still at the oldest entry,
    /// then drop that entry.
    fn make_room(&self, st: &mut State<M>) {
        let base = st.base;
        let policy = self.config.get_overflow();
        // DropOldest: the ring just moves on; a receiver left behind counts its own gap.
        if policy != OverflowPolicy::DropOldest && st.scanned_to <= base {
            let mut min = st.head();
            let mut behind = Vec::new();
            for slot in st.members.iter() {
                let c = slot.cursor.load(Ordering::Acquire);
                if c <= base {
                    behind.push(slot.clone());
                } else if c != DETACHED {
                    min = min.min(c);
                }
            }
            for slot in behind {
                match policy {
                    OverflowPolicy::DropNewest => self.skip_newest(st, &slot),
                    _ => self.evict_locked(st, &slot, 0),
                }
            }
            st.scanned_to = min;
        }
        st.log.pop_front();
        st.base += 1;
    }

    /// DropNewest: a client whose backlog reached the capacity keeps it (copied into its
    /// private queue) and leaves the log; broadcasts skip it until it has drained.
    fn skip_newest(&self, st: &mut State<M>, slot: &Slot<M>) {
        let cursor = slot.cursor.load(Ordering::Acquire);
        self.leave_log(st, cursor);
        let mut ss = lock(&slot.state);
        let mut excepted = 0;
        for (seq, e) in st.entries_from(cursor) {
            if e.except == Some(slot.id) {
                excepted += 1;
            } else {
                ss.private.push_back((Key::log(seq), e.msg.clone()));
            }
        }
        slot.private_len.store(ss.private.len(), Ordering::Release);
        drop(ss);
        slot.except_seen.fetch_add(excepted, Ordering::AcqRel);
        slot.skip_from.store(st.head(), Ordering::Release);
        slot.lagging.store(true, Ordering::Release);
        self.skipping.fetch_add(1, Ordering::AcqRel);
        slot.cursor.store(DETACHED, Ordering::Release);
    }

    /// A DropNewest client that has drained its private queue rejoins the log at the head;
    /// what it skipped meanwhile is counted as dropped. Called by its receiver under the read
    /// lock.
    pub(crate) fn rejoin(&self, st: &State<M>, slot: &Slot<M>) {
        // Still skipping (not unregistered or shut down meanwhile: that settles `lagging`
        // under the write lock) and drained.
        if !slot.lagging.load(Ordering::Acquire)
            || slot.cursor.load(Ordering::Acquire) != DETACHED
            || slot.private_len.load(Ordering::Acquire) != 0
        {
            return;
        }
        let skipped = self.lost(st, slot, DETACHED);
        // At the head: not below the trim mark.
        slot.cursor.store(st.head(), Ordering::Release);
        Counters::add(&self.counters.dropped, skipped);
    }

    /// Evicts a member while the write lock is held; `extra` more messages are counted as
    /// dropped (a direct send that did not fit).
    fn evict_locked(&self, st: &mut State<M>, slot: &Arc<Slot<M>>, extra: usize) {
        if self.unlink(st, slot.id).is_none() {
            Counters::add(&self.counters.dropped, extra);
            return;
        }
        let discarded = self.detach(st, slot, CloseReason::Evicted, false);
        Counters::add(&self.counters.dropped, discarded + extra);
        Counters::add(&self.counters.evicted, 1);
        tracing::debug!(client = %slot.id, discarded, "evicted slow client");
    }

    /// Parks a receiver until the next broadcast (its waker is stored in its slot). The caller
    /// re-checks the head afterwards.
    pub(crate) fn park(&self, slot: &Arc<Slot<M>>) {
        self.waiters.park(slot);
    }

    /// Queues `msg` for one client, under the overflow policy.
    pub(crate) fn send_to(&self, slot: &Arc<Slot<M>>, msg: M) -> Result<(), SendError<M>> {
        if self.is_shutdown() {
            return Err(SendError::new(Error::Shutdown, msg));
        }
        let cap = self.capacity();
        let key = Key::direct(self.head.load(Ordering::SeqCst));
        let mut ss = lock(&slot.state);
        if ss.closed.is_some() {
            return Err(SendError::new(Error::ClientClosed(slot.id), msg));
        }
        if ss.private.len() >= cap {
            match self.config.get_overflow() {
                OverflowPolicy::DropNewest => {
                    Counters::add(&self.counters.sent, 1);
                    Counters::add(&self.counters.dropped, 1);
                    return Err(SendError::new(Error::MailboxFull(slot.id), msg));
                }
                OverflowPolicy::DropOldest => {
                    ss.private.pop_front();
                    Counters::add(&self.counters.dropped, 1);
                }
                OverflowPolicy::Disconnect => {
                    // Eviction needs the write lock, taken before a slot lock: re-check after.
                    drop(ss);
                    let mut st = self.write();
                    ss = lock(&slot.state);
                    if ss.closed.is_some() {
                        return Err(SendError::new(Error::ClientClosed(slot.id), msg));
                    }
                    if ss.private.len() >= cap {
                        drop(ss);
                        Counters::add(&self.counters.sent, 1);
                        self.evict_locked(&mut st, slot, 1);
                        self.trim_if_due(&mut st);
                        return Err(SendError::new(Error::Evicted(slot.id), msg));
                    }
                    // The receiver drained meanwhile: queue it after all.
                }
            }
        }
        // From here on the message is the hub's: it ends up delivered or counted as dropped.
        Counters::add(&self.counters.sent, 1);
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
            // A DropOldest receiver below the base will read at most a full ring.
            let behind = self.head.load(Ordering::Acquire).saturating_sub(cursor);
            behind.min(self.capacity() as u64) as usize
        };
        in_log + slot.private_len.load(Ordering::Acquire)
    }

    pub(crate) fn client_ids(&self) -> Vec<ClientId> {
        self.read().members.iter().map(|s| s.id).collect()
    }

    pub(crate) fn max_backlog(&self) -> usize {
        let st = self.read();
        st.members
            .iter()
            .map(|s| self.backlog(s))
            .max()
            .unwrap_or(0)
    }

    /// Each member's id and backlog (for the metrics' depth samples).
    #[cfg(feature = "metrics")]
    pub(crate) fn backlogs(&self, out: &mut Vec<(ClientId, usize)>) {
        let st = self.read();
        out.extend(st.members.iter().map(|s| (s.id, self.backlog(s))));
    }

    /// Log entries held right now (for tests of the trim).
    #[cfg(test)]
    pub(crate) fn log_len(&self) -> usize {
        self.read().log.len()
    }

    /// Receivers registered in the waiter list right now (for tests).
    #[cfg(test)]
    pub(crate) fn parked(&self) -> usize {
        self.waiters.len()
    }

    /// Detaches every member (keeping or discarding what it has not read) and drops the log.
    /// Returns how many messages were discarded.
    fn detach_all(&self, st: &mut State<M>, reason: CloseReason, keep: bool) -> usize {
        let mut discarded = 0;
        for slot in st.members.iter() {
            discarded += self.detach(st, slot, reason, keep);
        }
        st.base = st.head();
        st.log = VecDeque::new();
        st.mark = st.base;
        st.trim_due = false;
        self.pending.store(0, Ordering::Release);
        discarded
    }

    pub(crate) fn shutdown(&self) {
        let mut st = self.write();
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Each member keeps what it has not read yet, privately; the log is no longer needed.
        // What a lagging member had already lost (DropOldest's gap, DropNewest's skips) is
        // settled here.
        let lost = self.detach_all(&mut st, CloseReason::Shutdown, true);
        drop(st);
        Counters::add(&self.counters.dropped, lost);
        self.waiters.wake_all();
    }

    /// Shuts down (if not yet) and discards what every mailbox still holds. Under the write
    /// lock, so no receiver reads what is being counted as discarded.
    pub(crate) fn abort(&self) -> usize {
        let mut st = self.write();
        self.shut_down.store(true, Ordering::Release);
        let discarded = self.detach_all(&mut st, CloseReason::Shutdown, false);
        drop(st);
        Counters::add(&self.counters.dropped, discarded);
        self.waiters.wake_all();
        discarded
    }
}

#[cfg(test)]
mod tests {
    //! What only the engine can see: the waiter list and the log's length.
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use crate::{Hub, HubConfig, OverflowPolicy};

    fn poll_once<M: Clone>(mail: &mut crate::Mailbox<M>) -> Poll<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        mail.poll_recv_with(&mut cx, 1024, |_| true)
            .map(|r| r.unwrap_or(0))
    }

    #[test]
    fn a_receiver_polled_many_times_is_parked_once_and_removed_when_it_leaves() {
        let hub: Hub<u64> = Hub::new();
        let (client, mut mail) = hub.register().unwrap();
        client.join("room").unwrap();
        for i in 0..1_000 {
            // Room traffic only: the hub's own log never broadcasts, so nothing empties its
            // waiter list but the receiver's own bookkeeping.
            hub.broadcast_to("room", i);
            assert_eq!(poll_once(&mut mail), Poll::Ready(1));
            assert_eq!(poll_once(&mut mail), Poll::Pending);
        }
        assert_eq!(hub.inner.parked(), 1);
        drop(client);
        assert_eq!(
            hub.inner.parked(),
            0,
            "an unregistered receiver stays parked"
        );
        drop(mail);
    }

    #[test]
    fn the_log_is_released_once_every_reader_has_read_it() {
        for policy in [
            OverflowPolicy::Disconnect,
            OverflowPolicy::DropOldest,
            OverflowPolicy::DropNewest,
        ] {
            let hub = Hub::with_config(HubConfig::default().overflow(policy));
            let (_a, mut a) = hub.register().unwrap();
            let (_b, mut b) = hub.register().unwrap();
            let payload = Arc::new(vec![0u8; 64 * 1024]);
            for _ in 0..200 {
                hub.broadcast(payload.clone());
            }
            assert_eq!(hub.inner.log_len(), 200);
            while poll_once(&mut a).is_ready() {}
            assert_eq!(hub.inner.log_len(), 200, "b has not read yet");
            while poll_once(&mut b).is_ready() {}
            assert_eq!(hub.inner.log_len(), 0, "{policy:?}: read entries kept");
            assert_eq!(Arc::strong_count(&payload), 1);
            // And again, with one reader leaving instead of reading.
            for _ in 0..10 {
                hub.broadcast(payload.clone());
            }
            while poll_once(&mut a).is_ready() {}
            drop(b);
            assert_eq!(
                hub.inner.log_len(),
                0,
                "{policy:?}: kept for a reader that left"
            );
            assert_eq!(Arc::strong_count(&payload), 1);
        }
    }
}
