//! Topics, resume with `Last-Event-ID`, the reset event, authorization and
//! the subscriber limit, over real TCP with independent clients.

mod common;

use axum::Router;
use common::{client, within, Server, Subscriber};
use http::{header::COOKIE, request::Parts, Response, StatusCode};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};
use tower_sse::{Access, Event, Hub, Publisher, SseLayer};

async fn server(layer: SseLayer) -> Server {
    let publisher = layer.publisher();
    Server::start(Router::new().layer(layer), publisher).await
}

fn data(text: &str) -> Event {
    Event::default().data(text)
}

/// (id, data) of events, for comparing.
fn seen(events: &[eventsource_stream::Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.id.clone(), e.data.clone()))
        .collect()
}

fn publish(p: &Publisher, topic: Option<&str>, text: &str) -> (String, String) {
    let id = match topic {
        Some(topic) => p.publish_to(topic, data(text)),
        None => p.publish(data(text)),
    };
    (id.unwrap().id().unwrap().to_string(), text.to_owned())
}

#[tokio::test]
async fn one_connection_follows_two_topics_and_the_default_one() {
    let server = server(SseLayer::new("/events")).await;
    let mut sub = Subscriber::connect(&server.url("/events?topic=a&topic=b")).await;
    let p = &server.publisher;
    let mut expected = Vec::new();
    expected.push(publish(p, Some("a"), "a1"));
    publish(p, Some("c"), "c1: not followed");
    expected.push(publish(p, Some("b"), "b1"));
    expected.push(publish(p, None, "to everyone"));
    publish(p, Some("ab"), "not followed either");
    expected.push(publish(p, Some("a"), "a2"));
    assert_eq!(seen(&sub.take(4).await), expected);
}

