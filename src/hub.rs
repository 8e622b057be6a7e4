//! The hub: event ids, per-topic rings that double as history, and the
//! registry of subscribers to wake.
//!
//! Publishing takes one lock (`Hub::state`) to give the event the next id
//! and append it to its topic's ring, so ids are in order in every ring and
//! across rings. Subscribers read the rings under a read lock and copy what
//! they have not seen yet; nothing is queued per subscriber. Waking the
//! subscribers of a topic is done by a fan-out task, so `publish` costs the
//! same with no subscriber or ten thousand.

use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};
use slab::Slab;
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::{
    sync::{watch, Notify},
    task::JoinHandle,
    time::Instant,
};

use crate::{event::Event, Error, EventId};

/// The name of the topic every subscriber follows and [`publish`] goes to.
/// It is empty, which no user topic can be.
///
/// [`publish`]: crate::Publisher::publish
pub(crate) const DEFAULT_TOPIC: &str = "";

/// Up to this many subscribers, `publish` wakes a topic's readers itself;
/// beyond, the hub's fan-out task does, so `publish` stays O(1) in them.
const WAKE_INLINE: usize = 32;

/// How long a new stream (SSE or WebSocket) of a hub with a backplane waits
/// for the history to load or for the id it resumes from to arrive.
#[cfg(feature = "redis")]
const CATCH_UP: Duration = Duration::from_secs(2);

/// The name of the event sent when a client resumes from an id the history
/// no longer covers (see the crate docs, "Resuming").
pub const RESET_EVENT: &str = "reset";

/// Settings of a hub that the layer's builder may change after the hub exists.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) history: usize,
    pub(crate) history_ttl: Option<Duration>,
    pub(crate) max_lag: usize,
    pub(crate) max_event_size: usize,
    pub(crate) max_subscribers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            history: 1024,
            history_ttl: None,
            max_lag: 1024,
            max_event_size: 1024 * 1024,
            max_subscribers: usize::MAX,
        }
    }
}

pub(crate) struct Hub {
    state: Mutex<State>,
    /// Id of the newest published event; readers of several topics take
    /// nothing newer, so events of different topics come out in id order.
    published: AtomicU64,
    closed: AtomicBool,
    /// Bumped by `disconnect_all`: streams opened before it end.
    generation: AtomicU64,
    subscribers: AtomicUsize,
    /// The subscriber count again, for those who wait for it to change.
    count: watch::Sender<usize>,
    max_lag: AtomicUsize,
    max_event_size: AtomicUsize,
    max_subscribers: AtomicUsize,
    default_topic: Arc<Topic>,
    /// Wakes the fan-out task when a topic with subscribers got events.
    notify: Notify,
    fan_out: Mutex<Option<JoinHandle<()>>>,
    /// Where events go and come from when instances share one stream.
    #[cfg(feature = "redis")]
    backplane: std::sync::OnceLock<Arc<crate::backplane::Link>>,
    #[cfg(feature = "redis")]
    backplane_task: Mutex<Option<JoinHandle<()>>>,
    /// The newest id, for streams waiting for this instance to catch up with
    /// an id a browser saw on another instance.
    #[cfg(feature = "redis")]
    newest: watch::Sender<u64>,
    /// Whether the backplane's reader has loaded the history.
    #[cfg(feature = "redis")]
    loaded: watch::Sender<bool>,
}

struct State {
    next_id: u64,
    topics: HashMap<Arc<str>, Arc<Topic>>,
    /// Every retained event in id order, over all topics: what to evict next.
    history: VecDeque<Retained>,
    history_limit: usize,
    history_ttl: Option<Duration>,
    /// How many retained events carry an id set by the app: while none do,
    /// a `Last-Event-ID` is read as a number without searching the history.
    custom_ids: usize,
    /// Highest id that left the history (or, at start, the id just before
    /// the first one): a client that saw less than this may have missed some.
    evicted_up_to: u64,
    dirty: Vec<Arc<Topic>>,
    closed: bool,
}

