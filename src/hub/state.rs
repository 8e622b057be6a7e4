//! The hub's shared state: ids, topics and their history, who is
//! subscribed, and appending a record to it.
//!
//! Appending takes one lock (`Core::state`) to place the record in id order
//! in its topic's ring and in the history, so ids are in order in every ring
//! and across rings. Readers take only their rings' read locks.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    time::{SystemTime, UNIX_EPOCH},
};
use tokio::sync::watch;

use super::{
    control::Control,
    history::{Follow, History, Topic},
    registry::{Ended, FanOut, Reader},
    settings::Settings,
    start::{Owner, Resume, Start, StartKind, SubscribeError},
};
use crate::{
    error::Error,
    event::EventId,
    observe,
    record::{Encoding, Message, Record, ENCODINGS},
};

/// The name of the default topic, which every subscriber follows. It is
/// empty, which no user topic can be.
pub(crate) const DEFAULT_TOPIC: &str = "";

pub(crate) struct Core {
    state: Mutex<State>,
    /// Id of the newest appended record; readers of several topics take
    /// nothing newer, so records of different topics come out in id order.
    published: AtomicU64,
    closed: AtomicBool,
    /// Set once, when the hub closes, for tasks that wait for it.
    closing: watch::Sender<bool>,
    /// Bumped by `disconnect_all`: subscriptions opened before it end.
    generation: AtomicU64,
    subscribers: AtomicUsize,
    /// The subscriber count again, for those who wait for it to change.
    count: watch::Sender<usize>,
    /// The newest id applied from an engine, for subscriptions that wait for
    /// this instance to catch up with an id seen on another.
    newest: watch::Sender<u64>,
    pub(crate) settings: Settings,
    default_topic: Arc<Topic>,
    pub(crate) fan_out: FanOut,
    /// Encodings built for every record as it is appended (those of the
    /// transports this hub serves); others are built by their first reader.
    eager: [OnceLock<&'static Encoding>; ENCODINGS],
}

struct State {
    next_id: u64,
    topics: HashMap<Arc<str>, Arc<Topic>>,
    /// Open subscriptions per user and per client address, for their limits.
    per_user: HashMap<Arc<str>, usize>,
    per_address: HashMap<std::net::IpAddr, usize>,
    history: History,
    closed: bool,
}

impl Core {
    /// A hub whose ids it gives itself (starting at the current time in
    /// microseconds, so ids of a restarted server are above every id a
    /// browser kept from before), or, `external`, that an engine gives.
    pub(crate) fn new(settings: Settings, external: bool) -> Arc<Core> {
        let start = if external {
            1
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
                .max(1)
        };
        let default_topic = Topic::new(DEFAULT_TOPIC.into(), start - 1);
        let mut topics = HashMap::new();
        topics.insert(default_topic.name.clone(), default_topic.clone());
        Arc::new(Core {
            state: Mutex::new(State {
                next_id: start,
                topics,
                per_user: HashMap::new(),
                per_address: HashMap::new(),
                history: History::new(
                    settings.history_limit(),
                    settings.history_bytes,
                    settings.history_ttl,
                    start - 1,
                ),
                closed: false,
            }),
            published: AtomicU64::new(start - 1),
            closed: AtomicBool::new(false),
            closing: watch::Sender::new(false),
            generation: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            count: watch::Sender::new(0),
            newest: watch::Sender::new(start - 1),
            settings,
            default_topic,
            fan_out: FanOut::default(),
            eager: Default::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent
        // in a way that matters more than refusing every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds `encoding` for every record appended from now on.
    pub(crate) fn encode_eagerly(&self, encoding: &'static Encoding) {
        self.eager[encoding.slot].get_or_init(|| encoding);
    }

    /// Checks what the hub checks of every event before it takes it.
    pub(crate) fn admit(&self, message: &Message) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let (size, limit) = (message.size(), self.settings.max_event_size);
        if size > limit {
            return Err(Error::TooLarge { size, limit });
        }
        Ok(())
    }

    /// Appends `message` under the hub's next id.
    pub(crate) fn publish(&self, message: Message) -> Result<EventId, Error> {
        self.admit(&message)?;
        let state = self.state();
        if state.closed {
            return Err(Error::Closed);
        }
        let id = EventId::new(state.next_id);
        self.append(state, Record::new(id, message));
        Ok(id)
    }

    /// Appends a record an engine numbered, in the order of those ids: one
    /// not above the newest is a duplicate (a re-read) and is skipped. A
    /// control message is acted on, not stored.
    pub(crate) fn insert(&self, record: Record) {
        let mut state = self.state();
        let id = record.id().as_u64();
        if state.closed || id < state.next_id {
            return;
        }
        match Control::of(record.message()) {
            Some(control) => {
                state.next_id = id + 1;
                drop(state);
                self.apply(&control);
            }
            None => self.append(state, record),
        }
        self.newest.send_replace(id);
    }

    /// Ends the streams (of this instance) a control message names.
    pub(crate) fn apply(&self, control: &Control) {
        match control {
            Control::EndUser(user) => {
                // Every subscription follows the default topic.
                self.default_topic.followers.end(Some(user), Ended::Revoked);
            }
            Control::EndTopic(topic) => {
                let topic = self.state().topics.get(topic.as_str()).cloned();
                if let Some(topic) = topic {
                    topic.followers.end(None, Ended::TopicClosed);
                }
            }
        }
    }

    fn append(&self, mut state: MutexGuard<'_, State>, record: Record) {
        let topic = self.push(&mut state, &record);
        let (events, bytes) = state.history.size();
        drop(state);
        observe::history(events, bytes);
        for encoding in self.eager.iter().filter_map(OnceLock::get) {
            record.encoded(encoding);
        }
        self.fan_out.wake(&topic.followers);
    }

    /// Places `record` (its id above every one so far) in its topic's ring
    /// and the history; returns the topic.
    fn push(&self, state: &mut State, record: &Record) -> Arc<Topic> {
        let id = record.id().as_u64();
        state.next_id = id + 1;
        let topic = match record.topic() {
            None => self.default_topic.clone(),
            Some(name) => state.topic(name),
        };
        let now = state.history.now();
        state.history.push(&topic, record.clone(), now);
        self.published.store(id, Ordering::Release);
        state.evict(now);
        topic
    }

    /// Replaces the whole history with `records` (oldest first, as an
    /// engine's tail) and ends every subscription, in one step: from now on
    /// only ids above `known_after` are known, so a client resuming from an
    /// older one gets the reset. For an engine that cannot tell what it
    /// missed, and for loading the history at start.
    pub(crate) fn reload(&self, known_after: u64, records: Vec<Record>) {
        let topics: Vec<Arc<Topic>> = {
            let mut state = self.state();
            let state = &mut *state;
            state.history.clear(known_after, state.topics.values());
            state.next_id = state.next_id.max(known_after + 1);
            self.published.fetch_max(known_after, Ordering::AcqRel);
            for record in &records {
                if record.id().as_u64() >= state.next_id {
                    self.push(state, record);
                }
            }
            let newest = self.published.load(Ordering::Acquire);
            self.newest.send_modify(|n| *n = (*n).max(newest));
            state
                .topics
                .retain(|name, topic| &**name == DEFAULT_TOPIC || !topic.is_idle());
            // Under the lock: a subscription registered from now on sees the
            // new history, one registered before ends.
            self.generation.fetch_add(1, Ordering::Release);
            state.topics.values().cloned().collect()
        };
        for topic in topics {
            topic.followers.wake_all();
        }
    }

    /// Whether `last` (a client's `Last-Event-ID`) is an id the history
    /// holds or stands for.
    pub(crate) fn knows(&self, last: &str) -> bool {
        self.state().history.resolve(last).is_some()
    }

    /// Id of the newest appended record.
    pub(crate) fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    pub(crate) fn watch_newest(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// How many events, and about how many bytes, the history holds.
    pub(crate) fn history_size(&self) -> (usize, usize) {
        self.state().history.size()
    }

    pub(crate) fn history_limit(&self) -> usize {
        self.state().history.limit()
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

    /// Resolves once the hub is closed.
    pub(crate) async fn closed(&self) {
        self.closing.subscribe().wait_for(|c| *c).await.ok();
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Ends every open subscription, leaving the hub open: clients reconnect
    /// and resume from their last id.
    pub(crate) fn disconnect_all(&self) {
        let topics: Vec<Arc<Topic>> = {
            let state = self.state();
            self.generation.fetch_add(1, Ordering::Release);
            state.topics.values().cloned().collect()
        };
        for topic in topics {
            topic.followers.wake_all();
        }
    }

    /// Refuses new events and subscribers, and wakes every reader so it ends.
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
        self.closing.send_replace(true);
        for topic in topics {
            topic.followers.wake_all();
        }
        self.fan_out.stop();
    }

    /// Whether a subscription would be refused now, checked before waiting
    /// for anything (the same checks as [`Core::register`]).
    pub(crate) fn refuses(&self) -> Option<SubscribeError> {
        if self.is_closed() {
            Some(SubscribeError::Closed)
        } else if self.subscribers.load(Ordering::Relaxed) >= self.settings.max_subscribers {
            Some(SubscribeError::TooManySubscribers)
        } else {
            None
        }
    }

    /// How many subscriptions follow `topic`, and their users (distinct;
    /// the first `limit`, and how many in all).
    pub(crate) fn presence(&self, topic: &str, limit: usize) -> (usize, Vec<String>, usize) {
        let topic = match topic {
            DEFAULT_TOPIC => Some(self.default_topic.clone()),
            name => self.state().topics.get(name).cloned(),
        };
        match topic {
            Some(topic) => {
                let (users, total) = topic.followers.users(limit);
                (topic.followers.count(), users, total)
            }
            None => (0, Vec::new(), 0),
        }
    }

    /// A receiver of how many subscriptions follow `topic`.
    pub(crate) fn watch_topic(&self, topic: &str) -> watch::Receiver<usize> {
        let topic = match topic {
            DEFAULT_TOPIC => self.default_topic.clone(),
            name => self.state().topic(name),
        };
        topic.followers.watch()
    }

    /// Registers `reader`, a subscription of `owner` to `topics` (the
    /// default topic is always followed) starting at `resume`.
    pub(crate) fn register(
        &self,
        topics: &[&str],
        resume: &Resume,
        owner: &Owner,
        reader: &Arc<Reader>,
    ) -> Result<(Vec<Follow>, Start), SubscribeError> {
        let mut state = self.state();
        if state.closed {
            return Err(SubscribeError::Closed);
        }
        if self.subscribers.load(Ordering::Relaxed) >= self.settings.max_subscribers {
            return Err(SubscribeError::TooManySubscribers);
        }
        let user_count = owner
            .user
            .as_ref()
            .map(|u| state.per_user.get(u).copied().unwrap_or(0));
        if user_count.is_some_and(|n| n >= self.settings.max_streams_per_user) {
            return Err(SubscribeError::TooManyForUser);
        }
        let address_count = owner
            .address
            .map(|a| state.per_address.get(&a).copied().unwrap_or(0));
        if address_count.is_some_and(|n| n >= self.settings.max_streams_per_address) {
            return Err(SubscribeError::TooManyForAddress);
        }
        if let Some(user) = &owner.user {
            *state.per_user.entry(user.clone()).or_default() += 1;
        }
        if let Some(address) = owner.address {
            *state.per_address.entry(address).or_default() += 1;
        }
        let now = state.history.now();
        state.evict(now);
        let published = self.published.load(Ordering::Relaxed);

        let mut followed = Vec::with_capacity(topics.len() + 1);
        followed.push(self.default_topic.clone());
        for name in topics {
            if *name != DEFAULT_TOPIC && !followed.iter().any(|t| &*t.name == *name) {
                followed.push(state.topic(name));
            }
        }

        let covered =
            |id: u64| id <= published && followed.iter().all(|t| t.ring().evicted_up_to <= id);
        let start = match resume {
            Resume::Live => Start {
                after: published,
                kind: StartKind::Live,
            },
            Resume::After(last) => match state.history.resolve(last) {
                Some(id) if covered(id) => Start {
                    after: id,
                    kind: StartKind::Resumed,
                },
                _ => Start {
                    after: published,
                    kind: StartKind::Reset,
                },
            },
            Resume::Unknown => Start {
                after: published,
                kind: StartKind::Reset,
            },
        };

        let follows = followed
            .into_iter()
            .map(|topic| {
                let key = topic.followers.add(reader.clone());
                let (cursor, joined) = {
                    let ring = topic.ring();
                    (ring.seq_after(start.after), ring.head_seq())
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
        Ok((follows, start))
    }

    /// Unregisters a subscription; topics nobody follows and that hold
    /// nothing go.
    pub(crate) fn unregister(&self, follows: &[Follow], reader: &Reader) {
        let mut state = self.state();
        for follow in follows {
            if follow.topic.followers.remove(follow.key) == 0 && follow.topic.is_idle() {
                state.forget(&follow.topic);
            }
        }
        if let Some(user) = &reader.user {
            decrement(&mut state.per_user, user);
        }
        if let Some(address) = &reader.address {
            decrement(&mut state.per_address, address);
        }
        let count = self.subscribers.fetch_sub(1, Ordering::Relaxed) - 1;
        self.count.send_replace(count);
    }
}

/// One less under `key`; the entry goes at zero.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl State {
    fn topic(&mut self, name: &str) -> Arc<Topic> {
        if let Some(topic) = self.topics.get(name) {
            return topic.clone();
        }
        // A topic made now may have had events that were evicted along with
        // its entry: count everything evicted so far as possibly its.
        let topic = Topic::new(name.into(), self.history.evicted_up_to);
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

    /// Evicts what the history's bounds say must go at `now`, and forgets
    /// the topics left empty and unfollowed.
    fn evict(&mut self, now: Option<tokio::time::Instant>) {
        let mut emptied = Vec::new();
        self.history.evict(now, |topic| emptied.push(topic.clone()));
        for topic in emptied {
            if topic.is_idle() {
                self.forget(&topic);
            }
        }
    }
}
