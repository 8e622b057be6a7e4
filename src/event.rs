//! [`Event`]: the builder of one server-sent event and its wire encoding.

use bytes::{BufMut, Bytes, BytesMut};
use std::{fmt, time::Duration};

use crate::Error;

/// Room kept at the end of an event's buffer for the `id:` line and the blank
/// line that ends the event, so finishing it at publish time never reallocates.
const ID_RESERVE: usize = "id: 18446744073709551615\n\n".len();

/// One server-sent event, built field by field and encoded as it is built.
///
/// The method names follow [`axum::response::sse::Event`], so code moves
/// between the two without surprises. Unlike axum's builder, nothing here
/// panics: an invalid field is remembered and reported as an [`Error`] when
/// the event is published (or [`encode`](Event::encode)d), and nothing of it
/// is sent.
///
/// Encoding follows the WHATWG HTML standard, section "Server-sent events":
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
    buf: BytesMut,
    id: Option<Box<str>>,
    has_data: bool,
    fault: Option<Fault>,
}

/// The first invalid input given to the builder, reported at publish time.
#[derive(Clone, Debug)]
enum Fault {
    EventName,
    Id,
    #[cfg(feature = "json")]
    Json(String),
}

impl Event {
    /// Adds data to the event.
    ///
    /// Line breaks (`\n`, `\r\n`, `\r`) split the data into several `data:`
    /// lines; the client joins them back with `\n`. Calling `data` again
    /// adds more lines, so `data("a").data("b")` is received as `"a\nb"`.
    /// Empty data is sent as one empty `data:` line and still dispatched.
    pub fn data(mut self, data: impl AsRef<str>) -> Self {
        self.has_data = true;
        for line in Lines::new(data.as_ref()) {
            self.field("data", line);
        }
        self
    }

    /// Adds data serialized as JSON (compact, hence on one line).
    ///
    /// A serialization failure is reported as [`Error::Json`] on publish.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn json_data<T: serde::Serialize>(mut self, data: T) -> Self {
        let start = self.buf.len();
        self.buf.put_slice(b"data: ");
        match serde_json::to_writer((&mut self.buf).writer(), &data) {
            Ok(()) => {
                self.buf.put_u8(b'\n');
                self.has_data = true;
            }
            Err(e) => {
                self.buf.truncate(start);
                self.fault.get_or_insert(Fault::Json(e.to_string()));
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
            self.field("event", name);
        }
        self
    }

    /// Sets the event id yourself instead of letting the hub assign one.
    ///
    /// The browser sends the id of the last event it received back in the
    /// `Last-Event-ID` header when it reconnects; tower-sse finds an id it
    /// assigned in O(log n) and an id set here by searching the history,
    /// so prefer the hub's ids unless the client needs yours.
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
        self.buf.put_slice(b"retry: ");
        self.buf
            .put_slice(itoa::Buffer::new().format(duration.as_millis()).as_bytes());
        self.buf.put_u8(b'\n');
        self
    }

    /// Adds a comment line, which clients ignore (useful for debugging on the
    /// wire). Line breaks split it into several comment lines.
    pub fn comment(mut self, comment: impl AsRef<str>) -> Self {
        for line in Lines::new(comment.as_ref()) {
            self.field("", line);
        }
        self
    }

    /// Encodes the event as it goes on the wire, with the id set by
    /// [`id`](Event::id) if any (the hub adds its own id when publishing).
    ///
    /// This is what [`Publisher::publish`](crate::Publisher::publish) does,
    /// minus the hub; useful to test or to serve an event elsewhere.
    pub fn encode(self) -> Result<Bytes, Error> {
        Ok(self.prepare(usize::MAX)?.finish(None))
    }

    /// The id set by [`id`](Event::id), if any.
    pub(crate) fn custom_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Checks the event and its size; the result only lacks its id.
    pub(crate) fn prepare(mut self, limit: usize) -> Result<Prepared, Error> {
        if let Some(fault) = self.fault {
            return Err(match fault {
                Fault::EventName => Error::InvalidEventName,
                Fault::Id => Error::InvalidId,
                #[cfg(feature = "json")]
                Fault::Json(msg) => {
                    Error::Json(<serde_json::Error as serde::ser::Error>::custom(msg))
                }
            });
        }
        if !self.has_data {
            self.buf.put_slice(b"data:\n");
        }
        if let Some(id) = self.id.take() {
            self.field("id", &id);
        }
        let size = self.buf.len() + ID_RESERVE;
        if size > limit {
            return Err(Error::TooLarge { size, limit });
        }
        self.buf.reserve(ID_RESERVE);
        Ok(Prepared { buf: self.buf })
    }

    fn field(&mut self, name: &str, value: &str) {
        self.buf.reserve(name.len() + value.len() + 3);
        self.buf.put_slice(name.as_bytes());
        self.buf.put_slice(b": ");
        self.buf.put_slice(value.as_bytes());
        self.buf.put_u8(b'\n');
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("fields", &String::from_utf8_lossy(&self.buf))
            .field("id", &self.id)
            .field("fault", &self.fault)
            .finish()
    }
}