struct Retained {
    id: u64,
    topic: Arc<Topic>,
    custom_id: Option<Box<str>>,
    at: Option<Instant>,
}

pub(crate) struct Topic {
    name: Arc<str>,
    ring: RwLock<Ring>,
    waiters: Mutex<Slab<Arc<AtomicWaker>>>,
    /// Changed only under `Hub::state`.
    subscribers: AtomicUsize,
    /// Set when queued for the fan-out task, so it is queued once.
    dirty: AtomicBool,
}

struct Ring {
    entries: VecDeque<Entry>,
    /// Topic-local sequence number of `entries[0]`; cursors count in it.
    first_seq: u64,
    /// Highest id of this topic that left the history.
    evicted_up_to: u64,
}

struct Entry {
    id: u64,
    bytes: Bytes,
    /// The event as a WebSocket text payload, built by the first WebSocket
    /// reader and shared by the others.
    #[cfg(feature = "ws")]
    ws: std::sync::OnceLock<tokio_tungstenite::tungstenite::Utf8Bytes>,
}

#[cfg(feature = "ws")]
impl Entry {
    fn ws(&self, topic: &str) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        self.ws
            .get_or_init(|| crate::ws::event_frame(self.id, topic, &self.bytes))
            .clone()
    }
}

/// Where a new subscriber starts.
pub(crate) enum Resume<'a> {
    /// With the next event published.
    Live,
    /// After the event with this id (the `Last-Event-ID` the client sent).
    After(&'a str),
    /// After an id that cannot be read (not UTF-8): the client gets a reset.
    Unknown,
}

/// Why a subscription was refused.
#[derive(Debug)]
pub(crate) enum SubscribeError {
    Closed,
    TooManySubscribers,
    NoRuntime,
}

impl Hub {
    pub(crate) fn new(limits: &Limits) -> Arc<Hub> {
        // Ids start at the current time in microseconds, so ids of a restarted
        // server are above every id a browser kept from before the restart.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .max(1);
        let default_topic = Topic::new(DEFAULT_TOPIC.into(), start - 1);
        let mut topics = HashMap::new();
        topics.insert(default_topic.name.clone(), default_topic.clone());
        Arc::new(Hub {
            state: Mutex::new(State {
                next_id: start,
                topics,
                history: VecDeque::new(),
                history_limit: limits.history.max(limits.max_lag),
                history_ttl: limits.history_ttl,
                custom_ids: 0,
                evicted_up_to: start - 1,
                dirty: Vec::new(),
                closed: false,
            }),
            published: AtomicU64::new(start - 1),
            closed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            count: watch::Sender::new(0),
            max_lag: AtomicUsize::new(limits.max_lag),
            max_event_size: AtomicUsize::new(limits.max_event_size),
            max_subscribers: AtomicUsize::new(limits.max_subscribers),
            default_topic,
            notify: Notify::new(),
            fan_out: Mutex::new(None),
            #[cfg(feature = "redis")]
            backplane: std::sync::OnceLock::new(),
            #[cfg(feature = "redis")]
            backplane_task: Mutex::new(None),
            #[cfg(feature = "redis")]
            newest: watch::Sender::new(start - 1),
            #[cfg(feature = "redis")]
            loaded: watch::Sender::new(false),
        })
    }

    /// Routes this hub's events through `link`, and starts reading from it
    /// if a Tokio runtime is at hand (otherwise with the first stream).
    /// A hub keeps the first backplane it is given.
    #[cfg(feature = "redis")]
    pub(crate) fn set_backplane(self: &Arc<Self>, link: Arc<crate::backplane::Link>) -> bool {
        let set = self.backplane.set(link).is_ok();
        if set {
            self.ensure_backplane();
        }
        set
    }

    #[cfg(feature = "redis")]
    pub(crate) fn backplane(&self) -> Option<&Arc<crate::backplane::Link>> {
        self.backplane.get()
    }

