//! Receivers parked on one log, each registered at most once.
//!
//! A receiver with nothing to read stores its waker in its own slot, then registers the slot
//! here unless it is already registered; a broadcast takes the whole list with the lock held
//! only for the swap and wakes every slot with the lock released. So the list holds at most
//! one entry per parked receiver (however often each is polled), and an unregistered
//! receiver's entry is removed at once (O(1): each slot remembers its position).
//!
//! Why no wake-up is lost (checked by the loom model below):
//!
//! - A receiver stores its waker (under its slot's lock) *before* it looks at `pos`, and the
//!   waking side clears `pos` *before* it takes the waker (under the same lock). Either the
//!   waking side takes the new waker, or the receiver sees `pos` cleared and registers again.
//! - After registering, the receiver re-reads the log head; a broadcast stores the head before
//!   it looks at `nonempty`. A `SeqCst` fence on each side (between its store and its load)
//!   makes either the receiver see the new head or the broadcast see the registration. (The
//!   `SeqCst` accesses alone promise that too in the C++ model, but loom models them as
//!   acquire/release and found the gap; the fences are what it can check, and cost one
//!   barrier per broadcast.)

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::sync::{fence, lock, AtomicBool, AtomicUsize, Mutex};

/// `pos` of a slot that is not in the list.
pub(crate) const NOT_PARKED: usize = usize::MAX;

/// Something that can be parked: a slot with a position cell and a stored waker.
pub(crate) trait Parkable {
    /// Where this slot is in the list, or [`NOT_PARKED`].
    fn pos(&self) -> &AtomicUsize;
    /// Wakes the receiver's stored waker, if any.
    fn wake(&self);
}

pub(crate) struct WaitList<T> {
    list: Mutex<Vec<Arc<T>>>,
    /// The list may be non-empty: lets a broadcast skip the lock when nobody is parked.
    nonempty: AtomicBool,
}

impl<T> Default for WaitList<T> {
    fn default() -> Self {
        WaitList {
            list: Mutex::new(Vec::new()),
            nonempty: AtomicBool::new(false),
        }
    }
}

impl<T: Parkable> WaitList<T> {
    /// Registers `slot` unless it already is. The caller has stored its waker in the slot and
    /// re-checks the log head afterwards.
    pub(crate) fn park(&self, slot: &Arc<T>) {
        if slot.pos().load(Ordering::Acquire) == NOT_PARKED {
            let mut list = lock(&self.list);
            if slot.pos().load(Ordering::Acquire) == NOT_PARKED {
                slot.pos().store(list.len(), Ordering::Release);
                list.push(slot.clone());
                self.nonempty.store(true, Ordering::SeqCst);
            }
        }
        // Orders the registration before the caller's re-read of the head.
        fence(Ordering::SeqCst);
    }

    /// Takes `slot` out of the list, if it is in it (an unregistered client).
    pub(crate) fn remove(&self, slot: &Arc<T>) {
        if slot.pos().load(Ordering::Acquire) == NOT_PARKED {
            return;
        }
        let mut list = lock(&self.list);
        let pos = slot.pos().load(Ordering::Acquire);
        // A stale `pos` (the list was taken by a wake-up in progress) points elsewhere: that
        // wake-up holds the slot and releases it when done.
        if list.get(pos).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            list.swap_remove(pos);
            if let Some(moved) = list.get(pos) {
                moved.pos().store(pos, Ordering::Release);
            }
            slot.pos().store(NOT_PARKED, Ordering::Release);
        }
    }

    /// Wakes every parked receiver, with the lock released.
    pub(crate) fn wake_all(&self) {
        // Orders the caller's store of the new head before the look at `nonempty`.
        fence(Ordering::SeqCst);
        if !self.nonempty.swap(false, Ordering::SeqCst) {
            return;
        }
        let taken = std::mem::take(&mut *lock(&self.list));
        for slot in taken {
            slot.pos().store(NOT_PARKED, Ordering::Release);
            slot.wake();
        }
    }

    /// Entries in the list right now (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.list).len()
    }
}

#[cfg(all(test, wshub_loom))]
mod loom_model {
    //! `RUSTFLAGS="--cfg wshub_loom" cargo test --lib --release loom_model`
    use super::*;
    use loom::sync::atomic::AtomicU64;
    use std::task::{Wake, Waker};

