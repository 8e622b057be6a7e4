//! The `text/event-stream` transport: [`EventStream`], the never-ending
//! body a browser's `EventSource` reads, and its encoding of a record.

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

use crate::{
    config::Config,
    hub::{Ended, StartKind, Subscription},
    observe::{Reason, Stalled, StreamLife, Transport},
    record::Encoding,
    record::Record,
    wire,
};

/// The name of the event a stream starts with when the client resumes from
/// an id the history no longer covers (see the crate docs, "Resuming").
/// Over WebSocket it is a message of this `type`.
pub const RESET_EVENT: &str = "reset";

/// Events already available are joined into one frame up to about this size,
/// so a burst costs one write per connection rather than one per event.
const FRAME_CAP: usize = 64 * 1024;

/// A write of at least this many events comes from a stream that batches
/// by itself (it is behind a burst: the events waited for it, not it for
/// them), so its next read does not wait out the coalescing window. Only
/// a stream writing one event or a few at a time is held back: there the
/// window saves writes; under a burst it would only add a timer per stream
/// and write more often than the stream's own pace.
const BATCHED: usize = 4;

/// A record as a `text/event-stream` block: built once per event (when it
/// is published, on a hub a layer serves) and shared by every stream.
pub(crate) const ENCODING: Encoding = Encoding { slot: 0, encode };

/// The same block with a `topic:` line, for the streams that asked for it
/// (`with=topic`): built once per event by the first such stream that sends
/// it, so streams that did not ask pay nothing for it.
pub(crate) const TOPIC_ENCODING: Encoding = Encoding {
    slot: 2,
    encode: encode_with_topic,
};

fn encode(record: &Record) -> Bytes {
    wire::encode(&fields(record, None))
}

fn encode_with_topic(record: &Record) -> Bytes {
    match record.topic() {
        // The default topic's events go to everyone and carry no topic: the
        // plain bytes, shared rather than built again.
        None => record.encoded(&ENCODING).clone(),
        Some(topic) => wire::encode(&fields(record, Some(topic))),
    }
}

fn fields<'a>(record: &'a Record, topic: Option<&'a str>) -> wire::Fields<'a> {
    let message = record.message();
    wire::Fields {
        event: message.event(),
        topic,
        retry_ms: message.retry().map(|r| r.as_millis()),
        comment: message.comment(),
        data: message.has_data().then(|| message.data()),
        id: match message.app_id() {
            Some(id) => wire::Id::Text(id),
            None => wire::Id::Number(record.id().as_u64()),
        },
    }
}

/// The never-ending body of an event-stream response.
///
/// Each poll drains every event already published to the subscriber's topics
/// into one frame (up to 64 KiB), sharing the encoded bytes when there is just
/// one. When nothing has been sent for the keep-alive interval it sends a
/// comment, so proxies and the browser keep the connection open.
///
/// The stream ends when the subscriber falls further behind than the lag
/// bound (the browser reconnects and resumes from history), after
/// [`Publisher::disconnect_all`](crate::Publisher::disconnect_all), and when
/// the hub is closed.
///
/// The layer serves one on its path; a handler opens one with
/// [`Subscribe::event_stream`](crate::Subscribe::event_stream) and returns
/// it (with its headers: it converts into an `http::Response`, and is an
/// axum `IntoResponse` with the `axum` feature).
pub struct EventStream {
    subscription: Subscription,
    /// The plain bytes, or those with the `topic:` line (`with=topic`).
    encoding: &'static Encoding,
    life: StreamLife,
    /// Bytes to send before anything else, then the frame being built.
    buf: BytesMut,
    keep_alive: Option<KeepAlive>,
    last_sent: Instant,
    done: bool,
    /// [`SseLayer::coalesce`](crate::SseLayer::coalesce): the window after
    /// a write in which events wait for the next one.
    coalesce: Option<Coalesce>,
}

struct Coalesce {
    delay: Duration,
    /// Ends the window after the last write.
    sleep: Pin<Box<Sleep>>,
    /// When the last write went out, if any did.
    written: Option<Instant>,
    /// The last write was cut at [`FRAME_CAP`] with more to send, or
    /// carried [`BATCHED`] events or more: the next does not wait.
    backlog: bool,
}

struct KeepAlive {
    interval: Duration,
    comment: Bytes,
    sleep: Pin<Box<Sleep>>,
}