    /// With a backplane, a new stream waits (a bounded time) before it
    /// subscribes while this instance has not loaded the stream's history
    /// yet, or when the browser comes back from another instance with an id
    /// this one has not read yet. Returns the id to wait for, if any.
    #[cfg(feature = "redis")]
    pub(crate) fn wait_for(&self, resume: &Resume<'_>) -> Option<u64> {
        self.backplane.get()?;
        let ahead = match resume {
            Resume::After(last) => last
                .parse::<u64>()
                .ok()
                .filter(|id| *id > self.published.load(Ordering::Acquire)),
            _ => None,
        };
        match (ahead, *self.loaded.borrow()) {
            (Some(id), _) => Some(id),
            (None, false) => Some(0),
            (None, true) => None,
        }
    }

    /// Waits until this instance has loaded the backplane's history and read
    /// the event `id`, or [`CATCH_UP`] (the reader is normally milliseconds
    /// behind).
    #[cfg(feature = "redis")]
    pub(crate) async fn caught_up(&self, id: u64) {
        let mut loaded = self.loaded.subscribe();
        let mut newest = self.newest.subscribe();
        tokio::time::timeout(CATCH_UP, async {
            loaded.wait_for(|l| *l).await.ok();
            newest.wait_for(|n| *n >= id).await.ok();
        })
        .await
        .ok();
    }

    /// Called by the backplane's reader once the history is loaded.
    #[cfg(feature = "redis")]
    pub(crate) fn set_loaded(&self) {
        self.loaded.send_replace(true);
    }

