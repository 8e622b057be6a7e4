//! The seam between the hub and an engine that shares one event stream
//! among many instances of an app: [`Backplane`].
//!
//! A hub without a backplane numbers and keeps its events itself. With one,
//! every event goes to the engine first; the engine gives it its global id,
//! and each instance's hub reads the engine's log in id order into its own
//! history, from which its streams are served. Fan-out stays local: an
//! instance reads each event once, encodes it once per transport, and wakes
//! only its own subscribers.
//!
//! # The contract an engine keeps
//!
//! * **Ids** are numbers above 0, strictly increasing across all topics in
//!   the order of the engine's log, and the same on every instance: the id
//!   an engine returns from [`append`](Backplane::append) is the id every
//!   reader sees for that event. They never go back, not even after the
//!   engine lost its data (Redis's come from the clock): the hub treats an id
//!   not above the last one it applied as a duplicate and skips it.
//! * **Append** returns only once the engine holds the events: an `Ok` id is
//!   what every instance will read. An `Err` means the engine may not hold
//!   them (a connection lost mid-way may still have appended some); the
//!   publisher is told, nothing is retried behind its back.
//! * **Read** returns the events after an id, oldest first, and may wait a
//!   bounded time (about a second) for one to arrive; an empty batch is fine.
//!   It never skips an event silently: when the engine dropped any event
//!   after that id before the reader got it, it says so. When it can tell
//!   the topics the dropped events belonged to (a topic trimmed to its own
//!   count or age past a reader that fell behind), it names them
//!   ([`Read::Trimmed`]), once, before returning any later event of theirs:
//!   the hub then forgets what it holds of those topics alone and ends their
//!   streams. When it cannot tell (the log truncated, lost, its ids gone
//!   back), it says the whole log has a gap ([`Read::Gap`]). Entries it
//!   skips because they are not valid events still move the read position
//!   ([`Read::Records`]'s `up_to`), so they are not read again.
//! * **Topics** are kept each by itself: an engine keeps each topic's newest
//!   events ([`Retention::per_topic`], and for [`Retention::age`]) however
//!   busy another topic is, and reads them back by topic
//!   ([`read_topic`](Backplane::read_topic)), saying whether it still holds
//!   every one after the id asked for. A hub replays from there a resume
//!   point its memory no longer covers (a freshly started instance, a quiet
//!   topic's events the memory's byte budget dropped).
//! * **Loss** is allowed — an engine may trim its log to the
//!   [`Retention`] it is given, or lose it in a restart — but never silently:
//!   after every (re)connection the hub asks [`holds`](BackplaneReader::holds)
//!   whether every event after the last one it applied is still there. When
//!   it is not, the hub cannot tell what it missed: it reloads its history
//!   from the engine's [`tail`](BackplaneReader::tail) and ends every stream,
//!   so clients reconnect and those whose resume point is gone get the
//!   `reset` event ([`RESET_EVENT`](crate::RESET_EVENT)).
//! * **Errors** are reported to whoever made the call: an append's to its
//!   publishers (as [`Error::Backplane`](crate::Error::Backplane), the
//!   engine's error as its source); a reader's to the hub, which logs it,
//!   shows it in
//!   [`Publisher::backplane_status`](crate::Publisher::backplane_status),
//!   refuses publishing until it reads the log again, and reconnects (a new
//!   [`reader`](Backplane::reader)) with exponential backoff and jitter.
//! * **Cancellation**: the hub may drop any future of these calls (when it
//!   closes); an engine must stay usable after that.
//!
//! `tower_sse::testing` (feature `testing`) holds the conformance suite
//! every engine runs, and an in-memory engine that keeps this contract.

use std::{future::Future, pin::Pin, time::Duration};

use crate::{
    error::BoxError,
    event::EventId,
    record::{Message, Record},
};

