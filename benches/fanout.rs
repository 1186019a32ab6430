//! In-process fan-out: one broadcast to N members, each drained by its own tokio task.
//!
//! Three contenders in one group, run in the same process on the same runtime:
//!
//! - `wshub`: [`Hub::broadcast`] into the hub's shared log; each member drains with
//!   `poll_recv_with`, reading every message by reference, as the WebSocket writer does (it
//!   encodes the frame straight from the shared message);
//! - `wshub_owned`: the same hub, each member taking owned clones with `recv_all` (one
//!   reference-count bump per delivery, like the baselines);
//! - `tokio_broadcast`: one `tokio::sync::broadcast` channel with N receivers;
//! - `rwlock_hashmap`: `RwLock<HashMap<id, mpsc::UnboundedSender>>` iterated per message,
//!   the pattern people write by hand.
//!
//! Each iteration publishes `BURST` messages and waits until every member has received all of
//! them; throughput is in deliveries (messages × members). Receivers add to a shared counter
//! once per batch they take, not per message, so counting does not dominate any contender.
//!
//! Also: register/unregister churn, the cost of a broadcast to a hub with one stalled
//! member, fresh versus after a million messages (it must not grow), and the publisher's cost
//! with 1 000 to 100 000 clients that never read (`slow_clients`, it must not grow either).
//!
//! Run: `cargo bench --bench fanout` (HTML report in target/criterion/report/index.html).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio::sync::{broadcast, mpsc};
use wshub::{Hub, HubConfig, Message, OverflowPolicy};

/// Messages published per iteration.
const BURST: u64 = 64;
/// Members per group.
const SIZES: [usize; 5] = [1, 10, 100, 1_000, 10_000];
/// Payload sizes.
const PAYLOADS: [usize; 2] = [64, 4096];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn payload(size: usize) -> Message {
    Message::text("x".repeat(size))
}

/// Waits until `counter` reaches `target`, yielding to the receivers meanwhile.
async fn wait_until(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Acquire) < target {
        tokio::task::yield_now().await;
    }
}

/// A baseline's receiving end.
trait Inbox: Send + 'static {
    /// `Some(true)`: took a message; `Some(false)`: nothing waiting; `None`: closed.
    fn try_take(&mut self) -> Option<bool>;
    /// Waits for a message; false once closed.
    fn take(&mut self) -> impl std::future::Future<Output = bool> + Send;
}

impl Inbox for broadcast::Receiver<Message> {
    fn try_take(&mut self) -> Option<bool> {
        match self.try_recv() {
            Ok(m) => {
                drop(black_box(m));
                Some(true)
            }
            Err(broadcast::error::TryRecvError::Empty) => Some(false),
            Err(_) => None,
        }
    }
    async fn take(&mut self) -> bool {
        self.recv().await.map(|m| drop(black_box(m))).is_ok()
    }
}

impl Inbox for mpsc::UnboundedReceiver<Message> {
    fn try_take(&mut self) -> Option<bool> {
        match self.try_recv() {
            Ok(m) => {
                drop(black_box(m));
                Some(true)
            }
            Err(mpsc::error::TryRecvError::Empty) => Some(false),
            Err(_) => None,
        }
    }
    async fn take(&mut self) -> bool {
        self.recv().await.map(|m| drop(black_box(m))).is_some()
    }
}

/// A baseline member: take everything available, publish the count once, then park.
async fn count_deliveries(mut rx: impl Inbox, delivered: Arc<AtomicU64>) {
    let mut local = 0u64;
    loop {
        match rx.try_take() {
            Some(true) => {
                local += 1;
                continue;
            }
            Some(false) => {}
            None => break,
        }
        delivered.fetch_add(std::mem::take(&mut local), Ordering::Release);
        if !rx.take().await {
            break;
        }
        local += 1;
    }
}

/// A contender: members spawned on the runtime, a publish function, a delivery counter.
trait Contender {
    fn publish(&self, msg: &Message);
    fn delivered(&self) -> &AtomicU64;
}

struct WshubFanout {
    hub: Hub<Message>,
    delivered: Arc<AtomicU64>,
    _clients: Vec<wshub::ClientHandle<Message>>,
}

