//! Stress test of the hub's races: publishers on other threads, subscribers
//! joining and leaving all the time with random yields, and subscribers that
//! stay. Those that stay get every event of their topics, in order, exactly
//! once; nothing panics or deadlocks; the count returns to zero.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_sse::{Event, Hub, SseBody, SseLayer};

type Body = SseBody<Empty<Bytes>>;

async fn open(layer: &SseLayer, query: &str) -> Body {
    let service = layer.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let request = Request::get(format!("/events{query}")).body(()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// Ids of the events in `frame`; the id of an id-only block goes to `start`.
fn ids(frame: &[u8], start: &mut Option<u64>, out: &mut Vec<u64>) {
    for block in frame
        .split(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .split(|l| l.is_empty())
    {
        let id = block
            .iter()
            .find_map(|l| l.strip_prefix(b"id: "))
            .map(|v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap());
        let data = block.iter().any(|l| l.starts_with(b"data"));
        match (id, data) {
            (Some(id), true) => out.push(id),
            (Some(id), false) => {
                start.get_or_insert(id);
            }
            _ => {}
        }
    }
}

/// A tiny deterministic generator for the churners' choices.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_unsubscribe_races_lose_nothing() {
    tokio::time::timeout(Duration::from_secs(120), stress())
        .await
        .expect("deadlock or livelock: the stress test did not finish");
}

async fn stress() {
    const EVENTS_PER_THREAD: usize = 20_000;
    let layer =
        SseLayer::new("/events").hub(&Hub::builder().history(1_000_000).max_lag(1_000_000).build());
    let publisher = layer.publisher();
    let published = Arc::new(Mutex::new(Vec::<(u64, &'static str)>::new()));
    let done = Arc::new(AtomicBool::new(false));

    // Subscribers that stay, opened before anything is published.
    let stayers = [
        ("?topic=a", vec!["a", ""]),
        ("?topic=a&topic=b", vec!["a", "b", ""]),
    ];
    let mut stay_bodies = Vec::new();
    for (query, _) in &stayers {
        stay_bodies.push(open(&layer, query).await);
    }
    let readers: Vec<_> = stay_bodies
        .into_iter()
        .map(|mut body| {
            let done = done.clone();
            tokio::spawn(async move {
                let (mut start, mut got) = (None, Vec::new());
                loop {
                    let finished = done.load(Ordering::Acquire);
                    match tokio::time::timeout(Duration::from_millis(50), body.frame()).await {
                        Ok(Some(frame)) => {
                            ids(&frame.unwrap().into_data().unwrap(), &mut start, &mut got)
                        }
                        Ok(None) => panic!("a staying subscriber's stream ended"),
                        // Nothing for a while after the publishers finished: drained.
                        Err(_) if finished => return (start.unwrap(), got),
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();

    // Churners: join, read a little, leave, with random yields.
    let churners: Vec<_> = (0..8u64)
        .map(|n| {
            let layer = layer.clone();
            tokio::spawn(async move {
                let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (n + 1);
                let queries = ["", "?topic=a", "?topic=b", "?topic=c&topic=a", "?topic=d"];
                for _ in 0..400 {
                    let query = queries[(next(&mut seed) % queries.len() as u64) as usize];
                    let mut body = open(&layer, query).await;
                    for _ in 0..next(&mut seed) % 4 {
                        if next(&mut seed).is_multiple_of(2) {
                            tokio::task::yield_now().await;
                        }
                        let _ = tokio::time::timeout(Duration::from_millis(1), body.frame()).await;
                    }
                }
            })
        })
        .collect();

    // Publishers on two OS threads, to every kind of topic.
    let publishers: Vec<_> = (0..2)
        .map(|t| {
            let (p, published) = (publisher.clone(), published.clone());
            std::thread::spawn(move || {
                let topics = ["a", "b", "c", "d", ""];
                for i in 0..EVENTS_PER_THREAD {
                    let topic = topics[(i + t) % topics.len()];
                    let event = Event::default().data("x");
                    // The lock orders the record like the hub orders ids.
                    let mut published = published.lock().unwrap();
                    let id = if topic.is_empty() {
                        p.publish(event)
                    } else {
                        p.publish_to(topic, event)
                    };
                    published.push((id.unwrap().id().unwrap().as_u64(), topic));
                    drop(published);
                    if i.is_multiple_of(97) {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();

    for churner in churners {
        churner.await.unwrap();
    }
    for publisher in publishers {
        publisher.join().unwrap();
    }
    done.store(true, Ordering::Release);

    let published = published.lock().unwrap().clone();
    assert_eq!(published.len(), 2 * EVENTS_PER_THREAD);
    assert!(
        published.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase"
    );
    for (reader, (query, topics)) in readers.into_iter().zip(stayers) {
        let (start, got) = reader.await.unwrap();
        let expected: Vec<u64> = published
            .iter()
            .filter(|(id, topic)| *id > start && topics.contains(topic))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(got.len(), expected.len(), "{query}: count");
        assert!(got == expected, "{query}: ids differ");
    }
    assert_eq!(publisher.subscriber_count(), 0);
}