impl EventStream {
    /// `with_topic`: the client asked for each event's topic (`with=topic`).
    pub(crate) fn new(subscription: Subscription, config: &Config, with_topic: bool) -> Self {
        let mut buf = BytesMut::from(&config.prelude[..]);
        let start = subscription.start();
        let life = StreamLife::begin(
            Transport::Sse,
            subscription.topics(),
            subscription.user(),
            start.kind == StartKind::Reset,
        );
        let id = wire::Id::Number(start.after);
        match start.kind {
            // The id alone: the browser takes it as its last event id without
            // dispatching anything, so even a stream cut before its first
            // event resumes without loss.
            StartKind::Live => buf.extend_from_slice(&wire::encode_id(id)),
            StartKind::Reset => buf.extend_from_slice(&wire::encode(&wire::Fields {
                event: Some(RESET_EVENT),
                topic: None,
                retry_ms: None,
                comment: None,
                data: None,
                id,
            })),
            StartKind::Resumed => {}
        }
        let now = Instant::now();
        EventStream {
            subscription,
            encoding: if with_topic {
                &TOPIC_ENCODING
            } else {
                &ENCODING
            },
            life,
            buf,
            keep_alive: config
                .keep_alive
                .clone()
                .map(|(interval, comment)| KeepAlive {
                    interval,
                    comment,
                    sleep: Box::pin(tokio::time::sleep_until(now + interval)),
                }),
            last_sent: now,
            done: false,
            coalesce: config.coalesce.map(|delay| Coalesce {
                delay,
                sleep: Box::pin(tokio::time::sleep_until(now)),
                written: None,
                backlog: false,
            }),
        }
    }

    fn send(&mut self, bytes: Bytes) -> Poll<Option<Bytes>> {
        if self.keep_alive.is_some() {
            self.last_sent = Instant::now();
        }
        if let Some(coalesce) = &mut self.coalesce {
            coalesce.written = Some(Instant::now());
        }
        Poll::Ready(Some(bytes))
    }

    /// Whether the stream is inside its coalescing window: then it waits
    /// for the window's end, not registered for events (a burst wakes it
    /// once, not once per event).
    fn waits(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(coalesce) = &mut self.coalesce else {
            return false;
        };
        let Some(written) = coalesce.written.filter(|_| !coalesce.backlog) else {
            return false;
        };
        let due = written + coalesce.delay;
        if Instant::now() >= due {
            return false;
        }
        if coalesce.sleep.deadline() != due {
            coalesce.sleep.as_mut().reset(due);
        }
        if coalesce.sleep.as_mut().poll(cx).is_ready() {
            return false;
        }
        self.subscription.park();
        true
    }

    /// Hands what is unread to `take`, each event's shared bytes, up to
    /// [`FRAME_CAP`] with the `already` bytes before them (and at least
    /// one event); then, when a state topic's current value (older than
    /// where the stream starts) was among them, the id the stream starts
    /// after. `Err` when the subscriber lags too far.
    fn read_with(&mut self, already: usize, mut take: impl FnMut(&Bytes)) -> Result<(), ()> {
        let encoding = self.encoding;
        let after = self.subscription.start().after;
        let mut size = already;
        let mut taken = 0;
        let mut full = false;
        let mut current = false;
        let read = self.subscription.read(|record| {
            let bytes = record.encoded(encoding);
            if size > 0 && size + bytes.len() > FRAME_CAP {
                full = true;
                return false;
            }
            current |= record.id().as_u64() <= after;
            size += bytes.len();
            taken += 1;
            take(bytes);
            true
        });
        // What the last write carried: a read that found nothing (the lean
        // writer asks again before it writes) changes nothing.
        if let Some(coalesce) = self.coalesce.as_mut().filter(|_| taken > 0) {
            coalesce.backlog = full || taken >= BATCHED;
        }
        self.life.delivered(taken);
        if current && read.is_ok() {
            // The browser took that older event's id as its last: give it
            // back the one the stream starts after, or a resume from there
            // would replay other topics' events from before the stream.
            take(&wire::encode_id(wire::Id::Number(after)));
        }
        read.map_err(drop)
    }

    /// Takes what is unread into the buffer; a lone event into an empty
    /// buffer comes back as its shared bytes instead.
    fn read(&mut self) -> Result<Option<Bytes>, ()> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut first: Option<Bytes> = None;
        let read = self.read_with(buf.len(), |bytes| {
            if buf.is_empty() && first.is_none() {
                // Maybe the only one: share it rather than copy it.
                first = Some(bytes.clone());
                return;
            }
            if let Some(first) = first.take() {
                buf.extend_from_slice(&first);
            }
            buf.extend_from_slice(bytes);
        });
        self.buf = buf;
        read.map(|()| first)
    }

    /// Takes what is unread into `pieces`, uncopied, after what the stream
    /// has to send first; whether it took anything.
    fn read_pieces(&mut self, pieces: &mut Vec<Bytes>) -> Result<bool, ()> {
        let before = pieces.len();
        let already = self.buf.len();
        if already > 0 {
            // Taken whole, so the stream keeps no share of it.
            pieces.push(std::mem::take(&mut self.buf).freeze());
        }
        self.read_with(already, |bytes| pieces.push(bytes.clone()))?;
        Ok(pieces.len() > before)
    }

    /// The server that owns the connection may end the stream for a stall
    /// and says so in `stalled` (see [`Stalled`]).
    pub(crate) fn watched(&mut self, stalled: Stalled) {
        self.life.watched(stalled);
    }

    /// The stream ends because its client read nothing for the write
    /// stall timeout: counted as lagging.
    #[cfg(feature = "serve")]
    pub(crate) fn stalled(&mut self) {
        self.life.end(Reason::Lagged);
    }
}