impl WshubFanout {
    /// Members read by reference (`poll_recv_with`), as the WebSocket writer does.
    fn by_reference(rt: &Runtime, n: usize) -> Self {
        let hub: Hub<Message> = Hub::with_config(HubConfig::default().mailbox_capacity(1024));
        let delivered = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let (client, mut mailbox) = hub.register().expect("register");
            clients.push(client);
            let delivered = delivered.clone();
            rt.spawn(async move {
                let mut bytes = 0usize;
                loop {
                    let polled = std::future::poll_fn(|cx| {
                        mailbox.poll_recv_with(cx, 1024, |m| {
                            bytes += black_box(m).len();
                            true
                        })
                    })
                    .await;
                    match polled {
                        Ok(k) => delivered.fetch_add(k as u64, Ordering::Release),
                        Err(_) => break,
                    };
                }
                black_box(bytes);
            });
        }
        WshubFanout {
            hub,
            delivered,
            _clients: clients,
        }
    }

    /// Members take owned clones (`recv_all`), like the baselines.
    fn owned(rt: &Runtime, n: usize) -> Self {
        let hub = Hub::with_config(HubConfig::default().mailbox_capacity(1024));
        let delivered = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let (client, mut mailbox) = hub.register().expect("register");
            clients.push(client);
            let delivered = delivered.clone();
            rt.spawn(async move {
                // As the WebSocket writer drains: swap the whole queue out, consume it.
                let mut batch = std::collections::VecDeque::new();
                while let Ok(k) = mailbox.recv_all(&mut batch).await {
                    batch.clear();
                    delivered.fetch_add(k as u64, Ordering::Release);
                }
            });
        }
        WshubFanout {
            hub,
            delivered,
            _clients: clients,
        }
    }
}

impl Contender for WshubFanout {
    fn publish(&self, msg: &Message) {
        self.hub.broadcast(msg.clone());
    }
    fn delivered(&self) -> &AtomicU64 {
        &self.delivered
    }
}

struct TokioBroadcast {
    tx: broadcast::Sender<Message>,
    delivered: Arc<AtomicU64>,
}

impl TokioBroadcast {
    fn new(rt: &Runtime, n: usize) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let delivered = Arc::new(AtomicU64::new(0));
        for _ in 0..n {
            let rx = tx.subscribe();
            let delivered = delivered.clone();
            rt.spawn(count_deliveries(rx, delivered));
        }
        TokioBroadcast { tx, delivered }
    }
}

impl Contender for TokioBroadcast {
    fn publish(&self, msg: &Message) {
        let _ = self.tx.send(msg.clone());
    }
    fn delivered(&self) -> &AtomicU64 {
        &self.delivered
    }
}

struct RwLockHashMap {
    members: Arc<RwLock<HashMap<u64, mpsc::UnboundedSender<Message>>>>,
    delivered: Arc<AtomicU64>,
}

impl RwLockHashMap {
    fn new(rt: &Runtime, n: usize) -> Self {
        let members = Arc::new(RwLock::new(HashMap::new()));
        let delivered = Arc::new(AtomicU64::new(0));
        for id in 0..n as u64 {
            let (tx, rx) = mpsc::unbounded_channel::<Message>();
            members.write().expect("lock").insert(id, tx);
            let delivered = delivered.clone();
            rt.spawn(count_deliveries(rx, delivered));
        }
        RwLockHashMap { members, delivered }
    }
}

impl Contender for RwLockHashMap {
    fn publish(&self, msg: &Message) {
        for tx in self.members.read().expect("lock").values() {
            let _ = tx.send(msg.clone());
        }
    }
    fn delivered(&self) -> &AtomicU64 {
        &self.delivered
    }
}

/// Times `iters` bursts: publish BURST messages, wait for every delivery. The publisher is a
/// task on the same 2-worker runtime as the members, as a server's broadcasting connection
/// task is, so every contender pays for all of its work on the same two cores.
fn run_bursts<C: Contender + Send + Sync + 'static>(
    rt: &Runtime,
    contender: &Arc<C>,
    n: usize,
    msg: &Message,
    iters: u64,
) -> Duration {
    let contender = contender.clone();
    let msg = msg.clone();
    rt.block_on(async move {
        rt_spawn(async move {
            let start = Instant::now();
            for _ in 0..iters {
                let target = contender.delivered().load(Ordering::Acquire) + BURST * n as u64;
                for _ in 0..BURST {
                    contender.publish(&msg);
                }
                wait_until(contender.delivered(), target).await;
            }
            start.elapsed()
        })
        .await
    })
}

async fn rt_spawn<F: std::future::Future<Output = Duration> + Send + 'static>(f: F) -> Duration {
    tokio::spawn(f).await.expect("publisher task")
}

