//! Who to wake when a topic gets an event: each topic's registered readers
//! ([`Followers`]), and the fan-out task ([`FanOut`]) that wakes the readers
//! of a large topic, so that publishing costs the same with ten thousand
//! subscribers as with none.

use slab::Slab;
use std::{
    sync::{Arc, OnceLock},
    task::Waker,
};
use tokio::sync::{watch, Notify};

use crate::observe::Reason;
use crate::sync::{
    atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    AtomicWaker, Mutex, MutexGuard,
};

/// Up to this many followers, the publisher wakes a topic's readers itself
/// (sparing the hop through the fan-out task and its scheduling delay);
/// beyond, the fan-out task does.
const WAKE_INLINE: usize = 32;

/// The fan-out task wakes a large topic's readers this many at a time, and
/// after each batch yields if the runtime's global run queue holds tasks.
/// A worker's local queue holds 256 tasks; woken beyond that, they spill
/// into the global queue, which a worker takes from only now and then.
/// Waking ten thousand at once left ~9,800 tasks waiting there: under
/// saturation those streams fell seconds behind and the app's own requests
/// were answered late. Yielding while anything has spilled keeps the
/// global queue to about one spill (~129 tasks, measured) and lets the
/// woken streams, and the app's requests, run in order; while nothing has
/// spilled, the task goes on waking without paying for a yield. (Yielding
/// after every batch of 32 kept the global queue empty too, but cost
/// 10–20% more CPU per delivery below saturation; see BENCHMARKS.md, "Fair
/// under saturation".)
const WAKE_BATCH: usize = 32;

/// Why a subscription was ended from outside, if it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// `disconnect_all` was called since it opened: the client reconnects.
    Disconnected,
    /// The hub closed: the client should go away (what was published before
    /// is still delivered first).
    Closed,
    /// Every stream of its user was ended (a logout, a ban).
    Revoked,
    /// A topic it follows was closed.
    TopicClosed,
    /// The access its authorization granted expired.
    Expired,
}

impl From<Ended> for Reason {
    fn from(why: Ended) -> Reason {
        match why {
            Ended::Disconnected => Reason::Disconnected,
            Ended::Closed => Reason::Shutdown,
            Ended::Revoked => Reason::Revoked,
            Ended::TopicClosed => Reason::TopicClosed,
            Ended::Expired => Reason::Expired,
        }
    }
}

impl Ended {
    const ALL: [Ended; 5] = [
        Ended::Disconnected,
        Ended::Closed,
        Ended::Revoked,
        Ended::TopicClosed,
        Ended::Expired,
    ];

    fn code(self) -> u8 {
        self as u8 + 1
    }
}

/// One subscription as the topics it follows know it: how to wake it, whose
/// it is, and whether it was ended from outside.
pub(crate) struct Reader {
    waker: AtomicWaker,
    pub(crate) user: Option<Arc<str>>,
    ended: AtomicU8,
}

impl Reader {
    pub(crate) fn new(user: Option<Arc<str>>) -> Arc<Reader> {
        Arc::new(Reader {
            waker: AtomicWaker::new(),
            user,
            ended: AtomicU8::new(0),
        })
    }

    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    fn wake(&self) {
        self.waker.wake();
    }

    /// Ends the subscription for `why` (the first reason given stays).
    pub(crate) fn end(&self, why: Ended) {
        let _ = self
            .ended
            .compare_exchange(0, why.code(), Ordering::AcqRel, Ordering::Acquire);
        self.wake();
    }

    pub(crate) fn ended(&self) -> Option<Ended> {
        let code = self.ended.load(Ordering::Acquire);
        Ended::ALL.into_iter().find(|why| why.code() == code)
    }
}

/// The readers of one topic.
#[derive(Default)]
pub(crate) struct Followers {
    readers: Mutex<Slab<Arc<Reader>>>,
    /// How many subscriptions follow the topic. Changed only under the hub's
    /// state lock, which decides from it whether to forget the topic.
    count: AtomicUsize,
    /// The count again, for those who watch it (made by the first).
    watch: OnceLock<watch::Sender<usize>>,
    /// Set while queued for the fan-out task, so it is queued once.
    queued: AtomicBool,
}

impl Followers {
    fn readers(&self) -> MutexGuard<'_, Slab<Arc<Reader>>> {
        // A panic while holding the lock cannot leave the slab inconsistent.
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a subscription's reader; returns its key.
    pub(crate) fn add(&self, reader: Arc<Reader>) -> usize {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        self.publish_count(count);
        self.readers().insert(reader)
    }

