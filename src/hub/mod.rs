//! The hub: a set of clients, each with a bounded mailbox, and a fan-out that never waits.
//!
//! This module does no I/O and knows nothing about WebSocket: a [`Hub<M>`] moves values of any
//! `M: Clone + Send + 'static` into per-client [`Mailbox`]es. The [`ws`](crate::ws) module
//! drives real connections from those mailboxes.
//!
//! # What a broadcast promises
//!
//! [`Hub::broadcast`] offers the message to every registered client and returns how many
//! accepted it. For each client it is one non-blocking push of `m.clone()`; the hub never waits
//! for a client. Messages from one publisher reach every client in the order they were
//! broadcast. A message that a mailbox accepted is later taken out by the client's receiver
//! (counted in [`Stats::delivered`]) or discarded by a named policy (counted in
//! [`Stats::dropped`]) — never lost silently.
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
//! A broadcast takes a shared read lock on the member list, then per member one clone of `m`
//! and one uncontended mutex push; a parked receiver is woken once per burst, not per message.
//! With `M` = [`tungstenite::Message`] (or [`bytes::Bytes`]) the clone is a reference-count
//! bump: the payload is never copied per client and nothing is allocated per client.
//!
//! ## Why no hub task
//!
//! gorilla's chat hub is a goroutine fed by register / unregister / broadcast channels. Here
//! broadcasts run on the caller's task under a read lock instead: concurrent publishers fan out
//! in parallel, and each message saves a channel hop and a task wake-up. Register and
//! unregister take the write lock briefly (an index insert or a `swap_remove`). The hub never
//! holds a lock across an `.await`. `benches/fanout.rs` measures the result against
//! `tokio::sync::broadcast` and a `RwLock<HashMap<_, mpsc::UnboundedSender>>`.
//!
//! # Slow clients
//!
//! Each mailbox holds at most [`HubConfig::mailbox_capacity`] messages (default 256). When a
//! push finds it full, the hub's [`OverflowPolicy`] decides, and every discarded message is
//! counted in [`Stats::dropped`]:
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
//! hub.broadcast(3); // the mailbox is full: the client is evicted
//! assert_eq!(slow_mail.recv().await, Err(CloseReason::Evicted));
//! assert_eq!(hub.client_count(), 0);
//! let stats = hub.stats();
//! assert_eq!((stats.evicted, stats.dropped), (1, 3));
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

mod mailbox;
mod members;

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};

use tokio::sync::Notify;

use crate::error::{Error, Result};
use mailbox::{Counters, Push, Slot};
use members::Members;

pub use mailbox::{CloseReason, Mailbox};

/// Identifies one registered client for the lifetime of its hub. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
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
    /// The most messages one client's mailbox holds. The default is 256 (gorilla's chat uses
    /// 256 too). Larger absorbs longer bursts from a slow reader at the cost of memory:
    /// at most `capacity × size_of::<M>()` bytes per client plus what the messages share.
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
    /// Messages accepted into a mailbox (one per client reached).
    pub accepted: u64,
    /// Messages taken out of mailboxes by their receivers.
    pub delivered: u64,
    /// Messages discarded by an overflow policy, by an eviction, or because a receiver went
    /// away with messages still queued.
    pub dropped: u64,
    /// Clients evicted by [`OverflowPolicy::Disconnect`].
    pub evicted: u64,
}

struct Inner<M> {
    config: HubConfig,
    members: RwLock<Members<M>>,
    connected: AtomicUsize,
    counters: Arc<Counters>,
    next_id: AtomicU64,
    shut_down: AtomicBool,
    emptied: Notify,
}

/// A set of clients and the fan-out to them. Cheap to clone: clones share one hub.
///
/// See the [module documentation](self) for what a broadcast promises.
pub struct Hub<M> {
    inner: Arc<Inner<M>>,
}

impl<M> Clone for Hub<M> {
    fn clone(&self) -> Self {
        Hub {
            inner: self.inner.clone(),
        }
    }
}

impl<M> fmt::Debug for Hub<M> {
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

/// What one offer to one mailbox came to, after counting.
enum Offer {
    Accepted,
    Dropped,
    Evicted,
    Closed,
}

impl<M> Hub<M> {
    fn read(&self) -> RwLockReadGuard<'_, Members<M>> {
        // Members is only edited by single insert/remove calls that cannot panic halfway.
        self.inner
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Members<M>> {
        self.inner
            .members
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of clients registered right now.
    pub fn client_count(&self) -> usize {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            connected: self.client_count(),
            accepted: c.accepted.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
        }
    }

