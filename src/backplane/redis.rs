//! The Redis backplane: PUBLISH per room broadcast, one PSUBSCRIBE per node.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::{mpsc, watch};

use super::{Backplane, BackplaneError, Envelope};

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    url: String,
    prefix: String,
    queue: usize,
    max_backoff: Duration,
}

impl RedisConfig {
    /// Redis at `url` (e.g. `redis://127.0.0.1:6379`), channel prefix `wshub`, a publish queue
    /// of 1 024 envelopes, reconnect backoff from 100 ms doubling to at most 5 s.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "wshub".into(),
            queue: 1024,
            max_backoff: Duration::from_secs(5),
        }
    }

    /// The channel prefix, so several applications can share one Redis: a room `r` travels on
    /// channel `PREFIX:r`. The default is `wshub`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Envelopes waiting to be published (while Redis is slow or down) before a publish fails
    /// and is counted. The default is 1 024.
    ///
    /// # Panics
    ///
    /// Panics if `queue` is 0.
    #[must_use]
    pub fn queue(mut self, queue: usize) -> Self {
        assert!(queue > 0, "queue must hold at least one envelope");
        self.queue = queue;
        self
    }

    /// The longest pause between reconnection attempts. The default is 5 s.
    #[must_use]
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }
}

/// Counters of the Redis transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisStats {
    /// Failed connections, publishes and lost subscriptions.
    pub errors: u64,
    /// Envelopes that could not be published (the connection failed while sending them).
    pub lost: u64,
    /// Successful (re)subscriptions.
    pub subscriptions: u64,
    /// Envelopes received from Redis and dropped because the node's inbound queue was full
    /// (the node is not keeping up). See [`RedisBackplane`] for the policy.
    pub dropped: u64,
    /// Messages received from Redis that are not envelopes (another writer on the channel),
    /// ignored.
    pub malformed: u64,
}

#[derive(Default)]
struct Counters {
    errors: AtomicU64,
    lost: AtomicU64,
    subscriptions: AtomicU64,
    dropped: AtomicU64,
    malformed: AtomicU64,
}

/// Carries room broadcasts between nodes through Redis pub/sub. Cheap to clone: keep a clone
/// to read [`RedisBackplane::stats`] after handing one to a [`Node`](super::Node).
///
/// It runs two tasks, each with its own Redis connection. The publisher lives as long as any
/// clone of the backplane (a node holds one): once the last is dropped, it publishes what is
/// already queued if it is connected (and drops it if it is not), then closes its connection.
/// The subscriber started for a node ends, and closes its connection, when that node is
/// dropped. Neither reconnects once it has nobody to serve.
///
/// # A node that falls behind
///
/// The subscriber never waits for its node: it reads Redis as fast as messages arrive and
/// hands each envelope to the node's bounded inbound queue (4 096 envelopes for a
/// [`Node`](super::Node)). When that queue is full, the envelope is dropped and counted in
/// [`RedisStats::dropped`] (newest dropped, oldest kept; a warning is logged when a run of
/// drops begins). So a slow node costs a bounded amount of memory and loses messages, instead
/// of buffering without limit in the Redis connection.
#[derive(Clone)]
pub struct RedisBackplane {
    shared: Arc<Shared>,
    out: mpsc::Sender<Envelope>,
    /// Dropped with the last clone: tells the publisher to stop (re)connecting.
    _alive: Arc<watch::Sender<()>>,
}