    /// Unregisters the reader under `key`; returns how many follow still.
    pub(crate) fn remove(&self, key: usize) -> usize {
        self.readers().try_remove(key);
        let count = self.count.fetch_sub(1, Ordering::Relaxed) - 1;
        self.publish_count(count);
        count
    }

    fn publish_count(&self, count: usize) {
        if let Some(watch) = self.watch.get() {
            watch.send_replace(count);
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A receiver of the count, updated as subscriptions come and go.
    pub(crate) fn watch(&self) -> watch::Receiver<usize> {
        self.watch
            .get_or_init(|| watch::Sender::new(self.count()))
            .subscribe()
    }

    /// Whether someone watches the count (the topic must not be forgotten).
    pub(crate) fn is_watched(&self) -> bool {
        self.watch.get().is_some_and(|w| w.receiver_count() > 0)
    }

    pub(crate) fn wake_all(&self) {
        for (_, reader) in self.readers().iter() {
            reader.wake();
        }
    }

    /// Wakes up to `most` readers, those under the keys from `from` on;
    /// returns the key to go on from, or `None` when none are left.
    fn wake_from(&self, from: usize, most: usize) -> Option<usize> {
        let readers = self.readers();
        let (end, mut key, mut woken) = (readers.capacity(), from, 0);
        while key < end && woken < most {
            if let Some(reader) = readers.get(key) {
                reader.wake();
                woken += 1;
            }
            key += 1;
        }
        (key < end).then_some(key)
    }

    /// Ends every subscription (of `user`, if given) for `why`.
    pub(crate) fn end(&self, user: Option<&str>, why: Ended) {
        for (_, reader) in self.readers().iter() {
            if user.is_none_or(|user| reader.user.as_deref() == Some(user)) {
                reader.end(why);
            }
        }
    }

    /// The users of the subscriptions, distinct, the first `limit` of them
    /// in the order they came, and how many there are in all.
    pub(crate) fn users(&self, limit: usize) -> (Vec<String>, usize) {
        let readers = self.readers();
        let mut seen = std::collections::HashSet::new();
        let mut first = Vec::new();
        for (_, reader) in readers.iter() {
            if let Some(user) = &reader.user {
                if seen.insert(user.clone()) && first.len() < limit {
                    first.push(user.to_string());
                }
            }
        }
        (first, seen.len())
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
        let mut pass = Pass {
            fan_out: self,
            topics: Vec::new(),
            next: 0,
        };
        while !closed() {
            self.notify.notified().await;
            std::mem::swap(&mut pass.topics, &mut *self.queue());
            while let Some(followers) = pass.topics.get(pass.next).cloned() {
                // Cleared before waking: an event published meanwhile queues
                // the topic again rather than being missed (a reader woken
                // in this pass reads it too; one after it is woken again).
                followers.queued.store(false, Ordering::Release);
                let mut from = 0;
                while let Some(next) = followers.wake_from(from, WAKE_BATCH) {
                    from = next;
                    if spilled() {
                        tokio::task::yield_now().await;
                    }
                }
                pass.next += 1;
            }
            pass.topics.clear();
            pass.next = 0;
        }
    }
}

/// Whether the runtime's global run queue holds tasks: the readers just
/// woken no longer fit the worker's local queue (or the runtime is behind
/// anyway). Outside a runtime (unit tests poll the task by hand): yes.
fn spilled() -> bool {
    tokio::runtime::Handle::try_current()
        .map_or(true, |runtime| runtime.metrics().global_queue_depth() > 0)
}

/// The topics of the fan-out task's current pass, from `next` on not yet
/// woken through. If the task is dropped mid-pass (at a yield, when the
/// runtime it ran on shuts down), they go back on the queue for the task
/// that replaces it: a topic left marked queued but on no queue would
/// never be woken again.
struct Pass<'a> {
    fan_out: &'a FanOut,
    topics: Vec<Arc<Followers>>,
    next: usize,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut rest = self.topics.drain(self.next.min(self.topics.len())..);
        let mut requeue = Vec::new();
        // The one being woken had its mark cleared: queued again, unless a
        // publish meanwhile did so.
        if let Some(current) = rest.next() {
            if !current.queued.swap(true, Ordering::AcqRel) {
                requeue.push(current);
            }
        }
        // The others are still marked, and on no queue.
        requeue.extend(rest);
        if !requeue.is_empty() {
            self.fan_out.queue().extend(requeue);
            self.fan_out.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        future::Future,
        task::{Context, Wake},
    };

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn follower(followers: &Followers) -> Arc<Count> {
        let count = Arc::new(Count::default());
        let reader = Reader::new(None);
        reader.register(&Waker::from(count.clone()));
        followers.add(reader);
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
        // More than one batch, with a gap left by a reader that went away.
        let readers: Vec<_> = (0..2 * WAKE_BATCH + WAKE_INLINE + 1)
            .map(|_| follower(&followers))
            .collect();
        followers.remove(WAKE_BATCH / 2);
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
            while readers
                .iter()
                .enumerate()
                .any(|(i, r)| i != WAKE_BATCH / 2 && r.0.load(Ordering::SeqCst) == 0)
            {
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
        assert_eq!(readers[WAKE_BATCH / 2].0.load(Ordering::SeqCst), 0);
        assert_eq!(followers.remove(0), 2 * WAKE_BATCH + WAKE_INLINE - 1);
    }

    fn woken(readers: &[Arc<Count>]) -> usize {
        readers
            .iter()
            .filter(|r| r.0.load(Ordering::SeqCst) > 0)
            .count()
    }

    #[test]
    fn the_task_wakes_a_batch_per_poll_and_a_reader_added_behind_it_next_pass() {
        let (fan_out, followers) = (FanOut::default(), Arc::new(Followers::default()));
        let readers: Vec<_> = (0..3 * WAKE_BATCH).map(|_| follower(&followers)).collect();
        let mut run = std::pin::pin!(fan_out.run(|| false));
        let mut cx = Context::from_waker(Waker::noop());
        fan_out.wake(&followers);
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(woken(&readers), WAKE_BATCH, "one batch, then a yield");
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(woken(&readers), 2 * WAKE_BATCH);
        // A reader takes a key behind the pass, and an event comes: the
        // topic is queued again, and the next pass wakes it.
        followers.remove(0);
        let late = follower(&followers);
        fan_out.wake(&followers);
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(woken(&readers), 3 * WAKE_BATCH, "the first pass is done");
        for _ in 0..3 {
            assert!(run.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(late.0.load(Ordering::SeqCst), 1, "woken by the next pass");
    }

    #[test]
    fn a_pass_dropped_midway_puts_its_topics_back_on_the_queue() {
        let fan_out = FanOut::default();
        let (a, b) = (
            Arc::new(Followers::default()),
            Arc::new(Followers::default()),
        );
        let in_a: Vec<_> = (0..2 * WAKE_BATCH).map(|_| follower(&a)).collect();
        let in_b: Vec<_> = (0..2 * WAKE_BATCH).map(|_| follower(&b)).collect();
        fan_out.wake(&a);
        fan_out.wake(&b);
        {
            let mut run = std::pin::pin!(fan_out.run(|| false));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(run.as_mut().poll(&mut cx).is_pending());
            assert_eq!(woken(&in_a), WAKE_BATCH);
            // Dropped here, as when its runtime shuts down at the yield.
        }
        assert_eq!(fan_out.queue().len(), 2, "both topics are queued again");
        assert!(a.queued.load(Ordering::SeqCst) && b.queued.load(Ordering::SeqCst));
        let mut run = std::pin::pin!(fan_out.run(|| false));
        let mut cx = Context::from_waker(Waker::noop());
        while woken(&in_a) + woken(&in_b) < 4 * WAKE_BATCH {
            assert!(run.as_mut().poll(&mut cx).is_pending());
        }
        assert!(!a.queued.load(Ordering::SeqCst) && !b.queued.load(Ordering::SeqCst));
    }

    #[test]
    fn readers_are_ended_by_user_or_all_and_users_counted_once() {
        let followers = Followers::default();
        let mut watched = followers.watch();
        let readers: Vec<_> = [Some("ann"), Some("bob"), Some("ann"), None]
            .into_iter()
            .map(|user| {
                let reader = Reader::new(user.map(Into::into));
                followers.add(reader.clone());
                reader
            })
            .collect();
        assert_eq!(*watched.borrow_and_update(), 4);
        assert_eq!(followers.users(1), (vec!["ann".to_owned()], 2));
        followers.end(Some("ann"), Ended::Revoked);
        let ended: Vec<_> = readers.iter().map(|r| r.ended()).collect();
        assert_eq!(
            ended,
            [Some(Ended::Revoked), None, Some(Ended::Revoked), None]
        );
        followers.end(None, Ended::TopicClosed);
        assert_eq!(
            readers[0].ended(),
            Some(Ended::Revoked),
            "the first reason stays"
        );
        assert_eq!(readers[3].ended(), Some(Ended::TopicClosed));
        followers.remove(0);
        assert_eq!(*watched.borrow_and_update(), 3);
    }
}
