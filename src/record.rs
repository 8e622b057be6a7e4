//! The neutral record of an event: what publishers hand to the hub and to
//! engines ([`Message`]), and what the hub keeps, engines return and
//! transports encode ([`Record`]).
//!
//! A record knows no transport. Each transport turns it into what it sends
//! through an [`Encoding`], whose result the record caches in a slot of its
//! own, so the bytes every subscriber of a transport sends are built once per
//! event and shared.

use bytes::Bytes;
use std::{borrow::Cow, fmt, sync::Arc, sync::OnceLock, time::Duration};

use crate::{
    error::Error,
    event::{Event, EventId},
    topic,
};

/// The fixed part of a record's footprint: its allocation, the encoded
/// bytes' header, its places in the history.
const RECORD_OVERHEAD: usize = 320;

/// How many encodings a record may cache: the stream's bytes, a WebSocket
/// frame, and the stream's bytes with the `topic:` line (`with=topic`).
pub(crate) const ENCODINGS: usize = 3;

/// A transport's way to turn a record into what it sends. Each transport
/// has its own `slot` below [`ENCODINGS`]: the record keeps the result there.
pub(crate) struct Encoding {
    pub(crate) slot: usize,
    pub(crate) encode: fn(&Record) -> Bytes,
}

/// One event on its way to the hub or an engine: valid fields, its topic,
/// no id yet. An engine stores these fields (see [`Backplane`]) and builds
/// the message again with [`Message::new`] when it reads them back.
///
/// [`Backplane`]: crate::backplane::Backplane
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Shared with its topic in the hub (a quiet topic of one event holds
    /// its name once).
    topic: Option<Arc<str>>,
    event: Option<Box<str>>,
    data: Option<String>,
    app_id: Option<Box<str>>,
    retry: Option<Duration>,
    comment: Option<String>,
}

impl Message {
    /// Checks `event` and makes it a message to `topic` (`None`: the default
    /// topic, which every subscriber follows).
    ///
    /// ```
    /// use tower_sse::{Event, Message};
    ///
    /// let message = Message::new(Some("room/1"), Event::default().event("said").data("hi")).unwrap();
    /// assert_eq!((message.topic(), message.event(), message.data()), (Some("room/1"), Some("said"), "hi"));
    /// assert!(Message::new(Some("no spaces"), Event::default()).is_err());
    /// ```
    pub fn new(topic: Option<&str>, mut event: Event) -> Result<Message, Error> {
        event.check()?;
        if topic.is_some_and(|t| !topic::is_valid(t)) {
            return Err(Error::InvalidTopic);
        }
        Ok(Message {
            topic: topic.map(Into::into),
            event: event.name,
            data: event.data,
            app_id: event.id,
            retry: event.retry,
            comment: event.comment,
        })
    }

    /// A control message of the hub's (see `hub::control`): built from
    /// fields known to be valid.
    pub(crate) fn control(event: Event) -> Message {
        Message {
            topic: None,
            event: event.name,
            data: event.data,
            app_id: None,
            retry: None,
            comment: None,
        }
    }

    /// The topic, or `None` for the default topic every subscriber follows.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// The topic's name as the message holds it, for the hub to share.
    pub(crate) fn topic_name(&self) -> Option<&Arc<str>> {
        self.topic.as_ref()
    }

