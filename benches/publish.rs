//! Micro-benchmarks: the cost of `Publisher::publish` for the caller with 0,
//! 1,000 and 10,000 open streams (it must not grow with them), and event
//! encoding throughput. `cargo bench --bench publish`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use std::{convert::Infallible, hint::black_box};
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_sse::{Event, SseLayer};

fn publish(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("publish");
    for subscribers in [0usize, 1_000, 10_000] {
        let layer = SseLayer::new("/events");
        let publisher = layer.publisher();
        // Open streams that are being read: each is polled once, so it has a
        // waker registered and is woken (by the hub's task) on every event.
        let bodies: Vec<_> = runtime.block_on(async {
            let mut bodies = Vec::with_capacity(subscribers);
            for _ in 0..subscribers {
                let service = layer.layer(service_fn(|_: Request<()>| async {
                    Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                }));
                let request = Request::get("/events").body(()).unwrap();
                let mut body = service.oneshot(request).await.unwrap().into_body();
                // The start frame, then a poll that registers the waker.
                assert!(body.frame().now_or_never().is_some());
                assert!(body.frame().now_or_never().is_none());
                bodies.push(body);
            }
            bodies
        });
        assert_eq!(publisher.subscriber_count(), subscribers);
        let _enter = runtime.enter();
        group.bench_function(format!("{subscribers} subscribers"), |b| {
            b.iter_batched(
                || {
                    Event::default()
                        .event("tick")
                        .data("a short message of about forty bytes")
                },
                |event| black_box(publisher.publish(event).unwrap()),
                BatchSize::SmallInput,
            )
        });
        drop(bodies);
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let small = "a short message of about forty bytes";
    let large = "line of a larger event with several lines\n".repeat(100);
    for (name, data) in [("small", small), ("4 KiB, 100 lines", large.as_str())] {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    Event::default()
                        .event("tick")
                        .data(black_box(data))
                        .encode(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, publish, encode);
criterion_main!(benches);
