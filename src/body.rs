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
        if let Some(start) = subscription.take_start() {
            buf.extend_from_slice(&start);
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
        // Ended by `disconnect_all`, or cut off for lagging: what is already
        // in the buffer (e.g. the id the stream starts after) still goes out,
        // or a browser ended before its first event had no id to resume from.
        let mut ending = this.subscription.is_disconnected();
        if !ending {
            match this.subscription.read(&mut this.buf, FRAME_CAP) {
                Read::Events(Some(bytes)) => return this.send(bytes),
                Read::Lagged => {
                    tracing::debug!("event stream ends: subscriber fell behind the lag bound");
                    ending = true;
                }
                Read::Events(None) | Read::Nothing => {}
            }
        }
        this.done = ending;
        if !this.buf.is_empty() {
            // Taken whole, so the stream keeps no share of the sent buffer.
            let bytes = std::mem::take(&mut this.buf).freeze();
            return this.send(bytes);
        }
        if ending || closed {
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
        Own { body: OwnBody },
    }
}

/// The bodies of the answers the layer gives itself on the stream path.
#[derive(Debug)]
pub(crate) enum OwnBody {
    Stream(EventStream),
    Full(Option<Bytes>),
}

impl OwnBody {
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        OwnBody::Full((!data.is_empty()).then_some(data))
    }
}

