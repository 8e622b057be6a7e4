//! Who to wake when a topic gets an event: each topic's registered readers
//! ([`Followers`]), and the fan-out task ([`FanOut`]) that wakes the readers
//! of a large topic, so that publishing costs the same with ten thousand
//! subscribers as with none.

use atomic_waker::AtomicWaker;
use slab::Slab;
use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};
use tokio::sync::Notify;

/// Up to this many followers, the publisher wakes a topic's readers itself
/// (sparing the hop through the fan-out task and its scheduling delay);
/// beyond, the fan-out task does.
const WAKE_INLINE: usize = 32;

/// The readers of one topic.
#[derive(Default)]
pub(crate) struct Followers {
    wakers: Mutex<Slab<Arc<AtomicWaker>>>,
    /// How many subscriptions follow the topic. Changed only under the hub's
    /// state lock, which decides from it whether to forget the topic.
    count: AtomicUsize,
    /// Set while queued for the fan-out task, so it is queued once.
    queued: AtomicBool,
}

impl Followers {
    fn wakers(&self) -> MutexGuard<'_, Slab<Arc<AtomicWaker>>> {
        // A panic while holding the lock cannot leave the slab inconsistent.
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a subscription's waker; returns its key.
    pub(crate) fn add(&self, waker: Arc<AtomicWaker>) -> usize {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.wakers().insert(waker)
    }

    /// Unregisters the waker under `key`; returns how many follow still.
    pub(crate) fn remove(&self, key: usize) -> usize {
        self.wakers().try_remove(key);
        self.count.fetch_sub(1, Ordering::Relaxed) - 1
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn wake_all(&self) {
        for (_, waker) in self.wakers().iter() {
            waker.wake();
        }
    }
}

/// The task that wakes the readers of topics with many followers.
#[derive(Default)]
pub(crate) struct FanOut {
    queue: Mutex<Vec<Arc<Followers>>>,
    notify: Notify,
}

impl FanOut {
    /// Wakes the readers of a topic that just got an event: here when they
    /// are few, else through the fan-out task.
    pub(crate) fn wake(&self, followers: &Arc<Followers>) {
        match followers.count() {
            0 => {}
            n if n <= WAKE_INLINE => followers.wake_all(),
            _ => {
                if !followers.queued.swap(true, Ordering::AcqRel) {
                    self.queue().push(followers.clone());
                    self.notify.notify_one();
                }
            }
        }
    }

    fn queue(&self) -> MutexGuard<'_, Vec<Arc<Followers>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the task so it sees that the hub closed.
    pub(crate) fn stop(&self) {
        self.notify.notify_one();
    }

    /// The task's loop, until `closed` says so.
    pub(crate) async fn run(&self, closed: impl Fn() -> bool) {
        let mut queued = Vec::new();
        while !closed() {
            self.notify.notified().await;
            std::mem::swap(&mut queued, &mut *self.queue());
            for followers in queued.drain(..) {
                // Cleared before waking: an event published meanwhile queues
                // the topic again rather than being missed.
                followers.queued.store(false, Ordering::Release);
                followers.wake_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Wake, Waker};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn follower(followers: &Followers) -> Arc<Count> {
        let count = Arc::new(Count::default());
        let waker = Arc::new(AtomicWaker::new());
        waker.register(&Waker::from(count.clone()));
        followers.add(waker);
        count
    }

    #[test]
    fn a_small_topic_is_woken_inline() {
        let (fan_out, followers) = (FanOut::default(), Arc::new(Followers::default()));
        let readers: Vec<_> = (0..WAKE_INLINE).map(|_| follower(&followers)).collect();
        fan_out.wake(&followers);
        assert!(readers.iter().all(|r| r.0.load(Ordering::SeqCst) == 1));
        assert!(fan_out.queue().is_empty());
    }

    #[tokio::test]
    async fn a_large_topic_is_queued_once_and_woken_by_the_task() {
        let fan_out = Arc::new(FanOut::default());
        let followers = Arc::new(Followers::default());
        let readers: Vec<_> = (0..WAKE_INLINE + 1).map(|_| follower(&followers)).collect();
        fan_out.wake(&followers);
        fan_out.wake(&followers);
        assert_eq!(fan_out.queue().len(), 1, "queued once");
        assert!(readers.iter().all(|r| r.0.load(Ordering::SeqCst) == 0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (fan_out, stop) = (fan_out.clone(), stop.clone());
            async move { fan_out.run(|| stop.load(Ordering::SeqCst)).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while readers.iter().any(|r| r.0.load(Ordering::SeqCst) == 0) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        stop.store(true, Ordering::SeqCst);
        fan_out.stop();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(followers.remove(0), WAKE_INLINE);
    }
}