    /// The longest mailbox right now (0 without clients): how far the slowest client is
    /// behind. Walks every member, so it costs as much as a broadcast; meant for monitoring.
    pub fn max_queued(&self) -> usize {
        self.read().iter().map(|slot| slot.len()).max().unwrap_or(0)
    }

    /// The configuration this hub was built with.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// True once [`Hub::shutdown`] has been called.
    pub fn is_shutdown(&self) -> bool {
        self.inner.shut_down.load(Ordering::Acquire)
    }

    /// Removes a client; returns false if it was not registered (already removed or evicted).
    fn remove(&self, id: ClientId) -> bool {
        let mut members = self.write();
        let Some(slot) = members.remove(id) else {
            return false;
        };
        let now_empty = members.is_empty();
        self.inner.connected.store(members.len(), Ordering::Release);
        drop(members);
        slot.close(CloseReason::Unregistered, true);
        if now_empty {
            self.inner.emptied.notify_waiters();
        }
        true
    }

    /// Pushes one message into one slot under the hub's policy and counts what was dropped.
    /// `accepted` is counted by the caller, so a broadcast adds it once.
    fn offer(&self, slot: &Slot<M>, msg: M) -> Offer {
        let counters = &self.inner.counters;
        match slot.push(msg, self.inner.config.overflow) {
            Push::Queued => Offer::Accepted,
            Push::QueuedDroppedOldest => {
                Counters::add(&counters.dropped, 1);
                Offer::Accepted
            }
            Push::DroppedNewest => {
                Counters::add(&counters.dropped, 1);
                Offer::Dropped
            }
            Push::Evicted { discarded } => {
                Counters::add(&counters.dropped, discarded + 1);
                Counters::add(&counters.evicted, 1);
                tracing::debug!(client = %slot.id, discarded, "evicted slow client");
                Offer::Evicted
            }
            Push::Closed => Offer::Closed,
        }
    }

    /// Fans `msg` out to every member but `except`; returns how many accepted it.
    fn fan_out(&self, except: Option<ClientId>, msg: M) -> usize
    where
        M: Clone,
    {
        let mut accepted = 0;
        let mut evicted = Vec::new();
        {
            let members = self.read();
            // Checked under the lock that `shutdown` takes exclusively: a broadcast reaches
            // every member or, once shutdown has begun, none.
            if self.is_shutdown() {
                return 0;
            }
            for slot in members.iter() {
                if Some(slot.id) == except {
                    continue;
                }
                match self.offer(slot, msg.clone()) {
                    Offer::Accepted => accepted += 1,
                    Offer::Evicted => evicted.push(slot.id),
                    Offer::Dropped | Offer::Closed => {}
                }
            }
        }
        Counters::add(&self.inner.counters.accepted, accepted);
        for id in evicted {
            self.remove(id);
        }
        accepted
    }
}

impl<M: Clone + Send + 'static> Hub<M> {
    /// A hub with the default [`HubConfig`].
    pub fn new() -> Self {
        Hub::with_config(HubConfig::default())
    }

    /// A hub with the given configuration.
    pub fn with_config(config: HubConfig) -> Self {
        Hub {
            inner: Arc::new(Inner {
                config,
                members: RwLock::new(Members::default()),
                connected: AtomicUsize::new(0),
                counters: Arc::new(Counters::default()),
                next_id: AtomicU64::new(1),
                shut_down: AtomicBool::new(false),
                emptied: Notify::new(),
            }),
        }
    }

    /// Registers a new client: returns its handle (to send to it, and to unregister it by
    /// dropping) and the receiving end of its mailbox.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once the hub is shut down.
    pub fn register(&self) -> Result<(ClientHandle<M>, Mailbox<M>)> {
        let id = ClientId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let slot = Arc::new(Slot::new(id, self.inner.config.mailbox_capacity));
        {
            let mut members = self.write();
            // Checked under the write lock so shutdown (which closes members under the read
            // lock after setting the flag) cannot miss a client registered concurrently.
            if self.is_shutdown() {
                return Err(Error::Shutdown);
            }
            members.insert(slot.clone());
            self.inner.connected.store(members.len(), Ordering::Release);
        }
        let handle = ClientHandle {
            id,
            slot: slot.clone(),
            hub: self.clone(),
        };
        Ok((handle, Mailbox::new(slot, self.inner.counters.clone())))
    }