/// A valid event whose fields are encoded; only the hub's id is missing.
pub(crate) struct Prepared {
    buf: BytesMut,
}

impl Prepared {
    /// Appends the `id:` line (unless the event set its own) and the blank
    /// line that dispatches the event. Never reallocates: room was reserved.
    pub(crate) fn finish(mut self, id: Option<u64>) -> Bytes {
        finish(&mut self.buf, id);
        self.buf.freeze()
    }

    /// The encoded fields, without the `id:` line the hub adds and the
    /// blank line (what a backplane carries between nodes).
    #[cfg(feature = "redis")]
    pub(crate) fn fields(&self) -> &[u8] {
        &self.buf
    }
}

/// Appends the hub's `id:` line (when given) and the blank line that
/// dispatches the event.
pub(crate) fn finish(buf: &mut BytesMut, id: Option<u64>) {
    if let Some(id) = id {
        buf.put_slice(b"id: ");
        buf.put_slice(itoa::Buffer::new().format(id).as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
}

/// Splits text at `\r\n`, `\n` and `\r`, the line ends of the SSE format.
/// Yields at least one (possibly empty) line, and an empty last line when the
/// text ends with a line break, so the client rebuilds the text exactly.
struct Lines<'a> {
    rest: Option<&'a str>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines { rest: Some(text) }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        match text.find(['\r', '\n']) {
            None => {
                self.rest = None;
                Some(text)
            }
            Some(i) => {
                let skip = if text[i..].starts_with("\r\n") { 2 } else { 1 };
                self.rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
        }
    }
}

/// The id of a published event, increasing with every event of a hub.
///
/// It is what the browser sends back in `Last-Event-ID`. Ids start from the
/// time the hub was created (in microseconds since the Unix epoch), so an id
/// from before a server restart is never mistaken for a newer event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub(crate) u64);

impl EventId {
    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
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
        let err = Event::default()
            .data("x".repeat(100))
            .prepare(64)
            .err()
            .unwrap();
        assert!(matches!(err, Error::TooLarge { limit: 64, .. }));
        assert!(err.to_string().contains("max_event_size"));
    }

    #[test]
    fn hub_id_is_appended_without_reallocating() {
        let prepared = Event::default().data("x").prepare(usize::MAX).unwrap();
        let capacity = prepared.buf.capacity();
        let ptr = prepared.buf.as_ptr();
        let bytes = prepared.finish(Some(u64::MAX));
        assert_eq!(&bytes[..], b"data: x\nid: 18446744073709551615\n\n");
        assert_eq!(bytes.as_ptr(), ptr);
        assert!(bytes.len() <= capacity);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_data_is_one_line() {
        let event = Event::default().json_data(serde_json::json!({"a": "x\ny"}));
        assert_eq!(wire(event), "data: {\"a\":\"x\\ny\"}\n\n");
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
