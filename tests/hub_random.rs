//! Randomised operation sequences against the hub's shared-log engine, checking what every
//! user relies on: per-client order, no duplicates, bounded backlogs, clients that keep up get
//! everything, and every accepted message is delivered or counted as dropped.

use std::collections::HashMap;
use std::task::{Context, Poll, Waker};

use wshub::{ClientHandle, ClientId, Hub, HubConfig, Mailbox, OverflowPolicy};

const ROOMS: [&str; 2] = ["r0", "r1"];

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Speed {
    /// Drains after every operation.
    Fast,
    /// Drains now and then, a few messages at a time.
    Slow,
    /// Never drains until the end.
    Stalled,
}

struct Client {
    handle: ClientHandle<u64>,
    mailbox: Mailbox<u64>,
    speed: Speed,
    /// Last id seen per channel (the top bits of an id name its channel: 0 = the hub and
    /// direct sends, 1.. = rooms); order is promised within a channel.
    last: [Option<u64>; 3],
    received: u64,
    rooms: [bool; 2],
    /// Broadcasts offered while this client kept up (fast clients must get all of them).
    offered: u64,
    closed: bool,
}

impl Client {
    fn drain(&mut self, limit: usize, cap: usize) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        loop {
            match self.mailbox.poll_recv_many(&mut cx, &mut out, limit) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => {
                    self.closed = true;
                    break;
                }
                Poll::Pending => break,
            }
            if out.len() >= limit {
                break;
            }
        }
        assert!(
            out.len() <= (2 * cap).saturating_add(limit),
            "more than the bound came out at once"
        );
        for id in out {
            let ch = (id >> 32) as usize;
            assert!(
                self.last[ch].is_none_or(|l| id > l),
                "out of order or duplicate: {id} after {:?}",
                self.last[ch]
            );
            self.last[ch] = Some(id);
            self.received += 1;
        }
    }
}

