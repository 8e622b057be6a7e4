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
