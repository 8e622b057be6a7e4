//! Testing engines and apps (feature `testing`): the conformance suite every
//! [`Backplane`] runs, and [`MemoryBackplane`], an in-memory engine.
//!
//! An engine proves it keeps the [contract](crate::backplane) by running the
//! suite against a real server: implement [`Harness`] (how to connect an
//! instance, and how to take the engine down and bring it back), then
//! generate one test per case with [`backplane_conformance!`](crate::backplane_conformance):
//!
//! ```
//! use tower_sse::testing::{Harness, MemoryBackplane};
//!
//! #[derive(Default)]
//! struct Memory(MemoryBackplane);
//!
//! impl Harness for Memory {
//!     type Backplane = MemoryBackplane;
//!     async fn connect(&self) -> MemoryBackplane {
//!         self.0.clone()
//!     }
//!     async fn stop(&self) {
//!         self.0.set_down(true);
//!     }
//!     async fn start(&self, keep_data: bool) {
//!         if !keep_data {
//!             self.0.lose_data();
//!         }
//!         self.0.set_down(false);
//!     }
//! }
//!
//! async fn memory() -> Memory {
//!     Memory::default()
//! }
//!
//! // In a test file (needs `tokio` with `macros` and `rt`):
//! // tower_sse::backplane_conformance!(memory);
//! ```
//!
//! Each case drives real hubs (one per "instance", each built with its own
//! [`Harness::connect`]) through [`Publisher`] and [`RecordStream`], with a
//! timeout on every wait: a case that hangs fails.
//!
//! [`Backplane`]: crate::backplane::Backplane
//! [`RecordStream`]: crate::RecordStream

mod memory;
mod replay;
mod trim;

pub use memory::MemoryBackplane;
pub use replay::{
    a_history_read_beyond_memory_comes_from_the_engine,
    a_resume_older_than_the_engine_keeps_is_a_reset, replay_from_the_engine_after_a_restart,
};
pub use trim::a_trim_past_a_lagging_instance_costs_only_its_topic;

use futures_core::Stream;
use std::{future::Future, pin::Pin, time::Duration};

use crate::{
    backplane::Backplane,
    error::Error,
    event::{Event, EventId},
    hub::Hub,
    published::Published,
    publisher::Publisher,
    record::Record,
    stream::RecordStream,
};

/// Guard on every wait of the suite.
const TIMEOUT: Duration = Duration::from_secs(15);

/// What the conformance suite needs of an engine under test.
pub trait Harness: Send + Sync {
    /// The engine's backplane.
    type Backplane: Backplane;

    /// A backplane connected to the engine, as a new instance of the app
    /// would make (its own connections).
    fn connect(&self) -> impl Future<Output = Self::Backplane> + Send;

    /// Makes the engine unreachable (stops the server), keeping its data.
    fn stop(&self) -> impl Future<Output = ()> + Send;

    /// Brings the engine back: with its data, or (`keep_data` false) having
    /// lost it, as a server restarted without persistence.
    fn start(&self, keep_data: bool) -> impl Future<Output = ()> + Send;
}