fn fanout(c: &mut Criterion) {
    for size in PAYLOADS {
        let mut group = c.benchmark_group(format!("fanout/{size}B"));
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_millis(500));
        let msg = payload(size);
        for n in SIZES {
            group.throughput(Throughput::Elements(BURST * n as u64));
            for (name, make) in [
                (
                    "wshub",
                    WshubFanout::by_reference as fn(&Runtime, usize) -> WshubFanout,
                ),
                ("wshub_owned", WshubFanout::owned),
            ] {
                let rt = runtime();
                let c = Arc::new(make(&rt, n));
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                    b.iter_custom(|iters| run_bursts(&rt, &c, n, &msg, iters))
                });
                assert_eq!(c.hub.stats().dropped, 0, "the bench must not drop");
            }
            {
                let rt = runtime();
                let c = Arc::new(TokioBroadcast::new(&rt, n));
                group.bench_with_input(BenchmarkId::new("tokio_broadcast", n), &n, |b, &n| {
                    b.iter_custom(|iters| run_bursts(&rt, &c, n, &msg, iters))
                });
            }
            {
                let rt = runtime();
                let c = Arc::new(RwLockHashMap::new(&rt, n));
                group.bench_with_input(BenchmarkId::new("rwlock_hashmap", n), &n, |b, &n| {
                    b.iter_custom(|iters| run_bursts(&rt, &c, n, &msg, iters))
                });
            }
        }
        group.finish();
    }
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn");
    group.throughput(Throughput::Elements(1));
    let hub: Hub<Message> = Hub::new();
    // A hub that already has 1 000 members, so the index is not trivially small.
    let _members: Vec<_> = (0..1_000)
        .map(|_| hub.register().expect("register"))
        .collect();
    group.bench_function("register_unregister", |b| {
        b.iter(|| {
            let (client, mailbox) = hub.register().expect("register");
            drop(black_box(client));
            drop(mailbox);
        })
    });
    group.finish();
}

/// Broadcast to 100 drained members plus one that never reads (DropOldest keeps it
/// registered). The cost must not depend on how long the stalled member has been stalled.
fn stalled_member(c: &mut Criterion) {
    let mut group = c.benchmark_group("stalled_member");
    group.throughput(Throughput::Elements(1));
    let msg = payload(64);
    for stalled_for in [0u64, 1_000_000] {
        let hub = Hub::with_config(HubConfig::default().overflow(OverflowPolicy::DropOldest));
        let (_stalled, _stalled_mailbox) = hub.register().expect("register");
        let mut members: Vec<_> = (0..100)
            .map(|_| hub.register().expect("register"))
            .collect();
        let mut cx = Context::from_waker(Waker::noop());
        let mut sink = Vec::new();
        let mut drain =
            |members: &mut Vec<(wshub::ClientHandle<Message>, wshub::Mailbox<Message>)>| {
                for (_, mailbox) in members.iter_mut() {
                    while let Poll::Ready(Ok(_)) =
                        mailbox.poll_recv_many(&mut cx, &mut sink, usize::MAX)
                    {}
                    sink.clear();
                }
            };
        for i in 0..stalled_for {
            hub.broadcast(msg.clone());
            if i % 128 == 0 {
                drain(&mut members);
            }
        }
        drain(&mut members);
        group.bench_function(BenchmarkId::new("broadcast_after", stalled_for), |b| {
            b.iter(|| {
                hub.broadcast(msg.clone());
                drain(&mut members);
            })
        });
    }
    group.finish();
}

/// Issue #8, defect 4: with N clients that never read (their backlogs full), what one
/// broadcast costs the publisher, and what unregistering all of them costs. Before the lazy
/// policies both grew with N (1.4 µs / 13.7 µs / 300 µs per broadcast at 1k / 10k / 100k
/// under `DropOldest`; 0.84 s to unregister 40 000); now neither should.
fn slow_clients(c: &mut Criterion) {
    let msg = payload(64);
    // A small ring keeps 100 000 full private backlogs (DropNewest) within memory; the
    // publisher's cost does not depend on the capacity.
    let config = |policy| HubConfig::default().mailbox_capacity(16).overflow(policy);
    for policy in [OverflowPolicy::DropOldest, OverflowPolicy::DropNewest] {
        let mut group = c.benchmark_group(format!("slow_clients/{policy:?}"));
        group.throughput(Throughput::Elements(1));
        for n in [1_000usize, 10_000, 100_000] {
            let hub = Hub::with_config(config(policy));
            let clients: Vec<_> = (0..n).map(|_| hub.register().expect("register")).collect();
            // Fill every backlog past its capacity, so every client is a lagging one.
            for _ in 0..2 * hub.config().get_mailbox_capacity() {
                hub.broadcast(msg.clone());
            }
            group.bench_function(BenchmarkId::new("broadcast", n), |b| {
                b.iter(|| hub.broadcast(msg.clone()))
            });
            drop(clients);
        }
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("unregister_all", 40_000), |b| {
            b.iter_batched(
                || {
                    let hub = Hub::with_config(config(policy));
                    let clients: Vec<_> = (0..40_000)
                        .map(|_| hub.register().expect("register"))
                        .collect();
                    for _ in 0..2 * hub.config().get_mailbox_capacity() {
                        hub.broadcast(msg.clone());
                    }
                    (hub, clients)
                },
                |(hub, clients)| {
                    drop(clients);
                    hub
                },
                criterion::BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, fanout, churn, stalled_member, slow_clients);
criterion_main!(benches);