/// What the tasks share with the handles. It holds no sender of the publish queue, so the
/// tasks do not keep the backplane alive.
struct Shared {
    client: redis::Client,
    config: RedisConfig,
    counters: Counters,
    subscribed: watch::Sender<bool>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// Creates the backplane and starts its publisher task (which connects, and reconnects,
    /// by itself). Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The URL is not a valid Redis URL.
    pub fn new(config: RedisConfig) -> Result<Self, crate::Error> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| crate::Error::Backplane(e.to_string()))?;
        let (out, rx) = mpsc::channel(config.queue);
        let (alive, alive_rx) = watch::channel(());
        let shared = Arc::new(Shared {
            client,
            config,
            counters: Counters::default(),
            subscribed: watch::channel(false).0,
        });
        tokio::spawn(shared.clone().publish_loop(rx, alive_rx));
        Ok(RedisBackplane {
            shared,
            out,
            _alive: Arc::new(alive),
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RedisStats {
        let c = &self.shared.counters;
        RedisStats {
            errors: c.errors.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
        }
    }

    /// Waits until the subscription is active (after start, or after a reconnection).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_subscribed(&self) {
        let mut rx = self.shared.subscribed.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Resolves once every clone of the backplane is gone (nothing is ever sent on `alive`).
async fn all_dropped(alive: &mut watch::Receiver<()>) {
    while alive.changed().await.is_ok() {}
}

impl Shared {
    fn channel(&self, room: &str) -> String {
        format!("{}:{room}", self.config.prefix)
    }

    fn error(&self, what: &str, e: &redis::RedisError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "redis backplane: {what}");
    }

    /// Publishes the queue until every handle is gone. While connected it drains the queue,
    /// which ends once the queue is empty and has no sender left; while connecting or waiting
    /// to reconnect it stops as soon as the last handle is dropped.
    async fn publish_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Envelope>,
        mut alive: watch::Receiver<()>,
    ) {
        let mut backoff = Backoff::new(self.config.max_backoff);
        'connect: loop {
            let connected = tokio::select! {
                c = self.client.get_multiplexed_async_connection() => c,
                () = all_dropped(&mut alive) => break 'connect,
            };
            let mut conn = match connected {
                Ok(conn) => conn,
                Err(e) => {
                    self.error("connect (publisher) failed", &e);
                    tokio::select! {
                        () = backoff.wait() => continue 'connect,
                        () = all_dropped(&mut alive) => break 'connect,
                    }
                }
            };
            backoff.reset();
            while let Some(envelope) = rx.recv().await {
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(self.channel(&envelope.room))
                    .arg(envelope.encode_body())
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = published {
                    self.counters.lost.fetch_add(1, Ordering::Relaxed);
                    self.error("publish failed; reconnecting", &e);
                    drop(conn);
                    tokio::select! {
                        () = backoff.wait() => continue 'connect,
                        () = all_dropped(&mut alive) => break 'connect,
                    }
                }
            }
            return; // every handle is gone and the queue is empty
        }
        // Every handle is gone while disconnected: what is still queued will not be sent.
        rx.close();
        let mut dropped = 0u64;
        while rx.try_recv().is_ok() {
            dropped += 1;
        }
        if dropped > 0 {
            self.counters.lost.fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(
                lost = dropped,
                "redis backplane: dropped while disconnected; queued broadcasts not published"
            );
        }
    }

    /// Delivers into `tx` until the node that owns its receiver is gone. Never waits for the
    /// node: an envelope that finds `tx` full is dropped and counted.
    async fn subscribe_loop(self: Arc<Self>, tx: mpsc::Sender<Envelope>) {
        tokio::select! {
            () = self.subscribe_until_closed(&tx) => {}
            () = tx.closed() => {}
        }
        self.subscribed.send_replace(false);
    }

    async fn subscribe_until_closed(&self, tx: &mpsc::Sender<Envelope>) {
        let pattern = format!("{}:*", self.config.prefix);
        let skip = self.config.prefix.len() + 1;
        let mut backoff = Backoff::new(self.config.max_backoff);
        loop {
            let mut pubsub = match self.client.get_async_pubsub().await {
                Ok(p) => p,
                Err(e) => {
                    self.error("connect (subscriber) failed", &e);
                    backoff.wait().await;
                    continue;
                }
            };
            if let Err(e) = pubsub.psubscribe(&pattern).await {
                self.error("psubscribe failed", &e);
                backoff.wait().await;
                continue;
            }
            backoff.reset();
            self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
            self.subscribed.send_replace(true);
            let mut stream = Box::pin(pubsub.into_on_message());
            let mut dropping = false;
            while let Some(msg) = next(&mut stream).await {
                let envelope = msg
                    .get_channel_name()
                    .get(skip..)
                    .and_then(|room| Envelope::decode_body(room.into(), msg.get_payload_bytes()));
                let Some(envelope) = envelope else {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        channel = msg.get_channel_name(),
                        "ignored a malformed envelope"
                    );
                    continue;
                };
                match tx.try_send(envelope) {
                    Ok(()) => dropping = false,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        if !dropping {
                            dropping = true;
                            tracing::warn!(
                                "redis backplane: the node is not keeping up; dropping envelopes"
                            );
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return, // the node is gone
                }
            }
            self.subscribed.send_replace(false);
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("redis backplane: subscription lost; reconnecting");
            backoff.wait().await;
        }
    }
}

async fn next<S: Stream + ?Sized>(stream: &mut Pin<Box<S>>) -> Option<S::Item> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}

impl Backplane for RedisBackplane {
    fn publish(&self, envelope: Envelope) -> Result<(), BackplaneError> {
        self.out.try_send(envelope).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BackplaneError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => BackplaneError::Closed,
        })
    }

    fn subscribe(&self, tx: mpsc::Sender<Envelope>) {
        tokio::spawn(self.shared.clone().subscribe_loop(tx));
    }
}

/// Exponential backoff: 100 ms, doubling, capped.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    fn new(max: Duration) -> Self {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max.max(Self::FIRST));
    }
}