    /// Starts (or restarts) the task that reads the backplane, when there is
    /// one and a runtime to run it on.
    #[cfg(feature = "redis")]
    fn ensure_backplane(self: &Arc<Self>) {
        let Some(link) = self.backplane.get() else {
            return;
        };
        let mut task = self
            .backplane_task
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) || self.is_closed() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *task = Some(runtime.spawn(crate::backplane::read(self.clone(), link.clone())));
        }
    }

    pub(crate) fn set_limits(&self, limits: &Limits) {
        let mut state = self.state();
        state.history_limit = limits.history.max(limits.max_lag);
        state.history_ttl = limits.history_ttl;
        self.max_lag.store(limits.max_lag, Ordering::Relaxed);
        self.max_event_size
            .store(limits.max_event_size, Ordering::Relaxed);
        self.max_subscribers
            .store(limits.max_subscribers, Ordering::Relaxed);
        let now = state.now();
        state.evict(now);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent
        // in a way that matters more than refusing every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn publish(&self, topic: &str, event: Event) -> Result<EventId, Error> {
        #[cfg(feature = "redis")]
        if self.backplane.get().is_some() {
            return Err(Error::NeedsSend);
        }
        let custom_id: Option<Box<str>> = event.custom_id().map(Into::into);
        let prepared = event.prepare(self.max_event_size())?;
        let with_id = custom_id.is_none();
        self.append(topic, None, custom_id, |id| {
            prepared.finish(with_id.then_some(id))
        })
    }

    pub(crate) fn max_event_size(&self) -> usize {
        self.max_event_size.load(Ordering::Relaxed)
    }

    /// The history's count limit.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn history_limit(&self) -> usize {
        self.state().history_limit
    }

    /// Appends an event whose id was assigned elsewhere (by the backplane),
    /// in the order of those ids: an id not above the newest one is a
    /// duplicate and is skipped. `fields` is the encoded event without its
    /// `id:` line and blank line.
    #[cfg(feature = "redis")]
    pub(crate) fn insert(
        &self,
        topic: &str,
        id: u64,
        custom_id: Option<Box<str>>,
        fields: &[u8],
    ) -> Result<(), Error> {
        let with_id = custom_id.is_none();
        self.append(topic, Some(id), custom_id, |id| {
            let mut buf = bytes::BytesMut::with_capacity(fields.len() + 32);
            buf.extend_from_slice(fields);
            crate::event::finish(&mut buf, with_id.then_some(id));
            buf.freeze()
        })
        .map(drop)
    }

    /// Forgets the whole history and ends every stream: from now on only
    /// ids above `up_to` are known, so a client resuming from an older one
    /// gets the reset event. For the backplane, when it cannot tell what it
    /// missed.
    #[cfg(feature = "redis")]
    pub(crate) fn restart_history(&self, up_to: u64) {
        {
            let mut state = self.state();
            state.history.clear();
            state.custom_ids = 0;
            state.evicted_up_to = state.evicted_up_to.max(up_to);
            state.next_id = state.next_id.max(up_to + 1);
            self.published.fetch_max(up_to, Ordering::AcqRel);
            self.newest.send_modify(|n| *n = (*n).max(up_to));
            for topic in state.topics.values() {
                let mut ring = topic.ring_mut();
                ring.first_seq += ring.entries.len() as u64;
                ring.entries.clear();
                ring.evicted_up_to = ring.evicted_up_to.max(up_to);
            }
            let empty: Vec<Arc<Topic>> = state
                .topics
                .values()
                .filter(|t| t.subscribers.load(Ordering::Relaxed) == 0)
                .cloned()
                .collect();
            for topic in &empty {
                state.forget(topic);
            }
        }
        self.disconnect_all();
    }

    /// Appends an event to `topic` with the next id (or `external`, which
    /// must be above every id so far) and wakes its readers. `encode` gets
    /// the id and returns the event's bytes.
    fn append(
        &self,
        topic: &str,
        external: Option<u64>,
        custom_id: Option<Box<str>>,
        encode: impl FnOnce(u64) -> Bytes,
    ) -> Result<EventId, Error> {
        let mut state = self.state();
        if state.closed {
            return Err(Error::Closed);
        }
        let id = match external {
            None => state.next_id,
            Some(id) if id >= state.next_id => id,
            // Already have it (a backplane re-read after reconnecting).
            Some(id) => return Ok(EventId(id)),
        };
        state.next_id = id + 1;
        let bytes = encode(id);
        let topic = if topic == DEFAULT_TOPIC {
            self.default_topic.clone()
        } else {
            state.topic(topic)
        };
        topic.ring_mut().entries.push_back(Entry {
            id,
            bytes,
            #[cfg(feature = "ws")]
            ws: std::sync::OnceLock::new(),
        });
        let at = state.now();
        state.custom_ids += usize::from(custom_id.is_some());
        state.history.push_back(Retained {
            id,
            topic: topic.clone(),
            custom_id,
            at,
        });
        self.published.store(id, Ordering::Release);
        #[cfg(feature = "redis")]
        if external.is_some() {
            self.newest.send_replace(id);
        }
        state.evict(at);
        let subscribers = topic.subscribers.load(Ordering::Relaxed);
        if subscribers == 0 {
            return Ok(EventId(id));
        }
        if subscribers <= WAKE_INLINE {
            // A few readers: wake them here, sparing the hop through the
            // fan-out task (and its scheduling delay).
            drop(state);
            topic.wake_all();
            return Ok(EventId(id));
        }
        let wake = !topic.dirty.swap(true, Ordering::AcqRel);
        if wake {
            state.dirty.push(topic);
        }
        drop(state);
        if wake {
            self.notify.notify_one();
        }
        Ok(EventId(id))
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    pub(crate) fn watch_subscribers(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends every open stream, leaving the hub open: clients reconnect and
    /// resume from their last id.
    pub(crate) fn disconnect_all(&self) {
        let topics: Vec<Arc<Topic>> = {
            let state = self.state();
            self.generation.fetch_add(1, Ordering::Release);
            state.topics.values().cloned().collect()
        };
        for topic in topics {
            topic.wake_all();
        }
    }

    /// Refuses new events and subscribers, and wakes every stream so it ends.
    pub(crate) fn close(&self) {
        let topics: Vec<Arc<Topic>> = {
            let mut state = self.state();
            if state.closed {
                return;
            }
            state.closed = true;
            self.closed.store(true, Ordering::Release);
            state.topics.values().cloned().collect()
        };
        for topic in topics {
            topic.wake_all();
        }
        self.notify.notify_one();
    }

    /// Registers a subscriber of `topics` (the default topic is always
    /// followed) starting at `resume`.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        topics: &[&str],
        resume: Resume<'_>,
    ) -> Result<Subscription, SubscribeError> {
        self.ensure_fan_out()?;
        let mut state = self.state();
        if state.closed {
            return Err(SubscribeError::Closed);
        }
        let max = self.max_subscribers.load(Ordering::Relaxed);
        if self.subscribers.load(Ordering::Relaxed) >= max {
            return Err(SubscribeError::TooManySubscribers);
        }
        let now = state.now();
        state.evict(now);
        let published = self.published.load(Ordering::Relaxed);

        let mut follows = Vec::with_capacity(topics.len() + 1);
        follows.push(self.default_topic.clone());
        for name in topics {
            if *name != DEFAULT_TOPIC && !follows.iter().any(|t| &*t.name == *name) {
                follows.push(state.topic(name));
            }
        }

        // The id after which to deliver, and whether the client must be told
        // that it missed events we no longer have.
        let (after, reset) = match resume {
            Resume::Live => (published, false),
            Resume::After(last) => match state.resolve(last) {
                Some(id)
                    if id <= published && follows.iter().all(|t| t.ring().evicted_up_to <= id) =>
                {
                    (id, false)
                }
                _ => (published, true),
            },
            Resume::Unknown => (published, true),
        };

        let waker = Arc::new(AtomicWaker::new());
        let follows = follows
            .into_iter()
            .map(|topic| {
                topic.subscribers.fetch_add(1, Ordering::Relaxed);
                let key = topic.waiters().insert(waker.clone());
                let (cursor, joined) = {
                    let ring = topic.ring();
                    let cursor =
                        ring.first_seq + ring.entries.partition_point(|e| e.id <= after) as u64;
                    (cursor, ring.first_seq + ring.entries.len() as u64)
                };
                Follow {
                    topic,
                    key,
                    cursor,
                    joined,
                }
            })
            .collect();
        let count = self.subscribers.fetch_add(1, Ordering::Relaxed) + 1;
        self.count.send_replace(count);
        drop(state);

        let start = match resume {
            Resume::After(_) if !reset => Start::Resumed,
            _ if reset => Start::Reset(after),
            _ => Start::Live(after),
        };
        Ok(Subscription {
            hub: self.clone(),
            generation: self.generation.load(Ordering::Acquire),
            waker,
            follows,
            start,
        })
    }

    /// Starts the task that wakes subscribers, or restarts it if the runtime
    /// it ran on is gone.
    fn ensure_fan_out(self: &Arc<Self>) -> Result<(), SubscribeError> {
        #[cfg(feature = "redis")]
        self.ensure_backplane();
        let mut task = self.fan_out.lock().unwrap_or_else(|e| e.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SubscribeError::NoRuntime)?;
        let hub = self.clone();
        *task = Some(runtime.spawn(async move { hub.fan_out().await }));
        Ok(())
    }

    async fn fan_out(&self) {
        let mut dirty = Vec::new();
        while !self.is_closed() {
            self.notify.notified().await;
            std::mem::swap(&mut dirty, &mut self.state().dirty);
            for topic in dirty.drain(..) {
                // Cleared before waking: an event published meanwhile queues
                // the topic again rather than being missed.
                topic.dirty.store(false, Ordering::Release);
                topic.wake_all();
            }
        }
    }

    fn unsubscribe(&self, follows: &[Follow]) {
        let mut state = self.state();
        for follow in follows {
            follow.topic.waiters().try_remove(follow.key);
            let left = follow.topic.subscribers.fetch_sub(1, Ordering::Relaxed) - 1;
            if left == 0 && follow.topic.ring().entries.is_empty() {
                state.forget(&follow.topic);
            }
        }
        let count = self.subscribers.fetch_sub(1, Ordering::Relaxed) - 1;
        self.count.send_replace(count);
    }
}