    /// The event name (`None`: the browser's default, `message`).
    pub fn event(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// The data, lines separated by `\n` (empty when none was given).
    pub fn data(&self) -> &str {
        self.data.as_deref().unwrap_or("")
    }

    /// The id set by the app with [`Event::id`], if any.
    pub fn app_id(&self) -> Option<&str> {
        self.app_id.as_deref()
    }

    /// The reconnection delay set with [`Event::retry`], if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The comment set with [`Event::comment`], lines separated by `\n`.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// The bytes of name, data, app id and comment together: what
    /// [`HubBuilder::max_event_size`](crate::HubBuilder::max_event_size)
    /// bounds.
    pub fn size(&self) -> usize {
        self.event.as_deref().map_or(0, str::len)
            + self.data.as_deref().map_or(0, str::len)
            + self.app_id.as_deref().map_or(0, str::len)
            + self.comment.as_deref().map_or(0, str::len)
    }

    /// Whether the event was given data (one without is still dispatched
    /// with empty data).
    pub(crate) fn has_data(&self) -> bool {
        self.data.is_some()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("event", &self.event)
            .field("data", &self.data)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// One published event with its id: what the hub keeps in its history, an
/// engine returns, and [`RecordStream`](crate::RecordStream) yields. Cheap to
/// clone (one reference count).
#[derive(Clone)]
pub struct Record {
    inner: Arc<Inner>,
}

struct Inner {
    id: EventId,
    message: Message,
    encoded: [OnceLock<Bytes>; ENCODINGS],
}

impl Record {
    /// The event `message` under the id `id` (given by the hub or an engine).
    pub fn new(id: EventId, message: Message) -> Record {
        Record {
            inner: Arc::new(Inner {
                id,
                message,
                encoded: Default::default(),
            }),
        }
    }

    /// The id that orders this event among all of the hub's.
    pub fn id(&self) -> EventId {
        self.inner.id
    }

    /// The event's fields.
    pub fn message(&self) -> &Message {
        &self.inner.message
    }

    /// The topic, or `None` for the default topic.
    pub fn topic(&self) -> Option<&str> {
        self.inner.message.topic()
    }

    /// The event name (`None`: `message`).
    pub fn event(&self) -> Option<&str> {
        self.inner.message.event()
    }

    /// The data, lines separated by `\n`.
    pub fn data(&self) -> &str {
        self.inner.message.data()
    }

    /// The id a client resumes from: the app's id if it set one, else the
    /// hub's.
    pub fn last_event_id(&self) -> Cow<'_, str> {
        match self.inner.message.app_id() {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(self.inner.id.to_string()),
        }
    }

    /// What `encoding` makes of this record, built by the first caller.
    pub(crate) fn encoded(&self, encoding: &Encoding) -> &Bytes {
        self.inner.encoded[encoding.slot].get_or_init(|| (encoding.encode)(self))
    }

    /// About what the record holds in memory: its fields, the encoded
    /// bytes of one transport (about as large again), and a fixed part.
    /// What a hub's byte budget counts.
    pub(crate) fn footprint(&self) -> usize {
        2 * self.inner.message.size() + RECORD_OVERHEAD
    }

    /// Whether two records are the same stored event (not only equal).
    pub(crate) fn same(&self, other: &Record) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.inner.id)
            .field("message", &self.inner.message)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_is_built_once_and_shared() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        const COUNTING: Encoding = Encoding {
            slot: 1,
            encode: |record| {
                CALLS.fetch_add(1, Ordering::Relaxed);
                Bytes::from(record.data().to_owned())
            },
        };
        let message = Message::new(None, Event::default().data("x")).unwrap();
        let record = Record::new(EventId::new(7), message);
        let copy = record.clone();
        let (a, b) = (record.encoded(&COUNTING), copy.encoded(&COUNTING));
        assert_eq!(a, "x");
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(CALLS.load(Ordering::Relaxed), 1);
        assert!(record.same(&copy));
    }

    #[test]
    fn a_message_keeps_the_events_fields() {
        let event = Event::default()
            .event("e")
            .data("a\r\nb")
            .id("x")
            .comment("c");
        let message = Message::new(Some("t"), event).unwrap();
        assert_eq!(message.data(), "a\nb");
        assert_eq!(message.app_id(), Some("x"));
        assert_eq!(message.comment(), Some("c"));
        assert_eq!(message.size(), 1 + 3 + 1 + 1);
        let record = Record::new(EventId::new(9), message);
        assert_eq!(record.last_event_id(), "x");
        let plain = Record::new(
            EventId::new(9),
            Message::new(None, Event::default()).unwrap(),
        );
        assert_eq!(plain.last_event_id(), "9");
        assert_eq!(plain.data(), "");
    }

    #[test]
    fn an_invalid_event_or_topic_is_refused() {
        assert!(matches!(
            Message::new(None, Event::default().event("a\nb")),
            Err(Error::InvalidEventName)
        ));
        assert!(matches!(
            Message::new(Some(""), Event::default()),
            Err(Error::InvalidTopic)
        ));
    }
}
