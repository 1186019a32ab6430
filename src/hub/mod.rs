//! The hub: a set of clients, each with a bounded mailbox, and a fan-out that never waits.
//!
//! This module does no I/O and knows nothing about WebSocket: a [`Hub<M>`] moves values of any
//! `M: Clone + Send + 'static` into per-client [`Mailbox`]es. The [`ws`](crate::ws) module
//! drives real connections from those mailboxes.
//!
//! # What a broadcast promises
//!
//! [`Hub::broadcast`] offers the message to every registered client and returns how many
//! accepted it; the hub never waits for a client. Messages from one publisher reach every client in the order they were
//! broadcast. Every message sent to a client (counted in [`Stats::sent`]) is later taken out
//! by its receiver (counted in [`Stats::delivered`]) or discarded by a named policy (counted
//! in [`Stats::dropped`]) — never lost silently.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> wshub::Result<()> {
//! use wshub::Hub;
//!
//! let hub: Hub<String> = Hub::new();
//! let (alice, mut alice_mail) = hub.register()?;
//! let (_bob, mut bob_mail) = hub.register()?;
//!
//! assert_eq!(hub.broadcast("hello".to_string()), 2);
//! hub.send_to(alice.id(), "just for alice".to_string())?;
//!
//! assert_eq!(alice_mail.recv().await.unwrap(), "hello");
//! assert_eq!(alice_mail.recv().await.unwrap(), "just for alice");
//! assert_eq!(bob_mail.recv().await.unwrap(), "hello");
//! assert!(bob_mail.is_empty());
//! # Ok(()) }
//! ```
//!
//! # Cost
//!
//! A broadcast appends `m` to the hub's shared log (a ring of
//! [`HubConfig::mailbox_capacity`] entries) under a short write lock, and wakes the receivers
//! that are parked. It does not touch the members one by one: each receiver reads what lies
//! between its cursor and the head in one pass under a read lock, either by reference
//! ([`Mailbox::poll_recv_with`], what the WebSocket writer uses to encode frames straight from
//! the shared message) or as owned clones ([`Mailbox::recv`], [`Mailbox::recv_all`]; with
//! `M` = [`tungstenite::Message`] or [`bytes::Bytes`] a clone is a reference-count bump). The
//! payload is never copied per client and nothing is allocated per client. An idle client
//! costs a cursor and an empty queue, not a buffer.
//!
//! ## Why a shared log, and no hub task
//!
//! gorilla's chat hub is a goroutine fed by register / unregister / broadcast channels, and
//! pushes each message into every client's channel. The per-client queue was this crate's
//! first engine and was measured with `benches/fanout.rs`: the publisher does N pushes per
//! message, which capped throughput at what one core can push, 0.43–0.9× of
//! `tokio::sync::broadcast` at N = 1 000 (the `RwLock<HashMap>` baseline has the same shape).
//! A hub task would add a channel hop and a wake-up per message on top of those pushes (not
//! built, for that reason). With the shared log the publisher's work is O(1) per message and
//! the per-delivery work runs on the receivers' tasks in parallel: see BENCHMARKS.md. The hub
//! never holds a lock across an `.await`.
//!
//! The log keeps each client's bound exact: a client whose backlog (`head - cursor`) reaches
//! the capacity is the client still at the oldest entry when the ring is full, and only then is
//! the member list scanned (a lower bound on every cursor is remembered, so the scan runs once
//! per many broadcasts, not per broadcast).
//!
//! # Slow clients
//!
//! A client's backlog holds at most [`HubConfig::mailbox_capacity`] broadcasts (default 256),
//! and as many direct sends. When a message finds it full, the hub's [`OverflowPolicy`]
//! decides, and every discarded message is counted in [`Stats::dropped`]:
//!
//! - [`OverflowPolicy::Disconnect`] (default, as gorilla's hub): the client is evicted, its
//!   queue discarded, and its receiver sees [`CloseReason::Evicted`] (a WebSocket connection
//!   then closes with 1008).
//! - [`OverflowPolicy::DropNewest`]: the new message is not queued for that client.
//! - [`OverflowPolicy::DropOldest`]: the oldest queued message makes room for the new one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> wshub::Result<()> {
//! use wshub::{CloseReason, Hub, HubConfig, OverflowPolicy};
//!
//! let hub = Hub::with_config(HubConfig::default().mailbox_capacity(2));
//! let (_slow, mut slow_mail) = hub.register()?;
//! hub.broadcast(1);
//! hub.broadcast(2);
//! hub.broadcast(3); // the backlog is full: the client is evicted, its 2 messages dropped
//! assert_eq!(slow_mail.recv().await, Err(CloseReason::Evicted));
//! assert_eq!(hub.client_count(), 0);
//! let stats = hub.stats();
//! assert_eq!((stats.evicted, stats.dropped), (1, 2));
//!
//! let hub = Hub::with_config(HubConfig::default().mailbox_capacity(2).overflow(OverflowPolicy::DropOldest));
//! let (_c, mut mail) = hub.register()?;
//! for i in 1..=3 { hub.broadcast(i); }
//! assert_eq!(mail.recv().await, Ok(2));
//! assert_eq!(mail.recv().await, Ok(3));
//! assert_eq!(hub.stats().dropped, 1);
//! # Ok(()) }
//! ```
//!
//! # Rooms and presence
//!
//! A client can [join](ClientHandle::join) named rooms; [`Hub::broadcast_to`] reaches a room's
//! members only. Each room has its own log, so a room broadcast costs what a hub-wide one
//! does, and the client still has one mailbox (and one WebSocket writer) for all of them.
//! Order is kept within a room; none is defined between rooms. A room is created on its first
//! join and removed when its last member leaves; unregistering leaves every room; a client too
//! slow in any room is evicted from the hub under [`OverflowPolicy::Disconnect`]. Joins and
//! leaves are reported to [`Hub::presence`] subscribers only, not broadcast to the members.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> wshub::Result<()> {
//! use wshub::{Hub, Presence};
//!
//! let hub = Hub::new();
//! let mut presence = hub.presence();
//! let (alice, mut alice_mail) = hub.register()?;
//! let (_bob, bob_mail) = hub.register()?;
//! alice.join("rust")?;
//! assert_eq!(hub.broadcast_to("rust", "hello, rustaceans"), 1);
//! assert_eq!(alice_mail.recv().await, Ok("hello, rustaceans"));
//! assert!(bob_mail.is_empty());
//! assert!(matches!(presence.try_recv(), Ok(Presence::Joined { members: 1, .. })));
//! # Ok(()) }
//! ```
//!
//! # Heartbeat
//!
//! Liveness is a property of a connection, not of the hub: see
//! [`Heartbeat`](crate::ws::Heartbeat) in the `ws` module (ping interval, pong timeout, write
//! timeout, idle timeout).
//!
//! # Shutdown
//!
//! [`Hub::shutdown`] refuses new clients and new messages, lets every receiver drain what its
//! mailbox already holds, then ends it with [`CloseReason::Shutdown`].
//! [`Hub::wait_empty`] waits until every client has unregistered.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> wshub::Result<()> {
//! use wshub::{CloseReason, Hub};
//!
//! let hub = Hub::new();
//! let (client, mut mail) = hub.register()?;
//! hub.broadcast("last words");
//! hub.shutdown();
//! assert_eq!(hub.broadcast("too late"), 0);
//! assert_eq!(mail.recv().await, Ok("last words"));
//! assert_eq!(mail.recv().await, Err(CloseReason::Shutdown));
//! drop(client);
//! hub.wait_empty().await;
//! # Ok(()) }
//! ```

