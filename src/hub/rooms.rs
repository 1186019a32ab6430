//! Rooms: named groups inside a hub, each with its own log, sharing the hub's counters.
//!
//! A room is an engine of its own (a log, members, the overflow policy), so a broadcast to a
//! room costs what a hub-wide broadcast costs, whatever other rooms exist. A client that joins
//! a room gets a membership there under its hub id; its one [`Mailbox`] reads the hub's log
//! and every room's, so it still has one mailbox and one writer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::engine::{Counters, Inner};
use super::mailbox::Mailbox;
use super::{ClientId, HubConfig};
use crate::error::{Error, Result};
use crate::sync::{lock, Mutex, MutexGuard};

/// A join or a leave, for applications that show presence (member lists, "N online").
///
/// Delivered to [`Hub::presence`](super::Hub::presence) subscribers only, never broadcast to
/// the room's members: at N members that would be N² messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Presence {
    /// `client` joined `room`, which now has `members` members.
    Joined {
        /// The room.
        room: Arc<str>,
        /// Who joined.
        client: ClientId,
        /// Members after the join.
        members: usize,
    },
    /// `client` left `room` (or was unregistered), which now has `members` members; a room
    /// with 0 members is removed.
    Left {
        /// The room.
        room: Arc<str>,
        /// Who left.
        client: ClientId,
        /// Members after the leave.
        members: usize,
    },
}

/// Presence events buffered per subscriber; a subscriber further behind loses the oldest
/// (tokio's `broadcast` lag semantics: `RecvError::Lagged(n)` tells how many).
pub(crate) const PRESENCE_CAPACITY: usize = 1024;

/// A client's membership in one room: the room's receiving end, read by the client's mailbox.
pub(crate) struct RoomSub<M: Clone> {
    pub(crate) name: Arc<str>,
    pub(crate) mailbox: Mailbox<M>,
}

/// The rooms of one hub.
pub(crate) struct RoomTable<M> {
    config: HubConfig,
    counters: Arc<Counters>,
    rooms: Mutex<HashMap<Arc<str>, Arc<Inner<M>>>>,
    presence: broadcast::Sender<Presence>,
    shut_down: std::sync::atomic::AtomicBool,
}

impl<M: Clone> RoomTable<M> {
    pub(crate) fn new(config: HubConfig, counters: Arc<Counters>) -> Self {
        RoomTable {
            config,
            counters,
            rooms: Mutex::new(HashMap::new()),
            presence: broadcast::channel(PRESENCE_CAPACITY).0,
            shut_down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Inner<M>>>> {
        lock(&self.rooms)
    }

    pub(crate) fn get(&self, room: &str) -> Option<Arc<Inner<M>>> {
        self.lock().get(room).cloned()
    }

    /// Every room's engine (a snapshot; the table lock is not held afterwards).
    #[cfg(feature = "metrics")]
    pub(crate) fn all(&self) -> Vec<Arc<Inner<M>>> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Presence> {
        self.presence.subscribe()
    }

    /// Registers `id` in `room`, creating the room on first join.
    pub(crate) fn join(&self, room: &str, id: ClientId) -> Result<RoomSub<M>> {
        let mut rooms = self.lock();
        // Under the table lock, which shutdown also takes: no room is created after it.
        if self.shut_down.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let (name, inner) = match rooms.get_key_value(room) {
            Some((name, inner)) => (name.clone(), inner.clone()),
            None => {
                let name: Arc<str> = room.into();
                let inner = Arc::new(Inner::new(self.config.clone(), self.counters.clone()));
                rooms.insert(name.clone(), inner.clone());
                (name, inner)
            }
        };
        // Registered under the table lock, so a concurrent last leave cannot remove the room
        // between its lookup and this registration.
        let slot = inner.register_as(id)?;
        let members = inner.connected.load(std::sync::atomic::Ordering::Acquire);
        // Sent under the table lock, so subscribers see joins and leaves in the order the
        // member counts changed.
        let _ = self.presence.send(Presence::Joined {
            room: name.clone(),
            client: id,
            members,
        });
        drop(rooms);
        Ok(RoomSub {
            name,
            mailbox: Mailbox::new(slot, inner),
        })
    }

    /// Ends a membership (dropping its mailbox unregisters it and counts what it still held
    /// as dropped) and removes the room if it is now empty.
    pub(crate) fn leave(&self, sub: RoomSub<M>) {
        let RoomSub { name, mailbox } = sub;
        let id = mailbox.id();
        drop(mailbox);
        let mut rooms = self.lock();
        let members = match rooms.get(&name) {
            Some(inner) => inner.connected.load(std::sync::atomic::Ordering::Acquire),
            None => 0,
        };
        if members == 0 {
            rooms.remove(&name);
        }
        let _ = self.presence.send(Presence::Left {
            room: name,
            client: id,
            members,
        });
        drop(rooms);
    }

    pub(crate) fn shutdown(&self) {
        let rooms = self.lock();
        self.shut_down
            .store(true, std::sync::atomic::Ordering::Release);
        for inner in rooms.values() {
            inner.shutdown();
        }
    }

    pub(crate) fn abort(&self) -> usize {
        let rooms = self.lock();
        rooms.values().map(|inner| inner.abort()).sum()
    }
}

/// One client's room memberships, shared by its handle (join, leave) and its mailbox (reads).
pub(crate) struct Memberships<M: Clone> {
    table: Arc<RoomTable<M>>,
    pub(crate) subs: Mutex<Vec<RoomSub<M>>>,
}

impl<M: Clone> Memberships<M> {
    pub(crate) fn new(table: Arc<RoomTable<M>>) -> Self {
        Memberships {
            table,
            subs: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Vec<RoomSub<M>>> {
        lock(&self.subs)
    }

    /// Joins `room`; false if already a member. `closed` tells whether the client has left
    /// the hub; it is checked under the lock that `leave_all` takes after the client is
    /// closed, so a join racing with the client's departure never outlives it.
    pub(crate) fn join(
        &self,
        id: ClientId,
        room: &str,
        closed: impl FnOnce() -> bool,
    ) -> Result<bool> {
        let mut subs = self.lock();
        if closed() {
            return Err(Error::ClientClosed(id));
        }
        if subs.iter().any(|s| &*s.name == room) {
            return Ok(false);
        }
        subs.push(self.table.join(room, id)?);
        Ok(true)
    }

    /// Leaves `room`; false if not a member.
    pub(crate) fn leave(&self, room: &str) -> bool {
        let mut subs = self.lock();
        let Some(pos) = subs.iter().position(|s| &*s.name == room) else {
            return false;
        };
        let sub = subs.swap_remove(pos);
        drop(subs);
        self.table.leave(sub);
        true
    }

    pub(crate) fn leave_all(&self) {
        let subs = std::mem::take(&mut *self.lock());
        for sub in subs {
            self.table.leave(sub);
        }
    }

    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.lock().iter().map(|s| s.name.clone()).collect()
    }
}
