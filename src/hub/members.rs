//! A set of mailboxes that is cheap to iterate (a dense `Vec`) and to edit by id (an index).

use std::collections::HashMap;
use std::sync::Arc;

use super::mailbox::Slot;
use super::ClientId;

/// Members in a dense vector, so a broadcast walks contiguous memory; removal is a
/// `swap_remove` that patches one index entry.
pub(crate) struct Members<M> {
    slots: Vec<Arc<Slot<M>>>,
    index: HashMap<ClientId, usize>,
}

impl<M> Default for Members<M> {
    fn default() -> Self {
        Members {
            slots: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<M> Members<M> {
    pub(crate) fn insert(&mut self, slot: Arc<Slot<M>>) -> bool {
        if self.index.contains_key(&slot.id) {
            return false;
        }
        self.index.insert(slot.id, self.slots.len());
        self.slots.push(slot);
        true
    }

    pub(crate) fn remove(&mut self, id: ClientId) -> Option<Arc<Slot<M>>> {
        let pos = self.index.remove(&id)?;
        let slot = self.slots.swap_remove(pos);
        if let Some(moved) = self.slots.get(pos) {
            self.index.insert(moved.id, pos);
        }
        if self.slots.is_empty() {
            // Release the memory of a set that once was large.
            *self = Members::default();
        }
        Some(slot)
    }

    pub(crate) fn get(&self, id: ClientId) -> Option<&Arc<Slot<M>>> {
        self.index.get(&id).map(|&pos| &self.slots[pos])
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Arc<Slot<M>>> {
        self.slots.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