mod engine;
mod mailbox;
mod members;
mod rooms;
mod wait;

#[cfg(all(test, wshub_loom))]
mod loom_model;

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::{Error, Result, SendError};
use engine::{Counters, Inner};
use mailbox::Slot;
use rooms::{Memberships, RoomTable};

pub use mailbox::{CloseReason, Mailbox, TryRecvError};
pub use rooms::Presence;

/// Identifies one registered client for the lifetime of its hub. Never reused.
///
/// It goes in and out of text as a plain number (fits a URL, a JSON field, a log line), so an
/// application can name a client elsewhere and send to it later with [`Hub::send_to`]:
///
/// ```
/// # fn main() -> wshub::Result<()> {
/// let hub: wshub::Hub<String> = wshub::Hub::new();
/// let (client, mut mailbox) = hub.register()?;
/// let text = client.id().to_string(); // e.g. in a URL: /users/{text}
/// let id: wshub::ClientId = text.parse().expect("a number");
/// hub.send_to(id, "hello".to_string())?;
/// assert_eq!(mailbox.try_recv(), Ok("hello".to_string()));
/// assert_eq!(wshub::ClientId::from(id.as_u64()), id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub(crate) u64);

impl ClientId {
    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// An id from its number (one that [`ClientId::as_u64`] gave). An id no client has is simply
/// not found ([`Error::NoSuchClient`]).
impl From<u64> for ClientId {
    fn from(n: u64) -> Self {
        ClientId(n)
    }
}

impl From<ClientId> for u64 {
    fn from(id: ClientId) -> u64 {
        id.0
    }
}

/// The decimal number, as [`Display`](fmt::Display) writes it.
impl std::str::FromStr for ClientId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        s.parse().map(ClientId)
    }
}

