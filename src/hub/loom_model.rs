//! `loom` models of the engine's cursor protocol: a receiver reading the log races publishers,
//! a shutdown, an unregister, and (under `DropNewest`) its own return to the log. Each model
//! ends by draining the mailbox and checks what every user of the hub relies on:
//!
//! - `sent == delivered + dropped` (every message offered is accounted for exactly once);
//! - each publisher's messages arrive in order, without duplicates;
//! - the mailbox ends, with the reason the race decided.
//!
//! `RUSTFLAGS="--cfg wshub_loom" cargo test --lib --release loom_model`. The wait list's own
//! models (no lost wake-up) are in `wait.rs`.

use std::task::{Context, Poll, Waker};

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::{ClientHandle, Hub, HubConfig, Mailbox, OverflowPolicy};

/// Explores every interleaving with up to this many preemptions: more than the races found so
/// far needed (one or two), and the models still finish in about 15 s in release.
const PREEMPTIONS: usize = 3;

fn check(model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(PREEMPTIONS);
    builder.check(model);
}

fn hub(capacity: usize, policy: OverflowPolicy) -> Hub<u32> {
    Hub::with_config(
        HubConfig::default()
            .mailbox_capacity(capacity)
            .overflow(policy),
    )
}

/// Polls once; the messages it got (none if pending or closed).
fn poll_once(mail: &mut Mailbox<u32>) -> Vec<u32> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut got = Vec::new();
    let _ = mail.poll_recv_with(&mut cx, usize::MAX, |m| {
        got.push(*m);
        true
    });
    got
}

/// Reads until the mailbox has nothing more (closed, or nothing waiting).
fn drain(mail: &mut Mailbox<u32>, seen: &mut Vec<u32>) {
    loop {
        let got = poll_once(mail);
        if got.is_empty() {
            return;
        }
        seen.extend(got);
    }
}

/// Per publisher (the thousands digit), strictly increasing.
fn assert_in_order(seen: &[u32]) {
    for publisher in 0..10 {
        let own: Vec<u32> = seen
            .iter()
            .copied()
            .filter(|m| m / 1000 == publisher)
            .collect();
        assert!(
            own.windows(2).all(|w| w[0] < w[1]),
            "out of order or duplicated: {seen:?}"
        );
    }
}

fn assert_accounted(hub: &Hub<u32>) {
    let s = hub.stats();
    assert_eq!(s.sent, s.delivered + s.dropped, "{s:?}");
}

/// A publisher overflows a lagging reader while the hub shuts down: whatever the lagging
/// client had lost by then, and whatever it kept, is counted once (and under `Disconnect`
/// the overflow may evict it first).
fn shutdown_races_a_lagging_reader(policy: OverflowPolicy) {
    check(move || {
        let hub = hub(1, policy);
        let (client, mut mail) = hub.register().unwrap();
        let publisher = {
            let hub = hub.clone();
            thread::spawn(move || {
                for m in 1..=3 {
                    hub.broadcast(m);
                }
            })
        };
        let reader = thread::spawn(move || {
            let seen = poll_once(&mut mail);
            (mail, seen)
        });
        hub.shutdown();
        publisher.join().unwrap();
        let (mut mail, mut seen) = reader.join().unwrap();
        drain(&mut mail, &mut seen);
        assert_in_order(&seen);
        // Shut down, unless the overflow evicted it first.
        let mut cx = Context::from_waker(Waker::noop());
        let end = mail.poll_recv_with(&mut cx, 1, |_| true);
        let evicted = matches!(end, Poll::Ready(Err(crate::CloseReason::Evicted)));
        assert!(
            matches!(end, Poll::Ready(Err(crate::CloseReason::Shutdown)))
                || (evicted && policy == OverflowPolicy::Disconnect),
            "{end:?}"
        );
        drop((client, mail));
        assert_accounted(&hub);
    });
}

#[test]
fn drop_oldest_shutdown_races_a_lagging_reader() {
    shutdown_races_a_lagging_reader(OverflowPolicy::DropOldest);
}

#[test]
fn drop_newest_shutdown_races_a_lagging_reader() {
    shutdown_races_a_lagging_reader(OverflowPolicy::DropNewest);
}

#[test]
fn disconnect_shutdown_races_a_lagging_reader() {
    shutdown_races_a_lagging_reader(OverflowPolicy::Disconnect);
}

/// Under `DropNewest`, a client off the log drains its kept backlog and rejoins the log while
/// a publisher goes on: what it skipped is counted once, what it reads after is in order.
#[test]
fn drop_newest_rejoin_races_a_publisher() {
    check(|| {
        let hub = hub(1, OverflowPolicy::DropNewest);
        let (client, mut mail) = hub.register().unwrap();
        // The second broadcast finds the ring full: the client keeps [1] and skips.
        hub.broadcast(1);
        hub.broadcast(2);
        let publisher = {
            let hub = hub.clone();
            thread::spawn(move || {
                hub.broadcast(3);
                hub.broadcast(4);
            })
        };
        let mut seen = poll_once(&mut mail);
        seen.extend(poll_once(&mut mail));
        publisher.join().unwrap();
        drain(&mut mail, &mut seen);
        assert_eq!(seen.first(), Some(&1), "{seen:?}");
        assert_in_order(&seen);
        drop(client);
        drain(&mut mail, &mut seen);
        drop(mail);
        assert_accounted(&hub);
    });
}

/// The handle is dropped (the client leaves the hub, keeping what it was sent) while a
/// publisher broadcasts and a direct sender sends: the mailbox delivers what was accepted
/// before the unregister, in order, then ends; nothing is lost uncounted. (This model found
/// `detach` leaving the log before taking the slot lock, which let a direct send overtake a
/// broadcast.)
#[test]
fn unregister_races_broadcast_and_direct_send() {
    check(|| {
        let hub = hub(2, OverflowPolicy::DropOldest);
        let (client, mut mail) = hub.register().unwrap();
        let id = client.id();
        let broadcast_done = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (hub, done) = (hub.clone(), broadcast_done.clone());
            thread::spawn(move || {
                hub.broadcast(1);
                done.store(true, Ordering::SeqCst);
            })
        };
        let sender = {
            let (hub, done) = (hub.clone(), broadcast_done.clone());
            thread::spawn(move || {
                // A direct send made after the broadcast returned must arrive after it.
                let after = done.load(Ordering::SeqCst);
                let sent = hub.send_to(id, 1001).is_ok();
                (after, sent)
            })
        };
        let unregister = thread::spawn(move || drop::<ClientHandle<u32>>(client));
        let mut seen = Vec::new();
        drain(&mut mail, &mut seen);
        publisher.join().unwrap();
        let (after, sent) = sender.join().unwrap();
        unregister.join().unwrap();
        drain(&mut mail, &mut seen);
        if after && sent && seen.contains(&1) {
            assert_eq!(
                seen,
                vec![1, 1001],
                "a direct send overtook an earlier broadcast"
            );
        }
        assert_in_order(&seen);
        drop(mail);
        assert_accounted(&hub);
    });
}