    /// A receiver: a stored waker and a position, as the hub's `Slot`.
    struct Slot {
        pos: AtomicUsize,
        waker: Mutex<Option<Waker>>,
    }

    impl Parkable for Slot {
        fn pos(&self) -> &AtomicUsize {
            &self.pos
        }
        fn wake(&self) {
            let w = lock(&self.waker).take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// A waker that records that it was woken.
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// One poll of a receiver at `cursor`: true if it has something to read (or woke itself),
    /// false if it parked.
    fn poll(
        list: &WaitList<Slot>,
        slot: &Arc<Slot>,
        head: &AtomicU64,
        cursor: u64,
        w: &Waker,
    ) -> bool {
        if head.load(Ordering::SeqCst) > cursor {
            return true;
        }
        *lock(&slot.waker) = Some(w.clone());
        list.park(slot);
        head.load(Ordering::SeqCst) > cursor
    }

    /// A waker and the flag it sets when woken.
    fn flag_waker() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        (flag.clone(), Waker::from(flag))
    }

    /// A publisher thread: for each of `heads`, stores it as the head and wakes the list.
    fn publisher(
        list: &Arc<WaitList<Slot>>,
        head: &Arc<AtomicU64>,
        heads: &'static [u64],
    ) -> loom::thread::JoinHandle<()> {
        let (list, head) = (list.clone(), head.clone());
        loom::thread::spawn(move || {
            for &h in heads {
                head.store(h, Ordering::SeqCst);
                list.wake_all();
            }
        })
    }

    fn new_slot() -> Arc<Slot> {
        Arc::new(Slot {
            pos: AtomicUsize::new(NOT_PARKED),
            waker: Mutex::new(None),
        })
    }

    /// A receiver parked at head 0, polled twice (re-registration), and two broadcasts: the
    /// receiver either sees a new head or is woken.
    #[test]
    fn no_lost_wakeup_with_repolls() {
        loom::model(|| {
            let list = Arc::new(WaitList::<Slot>::default());
            let head = Arc::new(AtomicU64::new(0));
            let slot = new_slot();
            let (flag, waker) = flag_waker();
            let publisher = publisher(&list, &head, &[1, 2]);
            // Polled twice at cursor 0: the second poll must not register twice.
            let ready =
                poll(&list, &slot, &head, 0, &waker) || poll(&list, &slot, &head, 0, &waker);
            publisher.join().unwrap();
            assert!(ready || flag.0.load(Ordering::SeqCst), "lost wake-up");
            assert!(list.len() <= 1, "registered more than once");
        });
    }

    /// A receiver that was woken re-parks while the publisher is still waking the old list.
    #[test]
    fn repark_during_wake_all() {
        loom::model(|| {
            let list = Arc::new(WaitList::<Slot>::default());
            let head = Arc::new(AtomicU64::new(0));
            let slot = new_slot();
            let (_, waker) = flag_waker();
            assert!(!poll(&list, &slot, &head, 0, &waker));
            let publisher = publisher(&list, &head, &[1, 2]);
            // The receiver read up to 1 (if it was there) and parks again.
            let cursor = head.load(Ordering::SeqCst).min(1);
            let (flag2, waker2) = flag_waker();
            let ready = poll(&list, &slot, &head, cursor, &waker2);
            publisher.join().unwrap();
            let final_head = head.load(Ordering::SeqCst);
            assert!(
                ready || flag2.0.load(Ordering::SeqCst) || final_head == cursor,
                "lost wake-up"
            );
        });
    }

    /// Removing an unregistered receiver while a wake-up is in progress neither corrupts the
    /// list nor loses another receiver's registration.
    #[test]
    fn remove_races_wake_all() {
        loom::model(|| {
            let list = Arc::new(WaitList::<Slot>::default());
            let head = Arc::new(AtomicU64::new(0));
            let (a, b) = (new_slot(), new_slot());
            let ((_, wa), (fb, wb)) = (flag_waker(), flag_waker());
            assert!(!poll(&list, &a, &head, 0, &wa));
            assert!(!poll(&list, &b, &head, 0, &wb));
            let publisher = publisher(&list, &head, &[1]);
            list.remove(&a);
            publisher.join().unwrap();
            assert!(fb.0.load(Ordering::SeqCst), "b was not woken");
            assert_eq!(list.len(), 0);
            assert_eq!(b.pos.load(Ordering::SeqCst), NOT_PARKED);
        });
    }
}