impl State {
    fn topic(&mut self, name: &str) -> Arc<Topic> {
        if let Some(topic) = self.topics.get(name) {
            return topic.clone();
        }
        // A topic created now may have had events that were evicted along
        // with its entry: count everything evicted so far as possibly its.
        let topic = Topic::new(name.into(), self.evicted_up_to);
        self.topics.insert(topic.name.clone(), topic.clone());
        topic
    }

    fn forget(&mut self, topic: &Arc<Topic>) {
        if &*topic.name != DEFAULT_TOPIC
            && self
                .topics
                .get(&topic.name)
                .is_some_and(|t| Arc::ptr_eq(t, topic))
        {
            self.topics.remove(&topic.name);
        }
    }

    /// The time, when the history has an age limit (the clock is read only then).
    fn now(&self) -> Option<Instant> {
        self.history_ttl.map(|_| Instant::now())
    }

    /// Drops events beyond the history's count, and older than its age limit
    /// at `now` (as given by [`State::now`]).
    fn evict(&mut self, now: Option<Instant>) {
        loop {
            let expired = match (self.history.front(), self.history_ttl, now) {
                (None, _, _) => return,
                (Some(r), Some(ttl), Some(now)) => {
                    r.at.is_some_and(|at| now.duration_since(at) > ttl)
                }
                _ => false,
            };
            if !expired && self.history.len() <= self.history_limit {
                return;
            }
            let Some(old) = self.history.pop_front() else {
                return;
            };
            self.custom_ids -= usize::from(old.custom_id.is_some());
            let empty = {
                let mut ring = old.topic.ring_mut();
                if ring.entries.front().is_some_and(|e| e.id == old.id) {
                    ring.entries.pop_front();
                    ring.first_seq += 1;
                }
                ring.evicted_up_to = old.id;
                ring.entries.is_empty()
            };
            self.evicted_up_to = old.id;
            if empty && old.topic.subscribers.load(Ordering::Relaxed) == 0 {
                self.forget(&old.topic);
            }
        }
    }