/// Generates one `#[tokio::test]` per case of the conformance suite, in a
/// module `conformance`, each with a harness from `$make().await`, where
/// `$make` is an `async fn` of the calling module.
#[macro_export]
macro_rules! backplane_conformance {
    ($make:ident) => {
        mod conformance {
            #[tokio::test]
            async fn one_order_on_every_instance() {
                $crate::testing::one_order_on_every_instance(&super::$make().await).await
            }
            #[tokio::test]
            async fn resume_on_another_instance() {
                $crate::testing::resume_on_another_instance(&super::$make().await).await
            }
            #[tokio::test]
            async fn app_ids_resume_on_another_instance() {
                $crate::testing::app_ids_resume_on_another_instance(&super::$make().await).await
            }
            #[tokio::test]
            async fn down_is_an_error_and_back_catches_up() {
                $crate::testing::down_is_an_error_and_back_catches_up(&super::$make().await).await
            }
            #[tokio::test]
            async fn a_loss_is_a_reset() {
                $crate::testing::a_loss_is_a_reset(&super::$make().await).await
            }
            #[tokio::test]
            async fn replay_from_the_engine_after_a_restart() {
                $crate::testing::replay_from_the_engine_after_a_restart(&super::$make().await).await
            }
            #[tokio::test]
            async fn a_resume_older_than_the_engine_keeps_is_a_reset() {
                $crate::testing::a_resume_older_than_the_engine_keeps_is_a_reset(
                    &super::$make().await,
                )
                .await
            }
            #[tokio::test]
            async fn a_history_read_beyond_memory_comes_from_the_engine() {
                $crate::testing::a_history_read_beyond_memory_comes_from_the_engine(
                    &super::$make().await,
                )
                .await
            }
            #[tokio::test]
            async fn a_trim_past_a_lagging_instance_costs_only_its_topic() {
                $crate::testing::a_trim_past_a_lagging_instance_costs_only_its_topic(
                    &super::$make().await,
                )
                .await
            }
            #[tokio::test]
            async fn a_flood_elsewhere_keeps_a_quiet_topics_resume() {
                $crate::testing::a_flood_elsewhere_keeps_a_quiet_topics_resume(
                    &super::$make().await,
                )
                .await
            }
        }
    };
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("conformance: timed out waiting for {what}"))
}

/// One instance of an app: a hub on its own connection to the engine.
async fn instance<H: Harness>(harness: &H) -> Publisher {
    Hub::builder()
        .history(100)
        .backplane(harness.connect().await)
        .build()
        .publisher()
}

/// Two instances, A and B, once B reads the engine's log live (a starting
/// instance loads only the newest events of the log, all topics together).
async fn reading_pair<H: Harness>(harness: &H) -> (Publisher, Publisher) {
    let (a, b) = (instance(harness).await, instance(harness).await);
    within(
        "B to read the engine's log",
        b.watch_backplane().wait_for(|status| status.is_up()),
    )
    .await
    .expect("B's hub is open");
    (a, b)
}

/// Publishes until the engine takes the event (an instance that just
/// started, or an engine just back, may refuse at first).
async fn publish(publisher: &Publisher, event: Event) -> EventId {
    publish_to(publisher, None, event).await
}

/// Publishes `count` events to `topic` at once, then awaits them all;
/// returns the last one's id.
async fn flood(publisher: &Publisher, topic: &str, count: usize) -> EventId {
    let ids = flood_ids(publisher, topic, count).await;
    *ids.last().expect("a flood of some events")
}