fn run(policy: OverflowPolicy, seed: u64, ops: usize) {
    const CAP: usize = 8;
    let hub: Hub<u64> =
        Hub::with_config(HubConfig::default().mailbox_capacity(CAP).overflow(policy));
    let mut rng = Rng(seed);
    let mut clients: Vec<Client> = Vec::new();
    let mut next_msg = 0u64;
    let mut gone: HashMap<ClientId, u64> = HashMap::new();

    for _ in 0..ops {
        match rng.below(100) {
            0..=4 if clients.len() < 24 => {
                let (handle, mailbox) = hub.register().unwrap();
                let speed = match rng.below(3) {
                    0 => Speed::Fast,
                    1 => Speed::Slow,
                    _ => Speed::Stalled,
                };
                clients.push(Client {
                    handle,
                    mailbox,
                    speed,
                    last: [None; 3],
                    received: 0,
                    offered: 0,
                    closed: false,
                    rooms: [false; 2],
                });
            }
            5..=7 if !clients.is_empty() => {
                let c = clients.swap_remove(rng.below(clients.len() as u64) as usize);
                gone.insert(c.handle.id(), c.received);
            }
            8..=60 => {
                next_msg += 1;
                let n = hub.broadcast(next_msg);
                let live = clients.iter().filter(|c| !c.closed).count();
                assert!(n <= live, "offered to {n} of {live} live clients");
                for c in clients.iter_mut().filter(|c| c.speed == Speed::Fast) {
                    c.offered += 1;
                }
            }
            61..=75 if !clients.is_empty() => {
                next_msg += 1;
                let except = clients[rng.below(clients.len() as u64) as usize]
                    .handle
                    .id();
                hub.broadcast_except(except, next_msg);
                for c in clients
                    .iter_mut()
                    .filter(|c| c.speed == Speed::Fast && c.handle.id() != except)
                {
                    c.offered += 1;
                }
            }
            90..=92 if !clients.is_empty() => {
                let i = rng.below(clients.len() as u64) as usize;
                let r = rng.below(2) as usize;
                let c = &mut clients[i];
                if c.rooms[r] {
                    // An evicted client has already left its rooms.
                    let left = c.handle.leave(ROOMS[r]);
                    assert!(left || c.closed, "a member could not leave");
                    c.rooms[r] = false;
                } else if !c.closed {
                    match c.handle.join(ROOMS[r]) {
                        Ok(joined) => c.rooms[r] |= joined,
                        // Evicted, and its receiver has not noticed yet: no room for it.
                        Err(wshub::Error::ClientClosed(_)) => {}
                        Err(e) => panic!("join failed: {e}"),
                    }
                }
            }
            93..=96 => {
                let r = rng.below(2) as usize;
                next_msg += 1;
                let members = hub.room_count(ROOMS[r]);
                let n = hub.broadcast_to(ROOMS[r], ((r as u64 + 1) << 32) | next_msg);
                assert!(n <= members);
                for c in clients
                    .iter_mut()
                    .filter(|c| c.speed == Speed::Fast && c.rooms[r])
                {
                    c.offered += 1;
                }
            }
            76..=89 if !clients.is_empty() => {
                next_msg += 1;
                let i = rng.below(clients.len() as u64) as usize;
                let ok = hub.send_to(clients[i].handle.id(), next_msg).is_ok();
                if clients[i].speed == Speed::Fast {
                    assert!(ok, "a fast client refused a direct send");
                    clients[i].offered += 1;
                }
            }
            _ => {
                for c in clients.iter_mut().filter(|c| c.speed == Speed::Slow) {
                    if rng.below(4) == 0 {
                        c.drain(1 + rng.below(4) as usize, CAP);
                    }
                }
            }
        }
        for c in clients.iter_mut().filter(|c| c.speed == Speed::Fast) {
            c.drain(usize::MAX, CAP);
            assert!(!c.closed, "a fast client was evicted");
            assert_eq!(c.received, c.offered, "a fast client missed messages");
        }
        for c in &clients {
            // Each log (the hub's and each room's) holds at most CAP for a client, and its
            // private queue at most CAP more.
            let logs = 1 + c.handle.rooms().len();
            assert!(
                c.handle.queued() <= 2 * CAP * logs,
                "backlog {} over the bound for {logs} logs",
                c.handle.queued()
            );
        }
    }
    // Half the runs end in a shutdown, which settles every lagging client's loss at once.
    if seed % 2 == 1 {
        hub.shutdown();
    }
    // Everyone drains what is left; then nothing is unaccounted for.
    for c in &mut clients {
        c.drain(usize::MAX, CAP);
    }
    let stats = hub.stats();
    assert_eq!(
        stats.sent,
        stats.delivered + stats.dropped,
        "{policy:?} seed {seed}: {stats:?}"
    );
    if ops < 1000 {
        // Too short for the stalled clients to hit the bound reliably.
    } else if policy == OverflowPolicy::Disconnect {
        assert!(stats.evicted > 0, "the stalled clients were never evicted");
    } else {
        assert_eq!(stats.evicted, 0);
        assert!(
            stats.dropped > 0,
            "the stalled clients never dropped anything"
        );
    }
    drop(clients);
    assert_eq!(hub.client_count(), 0);
    let stats = hub.stats();
    assert_eq!(
        stats.sent,
        stats.delivered + stats.dropped,
        "after every client left"
    );
}

#[test]
fn short_runs_hold_the_invariants_too() {
    for seed in 1..=300 {
        for policy in [
            OverflowPolicy::Disconnect,
            OverflowPolicy::DropOldest,
            OverflowPolicy::DropNewest,
        ] {
            run(policy, seed, 60);
        }
    }
}

#[test]
fn disconnect_policy_holds_its_promises() {
    for seed in 1..=20 {
        run(OverflowPolicy::Disconnect, seed * 7919, 3_000);
    }
}

#[test]
fn drop_oldest_policy_holds_its_promises() {
    for seed in 1..=20 {
        run(OverflowPolicy::DropOldest, seed * 104_729, 3_000);
    }
}

#[test]
fn drop_newest_policy_holds_its_promises() {
    for seed in 1..=20 {
        run(OverflowPolicy::DropNewest, seed * 1_299_709, 3_000);
    }
}

#[test]
fn a_direct_send_after_a_broadcast_arrives_after_it() {
    let hub: Hub<&str> = Hub::new();
    let (a, mut mail) = hub.register().unwrap();
    hub.broadcast("first");
    a.send("second").unwrap();
    hub.broadcast("third");
    hub.send_to(a.id(), "fourth").unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    while let Poll::Ready(Ok(_)) = mail.poll_recv_many(&mut cx, &mut out, 10) {}
    assert_eq!(out, ["first", "second", "third", "fourth"]);
}