#[tokio::test]
async fn with_topic_each_event_carries_its_topic_line() {
    // The hook also makes every stream follow "user/ann", unasked.
    let layer = SseLayer::new("/events")
        .authorize(|_: Parts| async { Ok(Access::all().follow("user/ann")) });
    let server = server(layer).await;
    let open = |query: &str| {
        let url = server.url(&format!("/events?{query}"));
        async move {
            let response = client().get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes_stream()
        }
    };
    let mut tagged = open("topic=a&with=topic&topic=b").await;
    let mut plain = open("topic=a&topic=b").await;
    let start = common::read_until(&mut tagged, b"\n\n", "the start").await;
    common::read_until(&mut plain, b"\n\n", "the start").await;
    let p = &server.publisher;
    let ids: Vec<_> = [Some("a"), Some("b"), None, Some("user/ann")]
        .into_iter()
        .map(|topic| publish(p, topic, "x").0)
        .collect();
    let block = |topic: Option<&str>, id: &str| match topic {
        Some(topic) => format!("topic: {topic}\ndata: x\nid: {id}\n\n"),
        None => format!("data: x\nid: {id}\n\n"),
    };
    let tagged_text: String = [Some("a"), Some("b"), None, Some("user/ann")]
        .iter()
        .zip(&ids)
        .map(|(topic, id)| block(*topic, id))
        .collect();
    let plain_text: String = ids.iter().map(|id| block(None, id)).collect();
    let got = common::read_until(&mut tagged, tagged_text.as_bytes(), "tagged events").await;
    assert_eq!(String::from_utf8(got).unwrap(), tagged_text);
    let got = common::read_until(&mut plain, plain_text.as_bytes(), "plain events").await;
    assert_eq!(String::from_utf8(got).unwrap(), plain_text);

    // A replay carries the topics too.
    let start = String::from_utf8(start).unwrap();
    let after = start.trim().strip_prefix("id: ").unwrap();
    let response = client()
        .get(server.url("/events?topic=a&topic=b&with=topic"))
        .header("last-event-id", after)
        .send()
        .await
        .unwrap();
    let mut replay = response.bytes_stream();
    let got = common::read_until(&mut replay, tagged_text.as_bytes(), "the replay").await;
    assert_eq!(String::from_utf8(got).unwrap(), tagged_text);
    let response = client()
        .get(server.url("/events?with=colour"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let message = response.text().await.unwrap();
    assert!(
        message.contains("unknown `with` value \"colour\""),
        "{message}"
    );
}

#[tokio::test]
async fn invalid_topics_are_a_400_with_a_message() {
    let server = server(SseLayer::new("/events").max_topics(3)).await;
    for (query, message) in [
        ("topic=a%20b", "invalid topic"),
        ("topic=", "invalid topic"),
        ("topic=a&topic=b&topic=c&topic=d", "too many topics"),
    ] {
        let response = client()
            .get(server.url(&format!("/events?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert!(response.text().await.unwrap().contains(message), "{query}");
    }
    assert!(matches!(
        server.publisher.publish_to("a b", data("x")),
        Err(tower_sse::Error::InvalidTopic)
    ));
}

#[tokio::test]
async fn resume_after_a_disconnect_replays_exactly_what_was_missed() {
    let server = server(SseLayer::new("/events")).await;
    let url = server.url("/events?topic=a");
    let p = &server.publisher;
    let mut sub = Subscriber::connect(&url).await;
    let first: Vec<_> = (0..3)
        .map(|i| publish(p, Some("a"), &format!("before {i}")))
        .collect();
    assert_eq!(seen(&sub.take(3).await), first);
    let last = sub.last_event_id().unwrap();
    drop(sub);

    // Published while the browser is away, on its topics and others.
    let mut missed = Vec::new();
    for i in 0..10usize {
        missed.push(publish(p, Some("a"), &format!("missed {i}")));
        publish(p, Some("other"), "not followed");
        if i.is_multiple_of(3) {
            missed.push(publish(p, None, &format!("default {i}")));
        }
    }
    let mut sub = Subscriber::resume(&url, Some(&last)).await;
    assert_eq!(seen(&sub.take(missed.len()).await), missed);
    // Then live events, with nothing repeated.
    let live = publish(p, Some("a"), "live");
    assert_eq!(seen(&sub.take(1).await), [live]);
}

#[tokio::test]
async fn the_last_event_id_may_come_in_the_query() {
    let server = server(SseLayer::new("/events")).await;
    let p = &server.publisher;
    let (before, _) = publish(p, None, "seen");
    let after = publish(p, None, "missed");
    let url = server.url(&format!("/events?lastEventId={before}"));
    let mut sub = Subscriber::connect(&url).await;
    assert_eq!(seen(&sub.take(1).await), [after]);
}

#[tokio::test]
async fn a_gap_beyond_the_history_gets_the_reset_event_then_live_events() {
    let server =
        server(SseLayer::new("/events").hub(&Hub::builder().history(5).max_lag(5).build())).await;
    let url = server.url("/events");
    let p = &server.publisher;
    let (old, _) = publish(p, None, "old");
    for i in 0..10usize {
        publish(p, None, &format!("evicted {i}"));
    }
    let mut sub = Subscriber::resume(&url, Some(&old)).await;
    let live = publish(p, None, "live");
    let events = sub.take(2).await;
    assert_eq!(events[0].event, tower_sse::RESET_EVENT);
    assert_eq!(events[0].data, "");
    let reset_id: u64 = events[0].id.parse().unwrap();
    assert!(reset_id < live.0.parse().unwrap());
    assert_eq!(seen(&events[1..]), [live]);
    // Resuming from the reset event's id loses nothing more.
    drop(sub);
    let next = publish(p, None, "next");
    let mut sub = Subscriber::resume(&url, Some(&events[1].id)).await;
    assert_eq!(seen(&sub.take(1).await), [next]);
}

#[tokio::test]
async fn unknown_malformed_and_future_ids_get_the_reset_event() {
    let server = server(SseLayer::new("/events")).await;
    let p = &server.publisher;
    let (newest, _) = publish(p, None, "x");
    let future = (newest.parse::<u64>().unwrap() + 1000).to_string();
    for id in [
        "not-a-number",
        "-5",
        "99999999999999999999999999",
        "1",
        &future,
    ] {
        let mut sub = Subscriber::resume(&server.url("/events"), Some(id)).await;
        let event = sub.next().await.unwrap();
        assert_eq!(event.event, "reset", "Last-Event-ID {id:?}");
        assert_eq!(event.id, newest, "Last-Event-ID {id:?}");
    }
}

#[tokio::test]
async fn ids_set_by_the_app_resume_too() {
    let server = server(SseLayer::new("/events")).await;
    let p = &server.publisher;
    p.publish(Event::default().id("order-1").data("one"))
        .unwrap();
    p.publish(Event::default().id("order-2").data("two"))
        .unwrap();
    let mut sub = Subscriber::resume(&server.url("/events"), Some("order-1")).await;
    let event = sub.next().await.unwrap();
    assert_eq!((event.id.as_str(), event.data.as_str()), ("order-2", "two"));
}

/// A slow subscriber is cut off at the lag bound; like a browser it
/// reconnects with its last id and gets everything from the history.
/// The current-thread runtime makes the burst land between two polls.
#[tokio::test(flavor = "current_thread")]
async fn a_lagging_subscriber_is_cut_off_and_replayed_without_loss() {
    let server =
        server(SseLayer::new("/events").hub(&Hub::builder().max_lag(10).history(1000).build()))
            .await;
    let url = server.url("/events");
    let mut count = server.publisher.watch_subscribers();
    let mut sub = Subscriber::connect(&url).await;
    // The stream's first block sets the id it starts after.
    let burst: Vec<_> = (0..100)
        .map(|i| publish(&server.publisher, None, &format!("burst {i}")))
        .collect();
    assert!(
        sub.next().await.is_none(),
        "cut off: 100 unread > max_lag 10"
    );
    within(
        "the cut-off subscriber to leave",
        count.wait_for(|n| *n == 0),
    )
    .await
    .unwrap();
    let mut received = Vec::new();
    while received.len() < burst.len() {
        let mut sub2 = Subscriber::resume(&url, sub.last_event_id().as_deref()).await;
        received.extend(seen(&sub2.take(burst.len() - received.len()).await));
        sub = sub2;
    }
    assert_eq!(received, burst);
}

/// Resume while events are published continuously from another thread:
/// over many reconnects (deliberate ones, and cut-offs when the reader falls
/// behind the publisher), the ids received are exactly the ids published to
/// the followed topics, in order, with no duplicate and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_while_publishing_continuously_loses_and_repeats_nothing() {
    for _ in 0..10 {
        resume_race().await;
    }
}

async fn resume_race() {
    const TARGET: usize = 6000;
    let server = server(
        SseLayer::new("/events").hub(&Hub::builder().history(1_000_000).max_lag(256).build()),
    )
    .await;
    let url = server.url("/events?topic=a&topic=b");
    let published = Arc::new(Mutex::new(Vec::<(u64, &'static str)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (p, published, stop) = (server.publisher.clone(), published.clone(), stop.clone());
        std::thread::spawn(move || {
            let topics = ["a", "b", "c", ""];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && i < 500_000 {
                let topic = topics[i % topics.len()];
                let event = data(&format!("{i}"));
                let id = if topic.is_empty() {
                    p.publish(event)
                } else {
                    p.publish_to(topic, event)
                };
                published
                    .lock()
                    .unwrap()
                    .push((id.unwrap().id().unwrap().as_u64(), topic));
                i += 1;
                if i.is_multiple_of(16) {
                    std::thread::yield_now();
                }
            }
        })
    };

    let mut received: Vec<u64> = Vec::new();
    let mut sub = Subscriber::connect(&url).await;
    // The id the first stream starts after (its first block, even when the
    // stream is cut off before any event).
    let mut start: Option<u64> = None;
    let (mut reconnects, mut cut_offs) = (0, 0);
    while received.len() < TARGET {
        let n = 1 + (reconnects * 37) % 300;
        for _ in 0..n {
            match sub.next().await {
                Some(event) => {
                    assert_ne!(event.event, "reset", "the history covers every gap here");
                    received.push(event.id.parse().unwrap());
                }
                None => {
                    cut_offs += 1;
                    break;
                }
            }
        }
        if reconnects == 0 {
            start = Some(
                sub.start_id()
                    .expect("a new stream starts with its id")
                    .parse()
                    .unwrap(),
            );
        }
        let last = sub.last_event_id();
        drop(sub);
        sub = Subscriber::resume(&url, last.as_deref()).await;
        reconnects += 1;
    }
    let start = start.unwrap();
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();

    let expected: Vec<u64> = published
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, topic)| *id > start && *topic != "c")
        .map(|(id, _)| *id)
        .take(received.len())
        .collect();
    assert!(reconnects >= 20, "{reconnects} reconnects");
    assert_eq!(received.len(), expected.len());
    if let Some(i) = (0..received.len()).find(|&i| received[i] != expected[i]) {
        panic!(
            "first difference at {i} (of {}; {reconnects} reconnects, {cut_offs} cut-offs): \
             received {:?}, published {:?}",
            received.len(),
            &received[i.saturating_sub(2)..(i + 3).min(received.len())],
            &expected[i.saturating_sub(2)..(i + 3).min(expected.len())],
        );
    }
    eprintln!(
        "{} events, {reconnects} reconnects, {cut_offs} cut-offs",
        received.len()
    );
}

fn user_cookie(parts: &Parts) -> Option<String> {
    let cookies = parts.headers.get(COOKIE)?.to_str().ok()?;
    cookies
        .split("; ")
        .find_map(|kv| kv.strip_prefix("user="))
        .map(str::to_owned)
}

fn authorized_layer() -> SseLayer {
    SseLayer::new("/events").authorize(|parts: Parts| async move {
        match user_cookie(&parts).as_deref() {
            Some("panic") => panic!("the hook failed"),
            Some(user) => Ok(Access::none()
                .allow_prefix("room/")
                .follow(format!("user/{user}"))),
            None => Err(Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body("sign in first\n".to_owned())
                .unwrap()),
        }
    })
}

#[tokio::test]
async fn authorization_grants_private_topics_and_refuses_others() {
    let server = server(authorized_layer()).await;
    let p = &server.publisher;
    let get = |query: &str, user: Option<&str>| {
        let mut request = client().get(server.url(&format!("/events{query}")));
        if let Some(user) = user {
            request = request.header(COOKIE, format!("theme=dark; user={user}"));
        }
        request
    };

    let response = get("", None).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.unwrap(), "sign in first\n");

    let response = get("?topic=user/bob", Some("alice")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("user/bob"));

    // Alice follows her private topic without asking, and the room she asks for.
    let mut alice = Subscriber::connect_with(get("?topic=room/general", Some("alice"))).await;
    publish(p, Some("user/bob"), "for bob");
    let expected = vec![
        publish(p, Some("user/alice"), "for alice"),
        publish(p, Some("room/general"), "for the room"),
    ];
    assert_eq!(seen(&alice.take(2).await), expected);

    // A panicking hook fails that request only.
    let response = get("", Some("panic")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let response = get("", Some("carol")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn past_the_subscriber_limit_streams_get_503_with_retry_after() {
    let server =
        server(SseLayer::new("/events").hub(&Hub::builder().max_subscribers(2).build())).await;
    let url = server.url("/events");
    let _a = Subscriber::connect(&url).await;
    let b = Subscriber::connect(&url).await;
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(response.text().await.unwrap().contains("too many"));

    let mut count = server.publisher.watch_subscribers();
    drop(b);
    within("a stream to close", count.wait_for(|n| *n < 2))
        .await
        .unwrap();
    let _c = Subscriber::connect(&url).await;
}