    /// The hub id a client's `Last-Event-ID` stands for, if any.
    fn resolve(&self, last: &str) -> Option<u64> {
        // Ids set by the caller are looked up first (newest first): an id
        // the app chose takes precedence over reading it as a number.
        let custom = (self.custom_ids > 0)
            .then(|| {
                self.history
                    .iter()
                    .rev()
                    .find(|r| r.custom_id.as_deref() == Some(last))
            })
            .flatten();
        custom.map(|r| r.id).or_else(|| last.parse().ok())
    }
}

impl Topic {
    fn new(name: Arc<str>, evicted_up_to: u64) -> Arc<Topic> {
        Arc::new(Topic {
            name,
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                first_seq: 0,
                evicted_up_to,
            }),
            waiters: Mutex::new(Slab::new()),
            subscribers: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
        })
    }

    fn ring(&self) -> RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    fn ring_mut(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }

    fn waiters(&self) -> MutexGuard<'_, Slab<Arc<AtomicWaker>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_all(&self) {
        for (_, waker) in self.waiters().iter() {
            waker.wake();
        }
    }
}

struct Follow {
    topic: Arc<Topic>,
    key: usize,
    /// Topic-local sequence number of the next event to deliver.
    cursor: u64,
    /// Sequence number of the first event published after the subscription:
    /// the replayed backlog before it does not count as lag.
    joined: u64,
}

