//! The hub's shared state: ids, topics and their history, who is
//! subscribed, and appending a record to it.
//!
//! Appending takes one lock (`Core::state`) to place the record in id order
//! in its topic's ring and in the history, so ids are in order in every ring
//! and across rings. Readers take only their rings' read locks.

use std::{
    sync::{Arc, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};
use tokio::sync::watch;

mod backfill;
mod subscribers;

pub(crate) use backfill::Gap;

use super::{
    control::Control,
    history::{Topic, Topics},
    registry::{Ended, FanOut},
    seats::Seats,
    settings::Settings,
    store::{Page, Store},
};
use crate::{
    error::Error,
    event::EventId,
    observe,
    record::{Encoding, Message, Record, ENCODINGS},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Mutex, MutexGuard,
    },
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
    /// The open streams, under the limits in all, per user and per address.
    pub(crate) seats: Arc<Seats>,
    default_topic: Arc<Topic>,
    pub(crate) fan_out: FanOut,
    /// Encodings built for every record as it is appended (those of the
    /// transports this hub serves); others are built by their first reader.
    eager: [OnceLock<&'static Encoding>; ENCODINGS],
}

struct State {
    next_id: u64,
    topics: Topics,
    store: Store,
    closed: bool,
}

impl Core {
    /// A hub whose ids it gives itself (starting at the current time in
    /// microseconds, so ids of a restarted server are above every id a
    /// browser kept from before), or, `external`, that an engine gives.
    pub(crate) fn new(mut settings: Settings, external: bool) -> Arc<Core> {
        settings.rules.share();
        let start = if external {
            1
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
                .max(1)
        };
        let mut store = Store::new(
            settings.max_lag,
            settings.history_bytes,
            settings.aging(),
            start - 1,
        );
        let default_topic = store.topic(DEFAULT_TOPIC.into(), settings.rules.of(DEFAULT_TOPIC));
        let mut topics = Topics::default();
        topics.insert(default_topic.clone());
        Arc::new(Core {
            state: Mutex::new(State {
                next_id: start,
                topics,
                store,
                closed: false,
            }),
            published: AtomicU64::new(start - 1),
            closed: AtomicBool::new(false),
            closing: watch::Sender::new(false),
            generation: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            count: watch::Sender::new(0),
            newest: watch::Sender::new(start - 1),
            seats: Seats::new(&settings),
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
                if let Some(followers) = self.default_topic.followed_by() {
                    followers.end(Some(user), Ended::Revoked);
                }
            }
            Control::EndTopic(topic) => {
                let topic = self.state().topics.get(topic.as_str()).cloned();
                if let Some(followers) = topic.as_ref().and_then(|t| t.followed_by()) {
                    followers.end(None, Ended::TopicClosed);
                }
            }
        }
    }

    fn append(&self, mut state: MutexGuard<'_, State>, record: Record) {
        let topic = self.push(&mut state, &record);
        let (events, bytes) = state.store.size();
        drop(state);
        observe::history(events, bytes);
        for encoding in self.eager.iter().filter_map(OnceLock::get) {
            record.encoded(encoding);
        }
        if let Some(followers) = topic.followed_by() {
            self.fan_out.wake(followers);
        }
    }

    /// Places `record` (its id above every one so far) in its topic's ring,
    /// then keeps the history within its byte budget; returns the topic.
    fn push(&self, state: &mut State, record: &Record) -> Arc<Topic> {
        let id = record.id().as_u64();
        state.next_id = id + 1;
        let topic = match record.topic() {
            None => self.default_topic.clone(),
            Some(name) => state.topic(name, record.message().topic_name(), &self.settings),
        };
        let now = state.store.now();
        state.store.push(&topic, record.clone(), now);
        self.published.store(id, Ordering::Release);
        let shed = state.store.shed(state.topics.values(), record);
        // Only a topic that keeps nothing is left empty by its own event.
        let keeps_nothing = (topic.rule.events == 0).then_some(&topic);
        for emptied in shed.iter().chain(keeps_nothing) {
            state.forget_if_idle(emptied);
        }
        topic
    }

    /// Replaces the whole history with `records` (oldest first, as an
    /// engine's tail) and ends every subscription, in one step: from now on
    /// only ids above `known_after` are known, so a client resuming from an
    /// older one gets the reset. For an engine that cannot tell what it
    /// missed, and for loading the history at start. The newest id becomes
    /// at least `newest` (the engine's), and the last record's.
    pub(crate) fn reload(&self, known_after: u64, newest: u64, records: Vec<Record>) {
        let topics: Vec<Arc<Topic>> = {
            let mut state = self.state();
            let state = &mut *state;
            state.store.clear(known_after, state.topics.values());
            state.next_id = state.next_id.max(known_after + 1);
            self.published.fetch_max(newest, Ordering::AcqRel);
            for record in &records {
                if record.id().as_u64() >= state.next_id {
                    self.push(state, record);
                }
            }
            let newest = self.published.load(Ordering::Acquire);
            self.newest.send_modify(|n| *n = (*n).max(newest));
            state
                .topics
                .retain(|topic| &*topic.name == DEFAULT_TOPIC || !topic.is_idle());
            // Under the lock: a subscription registered from now on sees the
            // new history, one registered before ends.
            self.generation.fetch_add(1, Ordering::Release);
            state.topics.values().cloned().collect()
        };
        for topic in topics {
            if let Some(followers) = topic.followed_by() {
                followers.wake_all();
            }
        }
    }

    /// Whether `last` (a client's `Last-Event-ID`) is an id the history
    /// holds or stands for.
    pub(crate) fn knows(&self, last: &str) -> bool {
        let state = self.state();
        state.store.resolve(last, state.topics.values()).is_some()
    }

    /// Up to `limit` events of `topic` the history holds: those after the
    /// id `since` stands for (a `Last-Event-ID`), else the newest.
    pub(crate) fn history(&self, topic: &str, since: Option<&str>, limit: usize) -> Page {
        let mut state = self.state();
        // The default topic is among them, never forgotten.
        let (name, topic) = (topic, state.topics.get(topic).cloned());
        let Some(topic) = topic else {
            // Nothing held: events after `since` may have been, and left.
            let known_after = state.store.known_after(name);
            let gap = since.is_some_and(|since| {
                since
                    .parse::<u64>()
                    .map_or(true, |id| id < known_after || id > self.published())
            });
            return Page {
                records: Vec::new(),
                clipped: false,
                gap,
                partial: limit > 0,
            };
        };
        let now = state.store.now();
        state.store.settle(&topic, now);
        let after = match since {
            None => None,
            Some(since) => match state.store.resolve(since, [&topic]) {
                Some(id) => Some(id),
                // An id the hub cannot read: from the oldest held, told.
                None => {
                    let mut page = Store::read(&topic, Some(0), limit);
                    page.gap = true;
                    return page;
                }
            },
        };
        let mut page = Store::read(&topic, after, limit);
        page.gap |= after.is_some_and(|after| after > self.published());
        page
    }

    /// Events of `topics` (`None`: the default topic) that this hub accepted
    /// were lost before the engine took them, and no publisher heard: every
    /// stream of those topics here ends, and resuming from any id before
    /// now gets the reset (a client is told, never silently short).
    pub(crate) fn lost(&self, topics: &[Option<Arc<str>>]) {
        let ended: Vec<Arc<Topic>> = {
            let mut state = self.state();
            let after = self.published() + 1;
            state.store.lost_up_to = state.store.lost_up_to.max(after);
            let mut ended = Vec::new();
            for name in topics {
                let topic = match name {
                    None => Some(self.default_topic.clone()),
                    Some(name) => state.topics.get(name).cloned(),
                };
                match (topic, name) {
                    (Some(topic), _) => {
                        topic.lost_up_to(after);
                        ended.push(topic);
                    }
                    // Held nowhere here: remembered as a topic that went.
                    (None, Some(name)) => state.store.remember(name.clone(), after),
                    (None, None) => {}
                }
            }
            ended
        };
        for topic in ended {
            if let Some(followers) = topic.followed_by() {
                followers.end(None, Ended::Disconnected);
            }
        }
    }

    /// Drops what is older than its topic's age limit (for the hub's sweep).
    pub(crate) fn expire(&self) {
        let mut state = self.state();
        let state = &mut *state;
        let Some(now) = state.store.now() else {
            return;
        };
        for emptied in state.store.expire(state.topics.values(), now) {
            state.forget_if_idle(&emptied);
        }
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
        self.state().store.size()
    }

    pub(crate) fn history_limit(&self) -> usize {
        self.settings.history_limit()
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
            if let Some(followers) = topic.followed_by() {
                followers.wake_all();
            }
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
            if let Some(followers) = topic.followed_by() {
                followers.wake_all();
            }
        }
        self.fan_out.stop();
    }
}

impl State {
    /// The topic named `name`, made under its rule if it is new (with
    /// `shared` as its name when given: the event's own, held once).
    fn topic(&mut self, name: &str, shared: Option<&Arc<str>>, settings: &Settings) -> Arc<Topic> {
        if let Some(topic) = self.topics.get(name) {
            return topic.clone();
        }
        let name_arc = shared.cloned().unwrap_or_else(|| name.into());
        let topic = self.store.topic(name_arc, settings.rules.of(name));
        self.topics.insert(topic.clone());
        topic
    }

    /// Lets `topic` go when it holds nothing and nobody follows or watches
    /// it; the store keeps its last id.
    fn forget_if_idle(&mut self, topic: &Arc<Topic>) {
        if &*topic.name != DEFAULT_TOPIC
            && topic.is_idle()
            && self
                .topics
                .get(&topic.name)
                .is_some_and(|t| Arc::ptr_eq(t, topic))
        {
            self.topics.remove(&topic.name);
            self.store.forget(topic);
        }
    }
}
