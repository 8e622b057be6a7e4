//! The contract every engine keeps under every fault of the link between an
//! instance and its engine ([`Proxy`]), checked the same way for each:
//!
//! * `publish` answers within [`PUBLISH_BOUND`]: an error, or an id (the
//!   event is then delivered);
//! * a stream open before the fault gets every event acknowledged meanwhile
//!   (on either instance), in order — or ends, and reconnecting with its
//!   last id gets them or the `reset`; it is never silent;
//! * the app's other routes keep answering (within [`ROUTE_BOUND`]);
//! * once the fault ends, publishing works again within [`RECOVERY`].
#![allow(dead_code)]

use std::time::Duration;

use super::{client, proxy::Proxy, Server, Subscriber};
use tower_sse::{Error, Event, EventId, Publisher, RESET_EVENT};

/// How long a publish may take to answer, whatever the fault: the hub's
/// bound on an append (15 s; the engines' own are shorter: Redis's 2 s
/// response timeout, NATS's 2 s per request sent at most twice,
/// PostgreSQL's 10 s), with room for a loaded machine.
pub const PUBLISH_BOUND: Duration = Duration::from_secs(20);
/// How long the app's other routes may take during a fault.
pub const ROUTE_BOUND: Duration = Duration::from_secs(2);
/// How long after the fault ends publishing may stay refused (the reader's
/// backoff is at most 5 s, plus a reconnect).
pub const RECOVERY: Duration = Duration::from_secs(20);

/// A router with an ordinary route beside the layer, to check that it
/// keeps answering.
pub fn app(layer: tower_sse::SseLayer) -> axum::Router {
    axum::Router::new()
        .route("/ping", axum::routing::get(|| async { "pong" }))
        .layer(layer)
}

/// Publishes `data`, awaited: the answer must come within [`PUBLISH_BOUND`].
async fn publish(publisher: &Publisher, data: &str, what: &str) -> Result<EventId, Error> {
    let answer = async { publisher.publish(Event::default().data(data))?.await };
    tokio::time::timeout(PUBLISH_BOUND, answer)
        .await
        .unwrap_or_else(|_| panic!("{what}: publish did not answer within {PUBLISH_BOUND:?}"))
}

/// The app's other route answers.
async fn ping(server: &Server, what: &str) {
    let answer = tokio::time::timeout(ROUTE_BOUND, client().get(server.url("/ping")).send())
        .await
        .unwrap_or_else(|_| panic!("{what}: /ping did not answer within {ROUTE_BOUND:?}"))
        .unwrap();
    assert_eq!(answer.status(), 200, "{what}: /ping");
}

/// Runs one fault: `through` reaches the engine through `proxy`, `direct`
/// without it. `apply` injects the fault, `heal` ends it.
pub async fn contract(
    what: &str,
    proxy: &Proxy,
    through: &Server,
    direct: &Server,
    apply: impl FnOnce(&Proxy),
    heal: impl FnOnce(&Proxy),
) {
    let mut stream = Subscriber::connect(&through.url("/events")).await;
    let before = publish_when_up(&through.publisher, "before", what).await;
    let first = stream.next().await.expect("the event before the fault");
    assert_eq!(first.id, before.to_string(), "{what}");

    apply(proxy);
    // Acknowledged ids, and what was refused with an error after it may
    // have been sent (not confirmed: the engine may still hold it).
    let (mut acked, mut unconfirmed) = (Vec::new(), Vec::new());
    for i in 0..3 {
        ping(through, what).await;
        let data = format!("through {i}");
        match publish(&through.publisher, &data, what).await {
            Ok(id) => acked.push(id),
            Err(_) => unconfirmed.push(data),
        }
        acked.push(
            publish(&direct.publisher, &format!("direct {i}"), what)
                .await
                .unwrap_or_else(|e| panic!("{what}: the instance beside the fault: {e}")),
        );
    }
    heal(proxy);
    let started = tokio::time::Instant::now();
    let after = tokio::time::timeout(RECOVERY, publish_when_up(&through.publisher, "after", what))
        .await
        .unwrap_or_else(|_| panic!("{what}: publishing did not recover within {RECOVERY:?}"));
    eprintln!(
        "{what}: {} acknowledged and {} refused during the fault, publishing back after {:?}",
        acked.len(),
        unconfirmed.len(),
        started.elapsed()
    );
    acked.push(after);
    acked.sort();

    // Every acknowledged event, once, in order (and perhaps some refused
    // ones, not confirmed), or an end and then the rest or the reset.
    let mut seen = Seen::default();
    let last = loop {
        match tokio::time::timeout(RECOVERY, stream.next_unguarded()).await {
            Err(_) => panic!("{what}: the stream went silent after {seen:?} of {acked:?}"),
            Ok(None) => break stream.last_event_id(),
            Ok(Some(event)) => {
                if seen.add(&event, &acked, &unconfirmed, what) {
                    return;
                }
            }
        }
    };
    let mut again = Subscriber::resume(&through.url("/events"), last.as_deref()).await;
    loop {
        let event = again.next().await.expect("the resumed stream");
        if event.event == RESET_EVENT {
            eprintln!("{what}: the stream ended, and resuming it got the reset");
            return;
        }
        if seen.add(&event, &acked, &unconfirmed, what) {
            return;
        }
    }
}

/// What a stream got so far.
#[derive(Debug, Default)]
struct Seen(Vec<EventId>);

