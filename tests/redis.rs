//! The Redis backplane against a real `redis-server`: each test starts its
//! own on a free loopback port (no persistence) and stops it. Needs only the
//! binary: `apt-get install redis-server` (`.ci/run` installs it if absent).
//! Run with `cargo test --features axum,redis,ws,testing --test redis`.

mod common;
#[path = "faults/redis.rs"]
mod faults;

use axum::Router;
use common::{
    services::{free_port, Scratch, Service},
    within, Server, Subscriber,
};
use std::{
    path::Path,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};
use tower_sse::{Error, Event, Hub, RedisBackplane, SseLayer, RESET_EVENT};

/// A `redis-server` of this test; killed when dropped.
struct Redis {
    service: Service,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_on(free_port(), None)
    }

    /// Starts on `port`, returning once it says it accepts connections;
    /// without persistence, or with an append-only file in `dir` written
    /// before each command is answered (so a kill loses nothing acknowledged).
    fn start_on(port: u16, dir: Option<&Path>) -> Redis {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""]);
        match dir {
            None => command.args(["--appendonly", "no"]),
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
        };
        let service = Service::start(
            command,
            "apt-get install redis-server",
            "Ready to accept connections",
        );
        Redis { service, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        self.service.kill();
    }
}

/// One instance of the app: its own server and hub, sharing `key` in Redis.
async fn node(redis: &Redis, key: &str) -> Server {
    let backplane = RedisBackplane::connect(&redis.url())
        .await
        .unwrap()
        .key(key);
    // A thousand test streams from 127.0.0.1: no per-address limit (under
    // `tower_sse::serve` the hub knows the client's address).
    let hub = Hub::builder()
        .history(100)
        .max_streams_per_address(usize::MAX)
        .backplane(backplane)
        .build();
    let layer = SseLayer::new("/events").hub(&hub);
    #[cfg(feature = "ws")]
    let layer = layer.websocket("/ws");
    let publisher = layer.publisher();
    Server::start(Router::new().layer(layer), publisher).await
}

fn key() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "test:{}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Publishes `event` and waits until Redis holds it.
async fn send(publisher: &tower_sse::Publisher, event: Event) -> Result<tower_sse::EventId, Error> {
    publisher.publish(event)?.await
}

