//! Rooms shared by hubs in several processes: the backplane.
//!
//! A [`Node`] wraps a local [`Hub<Message>`](crate::Hub) and a [`Backplane`]. A room broadcast
//! through the node is delivered to the local members at once and handed to the backplane,
//! encoded once; every other node delivers it to its own members of that room. Each envelope
//! carries the id of the node that sent it, so a node ignores its own echo: every member of
//! the room, on every node, receives the message exactly once.
//!
//! The backplane is a small trait, so tests and single-machine setups can use
//! [`InMemoryBackplane`], and a deployment uses Redis pub/sub (`RedisBackplane`, behind the
//! `redis` feature), as Socket.IO's Redis adapter and Centrifugo's Redis engine do.
//!
//! # When the backplane is down
//!
//! Local delivery never waits for the backplane and keeps working. The Redis backplane
//! reconnects with backoff and subscribes again. Broadcasts made meanwhile wait in its
//! bounded publish queue and go out once the connection is back; one that finds the queue full
//! is counted in [`BackplaneStats::publish_failed`], and the one being sent when the
//! connection broke in `RedisStats::lost`, both logged and never retried. Delivery between
//! nodes is at most once: a PUBLISH is never repeated and Redis pub/sub keeps no history, so
//! nothing arrives twice; what other nodes miss during an outage they do not get later.
//!
//! # When a node falls behind
//!
//! Envelopes from other nodes wait in the node's bounded inbound queue (4 096) on their way to
//! the local hub. The Redis backplane never waits for a full queue: it drops the envelope and
//! counts it in `RedisStats::dropped`, so a slow node loses messages rather than buffering
//! without bound.
//!
//! Every node subscribes to all rooms under its prefix (one `PSUBSCRIBE prefix:*`) and drops
//! envelopes for rooms it has no members in: one subscription to restore after a reconnect,
//! at the cost of receiving other rooms' traffic.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> wshub::Result<()> {
//! use wshub::backplane::{InMemoryBackplane, Node};
//! use wshub::{Hub, Message};
//!
//! let bus = InMemoryBackplane::new();
//! let (hub_a, hub_b) = (Hub::new(), Hub::new());
//! let node_a = Node::new(hub_a.clone(), bus.clone());
//! let _node_b = Node::new(hub_b.clone(), bus.clone());
//!
//! let (alice, _alice_mail) = hub_a.register()?;
//! let (bob, mut bob_mail) = hub_b.register()?;
//! alice.join("lobby")?;
//! bob.join("lobby")?;
//!
//! node_a.broadcast_to("lobby", Message::text("hi from node A"));
//! assert_eq!(bob_mail.recv().await, Ok(Message::text("hi from node A")));
//! # Ok(()) }
//! ```

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tungstenite::Message;

use crate::hub::Hub;

pub use memory::InMemoryBackplane;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisBackplane, RedisConfig, RedisStats};

/// One room broadcast on its way between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that published it (see [`Node::id`]).
    pub origin: u64,
    /// The room.
    pub room: Arc<str>,
    /// The message: text or binary.
    pub payload: Payload,
}

/// A broadcast's payload on the backplane.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Envelope {
    /// Encodes the envelope's body for a byte transport: 8 bytes of origin, 1 byte of kind
    /// (`t` or `b`), the payload. The room travels beside it (e.g. in the channel name).
    pub fn encode_body(&self) -> Vec<u8> {
        let (kind, data) = match &self.payload {
            Payload::Text(b) => (b't', b),
            Payload::Binary(b) => (b'b', b),
        };
        let mut out = Vec::with_capacity(9 + data.len());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.push(kind);
        out.extend_from_slice(data);
        out
    }

    /// Decodes what [`Envelope::encode_body`] produced; `None` for anything malformed (which
    /// the Redis transport counts in `RedisStats::malformed` and ignores).
    pub fn decode_body(room: Arc<str>, body: &[u8]) -> Option<Envelope> {
        let origin = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
        let data = Bytes::copy_from_slice(body.get(9..)?);
        let payload = match body.get(8)? {
            b't' => {
                std::str::from_utf8(&data).ok()?;
                Payload::Text(data)
            }
            b'b' => Payload::Binary(data),
            _ => return None,
        };
        Some(Envelope {
            origin,
            room,
            payload,
        })
    }
}

/// A transport that carries room broadcasts between nodes.
///
/// `publish` must not wait (queue, or fail and let the node count it); `subscribe` is called
/// once per node and yields every envelope published by any node, this one included (the node
/// drops its own by `origin`).
pub trait Backplane: Send + Sync + 'static {
    /// Hands an envelope to the transport.
    ///
    /// # Errors
    ///
    /// The envelope could not be queued (transport down and its queue full); the node counts
    /// it in [`BackplaneStats::publish_failed`].
    fn publish(&self, envelope: Envelope) -> Result<(), BackplaneError>;

    /// Starts delivering every node's envelopes into `tx`. A transport that reconnects keeps
    /// delivering into the same `tx`, and stops once `tx` is closed (the node is gone).
    ///
    /// `tx` is bounded: when the node falls behind, a transport must not buffer without limit
    /// in front of it, but drop what does not fit, and count it.
    fn subscribe(&self, tx: mpsc::Sender<Envelope>);
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The transport's outgoing queue is full (it is down or too slow); the envelope was
    /// dropped. Local members already got the message.
    #[error("backplane queue full: envelope dropped")]
    QueueFull,
    /// The transport is closed.
    #[error("backplane closed")]
    Closed,
}