#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// A future an engine returns: boxed, so the hub can hold any engine.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How much history the hub keeps; an engine keeps at least as much (more is
/// fine) so that every instance can load it.
///
/// An engine keeps each topic by itself: its newest [`per_topic`](Self::per_topic)
/// events, and none older than [`age`](Self::age), whatever other topics
/// hold. Instances sharing an engine must ask for the same `per_topic` and
/// `age` (an engine that keeps one setting for all refuses a mismatch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Events of all topics together: what the log read by every instance
    /// keeps at least (an engine that keeps each topic apart may keep more).
    pub events: usize,
    /// Events of each topic: the largest count any of the hub's rules keeps
    /// (and at least what a subscriber may lag).
    pub per_topic: usize,
    /// Bytes, about, as the hub counts them (an engine that cannot trim by
    /// bytes keeps the count; the hub trims its own copy).
    pub bytes: usize,
    /// The age past which an event may be dropped, if any.
    pub age: Option<Duration>,
}

impl Retention {
    pub(crate) fn new(events: usize, bytes: usize, age: Option<Duration>) -> Self {
        Retention {
            events,
            per_topic: events,
            bytes,
            age,
        }
    }

    /// The same, keeping `events` of each topic.
    pub(crate) fn with_per_topic(self, events: usize) -> Self {
        Retention {
            per_topic: events,
            ..self
        }
    }

    /// The least retention that keeps what both ask for (hubs sharing one
    /// engine may be set differently): the larger count and size, and the
    /// longer age (none if either has none).
    pub fn covering(self, other: Retention) -> Retention {
        Retention {
            events: self.events.max(other.events),
            per_topic: self.per_topic.max(other.per_topic),
            bytes: self.bytes.max(other.bytes),
            age: self.age.zip(other.age).map(|(a, b)| a.max(b)),
        }
    }
}

/// An engine that several hubs (one per instance of an app) share: events
/// appended by any of them are read by all, under the same ids.
///
/// Implemented by `PostgresBackplane` (feature `postgres`),
/// `RedisBackplane` (feature `redis`), `NatsBackplane` (feature `nats`) and
/// `testing::MemoryBackplane` (feature `testing`). See the
/// [module documentation](self) for the contract.
pub trait Backplane: Send + Sync + 'static {
    /// Called once when a hub is built with this engine: how much history
    /// the hub keeps. Engines that trim their log keep at least this much.
    fn retain(&self, retention: Retention) {
        let _ = retention;
    }

    /// Appends `messages`, in order, and returns their ids (one each, in
    /// the same order, strictly increasing) once the engine holds them.
    fn append<'a>(
        &'a self,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<Vec<EventId>, BoxError>>;

    /// The newest id the engine gave, if any: a client resuming from an id
    /// an instance does not know yet (set by the app, seen on another
    /// instance) makes the hub read up to it before answering.
    fn last_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BoxError>>;

    /// Opens a reader of the log: the hub keeps one, and opens another
    /// after an error.
    fn reader(&self) -> BoxFuture<'_, Result<Box<dyn BackplaneReader>, BoxError>>;

    /// The events of `topic` (`None`: those to every subscriber) after
    /// `after`, oldest first, at most `limit`, and whether the engine still
    /// holds every event of that topic after `after` (none was trimmed or
    /// lost): what a hub replays to a client whose resume point its memory
    /// no longer covers, and what a history read beyond memory returns.
    /// `Ok(None)`: this engine cannot read a topic (the default); the hub
    /// then answers from its memory alone.
    fn read_topic<'a>(
        &'a self,
        topic: Option<&'a str>,
        after: EventId,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<TopicRead>, BoxError>> {
        let _ = (topic, after, limit);
        Box::pin(async { Ok(None) })
    }
}

/// What [`Backplane::read_topic`] returns.
#[derive(Debug)]
#[non_exhaustive]
pub struct TopicRead {
    /// The topic's events after the id asked for, oldest first.
    pub records: Vec<Record>,
    /// Whether the engine holds every event of the topic after the id asked
    /// for: `false` when some were trimmed (by the count or age it keeps)
    /// or lost, or when it cannot tell.
    pub held: bool,
}

impl TopicRead {
    /// A read of `records` (oldest first); `held` as the field says.
    pub fn new(records: Vec<Record>, held: bool) -> TopicRead {
        TopicRead { records, held }
    }
}

/// A reader of an engine's log, opened by [`Backplane::reader`] (typically
/// a connection of its own, which may block while waiting for events).
pub trait BackplaneReader: Send {
    /// The newest events, at most `limit`, oldest first: what a hub loads as
    /// its history when it starts, or restarts after a loss.
    fn tail(&mut self, limit: usize) -> BoxFuture<'_, Result<Tail, BoxError>>;