/// The plain decimal number (`42`).
impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the hub does when a client's mailbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Evict the client: discard its queue, close its mailbox with [`CloseReason::Evicted`],
    /// remove it from the hub. The default, as in gorilla's chat hub: a client that cannot keep
    /// up is cut off rather than allowed to grow server memory or miss messages silently.
    #[default]
    Disconnect,
    /// Keep the queue, drop the message being pushed. Suits state snapshots where a gap is
    /// better than a disconnect.
    DropNewest,
    /// Drop the oldest queued message to make room. Suits tickers where only recent values
    /// matter.
    DropOldest,
}

/// Hub configuration. Every setter documents its default.
///
/// Setters are chainable and take the plain names (`mailbox_capacity(256)`); getters are
/// `get_*` (`get_mailbox_capacity()`), as on `std::process::Command`: in a builder the plain
/// name belongs to the setter, and a getter sharing it is impossible.
#[derive(Debug, Clone)]
pub struct HubConfig {
    mailbox_capacity: usize,
    overflow: OverflowPolicy,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            mailbox_capacity: 256,
            overflow: OverflowPolicy::Disconnect,
        }
    }
}

impl HubConfig {
    /// How far behind the head of the hub's log a client may fall (and, separately, how many
    /// direct sends may wait for it). The default is 256, as gorilla's chat. The log holds this
    /// many messages for the whole hub, shared by every client; larger absorbs longer bursts
    /// from a slow reader before the overflow policy applies.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0: a mailbox that holds nothing delivers nothing.
    #[must_use]
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        assert!(capacity > 0, "mailbox capacity must be at least 1");
        self.mailbox_capacity = capacity;
        self
    }

    /// What happens when a mailbox is full. The default is [`OverflowPolicy::Disconnect`].
    #[must_use]
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// The configured mailbox capacity.
    pub fn get_mailbox_capacity(&self) -> usize {
        self.mailbox_capacity
    }

    /// The configured overflow policy.
    pub fn get_overflow(&self) -> OverflowPolicy {
        self.overflow
    }
}

/// A snapshot of the hub's counters. All counts are since the hub was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Clients registered right now.
    pub connected: usize,
    /// Messages sent to clients: one per client a broadcast was offered to, plus direct
    /// sends. Each is, eventually, delivered or dropped: once every receiver has drained,
    /// `sent == delivered + dropped`.
    pub sent: u64,
    /// Messages taken out of mailboxes by their receivers.
    pub delivered: u64,
    /// Messages discarded: refused or pushed out by an overflow policy, discarded with an
    /// evicted client's backlog, or still queued when a receiver went away.
    pub dropped: u64,
    /// Clients evicted by [`OverflowPolicy::Disconnect`].
    pub evicted: u64,
}

/// A set of clients and the fan-out to them. Cheap to clone: clones share one hub.
///
/// See the [module documentation](self) for what a broadcast promises.
///
/// The type puts no bound on `M`; creating and using a hub needs `M: Clone` (each reader
/// clones what it takes, a reference-count bump for [`Message`](crate::Message)).
pub struct Hub<M> {
    inner: Arc<Inner<M>>,
    rooms: Arc<RoomTable<M>>,
}

impl<M> Clone for Hub<M> {
    fn clone(&self) -> Self {
        Hub {
            inner: self.inner.clone(),
            rooms: self.rooms.clone(),
        }
    }
}

