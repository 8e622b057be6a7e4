//! [`Event`]: the builder of one server-sent event, and [`EventId`].

use bytes::Bytes;
use std::{fmt, time::Duration};

use crate::{
    error::Error,
    wire::{self, Lines},
};

/// One server-sent event, built field by field.
///
/// The method names follow [`axum::response::sse::Event`], so code moves
/// between the two without surprises. Unlike axum's builder, nothing here
/// panics: an invalid field is remembered and reported as an [`Error`] when
/// the event is published (or [`encode`](Event::encode)d), and nothing of it
/// is sent.
///
/// An event is transport-neutral: the hub keeps its fields (name, data, id)
/// and each transport encodes them once per event — the `text/event-stream`
/// bytes for `EventSource`, a JSON text frame for WebSocket. The stream
/// encoding follows the WHATWG HTML standard, section "Server-sent events":
///
/// * data containing `\n`, `\r\n` or `\r` becomes one `data:` line per line,
///   which every conforming client joins back with `\n`;
/// * an event name with a line break, or an id with a line break or NUL, is
///   an error ([`Error::InvalidEventName`], [`Error::InvalidId`]);
/// * a comment with line breaks becomes one comment line per line;
/// * `retry:` is written in whole milliseconds.
///
/// Every published event is dispatched by the browser: an event built without
/// any `data` is sent with one empty `data:` line (a WHATWG client ignores an
/// event whose data is missing altogether).
///
/// [`axum::response::sse::Event`]: https://docs.rs/axum/latest/axum/response/sse/struct.Event.html
///
/// # Example
///
/// ```
/// use tower_sse::Event;
///
/// let event = Event::default().event("greeting").data("hello\nworld");
/// let bytes = event.encode().unwrap();
/// assert_eq!(&bytes[..], b"event: greeting\ndata: hello\ndata: world\n\n");
///
/// // Invalid input is an error, not a panic and not a mangled event.
/// assert!(Event::default().event("two\nlines").data("x").encode().is_err());
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Event {
    pub(crate) name: Option<Box<str>>,
    /// Lines joined with `\n`.
    pub(crate) data: Option<String>,
    pub(crate) id: Option<Box<str>>,
    pub(crate) retry: Option<Duration>,
    /// Lines joined with `\n`.
    pub(crate) comment: Option<String>,
    fault: Option<Fault>,
}

/// The first invalid input given to the builder, reported at publish time.
#[derive(Clone, Debug)]
enum Fault {
    EventName,
    Id,
    /// Shared, so the event stays `Clone`; the error itself is handed out
    /// when the event was not cloned.
    #[cfg(feature = "json")]
    Json(std::sync::Arc<serde_json::Error>),
}

/// Appends `text` to `field` as more lines, line breaks normalized to `\n`.
fn add_lines(field: &mut Option<String>, text: &str) {
    let buf = match field {
        Some(buf) => {
            buf.push('\n');
            buf
        }
        None => field.insert(String::with_capacity(text.len())),
    };
    for (i, line) in Lines::new(text).enumerate() {
        if i > 0 {
            buf.push('\n');
        }
        buf.push_str(line);
    }
}

impl Event {
    /// Adds data to the event.
    ///
    /// Line breaks (`\n`, `\r\n`, `\r`) split the data into several `data:`
    /// lines; the client joins them back with `\n`. Calling `data` again
    /// adds more lines, so `data("a").data("b")` is received as `"a\nb"`.
    /// Empty data is sent as one empty `data:` line and still dispatched.
    pub fn data(mut self, data: impl AsRef<str>) -> Self {
        add_lines(&mut self.data, data.as_ref());
        self
    }

