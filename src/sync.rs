//! The synchronisation primitives of the hand-written concurrency that `loom` models check:
//! std's normally, loom's under `--cfg wshub_loom` (see `src/hub/wait.rs` and
//! `src/hub/loom_model.rs`). Not `--cfg loom`: tokio compiles its networking out under that
//! name.

#[cfg(wshub_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize};
#[cfg(wshub_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(not(wshub_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize};
#[cfg(not(wshub_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`. Every critical section guarded this way is a few container operations that
/// cannot panic halfway, so a poisoned lock still guards consistent data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
