//! The event-stream body through the layer's service, in process: framing,
//! keep-alive timing (on a paused clock), the lag cut-off, history age,
//! `disconnect_all`, close, and which wakes a publish causes.

use bytes::Bytes;
use std::{convert::Infallible, pin::Pin, task::Context, time::Duration};
use tower_sse::{Event, EventId, Hub, Publisher, SseBody, SseLayer};

use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
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
    let layer = SseLayer::new("/events").hub(&Hub::builder().max_lag(4).history(100).build());
    let publisher = layer.publisher();
    let mut body = open_body(&layer).await;

    let ids: Vec<_> = (0..4)
        .map(|i| {
            publisher
                .publish(Event::default().data(format!("{i}")))
                .unwrap()
                .id()
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
    let layer = SseLayer::new("/events").hub(&Hub::builder().max_lag(4).build());
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
        assert!(frame.len() <= 64 * 1024, "{}", frame.len());
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
    let layer =
        SseLayer::new("/events").hub(&Hub::builder().history_ttl(Duration::from_secs(60)).build());
    let publisher = layer.publisher();
    let old = publisher
        .publish(Event::default().data("old"))
        .unwrap()
        .id()
        .unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let recent = publisher
        .publish(Event::default().data("recent"))
        .unwrap()
        .id()
        .unwrap();
    let resume_from = |id: EventId| {
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
    let frame = resume_from(EventId::new(old.as_u64() - 1)).await;
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
    let id = publisher
        .publish(Event::default().data("x"))
        .unwrap()
        .id()
        .unwrap();
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
        let publisher = req.extensions().get::<Publisher>().cloned();
        let id = publisher
            .unwrap()
            .publish(Event::default().data("hi"))
            .unwrap()
            .await
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