/// Sends until Redis takes the event (the publishing connection may need a
/// moment to reconnect after Redis came back).
async fn send_when_up(server: &Server, data: &str) -> tower_sse::EventId {
    within("Redis to take an event", async {
        loop {
            match send(&server.publisher, Event::default().data(data)).await {
                Ok(id) => return id,
                Err(Error::Backplane(_)) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn connect_fails_clearly_when_redis_is_unreachable() {
    let port = free_port();
    let err = RedisBackplane::connect(&format!("redis://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backplane(_)), "{err:?}");
    assert!(err.to_string().contains("backplane"), "{err}");
}

#[tokio::test]
async fn an_event_sent_on_one_node_reaches_both_with_one_id() {
    let redis = Redis::start();
    let key = key();
    let (a, b) = (node(&redis, &key).await, node(&redis, &key).await);
    let mut on_a = Subscriber::connect(&a.url("/events")).await;
    let mut on_b = Subscriber::connect(&b.url("/events")).await;

    let id = send(&a.publisher, Event::default().data("from A"))
        .await
        .unwrap();
    let id_b = send(&b.publisher, Event::default().data("from B"))
        .await
        .unwrap();
    assert!(id_b > id);
    for subscriber in [&mut on_a, &mut on_b] {
        let events = subscriber.take(2).await;
        assert_eq!(events[0].data, "from A");
        assert_eq!(events[0].id, id.to_string());
        assert_eq!(events[1].data, "from B");
        assert_eq!(events[1].id, id_b.to_string());
    }
    // The same call as without a backplane: taken at once, fire and
    // forget; its id comes once Redis holds it, and it reaches B.
    let published = a.publisher.publish(Event::default().data("x")).unwrap();
    assert_eq!(published.id(), None, "the id is Redis's to give");
    drop(published);
    assert_eq!(on_b.take(1).await[0].data, "x");
}

#[tokio::test]
async fn a_browser_that_read_on_a_resumes_exactly_on_b() {
    let redis = Redis::start();
    let key = key();
    let (a, b) = (node(&redis, &key).await, node(&redis, &key).await);
    let mut on_a = Subscriber::connect(&a.url("/events")).await;
    for i in 1..=3 {
        send(&a.publisher, Event::default().data(format!("e{i}")))
            .await
            .unwrap();
    }
    assert_eq!(on_a.next().await.unwrap().data, "e1");
    let last = on_a.last_event_id().unwrap();
    drop(on_a);
    for i in 4..=5 {
        send(&b.publisher, Event::default().data(format!("e{i}")))
            .await
            .unwrap();
    }
    let mut on_b = Subscriber::resume(&b.url("/events"), Some(&last)).await;
    let data: Vec<String> = on_b.take(4).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["e2", "e3", "e4", "e5"]);

    // Straight from A to B with the newest id, which B may not have read yet:
    // B waits for it instead of answering with a reset.
    let mut on_a = Subscriber::connect(&a.url("/events")).await;
    let newest = send(&a.publisher, Event::default().data("e6"))
        .await
        .unwrap();
    assert_eq!(on_a.next().await.unwrap().id, newest.to_string());
    let mut on_b = Subscriber::resume(&b.url("/events"), Some(&newest.to_string())).await;
    send(&b.publisher, Event::default().data("e7"))
        .await
        .unwrap();
    let next = on_b.next().await.unwrap();
    assert_eq!((next.event.as_str(), next.data.as_str()), ("message", "e7"));
}

#[tokio::test]
async fn a_node_that_starts_later_serves_the_history_from_redis() {
    let redis = Redis::start();
    let key = key();
    let a = node(&redis, &key).await;
    let first = send(&a.publisher, Event::default().data("before B"))
        .await
        .unwrap();
    send(&a.publisher, Event::default().data("also before B"))
        .await
        .unwrap();
    let b = node(&redis, &key).await;
    let mut on_b = Subscriber::resume(&b.url("/events"), Some(&first.to_string())).await;
    assert_eq!(on_b.next().await.unwrap().data, "also before B");
    // An id older than the stream's history gets the reset event.
    let mut old = Subscriber::resume(&b.url("/events"), Some("1")).await;
    send(&a.publisher, Event::default().data("live"))
        .await
        .unwrap();
    assert_eq!(old.next().await.unwrap().event, RESET_EVENT);
    assert_eq!(old.next().await.unwrap().data, "live");
}

#[tokio::test]
async fn dropped_redis_connections_are_caught_up_without_a_reset() {
    let redis = Redis::start();
    let key = key();
    let (a, b) = (node(&redis, &key).await, node(&redis, &key).await);
    let mut on_b = Subscriber::connect(&b.url("/events")).await;
    send(&a.publisher, Event::default().data("before"))
        .await
        .unwrap();
    assert_eq!(on_b.next().await.unwrap().data, "before");

    // Every client connection is cut; Redis keeps its data.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .unwrap_or(redis::Value::Nil);

    send_when_up(&a, "after").await;
    let next = on_b.next().await.unwrap();
    assert_eq!(
        (next.event.as_str(), next.data.as_str()),
        ("message", "after")
    );
}

#[tokio::test]
async fn redis_restarting_empty_means_errors_while_down_then_a_reset() {
    let mut redis = Redis::start();
    let key = key();
    let a = node(&redis, &key).await;
    let mut on_a = Subscriber::connect(&a.url("/events")).await;
    send(&a.publisher, Event::default().data("before"))
        .await
        .unwrap();
    assert_eq!(on_a.next().await.unwrap().data, "before");
    let last = on_a.last_event_id().unwrap();

    redis.kill();
    // Never a success for an event that went nowhere.
    let err = send(&a.publisher, Event::default().data("lost"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backplane(_)), "{err:?}");

    let port = redis.port;
    let _redis = Redis::start_on(port, None);
    // The node cannot know what the new, empty Redis lost: it restarts its
    // history and ends the streams; a browser coming back gets the reset.
    assert!(on_a.next().await.is_none(), "the stream ends");
    let mut again = Subscriber::resume(&a.url("/events"), Some(&last)).await;
    send_when_up(&a, "after").await;
    assert_eq!(again.next().await.unwrap().event, RESET_EVENT);
    assert_eq!(again.next().await.unwrap().data, "after");
}

#[tokio::test]
async fn two_nodes_with_a_thousand_subscribers_each_lose_nothing() {
    let redis = Redis::start();
    let key = key();
    let nodes = [node(&redis, &key).await, node(&redis, &key).await];
    let mut readers = Vec::new();
    for node in &nodes {
        for _ in 0..1000 {
            readers.push(Subscriber::connect(&node.url("/events")).await);
        }
    }
    let mut ids = Vec::new();
    for i in 0..20 {
        let node = &nodes[i % 2];
        ids.push(
            send(&node.publisher, Event::default().data(format!("{i}")))
                .await
                .unwrap()
                .to_string(),
        );
    }
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|mut reader| tokio::spawn(async move { reader.take(20).await }))
        .collect();
    for task in tasks {
        let events = within("every event on every subscriber", task)
            .await
            .unwrap();
        let got: Vec<(String, String)> = events.into_iter().map(|e| (e.id, e.data)).collect();
        let want: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn when_a_node_goes_away_its_browsers_resume_on_another() {
    let redis = Redis::start();
    let key = key();
    let (mut a, b) = (node(&redis, &key).await, node(&redis, &key).await);
    let mut on_a = Subscriber::connect(&a.url("/events")).await;
    send(&b.publisher, Event::default().data("one"))
        .await
        .unwrap();
    assert_eq!(on_a.next().await.unwrap().data, "one");
    let last = on_a.last_event_id().unwrap();

    a.shutdown();
    assert!(on_a.next().await.is_none(), "node A's streams end");
    within("node A to stop", &mut a.task)
        .await
        .unwrap()
        .unwrap();
    send(&b.publisher, Event::default().data("two"))
        .await
        .unwrap();
    let mut on_b = Subscriber::resume(&b.url("/events"), Some(&last)).await;
    send(&b.publisher, Event::default().data("three"))
        .await
        .unwrap();
    let data: Vec<String> = on_b.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["two", "three"]);
}

/// The WebSocket path waits for the backplane like the stream path: a client
/// coming from node A with the newest id gets no reset on node B.
#[cfg(feature = "ws")]
#[tokio::test]
async fn a_websocket_client_resumes_on_another_node_without_a_reset() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let redis = Redis::start();
    let key = key();
    let (a, b) = (node(&redis, &key).await, node(&redis, &key).await);
    let newest = send(&a.publisher, Event::default().data("e1"))
        .await
        .unwrap();
    let url = format!("ws://{}/ws?lastEventId={newest}", b.addr);
    let (mut ws, _) = within("the handshake", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    send(&b.publisher, Event::default().data("e2"))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.last().is_none_or(|(kind, _)| kind != "event") {
        let text = match within("a message", ws.next()).await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        kinds.push((
            value["type"].as_str().unwrap().to_owned(),
            value["data"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let want = [("subscribed", ""), ("event", "e2")].map(|(k, d)| (k.to_owned(), d.to_owned()));
    assert_eq!(kinds, want);
}

#[tokio::test]
async fn a_trim_past_a_connected_reader_is_a_reset_not_a_hole() {
    let redis = Redis::start();
    let key = key();
    let (a, b) = (node(&redis, &key).await, node(&redis, &key).await);
    let mut on_b = Subscriber::connect(&b.url("/events")).await;
    send(&a.publisher, Event::default().data("read"))
        .await
        .unwrap();
    assert_eq!(on_b.next().await.unwrap().data, "read");
    let first = on_b.last_event_id().unwrap();

    // Everything B read is trimmed away (as when it falls far behind).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: usize = redis::cmd("XTRIM")
        .arg(&key)
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut admin)
        .await
        .unwrap();
    send(&a.publisher, Event::default().data("after the trim"))
        .await
        .unwrap();
    // B cannot tell what it missed: its stream ends, and resuming from
    // before the trim is a reset.
    assert!(on_b.next().await.is_none());
    let mut resumed = Subscriber::resume(&b.url("/events"), Some(&first)).await;
    assert_eq!(resumed.next().await.unwrap().event, RESET_EVENT);
}

#[tokio::test]
async fn entries_that_are_not_events_are_skipped_and_read_past() {
    let redis = Redis::start();
    let key = key();
    let a = node(&redis, &key).await;
    let mut on_a = Subscriber::connect(&a.url("/events")).await;
    // More foreign entries in a row than one read takes (1,000), then an event
    // written by another program with a plain XADD.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..1500 {
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("topic")
            .arg("not a topic")
            .arg("n")
            .arg(i)
            .ignore();
    }
    pipe.cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("event")
        .arg("from-python")
        .arg("data")
        .arg("written by XADD\nline two");
    let ids: Vec<String> = pipe.query_async(&mut admin).await.unwrap();
    let event = on_a.next().await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("from-python", "written by XADD\nline two")
    );
    let (ms, seq) = ids[0].split_once('-').unwrap();
    let packed = ms.parse::<u64>().unwrap() << 20 | seq.parse::<u64>().unwrap();
    assert_eq!(event.id, packed.to_string(), "the id is the entry's");
}

#[tokio::test]
async fn disconnect_user_through_redis_ends_the_users_streams_on_every_node() {
    use futures_util::StreamExt;
    let redis = Redis::start();
    let key = key();
    let (a, b) = (node(&redis, &key).await, node(&redis, &key).await);
    let open = |user: &'static str| {
        b.publisher
            .subscribe()
            .access(tower_sse::Access::all().user(user))
            .records()
    };
    let (mut ann, mut bob) = (open("ann").await.unwrap(), open("bob").await.unwrap());
    a.publisher.disconnect_user("ann").await.unwrap();
    assert!(within("ann's stream on B to end", ann.next())
        .await
        .is_none());
    let id = send(&a.publisher, Event::default().data("for bob"))
        .await
        .unwrap();
    let got = within("bob's event", bob.next()).await.unwrap().unwrap();
    assert_eq!(got.id(), id, "the order itself is never delivered");
}

/// The engine conformance suite against a `redis-server` of each case's own,
/// with an append-only file so that it can stop and start with its data,
/// or start without it.
struct RedisHarness {
    redis: std::sync::Mutex<Redis>,
    port: u16,
    dir: Scratch,
    key: String,
}

impl tower_sse::testing::Harness for RedisHarness {
    type Backplane = RedisBackplane;

    async fn connect(&self) -> RedisBackplane {
        let url = format!("redis://127.0.0.1:{}/", self.port);
        RedisBackplane::connect(&url).await.unwrap().key(&self.key)
    }

    async fn stop(&self) {
        self.redis.lock().unwrap().kill();
    }

    async fn start(&self, keep_data: bool) {
        if !keep_data {
            std::fs::remove_dir_all(self.dir.path()).unwrap();
            std::fs::create_dir(self.dir.path()).unwrap();
        }
        *self.redis.lock().unwrap() = Redis::start_on(self.port, Some(self.dir.path()));
    }
}

async fn redis_harness() -> RedisHarness {
    let key = key();
    let dir = Scratch::new("redis");
    let port = free_port();
    RedisHarness {
        redis: std::sync::Mutex::new(Redis::start_on(port, Some(dir.path()))),
        port,
        dir,
        key,
    }
}

tower_sse::backplane_conformance!(redis_harness);