    /// Offers `msg` to every client; returns how many accepted it.
    ///
    /// Never waits: a full mailbox is handled by the [`OverflowPolicy`]. Returns 0 after
    /// [`Hub::shutdown`].
    ///
    /// # Cost
    ///
    /// One `msg.clone()` and one uncontended mutex push per client, under a shared read lock.
    /// Cloning a [`tungstenite::Message`] or [`bytes::Bytes`] is a reference-count bump: no
    /// payload is copied per client.
    pub fn broadcast(&self, msg: M) -> usize {
        self.fan_out(None, msg)
    }

    /// Like [`Hub::broadcast`], but skips the client `except` (typically the sender).
    pub fn broadcast_except(&self, except: ClientId, msg: M) -> usize {
        self.fan_out(Some(except), msg)
    }

    /// Sends `msg` to one client.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchClient`] if `id` is not registered; otherwise as [`ClientHandle::send`].
    pub fn send_to(&self, id: ClientId, msg: M) -> Result<()> {
        let slot = self
            .read()
            .get(id)
            .cloned()
            .ok_or(Error::NoSuchClient(id))?;
        self.send_to_slot(&slot, msg)
    }

    fn send_to_slot(&self, slot: &Slot<M>, msg: M) -> Result<()> {
        if self.is_shutdown() {
            return Err(Error::Shutdown);
        }
        match self.offer(slot, msg) {
            Offer::Accepted => {
                Counters::add(&self.inner.counters.accepted, 1);
                Ok(())
            }
            Offer::Dropped => Err(Error::MailboxFull(slot.id)),
            Offer::Evicted => {
                self.remove(slot.id);
                Err(Error::Evicted(slot.id))
            }
            Offer::Closed => Err(Error::ClientClosed(slot.id)),
        }
    }

    /// Starts a graceful shutdown: new clients and new messages are refused; every mailbox
    /// still delivers what it holds, then reports [`CloseReason::Shutdown`]. A broadcast racing
    /// with shutdown reaches every member or none. Idempotent.
    pub fn shutdown(&self) {
        // Exclusive, so no broadcast is half-way through the members when the flag flips.
        let members = self.write();
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        for slot in members.iter() {
            slot.close(CloseReason::Shutdown, true);
        }
    }

    /// Ends a shutdown that ran out of time: discards what every mailbox still holds (counted
    /// as dropped) and closes them all with [`CloseReason::Shutdown`]. Returns how many
    /// messages were discarded.
    pub fn abort(&self) -> usize {
        self.inner.shut_down.store(true, Ordering::Release);
        let members = self.read();
        let discarded = members
            .iter()
            .map(|slot| slot.close(CloseReason::Shutdown, false))
            .sum();
        Counters::add(&self.inner.counters.dropped, discarded);
        discarded
    }

    /// Waits until no client is registered.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the hub.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.inner.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.client_count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One registered client, seen from the application: its id and a way to send to it.
///
/// Dropping the handle (or calling [`ClientHandle::unregister`]) removes the client from the
/// hub exactly once; its [`Mailbox`] still yields what was queued, then
/// [`CloseReason::Unregistered`]. The handle is also a [`futures_sink::Sink`] of `M`.
pub struct ClientHandle<M> {
    id: ClientId,
    slot: Arc<Slot<M>>,
    hub: Hub<M>,
}

impl<M> fmt::Debug for ClientHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<M> ClientHandle<M> {
    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The hub this client belongs to.
    pub fn hub(&self) -> &Hub<M> {
        &self.hub
    }

    /// Messages waiting in this client's mailbox.
    pub fn queued(&self) -> usize {
        self.slot.len()
    }

    /// Removes the client from the hub now (dropping the handle does the same).
    pub fn unregister(self) {}
}

impl<M: Clone + Send + 'static> ClientHandle<M> {
    /// Queues `msg` for this client alone, under the hub's overflow policy.
    ///
    /// # Errors
    ///
    /// [`Error::MailboxFull`] (dropped under `DropNewest`), [`Error::Evicted`] (the mailbox was
    /// full under `Disconnect`), [`Error::ClientClosed`] or [`Error::Shutdown`].
    pub fn send(&self, msg: M) -> Result<()> {
        self.hub.send_to_slot(&self.slot, msg)
    }
}

impl<M> Drop for ClientHandle<M> {
    fn drop(&mut self) {
        self.hub.remove(self.id);
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
        self.send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }
}