    /// Adds data serialized as JSON (compact, hence on one line).
    ///
    /// A serialization failure is reported as [`Error::Json`] on publish.
    /// Unlike axum's `json_data`, which returns `Result<Event, axum::Error>`,
    /// this returns the `Event` (as every builder method here does): drop the
    /// `?` or `.unwrap()` after it when moving code from axum.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn json_data<T: serde::Serialize>(mut self, data: T) -> Self {
        match serde_json::to_string(&data) {
            Ok(json) => add_lines(&mut self.data, &json),
            Err(e) => {
                self.fault
                    .get_or_insert(Fault::Json(std::sync::Arc::new(e)));
            }
        }
        self
    }

    /// Sets the event name (`event:` field); the browser dispatches the event
    /// to listeners of that name instead of `onmessage`.
    ///
    /// A name containing `\n` or `\r` is reported as
    /// [`Error::InvalidEventName`] on publish.
    pub fn event(mut self, name: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        if name.contains(['\n', '\r']) {
            self.fault.get_or_insert(Fault::EventName);
        } else {
            self.name = Some(name.into());
        }
        self
    }

    /// Sets the event id yourself instead of letting the hub assign one.
    ///
    /// The browser sends the id of the last event it received back in the
    /// `Last-Event-ID` header when it reconnects; tower-sse finds an id it
    /// assigned in O(log n) and an id set here by searching the history,
    /// so prefer the hub's ids unless the client needs yours. The hub still
    /// gives the event its own id, which orders it ([`EventId`]).
    ///
    /// An id containing `\n`, `\r` or NUL is reported as [`Error::InvalidId`]
    /// on publish.
    pub fn id(mut self, id: impl AsRef<str>) -> Self {
        let id = id.as_ref();
        if id.contains(['\n', '\r', '\0']) {
            self.fault.get_or_insert(Fault::Id);
        } else {
            self.id = Some(id.into());
        }
        self
    }

    /// Sets how long the browser waits before reconnecting after the
    /// connection is lost (`retry:` field, whole milliseconds).
    pub fn retry(mut self, duration: Duration) -> Self {
        self.retry = Some(duration);
        self
    }

    /// Adds a comment, which clients ignore (useful for debugging on the
    /// wire; a WebSocket client does not get it). Line breaks split it into
    /// several comment lines.
    pub fn comment(mut self, comment: impl AsRef<str>) -> Self {
        add_lines(&mut self.comment, comment.as_ref());
        self
    }

    /// Encodes the event as a `text/event-stream` block, with the id set by
    /// [`id`](Event::id) if any (the hub adds its own id when publishing).
    ///
    /// Useful to test, or to serve an event elsewhere.
    pub fn encode(mut self) -> Result<Bytes, Error> {
        self.check()?;
        Ok(wire::encode(&wire::Fields {
            event: self.name.as_deref(),
            topic: None,
            retry_ms: self.retry.map(|r| r.as_millis()),
            comment: self.comment.as_deref(),
            data: self.data.as_deref(),
            id: self.id.as_deref().map_or(wire::Id::None, wire::Id::Text),
        }))
    }

    /// The first invalid input given to the builder, as an error.
    pub(crate) fn check(&mut self) -> Result<(), Error> {
        match self.fault.take() {
            None => Ok(()),
            Some(Fault::EventName) => Err(Error::InvalidEventName),
            Some(Fault::Id) => Err(Error::InvalidId),
            #[cfg(feature = "json")]
            Some(Fault::Json(e)) => Err(Error::Json(
                std::sync::Arc::try_unwrap(e)
                    .unwrap_or_else(<serde_json::Error as serde::ser::Error>::custom),
            )),
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("event", &self.name)
            .field("data", &self.data)
            .field("id", &self.id)
            .field("retry", &self.retry)
            .field("comment", &self.comment)
            .field("fault", &self.fault)
            .finish()
    }
}

/// The id of a published event, increasing with every event of a hub (with
/// a backplane, of every hub sharing it).
///
/// It is what the browser sends back in `Last-Event-ID`. Ids of a hub of its
/// own start from the time the hub was created (in microseconds since the
/// Unix epoch), so an id from before a server restart is never mistaken for
/// a newer event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(u64);

impl EventId {
    /// The id of this number (as a backplane gives it).
    pub const fn new(id: u64) -> Self {
        EventId(id)
    }