/// What [`Subscription::read`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum Read {
    /// Events were appended to the buffer, or this one event is shared as is.
    Events(Option<Bytes>),
    /// Nothing new; the waker is registered.
    Nothing,
    /// The subscriber fell further behind than the lag bound, or an event it
    /// had not read yet left the history: the stream must end.
    Lagged,
}

/// One subscriber's place in the hub: a cursor per followed topic.
/// Dropping it unregisters the subscriber.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    generation: u64,
    waker: Arc<AtomicWaker>,
    follows: Vec<Follow>,
    start: Start,
}

/// What a stream sends first.
enum Start {
    /// The id it starts after, in an `id:` field alone: the browser takes it
    /// as its last event id without dispatching anything, so even a stream
    /// cut before its first event resumes without loss.
    Live(u64),
    /// A reset event with the id it starts after.
    Reset(u64),
    /// Nothing: the client's `Last-Event-ID` is where it resumes.
    Resumed,
}

impl Subscription {
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.hub.is_closed()
    }

    /// Whether `disconnect_all` was called since this stream opened.
    pub(crate) fn is_disconnected(&self) -> bool {
        self.hub.generation.load(Ordering::Acquire) != self.generation
    }

    /// What the stream sends before any event: the id it starts after, or
    /// the reset event owed to a client whose resume point is gone.
    pub(crate) fn take_start(&mut self) -> Option<Bytes> {
        match std::mem::replace(&mut self.start, Start::Resumed) {
            Start::Live(id) => Some(format!("id: {id}\n\n").into()),
            Start::Reset(id) => Event::default()
                .event(RESET_EVENT)
                .prepare(usize::MAX)
                .ok()
                .map(|prepared| prepared.finish(Some(id))),
            Start::Resumed => None,
        }
    }

    /// For a WebSocket session: the id it starts after, and whether the
    /// client must be told it missed events (the reset).
    #[cfg(feature = "ws")]
    pub(crate) fn take_start_ws(&mut self) -> (Option<u64>, bool) {
        match std::mem::replace(&mut self.start, Start::Resumed) {
            Start::Live(id) => (Some(id), false),
            Start::Reset(id) => (Some(id), true),
            Start::Resumed => (None, false),
        }
    }

    /// For a WebSocket session: up to `max` events not yet delivered, in id
    /// order, as (hub id, shared text payload).
    #[cfg(feature = "ws")]
    pub(crate) fn read_ws(
        &mut self,
        out: &mut Vec<(u64, tokio_tungstenite::tungstenite::Utf8Bytes)>,
        max: usize,
    ) -> Read {
        let before = out.len();
        let merged = self.merge(|entry, topic| {
            if out.len() - before == max {
                return false;
            }
            out.push((entry.id, entry.ws(topic)));
            true
        });
        match merged {
            None => Read::Lagged,
            Some(()) if out.len() == before => Read::Nothing,
            Some(()) => Read::Events(None),
        }
    }

    /// Takes the events not yet delivered, in id order, until `out` holds
    /// about `cap` bytes (always at least one event when there is one).
    pub(crate) fn read(&mut self, out: &mut BytesMut, cap: usize) -> Read {
        if let [follow] = &mut self.follows[..] {
            let max_lag = self.hub.max_lag.load(Ordering::Relaxed) as u64;
            return read_one(follow, out, cap, max_lag);
        }
        let mut first: Option<Bytes> = None;
        let merged = self.merge(|entry, _| {
            if out.is_empty() && first.is_none() {
                // Maybe the only one: share it rather than copy it.
                first = Some(entry.bytes.clone());
                return true;
            }
            if let Some(first) = first.take() {
                out.extend_from_slice(&first);
            }
            if !out.is_empty() && out.len() + entry.bytes.len() > cap {
                return false;
            }
            out.extend_from_slice(&entry.bytes);
            true
        });
        match (merged, first) {
            (None, _) => Read::Lagged,
            (Some(()), Some(bytes)) => Read::Events(Some(bytes)),
            (Some(()), None) if out.is_empty() => Read::Nothing,
            (Some(()), None) => Read::Events(None),
        }
    }

    /// Offers the undelivered events of every followed topic to `take`, in id
    /// order, with their topic's name, until it declines one (which stays
    /// undelivered); the cursors move past those it took. `None` when the
    /// subscriber lags too far (see [`unread_start`]).
    ///
    /// Every ring's read lock is held at once (publishers append under the
    /// hub lock, one ring at a time, in id order, so this is a consistent
    /// snapshot); events newer than the newest published id are left out as
    /// a second guard against an event of one topic overtaking an older one
    /// of another; each ring is read in place (no per-read copy).
    fn merge(&mut self, mut take: impl FnMut(&Entry, &str) -> bool) -> Option<()> {
        let max_lag = self.hub.max_lag.load(Ordering::Relaxed) as u64;
        let published = self.hub.published.load(Ordering::Acquire);
        let mut heads = Vec::with_capacity(self.follows.len());
        for follow in &self.follows {
            let ring = follow.topic.ring();
            let start = unread_start(&ring, follow, max_lag)?;
            heads.push((ring, &*follow.topic.name, start, 0u64));
        }
        loop {
            let mut next: Option<(usize, u64)> = None;
            for (i, (ring, _, at, _)) in heads.iter().enumerate() {
                if let Some(entry) = ring.entries.get(*at) {
                    if entry.id <= published && next.is_none_or(|(_, id)| entry.id < id) {
                        next = Some((i, entry.id));
                    }
                }
            }
            let Some((i, _)) = next else { break };
            let (ring, name, at, taken) = &mut heads[i];
            if !take(&ring.entries[*at], name) {
                break;
            }
            *at += 1;
            *taken += 1;
        }
        let taken: Vec<u64> = heads.into_iter().map(|(_, _, _, taken)| taken).collect();
        for (follow, taken) in self.follows.iter_mut().zip(taken) {
            follow.cursor += taken;
        }
        Some(())
    }
}

