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
}

#[derive(Default)]
struct Counters {
    errors: AtomicU64,
    lost: AtomicU64,
    subscriptions: AtomicU64,
}

/// Carries room broadcasts between nodes through Redis pub/sub. Cheap to clone: keep a clone
/// to read [`RedisBackplane::stats`] after handing one to a [`Node`](super::Node).
#[derive(Clone)]
pub struct RedisBackplane {
    client: redis::Client,
    config: Arc<RedisConfig>,
    out: mpsc::Sender<Envelope>,
    counters: Arc<Counters>,
    subscribed: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("config", &self.config)
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
        let backplane = RedisBackplane {
            client,
            config: Arc::new(config),
            out,
            counters: Arc::new(Counters::default()),
            subscribed: Arc::new(watch::channel(false).0),
        };
        tokio::spawn(backplane.clone().publish_loop(rx));
        Ok(backplane)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RedisStats {
        RedisStats {
            errors: self.counters.errors.load(Ordering::Relaxed),
            lost: self.counters.lost.load(Ordering::Relaxed),
            subscriptions: self.counters.subscriptions.load(Ordering::Relaxed),
        }
    }

    /// Waits until the subscription is active (after start, or after a reconnection).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_subscribed(&self) {
        let mut rx = self.subscribed.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn channel(&self, room: &str) -> String {
        format!("{}:{room}", self.config.prefix)
    }

    fn error(&self, what: &str, e: &redis::RedisError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "redis backplane: {what}");
    }

    async fn publish_loop(self, mut rx: mpsc::Receiver<Envelope>) {
        let mut backoff = Backoff::new(self.config.max_backoff);
        'connect: loop {
            let mut conn = match self.client.get_multiplexed_async_connection().await {
                Ok(conn) => conn,
                Err(e) => {
                    self.error("connect (publisher) failed", &e);
                    backoff.wait().await;
                    continue;
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
                    backoff.wait().await;
                    continue 'connect;
                }
            }
            return; // every sender is gone
        }
    }

    async fn subscribe_loop(self, tx: mpsc::Sender<Envelope>) {
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
            while let Some(msg) = next(&mut stream).await {
                let Some(room) = msg.get_channel_name().get(skip..) else {
                    continue;
                };
                match Envelope::decode_body(room.into(), msg.get_payload_bytes()) {
                    Some(envelope) => {
                        if tx.send(envelope).await.is_err() {
                            return; // the node is gone
                        }
                    }
                    None => tracing::debug!(
                        channel = msg.get_channel_name(),
                        "ignored a malformed envelope"
                    ),
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
        tokio::spawn(self.clone().subscribe_loop(tx));
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