    /// Whether the engine still holds every event it appended after `after`
    /// (`EventId::new(0)`: after nothing), so that reading on from there
    /// loses nothing. `false` after a trim past it, or a restart that lost
    /// data.
    fn holds(&mut self, after: EventId) -> BoxFuture<'_, Result<bool, BoxError>>;

    /// The events after `after`, oldest first, at most `limit`. When there
    /// are none, waits a bounded time (about a second) for some and may
    /// return none. [`Read::Trimmed`] when some topics' events after
    /// `after` were trimmed before this reader read them (each trim named
    /// once); [`Read::Gap`] when the engine no longer held every event after
    /// `after` and cannot tell of which topics, never for `after` 0, which
    /// the hub reads after when the log it loaded was empty.
    fn read(&mut self, after: EventId, limit: usize) -> BoxFuture<'_, Result<Read, BoxError>>;
}

/// What [`BackplaneReader::read`] returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum Read {
    /// The events after the id asked for (maybe none), and the id the engine
    /// read up to: at least the last record's, beyond it when the engine
    /// skipped entries that are not valid events (the next read starts after
    /// it, so such an entry is not read again).
    Records {
        /// The events, oldest first.
        records: Vec<Record>,
        /// The id read up to, if the engine read anything.
        up_to: Option<EventId>,
    },
    /// The engine does not hold every event after the id asked for: some
    /// were dropped before this reader read them, and it cannot tell of
    /// which topics. The hub then reloads its history from the tail and ends
    /// every stream (the `reset`).
    Gap,
    /// Events of these topics (and of no other) after the id asked for were
    /// dropped before this reader read them: each topic was trimmed to what
    /// the engine keeps of it (its count, its age) while the reader lagged.
    /// Nothing was read: the next read starts after the same id, and does
    /// not name the same trims again.
    ///
    /// The hub forgets what it holds of those topics (a client resuming
    /// there is answered from the engine's own copy of the topic, or gets
    /// the `reset`) and ends their streams, which reconnect and resume; it
    /// goes on reading the log, and other topics' streams carry on.
    Trimmed(Vec<Trim>),
}

/// A topic an engine trimmed past a reader: [`Read::Trimmed`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trim {
    /// The topic (`None`: the default topic, whose events go to every
    /// subscriber).
    pub topic: Option<String>,
    /// The highest id of the topic the engine dropped (or more, if it
    /// cannot tell): from the next event of the topic on, it holds the
    /// topic again without a gap.
    pub up_to: EventId,
}

impl Trim {
    /// `topic` was trimmed up to the id `up_to`.
    pub fn new(topic: Option<String>, up_to: EventId) -> Trim {
        Trim { topic, up_to }
    }
}

impl Read {
    /// A batch of `records` (oldest first), read up to the last one's id.
    pub fn records(records: Vec<Record>) -> Read {
        let up_to = records.last().map(Record::id);
        Read::Records { records, up_to }
    }
}

/// What [`BackplaneReader::tail`] returns.
#[derive(Debug)]
#[non_exhaustive]
pub struct Tail {
    /// The newest events, oldest first.
    pub records: Vec<Record>,
    /// The newest id the engine ever gave (at least the last record's), or
    /// `None` if it holds no trace of any: a client that saw this id missed
    /// nothing even when `records` is empty. Reading goes on after it, so
    /// it must be read no later than `records` (an event appended between
    /// the two would be skipped).
    pub last: Option<EventId>,
}

impl Tail {
    /// A tail of `records` (oldest first) whose newest id ever given is `last`.
    pub fn new(records: Vec<Record>, last: Option<EventId>) -> Tail {
        let newest = records.last().map(Record::id);
        Tail {
            last: newest.max(last),
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Retention;
    use std::time::Duration;

    #[test]
    fn covering_keeps_what_both_ask_for() {
        let (short, long) = (Duration::from_secs(1), Duration::from_secs(9));
        let a = Retention::new(10, 500, Some(short));
        let b = Retention::new(5, 900, Some(long));
        assert_eq!(a.covering(b), Retention::new(10, 900, Some(long)));
        assert_eq!(b.covering(a), Retention::new(10, 900, Some(long)));
        assert_eq!(a.covering(Retention::new(1, 1, None)).age, None);
    }
}
