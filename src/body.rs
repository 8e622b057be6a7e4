//! [`EventStream`], the body of an event-stream response, and [`SseBody`],
//! the body type of every response that passes through [`SseService`].
//!
//! [`SseService`]: crate::SseService

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

use crate::hub::{Read, Subscription};

/// Events already available are joined into one frame up to about this size,
/// so a burst costs one write per connection rather than one per event.
const FRAME_CAP: usize = 64 * 1024;

/// The never-ending body of an event-stream response.
///
/// Each poll drains every event already published to the subscriber's topics
/// into one frame (up to 64 KiB), sharing the encoded bytes when there is just
/// one. When nothing has been sent for the keep-alive interval it sends a
/// comment, so proxies and the browser keep the connection open.
///
/// The stream ends when the subscriber falls further behind than the lag
/// bound (the browser reconnects and resumes from history), and when the hub
/// is closed.
pub struct EventStream {
    subscription: Subscription,
    /// Bytes to send before anything else, then the frame being built.
    buf: BytesMut,
    keep_alive: Option<KeepAlive>,
    last_sent: Instant,
    done: bool,
}

struct KeepAlive {
    interval: Duration,
    comment: Bytes,
    sleep: Pin<Box<Sleep>>,
}

impl EventStream {
    pub(crate) fn new(
        mut subscription: Subscription,
        prelude: &[u8],
        keep_alive: Option<(Duration, Bytes)>,
    ) -> Self {
        let mut buf = BytesMut::from(prelude);
        if let Some(reset) = subscription.take_reset() {
            buf.extend_from_slice(&reset);
        }
        let now = Instant::now();
        EventStream {
            subscription,
            buf,
            keep_alive: keep_alive.map(|(interval, comment)| KeepAlive {
                interval,
                comment,
                sleep: Box::pin(tokio::time::sleep_until(now + interval)),
            }),
            last_sent: now,
            done: false,
        }
    }

    fn send(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.keep_alive.is_some() {
            self.last_sent = Instant::now();
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.done = true;
        Poll::Ready(None)
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        // Registered before reading, so an event published after the read
        // wakes us; one published before it is in what we read.
        this.subscription.register(cx.waker());
        let closed = this.subscription.is_closed();
        match this.subscription.read(&mut this.buf, FRAME_CAP) {
            Read::Events(Some(bytes)) => return this.send(bytes),
            Read::Lagged => {
                tracing::debug!("event stream ended: subscriber fell behind the lag bound");
                return this.end();
            }
            Read::Events(None) | Read::Nothing => {}
        }
        if !this.buf.is_empty() {
            let bytes = this.buf.split().freeze();
            return this.send(bytes);
        }
        if closed {
            return this.end();
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
                    return Poll::Ready(Some(Ok(Frame::data(keep_alive.comment.clone()))));
                }
                keep_alive.sleep.as_mut().reset(due);
            }
        }
        Poll::Pending
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

pin_project! {
    /// The response body of [`SseService`](crate::SseService): the inner
    /// service's body, an [`EventStream`], or a short complete body (an
    /// error message, or nothing for `HEAD`).
    pub struct SseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Stream { stream: EventStream },
        Full { data: Option<Bytes> },
    }
}

impl<B> SseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        SseBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn stream(stream: EventStream) -> Self {
        SseBody {
            kind: Kind::Stream { stream },
        }
    }

    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        SseBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> Body for SseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Stream { stream } => Pin::new(stream)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(|never| match never {}))),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Stream { stream } => stream.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Stream { stream } => stream.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> fmt::Debug for SseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("SseBody::Inner"),
            Kind::Stream { stream } => f.debug_tuple("SseBody::Stream").field(stream).finish(),
            Kind::Full { data } => f.debug_tuple("SseBody::Full").field(data).finish(),
        }
    }
}