/// [`flood`], returning every event's id (the `i`th's data is `flood {i}`).
async fn flood_ids(publisher: &Publisher, topic: &str, count: usize) -> Vec<EventId> {
    let sent: Vec<Published> = (0..count)
        .map(|i| {
            publisher
                .publish_to(topic, Event::default().data(format!("flood {i}")))
                .expect("the engine is up")
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    for published in sent {
        ids.push(
            within("the flood to be taken", published)
                .await
                .expect("taken"),
        );
    }
    ids
}

async fn publish_to(publisher: &Publisher, topic: Option<&str>, event: Event) -> EventId {
    within("the engine to take an event", async {
        loop {
            let published = match topic {
                None => publisher.publish(event.clone()),
                Some(topic) => publisher.publish_to(topic, event.clone()),
            };
            match published {
                Ok(published) => match published.await {
                    Ok(id) => return id,
                    Err(Error::Backplane(_) | Error::Backlog { .. }) => {}
                    Err(e) => panic!("conformance: publish failed: {e}"),
                },
                Err(Error::Backplane(_) | Error::Backlog { .. }) => {}
                Err(e) => panic!("conformance: publish refused: {e}"),
            }
            // A retry, bounded by the timeout: the engine decides when it is back.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A stream of `topic` on `publisher`'s hub resuming after `after` (the
/// hub catches up with it first).
async fn resume(publisher: &Publisher, topic: &str, after: EventId) -> RecordStream {
    publisher
        .subscribe()
        .topic(topic)
        .after(after.to_string())
        .records()
        .await
        .expect("subscribe")
}

/// The next item of `stream`.
async fn item(stream: &mut RecordStream) -> Option<Result<Record, crate::Lagged>> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

async fn next(stream: &mut RecordStream, what: &str) -> Record {
    within(what, item(stream))
        .await
        .unwrap_or_else(|| panic!("conformance: the stream ended before {what}"))
        .unwrap_or_else(|e| panic!("conformance: {e} before {what}"))
}

/// Events published on two instances at once reach streams on both, with
/// the same ids (those the publishers were given) in the same strictly
/// increasing order.
pub async fn one_order_on_every_instance<H: Harness>(harness: &H) {
    let (a, b) = (instance(harness).await, instance(harness).await);
    let mut on_a = a.subscribe().records().await.expect("subscribe on A");
    let mut on_b = b.subscribe().records().await.expect("subscribe on B");
    let send = |publisher: Publisher, name: &'static str| async move {
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(publish(&publisher, Event::default().data(format!("{name}{i}"))).await);
        }
        ids
    };
    let (from_a, from_b) = tokio::join!(send(a.clone(), "a"), send(b.clone(), "b"));
    let mut sent: Vec<EventId> = from_a.into_iter().chain(from_b).collect();
    sent.sort();
    for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
        let mut seen = Vec::new();
        for _ in 0..sent.len() {
            seen.push(next(stream, &format!("the 40 events on {name}")).await.id());
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "conformance: ids on {name} not strictly increasing: {seen:?}"
        );
        assert_eq!(
            seen, sent,
            "conformance: {name} saw other ids than were given"
        );
    }
}

/// A flood on a busy topic (more than a whole hub kept before history was
/// per topic) read by an instance does not cost a quiet topic its history
/// there: a client that saw the quiet topic's first event resumes on that
/// instance with the one it missed, not a reset.
pub async fn a_flood_elsewhere_keeps_a_quiet_topics_resume<H: Harness>(harness: &H) {
    let (a, b) = reading_pair(harness).await;
    let seen = publish_to(&a, Some("user/quiet"), Event::default().data("seen")).await;
    let missed = publish_to(&a, Some("user/quiet"), Event::default().data("missed")).await;
    let last = flood(&a, "room/busy", 1_500).await;
    // Resuming from an id B has not read yet waits until it has: B has then
    // read the whole flood.
    let caught_up = resume(&b, "room/busy", last).await;
    assert!(!caught_up.is_reset(), "conformance: B read the flood");
    let mut resumed = resume(&b, "user/quiet", seen).await;
    assert!(
        !resumed.is_reset(),
        "conformance: a flood on another topic cost the quiet topic its history"
    );
    let record = next(&mut resumed, "the missed event").await;
    assert_eq!((record.id(), record.data()), (missed, "missed"));
}

/// A client that read up to an event on one instance resumes on another
/// (started later: it loads the history) with exactly what followed.
pub async fn resume_on_another_instance<H: Harness>(harness: &H) {
    let a = instance(harness).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(&a, Event::default().data(format!("e{i}"))).await);
    }
    let b = instance(harness).await;
    let mut resumed = b
        .subscribe()
        .after(ids[1].to_string())
        .records()
        .await
        .expect("subscribe on B");
    assert!(
        !resumed.is_reset(),
        "conformance: the history covers the resume point"
    );
    for (i, id) in ids.iter().enumerate().skip(2) {
        let record = next(&mut resumed, "the replay").await;
        assert_eq!((record.id(), record.data()), (*id, &*format!("e{i}")));
    }
    let live = publish(&b, Event::default().data("live")).await;
    assert_eq!(next(&mut resumed, "the live event").await.id(), live);
}

/// An id set by the app resumes on another instance too, and every field
/// of an event crosses the engine intact.
pub async fn app_ids_resume_on_another_instance<H: Harness>(harness: &H) {
    let (a, b) = (instance(harness).await, instance(harness).await);
    let event = Event::default()
        .event("paid")
        .id("order-7")
        .retry(Duration::from_millis(1500))
        .comment("a comment")
        .data("line one\nline two");
    let before = publish_to(&a, Some("orders"), Event::default().data("before")).await;
    publish_to(&a, Some("orders"), event).await;
    let after = publish(&a, Event::default().data("after")).await;
    let mut on_b = b
        .subscribe()
        .topic("orders")
        .after("order-7")
        .records()
        .await
        .expect("subscribe on B");
    assert!(!on_b.is_reset(), "conformance: the app's id is known on B");
    assert_eq!(next(&mut on_b, "the event after order-7").await.id(), after);
    let mut all = b
        .subscribe()
        .topic("orders")
        .after(before.to_string())
        .records()
        .await
        .expect("subscribe on B");
    let paid = next(&mut all, "order-7 itself").await;
    let message = paid.message();
    assert_eq!(
        (
            message.topic(),
            message.event(),
            message.data(),
            message.app_id()
        ),
        (
            Some("orders"),
            Some("paid"),
            "line one\nline two",
            Some("order-7")
        )
    );
    assert_eq!(message.retry(), Some(Duration::from_millis(1500)));
    assert_eq!(message.comment(), Some("a comment"));
}

/// While the engine is down, publishing is an error (awaited, within the
/// timeout), never a hang and never a silent loss; streams stay open; once
/// it is back with its data, every event it acknowledged reaches them in
/// order, without a reset.
pub async fn down_is_an_error_and_back_catches_up<H: Harness>(harness: &H) {
    let (a, b) = (instance(harness).await, instance(harness).await);
    let mut on_b = b.subscribe().records().await.expect("subscribe on B");
    let mut acked = vec![publish(&a, Event::default().data("before")).await];
    assert_eq!(next(&mut on_b, "the event before").await.id(), acked[0]);
    harness.stop().await;
    let refused = within("publishing to fail while the engine is down", async {
        loop {
            match a.publish(Event::default().data("during")) {
                Err(e) => return e,
                Ok(published) => match published.await {
                    Ok(id) => acked.push(id),
                    Err(e) => return e,
                },
            }
        }
    })
    .await;
    assert!(
        matches!(refused, Error::Backplane(_)),
        "conformance: publishing while down: {refused:?}"
    );
    assert!(
        std::error::Error::source(&refused).is_some(),
        "conformance: the engine's error is kept as the source"
    );
    harness.start(true).await;
    acked.push(publish(&a, Event::default().data("after")).await);
    for id in &acked[1..] {
        let record = next(&mut on_b, "the acknowledged events after the outage").await;
        assert_eq!(
            record.id(),
            *id,
            "conformance: an acknowledged event was lost"
        );
    }
}

/// When the engine comes back without the events that followed what an
/// instance read, the instance cannot tell what it missed: its streams end,
/// and a client resuming from before the loss gets the reset.
pub async fn a_loss_is_a_reset<H: Harness>(harness: &H) {
    let (a, b) = (instance(harness).await, instance(harness).await);
    let mut on_b = b.subscribe().records().await.expect("subscribe on B");
    let first = publish(&a, Event::default().data("before")).await;
    assert_eq!(next(&mut on_b, "the event before").await.id(), first);
    harness.stop().await;
    harness.start(false).await;
    let after = publish(&a, Event::default().data("after the loss")).await;
    assert!(after > first, "conformance: ids went back after a loss");
    within("B's stream to end after the loss", async {
        while let Some(left) = item(&mut on_b).await {
            assert!(
                left.is_ok_and(|record| record.id() == after),
                "conformance: only the event after the loss may come before the end"
            );
        }
    })
    .await;
    let resumed = b
        .subscribe()
        .after(first.to_string())
        .records()
        .await
        .expect("subscribe on B");
    assert!(
        resumed.is_reset(),
        "conformance: resuming across a loss is a reset"
    );
}