impl Body for OwnBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            OwnBody::Stream(stream) => Pin::new(stream).poll_frame(cx),
            OwnBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OwnBody::Stream(stream) => stream.is_end_stream(),
            OwnBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OwnBody::Stream(stream) => stream.size_hint(),
            OwnBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> SseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        SseBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn own(body: OwnBody) -> Self {
        SseBody {
            kind: Kind::Own { body },
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
            KindProj::Own { body } => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { body } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for SseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("SseBody::Inner"),
            Kind::Own { body } => f.debug_tuple("SseBody").field(body).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, EventId, SseLayer};
    use futures_util::FutureExt;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Empty};
    use tower::{service_fn, ServiceExt};
    use tower_layer::Layer;

    type Inner = Empty<Bytes>;

    fn service(
        layer: &SseLayer,
    ) -> impl tower_service::Service<
        Request<()>,
        Response = Response<SseBody<Inner>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }))
    }

    async fn open(layer: &SseLayer, uri: &str) -> Response<SseBody<Inner>> {
        let request = Request::get(uri).body(()).unwrap();
        service(layer).oneshot(request).await.unwrap()
    }

    /// A stream body, past the `id:` line every new stream starts with.
    async fn open_body(layer: &SseLayer) -> SseBody<Inner> {
        let mut body = open(layer, "/events").await.into_body();
        let start = ready_frame(&mut body).unwrap().unwrap();
        assert!(
            start.starts_with(b"id: ") && start.ends_with(b"\n\n"),
            "{start:?}"
        );
        body
    }

    /// The next frame if one is ready now, without waiting.
    fn ready_frame(body: &mut SseBody<Inner>) -> Option<Option<Bytes>> {
        body.frame()
            .now_or_never()
            .map(|f| f.map(|f| f.unwrap().into_data().unwrap()))
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_is_sent_only_after_a_whole_idle_interval() {
        let layer = SseLayer::new("/events").keep_alive(Duration::from_secs(10));
        let publisher = layer.publisher();
        let mut body = open_body(&layer).await;
        assert_eq!(ready_frame(&mut body), None);

        tokio::time::advance(Duration::from_secs(5)).await;
        publisher.publish(Event::default().data("x")).unwrap();
        let frame = ready_frame(&mut body).unwrap().unwrap();
        assert!(frame.starts_with(b"data: x\n"));

        // 11 s after the start, 6 s after the event: not idle long enough.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(ready_frame(&mut body), None);
        // 10 s after the event.
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            ready_frame(&mut body),
            Some(Some(Bytes::from_static(b":keep-alive\n\n")))
        );
        // And again 10 s later, not before.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(ready_frame(&mut body), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(ready_frame(&mut body).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_burst_is_one_frame_and_a_lagging_subscriber_is_cut_off() {
        let layer = SseLayer::new("/events").max_lag(4).history(100);
        let publisher = layer.publisher();
        let mut body = open_body(&layer).await;

        let ids: Vec<_> = (0..4)
            .map(|i| {
                publisher
                    .publish(Event::default().data(format!("{i}")))
                    .unwrap()
            })
            .collect();
        let frame = ready_frame(&mut body).unwrap().unwrap();
        let expected: String = ids
            .iter()
            .enumerate()
            .map(|(i, id)| format!("data: {i}\nid: {id}\n\n"))
            .collect();
        assert_eq!(frame, expected.as_bytes(), "four events, one frame");
        assert_eq!(ready_frame(&mut body), None);

        for i in 0..5 {
            publisher
                .publish(Event::default().data(format!("{i}")))
                .unwrap();
        }
        assert_eq!(ready_frame(&mut body), Some(None), "5 unread > max_lag 4");
        assert_eq!(publisher.subscriber_count(), 1, "until the body is dropped");
        drop(body);
        assert_eq!(publisher.subscriber_count(), 0);
    }

    #[tokio::test]
    async fn a_stream_cut_off_before_its_first_poll_still_sends_its_start_id() {
        let layer = SseLayer::new("/events").max_lag(4);
        let publisher = layer.publisher();
        let mut body = open(&layer, "/events").await.into_body();
        for _ in 0..5 {
            publisher.publish(Event::default().data("x")).unwrap();
        }
        let start = ready_frame(&mut body).unwrap().unwrap();
        assert!(start.starts_with(b"id: ") && !start.windows(5).any(|w| w == b"data:"));
        assert_eq!(ready_frame(&mut body), Some(None));

        // Likewise a stream ended by `disconnect_all` before its first poll.
        let mut body = open(&layer, "/events").await.into_body();
        publisher.disconnect_all();
        let start = ready_frame(&mut body).unwrap().unwrap();
        assert!(start.starts_with(b"id: "), "{start:?}");
        assert_eq!(ready_frame(&mut body), Some(None));
    }

    #[tokio::test]
    async fn a_frame_holds_at_most_about_64_kib() {
        let layer = SseLayer::new("/events");
        let publisher = layer.publisher();
        let mut body = open_body(&layer).await;
        for _ in 0..200 {
            publisher
                .publish(Event::default().data("x".repeat(1000)))
                .unwrap();
        }
        let mut total = 0;
        let mut frames = 0;
        while let Some(Some(frame)) = ready_frame(&mut body) {
            assert!(frame.len() <= FRAME_CAP, "{}", frame.len());
            total += frame.len();
            frames += 1;
        }
        assert_eq!(frames, 4);
        assert!(total > 200 * 1000);
    }

    #[tokio::test]
    async fn dropping_every_handle_ends_the_streams() {
        let layer = SseLayer::new("/events");
        let svc = service(&layer);
        let response = svc
            .clone()
            .oneshot(Request::get("/events").body(()).unwrap())
            .await;
        let mut body = response.unwrap().into_body();
        assert!(ready_frame(&mut body).unwrap().is_some(), "the start id");
        assert_eq!(ready_frame(&mut body), None);
        drop(svc);
        assert_eq!(
            ready_frame(&mut body),
            None,
            "the layer still holds the hub"
        );
        drop(layer);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap()
                .map(|_| ()),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn history_ttl_drops_old_events() {
        let layer = SseLayer::new("/events").history_ttl(Duration::from_secs(60));
        let publisher = layer.publisher();
        let old = publisher.publish(Event::default().data("old")).unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        let recent = publisher.publish(Event::default().data("recent")).unwrap();
        let resume_from = |id: crate::EventId| {
            let layer = layer.clone();
            async move {
                let request = Request::get("/events")
                    .header("last-event-id", id.to_string())
                    .body(())
                    .unwrap();
                let mut body = service(&layer).oneshot(request).await.unwrap().into_body();
                ready_frame(&mut body).unwrap().unwrap()
            }
        };
        assert!(resume_from(old).await.starts_with(b"data: recent\n"));
        tokio::time::advance(Duration::from_secs(31)).await;
        // 61 s after `old`: it is gone, so resuming from before it is a reset.
        let frame = resume_from(EventId(old.0 - 1)).await;
        assert!(frame.starts_with(b"event: reset\n"), "{frame:?}");
        assert!(resume_from(old).await.starts_with(b"data: recent\n"));
        let _ = recent;
    }

    /// A waker that counts its wakes and lets a test wait for one.
    #[derive(Default)]
    struct CountingWaker {
        wakes: std::sync::atomic::AtomicUsize,
        notify: tokio::sync::Notify,
    }

    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.notify.notify_one();
        }
    }

    /// Polls `body` once with a counting waker (after its start frame).
    fn watch(body: &mut SseBody<Inner>) -> std::sync::Arc<CountingWaker> {
        let counter = std::sync::Arc::new(CountingWaker::default());
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(body).poll_frame(&mut cx).is_pending());
        counter
    }

    #[tokio::test]
    async fn a_subscriber_is_not_woken_by_topics_it_does_not_follow() {
        let layer = SseLayer::new("/events");
        let publisher = layer.publisher();
        let mut on_a = open(&layer, "/events?topic=a").await.into_body();
        let mut on_b = open(&layer, "/events?topic=b").await.into_body();
        ready_frame(&mut on_a).unwrap().unwrap();
        ready_frame(&mut on_b).unwrap().unwrap();
        let (a, b) = (watch(&mut on_a), watch(&mut on_b));
        for _ in 0..100 {
            publisher
                .publish_to("b", Event::default().data("b"))
                .unwrap();
        }
        publisher
            .publish_to("nobody", Event::default().data("c"))
            .unwrap();
        let wait = Duration::from_secs(5);
        tokio::time::timeout(wait, b.notify.notified())
            .await
            .unwrap();
        assert_eq!(a.wakes.load(std::sync::atomic::Ordering::SeqCst), 0);
        publisher
            .publish_to("a", Event::default().data("a"))
            .unwrap();
        tokio::time::timeout(wait, a.notify.notified())
            .await
            .unwrap();
        assert_eq!(a.wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn disconnect_all_ends_open_streams_and_keeps_the_hub_open() {
        let layer = SseLayer::new("/events");
        let publisher = layer.publisher();
        let mut body = open_body(&layer).await;
        let waker = watch(&mut body);
        publisher.disconnect_all();
        tokio::time::timeout(Duration::from_secs(5), waker.notify.notified())
            .await
            .unwrap();
        assert_eq!(ready_frame(&mut body), Some(None));
        let id = publisher.publish(Event::default().data("x")).unwrap();
        let request = Request::get("/events")
            .header("last-event-id", (id.as_u64() - 1).to_string())
            .body(())
            .unwrap();
        let mut body = service(&layer).oneshot(request).await.unwrap().into_body();
        assert!(ready_frame(&mut body)
            .unwrap()
            .unwrap()
            .starts_with(b"data: x\n"));
    }

    #[tokio::test]
    async fn after_close_new_streams_get_503_with_retry_after() {
        let layer = SseLayer::new("/events");
        layer.publisher().close();
        let response = open(&layer, "/events").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "5");
    }

    #[tokio::test]
    async fn other_paths_get_a_publisher_and_reach_the_inner_service() {
        let layer = SseLayer::new("/events");
        let svc = layer.layer(service_fn(|req: Request<()>| async move {
            let publisher = req.extensions().get::<crate::Publisher>().cloned();
            let id = publisher
                .unwrap()
                .publish(Event::default().data("hi"))
                .unwrap();
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                id.to_string(),
            ))))
        }));
        let response = svc
            .oneshot(Request::get("/events/x").body(()).unwrap())
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(std::str::from_utf8(&body).unwrap().parse::<u64>().is_ok());
    }
}