impl EventStream {
    /// Like [`Body::poll_frame`], but the events go into `pieces`
    /// uncopied: `Ready(Some(()))` when it pushed some, `Ready(None)` when
    /// the stream has ended.
    #[cfg(feature = "serve")]
    pub(crate) fn poll_pieces(
        &mut self,
        cx: &mut Context<'_>,
        pieces: &mut Vec<Bytes>,
    ) -> Poll<Option<()>> {
        self.poll_out(cx, Some(&mut *pieces)).map(|sent| {
            sent.map(|bytes| {
                if !bytes.is_empty() {
                    pieces.push(bytes);
                }
            })
        })
    }

    /// What there is to send: one frame, the events joined (hyper's body),
    /// or with `pieces`, the events' shared bytes put there, one piece
    /// each, none copied, for a writer that sends them with one vectored
    /// write (`tower_sse::serve`'s lean HTTP/1.1 path); what it returns
    /// then (a keep-alive comment, or nothing) goes after them.
    fn poll_out(
        &mut self,
        cx: &mut Context<'_>,
        pieces: Option<&mut Vec<Bytes>>,
    ) -> Poll<Option<Bytes>> {
        let this = self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.waits(cx) {
            return Poll::Pending;
        }
        // Registered before reading, so an event published after the read
        // wakes us; one published before it is in what we read.
        let ended = this.subscription.poll_ended(cx);
        // Ended from outside (all but a closing hub, whose streams first send
        // what was published before), or cut off for lagging: what is already
        // in the buffer (e.g. the id the stream starts after) still goes out,
        // or a browser ended before its first event had no id to resume from.
        let mut ending = ended.is_some_and(|why| why != Ended::Closed);
        if let Some(why) = ended {
            this.life.end(why.into());
        }
        if !ending {
            let read = match pieces {
                None => this.read(),
                // The pieces are sent; the buffer, drained into them.
                Some(pieces) => this.read_pieces(pieces).map(|some| some.then(Bytes::new)),
            };
            match read {
                Ok(Some(bytes)) => return this.send(bytes),
                Ok(None) => {}
                Err(()) => {
                    tracing::debug!(
                        parent: this.life.span(),
                        "event stream ends: subscriber fell behind the lag bound"
                    );
                    this.life.end(Reason::Lagged);
                    ending = true;
                }
            }
        }
        this.done = ending;
        if !this.buf.is_empty() {
            // Taken whole, so the stream keeps no share of the sent buffer.
            let bytes = std::mem::take(&mut this.buf).freeze();
            return this.send(bytes);
        }
        if ending || ended.is_some() {
            this.done = true;
            return Poll::Ready(None);
        }
        if let Some(keep_alive) = &mut this.keep_alive {
            while keep_alive.sleep.as_mut().poll(cx).is_ready() {
                // Traffic does not touch the timer; when it fires early
                // because of traffic, it is moved to the real idle deadline.
                let due = this.last_sent + keep_alive.interval;
                let now = Instant::now();
                if now >= due {
                    keep_alive.sleep.as_mut().reset(now + keep_alive.interval);
                    this.last_sent = now;
                    return Poll::Ready(Some(keep_alive.comment.clone()));
                }
                keep_alive.sleep.as_mut().reset(due);
            }
        }
        Poll::Pending
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .poll_out(cx, None)
            .map(|sent| sent.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Sets the headers of an event-stream response.
pub(crate) fn headers<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Stops nginx (and proxies that follow it) from buffering the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// The stream as a `200` response with its headers (`text/event-stream`,
/// `cache-control: no-cache`, `x-accel-buffering: no`).
impl From<EventStream> for Response<EventStream> {
    fn from(stream: EventStream) -> Self {
        let mut response = Response::new(stream);
        headers(&mut response);
        response
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for EventStream {
    fn into_response(self) -> axum_core::response::Response {
        Response::from(self).map(axum_core::body::Body::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::EventId, record::Message, Event};

    fn record(topic: Option<&str>, event: Event) -> Record {
        Record::new(EventId::new(42), Message::new(topic, event).unwrap())
    }

    #[test]
    fn the_topic_line_is_a_second_encoding_built_once() {
        let said = record(Some("room/1"), Event::default().event("said").data("a\nb"));
        assert_eq!(
            said.encoded(&ENCODING),
            "event: said\ndata: a\ndata: b\nid: 42\n\n"
        );
        let with_topic = said.encoded(&TOPIC_ENCODING);
        assert_eq!(
            with_topic,
            "event: said\ntopic: room/1\ndata: a\ndata: b\nid: 42\n\n"
        );
        // Cached: every stream that asked shares the same bytes.
        assert_eq!(
            said.clone().encoded(&TOPIC_ENCODING).as_ptr(),
            with_topic.as_ptr()
        );
    }

    #[test]
    fn an_event_of_the_default_topic_shares_the_plain_bytes() {
        let everyone = record(None, Event::default().data("hi").id("custom"));
        let plain = everyone.encoded(&ENCODING);
        assert_eq!(plain, "data: hi\nid: custom\n\n");
        assert_eq!(everyone.encoded(&TOPIC_ENCODING).as_ptr(), plain.as_ptr());
    }
}