/// Counters of one node's traffic through the backplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// Envelopes handed to the backplane.
    pub published: u64,
    /// Envelopes the backplane refused (down, queue full); counted, logged, not retried.
    pub publish_failed: u64,
    /// Envelopes from other nodes delivered to local rooms.
    pub received: u64,
    /// This node's own envelopes coming back, ignored.
    pub echoes_ignored: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_failed: AtomicU64,
    received: AtomicU64,
    echoes_ignored: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> BackplaneStats {
        BackplaneStats {
            published: self.published.load(Ordering::Relaxed),
            publish_failed: self.publish_failed.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            echoes_ignored: self.echoes_ignored.load(Ordering::Relaxed),
        }
    }
}

/// Envelopes buffered between the backplane and the local hub.
const INBOUND_CAPACITY: usize = 4096;

/// A hub taking part in a backplane. Cheap to clone. Dropping every clone stops the node's
/// delivery task.
#[derive(Clone)]
pub struct Node {
    id: u64,
    hub: Hub<Message>,
    backplane: Arc<dyn Backplane>,
    counters: Arc<Counters>,
    _task: Arc<TaskGuard>,
}

struct TaskGuard(tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Joins `hub` to `backplane`: spawns the task that delivers other nodes' room broadcasts
    /// to this hub's rooms. Must be called inside a tokio runtime.
    pub fn new(hub: Hub<Message>, backplane: impl Backplane) -> Self {
        let id = node_id();
        let backplane: Arc<dyn Backplane> = Arc::new(backplane);
        let counters = Arc::new(Counters::default());
        let (tx, mut rx) = mpsc::channel(INBOUND_CAPACITY);
        backplane.subscribe(tx);
        #[cfg(feature = "metrics")]
        {
            let counters = Arc::downgrade(&counters);
            crate::metrics::report_backplane(move || counters.upgrade().map(|c| c.snapshot()));
        }
        let task = {
            let hub = hub.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                while let Some(envelope) = rx.recv().await {
                    if envelope.origin == id {
                        counters.echoes_ignored.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    let msg = match envelope.payload {
                        Payload::Text(b) => match tungstenite::Utf8Bytes::try_from(b) {
                            Ok(t) => Message::Text(t),
                            Err(_) => continue,
                        },
                        Payload::Binary(b) => Message::Binary(b),
                    };
                    hub.broadcast_to(&envelope.room, msg);
                }
            })
        };
        Node {
            id,
            hub,
            backplane,
            counters,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        }
    }

    /// This node's id, carried by every envelope it publishes.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The local hub.
    pub fn hub(&self) -> &Hub<Message> {
        &self.hub
    }

    /// Broadcasts to `room` on every node: the local members at once (returns how many), the
    /// other nodes through the backplane. Only text and binary messages travel; others are
    /// delivered locally only.
    pub fn broadcast_to(&self, room: &str, msg: Message) -> usize {
        let payload = match &msg {
            Message::Text(t) => Some(Payload::Text(Bytes::from(t.clone()))),
            Message::Binary(b) => Some(Payload::Binary(b.clone())),
            _ => None,
        };
        let local = self.hub.broadcast_to(room, msg);
        if let Some(payload) = payload {
            let envelope = Envelope {
                origin: self.id,
                room: room.into(),
                payload,
            };
            match self.backplane.publish(envelope) {
                Ok(()) => {
                    self.counters.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(room, error = %e, "room broadcast not published to other nodes");
                }
            }
        }
        local
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BackplaneStats {
        self.counters.snapshot()
    }
}

/// A node id unlikely to collide across processes: time, process id and a counter, mixed.
fn node_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let e = Envelope {
            origin: 42,
            room: "r".into(),
            payload: Payload::Text(Bytes::from_static(b"hello")),
        };
        assert_eq!(Envelope::decode_body("r".into(), &e.encode_body()), Some(e));
        let b = Envelope {
            origin: u64::MAX,
            room: "r".into(),
            payload: Payload::Binary(Bytes::from_static(&[0, 255])),
        };
        assert_eq!(Envelope::decode_body("r".into(), &b.encode_body()), Some(b));
        assert_eq!(Envelope::decode_body("r".into(), b"short"), None);
        assert_eq!(
            Envelope::decode_body("r".into(), &[0, 0, 0, 0, 0, 0, 0, 1, b'x']),
            None
        );
        assert_eq!(
            Envelope::decode_body("r".into(), &[0, 0, 0, 0, 0, 0, 0, 1, b't', 0xff]),
            None
        );
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(node_id(), node_id());
    }
}