    /// The id as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl From<u64> for EventId {
    fn from(id: u64) -> Self {
        EventId(id)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use proptest::prelude::*;

    fn wire(event: Event) -> String {
        String::from_utf8(event.encode().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        assert_eq!(
            wire(Event::default().data("a\nb\r\nc\rd")),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(wire(Event::default().data("a\n")), "data: a\ndata: \n\n");
    }

    #[test]
    fn empty_data_is_still_dispatched() {
        assert_eq!(wire(Event::default().data("")), "data: \n\n");
        assert_eq!(
            wire(Event::default().event("ping")),
            "event: ping\ndata:\n\n"
        );
    }

    #[test]
    fn fields_are_encoded() {
        let event = Event::default()
            .event("update")
            .id("42")
            .retry(Duration::from_millis(1500))
            .comment("one\ntwo")
            .data("x");
        assert_eq!(
            wire(event),
            "event: update\nretry: 1500\n: one\n: two\ndata: x\nid: 42\n\n"
        );
    }

    #[test]
    fn invalid_name_or_id_is_an_error_and_nothing_is_encoded() {
        assert!(matches!(
            Event::default().event("a\rb").data("x").encode(),
            Err(Error::InvalidEventName)
        ));
        for id in ["a\nb", "a\rb", "a\0b"] {
            assert!(matches!(
                Event::default().id(id).data("x").encode(),
                Err(Error::InvalidId)
            ));
        }
    }

    #[test]
    fn too_large_is_an_error() {
        let publisher = crate::Hub::builder().max_event_size(64).build().publisher();
        let err = publisher
            .publish(Event::default().data("x".repeat(100)))
            .err()
            .unwrap();
        assert!(matches!(
            err,
            Error::TooLarge {
                limit: 64,
                size: 100
            }
        ));
        assert!(err.to_string().contains("max_event_size"));
        assert!(publisher
            .publish(Event::default().data("x".repeat(64)))
            .is_ok());
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_data_is_one_line() {
        let event = Event::default().json_data(serde_json::json!({"a": "x\ny"}));
        assert_eq!(wire(event), "data: {\"a\":\"x\\ny\"}\n\n");
    }

    #[cfg(feature = "json")]
    #[test]
    fn a_json_failure_keeps_serdes_error_as_its_source() {
        let unserializable: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let event = Event::default().json_data(&unserializable);
        let err = event.clone().encode().unwrap_err();
        let source = std::error::Error::source(&err).unwrap();
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        assert!(err.to_string().contains("key must be a string"), "{err}");
    }

    /// Parses `bytes` with `eventsource-stream`, an independent WHATWG parser.
    fn parse(bytes: Bytes) -> Vec<eventsource_stream::Event> {
        use eventsource_stream::Eventsource;
        let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
        futures_util::FutureExt::now_or_never(stream.eventsource().collect::<Vec<_>>())
            .expect("an in-memory stream is always ready")
            .into_iter()
            .map(|e| e.expect("the parser rejected our encoding"))
            .collect()
    }

    proptest! {
        #[test]
        fn round_trips_through_an_independent_parser(
            data in any::<String>(),
            name in "[^\r\n]*",
            id in "[^\r\n\0]*",
        ) {
            let bytes = Event::default().event(&name).id(&id).data(&data).encode().unwrap();
            let events = parse(bytes);
            prop_assert_eq!(events.len(), 1);
            let expected_data = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(&events[0].data, &expected_data);
            let expected_name = if name.is_empty() { "message" } else { name.as_str() };
            prop_assert_eq!(&events[0].event, expected_name);
            prop_assert_eq!(&events[0].id, &id);
        }

        #[test]
        fn line_breaks_in_name_or_id_are_always_rejected(
            prefix in any::<String>(),
            brk in prop::sample::select(vec!["\n", "\r", "\r\n"]),
            suffix in any::<String>(),
        ) {
            let bad = format!("{prefix}{brk}{suffix}");
            prop_assert!(Event::default().event(&bad).data("x").encode().is_err());
            prop_assert!(Event::default().id(&bad).data("x").encode().is_err());
        }

        #[test]
        fn comments_never_leak_into_fields(comment in any::<String>()) {
            let bytes = Event::default().comment(&comment).data("x").encode().unwrap();
            let events = parse(bytes);
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].data, "x");
            prop_assert_eq!(&events[0].event, "message");
        }
    }
}
