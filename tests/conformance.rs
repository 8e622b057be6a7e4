//! The engine conformance suite (`tower_sse::testing`) against the
//! in-memory engine, the reference implementation of the contract. The
//! Redis engine runs the same suite in `tests/redis.rs`.

use tower_sse::testing::{Harness, MemoryBackplane};

#[derive(Default)]
struct Memory(MemoryBackplane);

impl Harness for Memory {
    type Backplane = MemoryBackplane;

    async fn connect(&self) -> MemoryBackplane {
        self.0.clone()
    }

    async fn stop(&self) {
        self.0.set_down(true);
    }

    async fn start(&self, keep_data: bool) {
        if !keep_data {
            self.0.lose_data();
        }
        self.0.set_down(false);
    }
}

async fn memory() -> Memory {
    Memory::default()
}

tower_sse::backplane_conformance!(memory);

/// A reader that fell behind while the log was trimmed past it finds the
/// gap on its next read: its streams end, and resuming from before the gap
/// is a reset — never a silent hole.
#[tokio::test]
async fn a_reader_the_log_was_trimmed_past_resets() {
    use futures_util::StreamExt;
    use std::time::Duration;
    use tower_sse::{Event, Hub};

    let within = |what: &'static str| {
        move |r: Result<_, tokio::time::error::Elapsed>| {
            r.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        }
    };
    let wait = Duration::from_secs(10);
    let engine = MemoryBackplane::new();
    let hub = |engine: &MemoryBackplane| {
        Hub::builder()
            .history(2)
            .max_lag(2)
            .backplane(engine.clone())
            .build()
            .publisher()
    };
    let (a, b) = (hub(&engine), hub(&engine));
    let mut on_b = b.subscribe().records().await.unwrap();
    let first = a
        .publish(Event::default().data("read"))
        .unwrap()
        .await
        .unwrap();
    let read = within("the first event")(tokio::time::timeout(wait, on_b.next()).await);
    assert_eq!(read.unwrap().unwrap().id(), first);

    engine.stall_readers(true);
    for i in 0..20 {
        a.publish(Event::default().data(format!("missed {i}")))
            .unwrap()
            .await
            .unwrap();
    }
    // The engine keeps eight topics' worth of the largest count (here 2).
    assert_eq!(engine.len(), 16, "trimmed to the retention");
    engine.stall_readers(false);
    let end = within("B's stream to end")(tokio::time::timeout(wait, on_b.next()).await);
    assert!(end.is_none(), "the gap ends the stream: {end:?}");
    let resumed = b
        .subscribe()
        .after(first.to_string())
        .records()
        .await
        .unwrap();
    assert!(resumed.is_reset());
}

/// A fire-and-forget event (its `Published` dropped) that the engine never
/// takes reaches nobody: the streams of its topic on this instance end, and
/// resuming from before it is a reset — never a silent loss.
#[tokio::test]
async fn a_lost_fire_and_forget_event_resets_its_topics_streams() {
    use futures_util::StreamExt;
    use std::time::Duration;
    use tower_sse::{Event, Hub};

    let wait = Duration::from_secs(10);
    let engine = MemoryBackplane::new();
    let publisher = Hub::builder().backplane(engine.clone()).build().publisher();
    tokio::time::timeout(wait, publisher.watch_backplane().wait_for(|s| s.is_up()))
        .await
        .expect("the engine read")
        .expect("the hub is open");
    let mut on_t = publisher.subscribe().topic("t").records().await.unwrap();
    let mut elsewhere = publisher.subscribe().topic("u").records().await.unwrap();
    let first = publisher
        .publish_to("t", Event::default().data("read"))
        .unwrap()
        .await
        .unwrap();
    let read = tokio::time::timeout(wait, on_t.next())
        .await
        .expect("the first event");
    assert_eq!(read.unwrap().unwrap().id(), first);

    // Taken by the hub, then the engine fails the append; nobody awaits it.
    engine.hang_appends(true);
    drop(
        publisher
            .publish_to("t", Event::default().data("lost"))
            .unwrap(),
    );
    engine.set_down(true);
    engine.hang_appends(false);

    let end = tokio::time::timeout(wait, on_t.next())
        .await
        .expect("t's stream to end");
    assert!(
        end.is_none(),
        "the stream of the lost event's topic ends: {end:?}"
    );
    engine.set_down(false);
    tokio::time::timeout(wait, publisher.watch_backplane().wait_for(|s| s.is_up()))
        .await
        .expect("the engine back")
        .expect("the hub is open");
    let resumed = publisher
        .subscribe()
        .topic("t")
        .after(first.to_string())
        .records()
        .await
        .unwrap();
    assert!(
        resumed.is_reset(),
        "resuming from before the lost event is a reset"
    );
    // Another topic's stream goes on.
    let other = publisher
        .publish_to("u", Event::default().data("still here"))
        .unwrap()
        .await
        .unwrap();
    let next = tokio::time::timeout(wait, elsewhere.next())
        .await
        .expect("u's event");
    assert_eq!(next.unwrap().unwrap().id(), other);
}