impl<M: Clone> fmt::Debug for Hub<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<M: Clone + Send + 'static> Default for Hub<M> {
    fn default() -> Self {
        Hub::new()
    }
}

impl<M: Clone> Hub<M> {
    /// Number of clients registered right now.
    pub fn client_count(&self) -> usize {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            connected: self.client_count(),
            sent: c.sent.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
        }
    }

    /// The longest backlog right now (0 without clients): how far the slowest client is
    /// behind. Walks every member, so it costs as much as a member scan; meant for monitoring.
    pub fn max_queued(&self) -> usize {
        self.inner.max_backlog()
    }

    /// Every client's backlog, its rooms' included (for the metrics' depth samples). Walks
    /// every member of the hub and of each room.
    #[cfg(feature = "metrics")]
    pub(crate) fn backlogs(&self) -> Vec<usize> {
        let mut all = Vec::with_capacity(self.client_count());
        self.inner.backlogs(&mut all);
        for room in self.rooms.all() {
            room.backlogs(&mut all);
        }
        crate::metrics::sum_by_client(all)
    }

    /// True if this hub's metrics task was already started; marks it started.
    #[cfg(feature = "metrics")]
    pub(crate) fn metrics_reporter_started(&self) -> bool {
        let started = &self.inner.counters.metrics_reporter;
        // Checked on every connection: read before writing, so connections do not contend.
        started.load(Ordering::Acquire) || started.swap(true, Ordering::AcqRel)
    }

    /// A handle that does not keep the hub alive.
    #[cfg(feature = "metrics")]
    pub(crate) fn downgrade(&self) -> WeakHub<M> {
        WeakHub {
            inner: Arc::downgrade(&self.inner),
            rooms: Arc::downgrade(&self.rooms),
        }
    }

    /// The configuration this hub was built with.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// True once [`Hub::shutdown`] has been called.
    pub fn is_shutdown(&self) -> bool {
        self.inner.is_shutdown()
    }
}

