//! A resume storm inside one process, the hub's part of it: 5,000 streams,
//! each following 64 topics, reconnect at once with a `Last-Event-ID` 500
//! events behind (1,000 events published round-robin over the topics), and
//! each reads its whole backlog. Times opening all of them (the resume
//! check, the cursors) and draining all of them (the merge of 64 rings, the
//! frames), as a median of repetitions; no sockets, so the figure is the
//! hub's and the body's, not the kernel's. `cargo bench --bench
//! resume_storm` (`STORM_STREAMS`, `STORM_REPEAT` to change the run).

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use std::{convert::Infallible, time::Instant};
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_sse::{Event, Hub, SseLayer};

const TOPICS: usize = 64;
const EVENTS: usize = 1_000;
const BEHIND: usize = 500;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (ms to open every stream, ms to drain every backlog).
async fn storm(streams: usize) -> (f64, f64) {
    let hub = Hub::builder().history(EVENTS).build();
    let layer = SseLayer::new("/events").hub(&hub).max_topics(TOPICS);
    let publisher = layer.publisher();
    let mut ids = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let published = publisher
            .publish_to(
                &format!("t{}", i % TOPICS),
                Event::default().data(format!("event {i}")),
            )
            .expect("published");
        ids.push(published.id().expect("numbered at once"));
    }
    let last = ids[EVENTS - BEHIND - 1].to_string();
    let query: Vec<String> = (0..TOPICS).map(|t| format!("topic=t{t}")).collect();
    let uri = format!("/events?{}", query.join("&"));
    let service = layer.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));

    let started = Instant::now();
    let mut bodies = Vec::with_capacity(streams);
    for _ in 0..streams {
        let request = Request::get(&uri)
            .header("last-event-id", &last)
            .body(())
            .expect("a request");
        let response = service.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), 200);
        bodies.push(response.into_body());
    }
    let opened = started.elapsed();

    let started = Instant::now();
    for mut body in bodies {
        let mut events = 0;
        while events < BEHIND {
            let frame = body
                .frame()
                .now_or_never()
                .expect("the backlog is ready")
                .expect("the stream goes on")
                .expect("infallible");
            if let Ok(data) = frame.into_data() {
                events += data.windows(6).filter(|w| w == b"data: ").count();
            }
        }
        assert_eq!(events, BEHIND, "exactly the backlog");
    }
    let drained = started.elapsed();
    (opened.as_secs_f64() * 1e3, drained.as_secs_f64() * 1e3)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let streams = env("STORM_STREAMS", 5_000);
    let repeat = env("STORM_REPEAT", 5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let runs: Vec<(f64, f64)> = (0..repeat)
        .map(|_| runtime.block_on(storm(streams)))
        .collect();
    let open = median(runs.iter().map(|r| r.0).collect());
    let drain = median(runs.iter().map(|r| r.1).collect());
    println!(
        "resume storm, {streams} streams × {TOPICS} topics, {BEHIND} events behind \
         (median of {repeat}): open {open:.1} ms, drain {drain:.1} ms, total {:.1} ms",
        open + drain
    );
}