impl Seen {
    /// Takes `event`; whether it is the last one (all acknowledged seen).
    fn add(
        &mut self,
        event: &eventsource_stream::Event,
        acked: &[EventId],
        unconfirmed: &[String],
        what: &str,
    ) -> bool {
        let id = EventId::new(event.id.parse().unwrap());
        assert!(
            self.0.last().is_none_or(|last| *last < id),
            "{what}: {id} after {:?}: repeated or out of order",
            self.0
        );
        assert!(
            acked.contains(&id) || unconfirmed.contains(&event.data),
            "{what}: {event:?} was never published"
        );
        self.0.push(id);
        if event.data != "after" {
            return false;
        }
        let missing: Vec<_> = acked.iter().filter(|id| !self.0.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "{what}: acknowledged, never delivered: {missing:?}"
        );
        true
    }
}

/// Publishes until the engine takes the event.
pub async fn publish_when_up(publisher: &Publisher, data: &str, what: &str) -> EventId {
    loop {
        match publish(publisher, data, what).await {
            Ok(id) => return id,
            Err(Error::Backplane(_) | Error::Backlog { .. }) => {
                // Refused at once while the hub knows the engine is down:
                // wait for the status to change rather than spin.
                let mut status = publisher.watch_backplane();
                if !status.borrow().is_up() {
                    status.wait_for(|s| s.is_up()).await.ok();
                } else {
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// A loopback port whose listener accepts connections (the kernel does)
/// and never says anything: an engine that hangs at the handshake.
pub async fn silent_server() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// `connect` to a silent server fails with `Error::Backplane` within
/// `bound`: never a hang, never a panic.
pub async fn connect_fails_within<T: std::fmt::Debug>(
    what: &str,
    bound: Duration,
    connect: impl std::future::Future<Output = Result<T, Error>>,
) {
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(bound + Duration::from_secs(2), connect)
        .await
        .unwrap_or_else(|_| panic!("{what}: connect hung past {bound:?}"));
    let err = result.expect_err("connect to a silent server");
    assert!(matches!(err, Error::Backplane(_)), "{what}: {err:?}");
    eprintln!("{what}: {err} (after {:?})", started.elapsed());
}

/// A stream on `server` that read `n` events published there: the stream,
/// its `Last-Event-ID`, and the last event's id.
pub async fn stream_that_read(
    what: &str,
    server: &Server,
    n: usize,
) -> (Subscriber, Option<String>, EventId) {
    let mut browser = Subscriber::connect(&server.url("/events")).await;
    let mut last = None;
    for i in 0..n {
        let id = publish_when_up(&server.publisher, &format!("before {i}"), what).await;
        assert_eq!(browser.next().await.unwrap().id, id.to_string(), "{what}");
        last = Some(id);
    }
    let seen = browser.last_event_id();
    (browser, seen, last.expect("at least one event"))
}

/// The engine lost what `browser` (on `server`) read, up to `before`, whose
/// `Last-Event-ID` is `seen`: the next event published ends the stream, not
/// silently skipped; resuming gets the reset and then live events, under
/// ids above every one read.
pub async fn a_loss_is_a_reset_then_live(
    what: &str,
    server: &Server,
    browser: &mut Subscriber,
    seen: Option<String>,
    before: EventId,
) {
    // Taken (maybe under an id below what was read, lost with the reset),
    // or refused until the engine is back.
    let after = publish_when_up(&server.publisher, "after", what).await;
    let mut resumed = match browser.next().await {
        None => Subscriber::resume(&server.url("/events"), seen.as_deref()).await,
        Some(event) => panic!("{what}: the old stream got {event:?} after the loss"),
    };
    assert_eq!(resumed.next().await.unwrap().event, RESET_EVENT, "{what}");
    let live = publish_when_up(&server.publisher, "live", what).await;
    assert!(live > before, "{what}: ids go on above what was read");
    let mut next = resumed.next().await.unwrap();
    if next.id == after.to_string() {
        next = resumed.next().await.unwrap();
    }
    assert_eq!((next.data.as_str(), next.id), ("live", live.to_string()));
}

/// One test per fault of the proxy, each calling `fault(what, apply,
/// heal)` of the module it is used in, `$engine` naming the engine.
#[allow(unused_macros)] // Used by the engines' test files only.
macro_rules! fault_cases {
    ($engine:literal) => {
        #[tokio::test]
        async fn fault_latency() {
            let latency = Fault::Latency(std::time::Duration::from_millis(300));
            fault(
                concat!($engine, ": latency"),
                |p| p.set(latency),
                |p| p.set(Fault::None),
            )
            .await;
        }

        #[tokio::test]
        async fn fault_stall() {
            fault(
                concat!($engine, ": stall"),
                |p| p.set(Fault::Stall),
                |p| p.set(Fault::None),
            )
            .await;
        }

        #[tokio::test]
        async fn fault_half_open() {
            let (apply, heal) = (
                |p: &Proxy| p.set(Fault::HalfOpen),
                |p: &Proxy| p.set(Fault::None),
            );
            fault(concat!($engine, ": half-open"), apply, heal).await;
        }

        #[tokio::test]
        async fn fault_connections_dropped() {
            fault(
                concat!($engine, ": connections dropped"),
                Proxy::drop_connections,
                |_| {},
            )
            .await;
        }

        #[tokio::test]
        async fn fault_connections_reset() {
            fault(
                concat!($engine, ": connections reset"),
                Proxy::reset_connections,
                |_| {},
            )
            .await;
        }

        #[tokio::test]
        async fn fault_engine_unreachable() {
            let (apply, heal) = (
                |p: &Proxy| p.set(Fault::Refuse),
                |p: &Proxy| p.set(Fault::None),
            );
            fault(concat!($engine, ": unreachable"), apply, heal).await;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use fault_cases;
