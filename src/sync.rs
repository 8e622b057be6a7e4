//! The synchronization types the hub's shared state is built from: std's,
//! or loom's when the crate is built with `--cfg loom`, so that the loom
//! model (`src/hub/loom_model.rs`) explores the interleavings of the real
//! hub code. Only the types whose interleavings matter are swapped:
//! `Arc` and `OnceLock` stay std's (loom has no `OnceLock`). The readers'
//! `AtomicWaker` is loom's too: loom cannot see through the atomics of
//! the `atomic-waker` crate, so its wake-ups would never reach a model.

#[cfg(loom)]
pub(crate) use loom::sync::{atomic, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{atomic, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(not(loom))]
pub(crate) use atomic_waker::AtomicWaker;

/// loom's `AtomicWaker`, with the `atomic-waker` crate's `register`.
#[cfg(loom)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(loom)]
impl AtomicWaker {
    pub(crate) fn new() -> AtomicWaker {
        AtomicWaker(loom::future::AtomicWaker::new())
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}