/// Index in the ring of the first entry after the cursor, or `None` when the
/// subscriber lags too far: an unread event left the history, or more than
/// `max_lag` events published since it subscribed are unread (a replayed
/// backlog is not lag).
fn unread_start(ring: &Ring, follow: &Follow, max_lag: u64) -> Option<usize> {
    let start = follow.cursor.checked_sub(ring.first_seq)?;
    let head = ring.first_seq + ring.entries.len() as u64;
    if head.saturating_sub(follow.cursor.max(follow.joined)) > max_lag {
        return None;
    }
    Some(start as usize)
}

/// The entries after the cursor, or `None` when the subscriber lags too far.
fn unread<'a>(
    ring: &'a Ring,
    follow: &Follow,
    max_lag: u64,
) -> Option<impl Iterator<Item = &'a Entry> + 'a> {
    let start = unread_start(ring, follow, max_lag)?;
    Some(ring.entries.range(start..))
}

fn read_one(follow: &mut Follow, out: &mut BytesMut, cap: usize, max_lag: u64) -> Read {
    let ring = follow.topic.ring();
    let Some(mut unread) = unread(&ring, follow, max_lag) else {
        return Read::Lagged;
    };
    let Some(first) = unread.next() else {
        return Read::Nothing;
    };
    follow.cursor += 1;
    let Some(second) = unread.next() else {
        if out.is_empty() {
            // The common case of one new event: share its bytes, copy nothing.
            return Read::Events(Some(first.bytes.clone()));
        }
        out.extend_from_slice(&first.bytes);
        return Read::Events(None);
    };
    out.extend_from_slice(&first.bytes);
    for entry in std::iter::once(second).chain(unread) {
        if out.len() + entry.bytes.len() > cap {
            break;
        }
        out.extend_from_slice(&entry.bytes);
        follow.cursor += 1;
    }
    Read::Events(None)
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.follows);
    }
}