impl<M: Clone + Send + 'static> Hub<M> {
    /// A hub with the default [`HubConfig`].
    pub fn new() -> Self {
        Hub::with_config(HubConfig::default())
    }

    /// A hub with the given configuration.
    pub fn with_config(config: HubConfig) -> Self {
        let counters = Arc::new(Counters::default());
        Hub {
            rooms: Arc::new(RoomTable::new(config.clone(), counters.clone())),
            inner: Arc::new(Inner::new(config, counters)),
        }
    }

    /// Registers a new client: returns its handle (to send to it, and to unregister it by
    /// dropping) and the receiving end of its mailbox.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once the hub is shut down.
    pub fn register(&self) -> Result<(ClientHandle<M>, Mailbox<M>)> {
        self.register_data(None)
    }

    /// Like [`Hub::register`], with application data the client carries for its lifetime
    /// (a user id, a display name, permissions), read back with [`ClientHandle::data`]. The
    /// WebSocket server attaches what [`Handler::on_handshake`](crate::ws::Handler::on_handshake)
    /// accepted the connection with.
    ///
    /// ```
    /// # fn main() -> wshub::Result<()> {
    /// let hub: wshub::Hub<String> = wshub::Hub::new();
    /// struct User(&'static str);
    /// let (client, _mailbox) = hub.register_with(User("ada"))?;
    /// assert_eq!(client.data::<User>().map(|u| u.0), Some("ada"));
    /// assert!(client.data::<u64>().is_none(), "another type: none");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once the hub is shut down.
    pub fn register_with<T: std::any::Any + Send + Sync>(
        &self,
        data: T,
    ) -> Result<(ClientHandle<M>, Mailbox<M>)> {
        self.register_data(Some(Arc::new(data)))
    }

    pub(crate) fn register_data(
        &self,
        data: Option<ClientData>,
    ) -> Result<(ClientHandle<M>, Mailbox<M>)> {
        let slot = self.inner.register()?;
        let rooms = Arc::new(Memberships::new(self.rooms.clone()));
        let handle = ClientHandle {
            id: slot.id,
            slot: slot.clone(),
            hub: self.clone(),
            rooms: rooms.clone(),
            data,
        };
        let mailbox = Mailbox::new(slot, self.inner.clone()).with_rooms(rooms);
        Ok((handle, mailbox))
    }

    /// Offers `msg` to every client; returns how many accepted it (all but the
    /// clients skipping under [`OverflowPolicy::DropNewest`], whose skips are counted as dropped).
    ///
    /// Never waits: a client whose backlog is full is handled by the [`OverflowPolicy`].
    /// Returns 0 after [`Hub::shutdown`].
    ///
    /// # Cost
    ///
    /// One append to the hub's shared log under a short write lock, and a wake-up for each
    /// parked receiver. No clone here: each receiver clones what it reads (a reference-count
    /// bump for [`tungstenite::Message`] or [`bytes::Bytes`]), so the publisher's cost does
    /// not grow with the number of clients.
    pub fn broadcast(&self, msg: M) -> usize {
        self.inner.broadcast(None, msg)
    }

    /// Like [`Hub::broadcast`], but skips the client `except` (typically the sender).
    pub fn broadcast_except(&self, except: ClientId, msg: M) -> usize {
        self.inner.broadcast(Some(except), msg)
    }

    /// Sends `msg` to one client.
    ///
    /// # Errors
    ///
    /// The message back, with [`Error::NoSuchClient`] if `id` is not registered; otherwise
    /// as [`ClientHandle::send`].
    pub fn send_to(&self, id: ClientId, msg: M) -> std::result::Result<(), SendError<M>> {
        let slot = self.inner.read().members.get(id).cloned();
        match slot {
            Some(slot) => self.inner.send_to(&slot, msg),
            None => Err(SendError::new(Error::NoSuchClient(id), msg)),
        }
    }

    /// Starts a graceful shutdown: new clients and new messages are refused; every mailbox
    /// still delivers what it holds, then reports [`CloseReason::Shutdown`]. A broadcast racing
    /// with shutdown reaches every member or none. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
        self.rooms.shutdown();
    }

    /// Ends a shutdown that ran out of time: discards what every mailbox still holds (counted
    /// as dropped) and closes them all with [`CloseReason::Shutdown`]. Returns how many
    /// messages were discarded.
    pub fn abort(&self) -> usize {
        self.inner.abort() + self.rooms.abort()
    }

    /// Offers `msg` to every member of `room`; returns how many it was offered to (0 when the
    /// room does not exist). Costs what [`Hub::broadcast`] costs: each room has its own log.
    pub fn broadcast_to(&self, room: &str, msg: M) -> usize {
        self.rooms.get(room).map_or(0, |r| r.broadcast(None, msg))
    }

    /// Like [`Hub::broadcast_to`], but skips the client `except` (typically the sender).
    pub fn broadcast_to_except(&self, room: &str, except: ClientId, msg: M) -> usize {
        self.rooms
            .get(room)
            .map_or(0, |r| r.broadcast(Some(except), msg))
    }

    /// The clients registered right now, in no particular order (a snapshot: clients may
    /// come and go as soon as it is taken).
    pub fn clients(&self) -> Vec<ClientId> {
        self.inner.client_ids()
    }

    /// Members of `room` right now (0 when it does not exist).
    pub fn room_count(&self, room: &str) -> usize {
        self.rooms
            .get(room)
            .map_or(0, |r| r.connected.load(Ordering::Acquire))
    }

    /// The rooms that have members right now (a room is created on its first join and removed
    /// when its last member leaves).
    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.rooms.names()
    }

    /// Subscribes to join and leave events ([`Presence`]). Each subscriber buffers up to 1 024
    /// events; one that falls further behind gets `RecvError::Lagged(n)` and loses the oldest.
    pub fn presence(&self) -> tokio::sync::broadcast::Receiver<Presence> {
        self.rooms.subscribe()
    }

    /// Waits until no client is registered.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the hub.
    pub async fn wait_empty(&self) {
        crate::util::wait_until(&self.inner.emptied, || self.client_count() == 0).await;
    }
}

/// A [`Hub`] that is not kept alive by this reference.
#[cfg(feature = "metrics")]
pub(crate) struct WeakHub<M> {
    inner: std::sync::Weak<Inner<M>>,
    rooms: std::sync::Weak<RoomTable<M>>,
}

#[cfg(feature = "metrics")]
impl<M: Clone> WeakHub<M> {
    /// The hub, while any clone of it is alive.
    pub(crate) fn upgrade(&self) -> Option<Hub<M>> {
        Some(Hub {
            inner: self.inner.upgrade()?,
            rooms: self.rooms.upgrade()?,
        })
    }
}

