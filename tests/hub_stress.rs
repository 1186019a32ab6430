//! Threaded stress of the hub engine: publishers, direct senders, joins and leaves,
//! unregisters and evictions racing on a multi-thread runtime, ending in a shutdown or an
//! abort that races the publishers too. After each run:
//!
//! - `sent == delivered + dropped` (nothing lost silently, nothing counted twice);
//! - every client saw each publisher's messages in order, without duplicates;
//! - no backlog ever exceeded the bound;
//! - no message is retained once every client is gone (the payload's reference count);
//! - every receiver ended (a lost wake-up would hang it, and the run times out).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wshub::{ClientHandle, Hub, HubConfig, Mailbox, OverflowPolicy};

const CAP: usize = 8;
/// Publisher ids: 0 broadcasts hub-wide, 1 to the room, 2 sends to single clients.
const HUB: u32 = 0;
const ROOM: u32 = 1;
const DIRECT: u32 = 2;

/// A message: who published it, its sequence number, and a tracker whose reference count
/// shows whether the hub still holds any copy.
type Msg = (u32, u64, Arc<()>);

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Reads until the mailbox closes, checking per-publisher order; slow receivers pause.
async fn receive(mut mail: Mailbox<Msg>, slow: bool, received: Arc<AtomicU64>) {
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut out = Vec::new();
    while let Ok(n) = mail.recv_many(&mut out, 16).await {
        for (publisher, seq, _) in out.drain(..) {
            if let Some(prev) = last.insert(publisher, seq) {
                assert!(seq > prev, "publisher {publisher}: {seq} after {prev}");
            }
        }
        received.fetch_add(n as u64, Ordering::Relaxed);
        if slow {
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
    }
}

fn run(policy: OverflowPolicy, seed: u64, abort: bool, end_races_publishers: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let hub: Hub<Msg> =
        Hub::with_config(HubConfig::default().mailbox_capacity(CAP).overflow(policy));
    let tracker = Arc::new(());
    let handles: Arc<Mutex<Vec<ClientHandle<Msg>>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut rng = Rng(seed | 1);

    let add_client = |rng: &mut Rng, receivers: &mut Vec<tokio::task::JoinHandle<()>>| {
        let Ok((handle, mail)) = hub.register() else {
            return;
        };
        if rng.below(2) == 0 {
            let _ = handle.join("r");
        }
        handles.lock().unwrap().push(handle);
        let slow = rng.below(3) == 0;
        receivers.push(rt.spawn(receive(mail, slow, received.clone())));
    };
    for _ in 0..12 {
        add_client(&mut rng, &mut receivers);
    }

    let done = Arc::new(AtomicBool::new(false));
    let max_backlog = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for publisher in [HUB, ROOM, DIRECT] {
            let (hub, tracker, handles) = (hub.clone(), tracker.clone(), handles.clone());
            let (done, max_backlog) = (done.clone(), max_backlog.clone());
            s.spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(31) + u64::from(publisher) + 1);
                let mut seq = 0;
                while !done.load(Ordering::Relaxed) && seq < 20_000 {
                    seq += 1;
                    let msg = (publisher, seq, tracker.clone());
                    match publisher {
                        HUB => {
                            hub.broadcast(msg);
                        }
                        ROOM => {
                            hub.broadcast_to("r", msg);
                        }
                        _ => {
                            let target = {
                                let hs = handles.lock().unwrap();
                                (!hs.is_empty())
                                    .then(|| hs[rng.below(hs.len() as u64) as usize].id())
                            };
                            if let Some(id) = target {
                                let _ = hub.send_to(id, msg);
                            }
                        }
                    }
                    let backlog = hub.max_queued() as u64;
                    max_backlog.fetch_max(backlog, Ordering::Relaxed);
                    if seq % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            });
        }
        // Churn: clients leave (handle dropped), join and leave the room, new ones arrive.
        for _ in 0..300 {
            match rng.below(4) {
                0 => {
                    let mut hs = handles.lock().unwrap();
                    if !hs.is_empty() {
                        let i = rng.below(hs.len() as u64) as usize;
                        drop(hs.swap_remove(i));
                    }
                }
                1 => {
                    let hs = handles.lock().unwrap();
                    if let Some(h) = hs.get(rng.below(hs.len().max(1) as u64) as usize) {
                        if !h.leave("r") {
                            let _ = h.join("r");
                        }
                    }
                }
                _ => add_client(&mut rng, &mut receivers),
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if end_races_publishers {
            end(&hub, abort);
        }
        done.store(true, Ordering::Relaxed);
    });
    if !end_races_publishers {
        end(&hub, abort);
    }
    rt.block_on(async {
        for r in receivers {
            tokio::time::timeout(Duration::from_secs(10), r)
                .await
                .expect("a receiver never ended: lost wake-up?")
                .expect("a receiver panicked");
        }
    });
    handles.lock().unwrap().clear();

    let stats = hub.stats();
    assert_eq!(stats.connected, 0);
    assert_eq!(
        stats.sent,
        stats.delivered + stats.dropped,
        "{policy:?} seed {seed} abort {abort}: {stats:?}"
    );
    assert_eq!(stats.delivered, received.load(Ordering::Relaxed));
    assert!(
        max_backlog.load(Ordering::Relaxed) <= 2 * CAP as u64,
        "backlog {} over the bound",
        max_backlog.load(Ordering::Relaxed)
    );
    assert_eq!(
        Arc::strong_count(&tracker),
        1,
        "{policy:?}: a message is still held after every client left"
    );
    if policy == OverflowPolicy::Disconnect {
        assert!(stats.evicted > 0 || stats.dropped == 0);
    }
}

fn end(hub: &Hub<Msg>, abort: bool) {
    if abort {
        hub.abort();
    } else {
        hub.shutdown();
    }
}

#[test]
fn disconnect_policy_under_threads() {
    for seed in 1..=4 {
        run(OverflowPolicy::Disconnect, seed * 7919, seed % 2 == 0, true);
    }
}

#[test]
fn drop_oldest_policy_under_threads() {
    for seed in 1..=4 {
        run(
            OverflowPolicy::DropOldest,
            seed * 104_729,
            seed % 2 == 0,
            false,
        );
    }
}

#[test]
fn drop_newest_policy_under_threads() {
    for seed in 1..=4 {
        run(
            OverflowPolicy::DropNewest,
            seed * 1_299_709,
            seed % 2 == 0,
            false,
        );
    }
}