/// One registered client, seen from the application: its id and a way to send to it.
///
/// Dropping the handle (or calling [`ClientHandle::unregister`]) removes the client from the
/// hub exactly once; its [`Mailbox`] still yields what was queued, then
/// [`CloseReason::Unregistered`]. The handle is also a [`futures_sink::Sink`] of `M`.
// `M: Clone` on the type because dropping the handle needs it: an unregistered client keeps
// what it was sent (its unread broadcasts are cloned into its own queue).
pub struct ClientHandle<M: Clone> {
    id: ClientId,
    slot: Arc<Slot<M>>,
    hub: Hub<M>,
    rooms: Arc<Memberships<M>>,
    /// What the application attached at registration (e.g. the user a handshake
    /// authenticated), for the client's lifetime.
    data: Option<ClientData>,
}

/// Application data attached to a client at registration: see [`Hub::register_with`] and
/// [`ClientHandle::data`].
pub(crate) type ClientData = Arc<dyn std::any::Any + Send + Sync>;

impl<M: Clone> fmt::Debug for ClientHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<M: Clone> ClientHandle<M> {
    /// The application data the client was registered with ([`Hub::register_with`], or what
    /// [`Handler::on_handshake`](crate::ws::Handler::on_handshake) accepted it with), if it is
    /// a `T`.
    pub fn data<T: std::any::Any>(&self) -> Option<&T> {
        self.data.as_deref()?.downcast_ref()
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The hub this client belongs to.
    pub fn hub(&self) -> &Hub<M> {
        &self.hub
    }

    /// Messages queued in the hub for this client, its rooms' included (what its mailbox has
    /// already taken out is not counted).
    pub fn queued(&self) -> usize {
        let rooms: usize = self
            .rooms
            .lock()
            .iter()
            .map(|sub| sub.mailbox.queued())
            .sum();
        self.hub.inner.backlog(&self.slot) + rooms
    }

    /// Removes the client from the hub and from every room now (dropping the handle does the
    /// same).
    pub fn unregister(self) {}

    /// Joins `room` (created on first join); returns false if already a member. The client
    /// keeps its one mailbox: messages to the room arrive there too, in order within the room
    /// (no order is defined between different rooms, or between a room and the whole hub).
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once the hub is shut down; [`Error::ClientClosed`] once the client
    /// has left the hub (evicted, or its mailbox dropped).
    pub fn join(&self, room: &str) -> Result<bool> {
        let joined = self.rooms.join(self.id, room, || {
            self.slot.is_closed() && !self.hub.is_shutdown()
        })?;
        // A parked receiver must start reading the room's log.
        self.slot.wake();
        Ok(joined)
    }

    /// Leaves `room` (removed when its last member leaves); returns false if not a member.
    /// Messages to the room not yet read are dropped (and counted).
    pub fn leave(&self, room: &str) -> bool {
        self.rooms.leave(room)
    }

    /// The rooms this client is in.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.rooms.names()
    }
}

impl<M: Clone + Send + 'static> ClientHandle<M> {
    /// Queues `msg` for this client alone, under the hub's overflow policy.
    ///
    /// # Errors
    ///
    /// The message back ([`SendError::into_inner`]) with the reason: [`Error::MailboxFull`]
    /// (counted as dropped under `DropNewest`), [`Error::Evicted`] (the mailbox was full under
    /// `Disconnect`), [`Error::ClientClosed`] or [`Error::Shutdown`].
    pub fn send(&self, msg: M) -> std::result::Result<(), SendError<M>> {
        self.hub.inner.send_to(&self.slot, msg)
    }
}

impl<M: Clone> Drop for ClientHandle<M> {
    fn drop(&mut self) {
        self.hub
            .inner
            .remove(self.id, CloseReason::Unregistered, true);
        // Room messages not read yet are dropped (and counted) with the memberships.
        self.rooms.leave_all();
    }
}

/// Sending never waits: `poll_ready` is always ready and the overflow policy handles a full
/// mailbox, exactly as [`ClientHandle::send`]. `poll_close` unregisters nothing; drop the
/// handle for that.
impl<M: Clone + Send + 'static> futures_sink::Sink<M> for ClientHandle<M> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: M) -> Result<()> {
        self.send(item).map_err(Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }
}
