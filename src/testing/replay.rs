//! The conformance cases of an engine's history per topic: a fresh instance
//! replays from the engine what its memory never held, a resume older than
//! the engine keeps is a reset, and a history read beyond memory comes from
//! the engine.

use super::{flood, item, next, publish_to, within, Harness};
use crate::{
    event::{Event, EventId},
    hub::Hub,
    publisher::Publisher,
    recent::HistoryQuery,
};

/// What every instance of these cases keeps: 50 events a topic, and at
/// most 50 unread (so the engine keeps 50 events of each topic, and its
/// shared log 400).
const KEPT: usize = 50;

/// One instance of an app kept as [`KEPT`] says; every instance of a case
/// is built the same (an engine may refuse instances that disagree).
async fn instance<H: Harness>(harness: &H) -> Publisher {
    let publisher = Hub::builder()
        .history(KEPT)
        .max_lag(KEPT)
        .backplane(harness.connect().await)
        .build()
        .publisher();
    within(
        "the instance to read the engine's log",
        publisher.watch_backplane().wait_for(|s| s.is_up()),
    )
    .await
    .expect("the hub is open");
    publisher
}

/// A client saw the first of a quiet topic's events on one instance; the
/// others followed, then a flood on a busy topic pushed them out of what a
/// starting instance loads. A fresh instance (new hub, empty memory) on
/// the same engine replays every missed event from the engine, in order,
/// then the live ones: no gap, no duplicate.
pub async fn replay_from_the_engine_after_a_restart<H: Harness>(harness: &H) {
    let a = instance(harness).await;
    let seen = publish_to(&a, Some("user/quiet"), Event::default().data("q0")).await;
    let mut missed = Vec::new();
    for i in 1..20 {
        let data = format!("q{i}");
        missed.push(publish_to(&a, Some("user/quiet"), Event::default().data(data)).await);
    }
    flood(&a, "room/busy", 20 * KEPT).await;

    let b = instance(harness).await;
    let mut resumed = b
        .subscribe()
        .topic("user/quiet")
        .after(seen.to_string())
        .records()
        .await
        .expect("resume on the fresh instance");
    assert!(
        !resumed.is_reset(),
        "conformance: the engine holds the quiet topic's events; the resume is a reset"
    );
    for (i, id) in missed.iter().enumerate() {
        let record = next(&mut resumed, "a missed event, from the engine").await;
        assert_eq!(
            (record.id(), record.data()),
            (*id, &*format!("q{}", i + 1)),
            "conformance: the replay from the engine is not the missed events in order"
        );
    }
    let live = publish_to(&a, Some("user/quiet"), Event::default().data("live")).await;
    let record = next(&mut resumed, "the live event after the replay").await;
    assert_eq!(
        (record.id(), record.data()),
        (live, "live"),
        "conformance: a gap or a duplicate between the replay and live events"
    );
}

/// A resume point older than the engine keeps of its topic (more events
/// followed it than a topic keeps) gets the reset on a fresh instance,
/// never a silent gap.
pub async fn a_resume_older_than_the_engine_keeps_is_a_reset<H: Harness>(harness: &H) {
    let a = instance(harness).await;
    let seen = publish_to(&a, Some("user/chatty"), Event::default().data("seen")).await;
    flood(&a, "user/chatty", 3 * KEPT).await;
    let b = instance(harness).await;
    let resumed = b
        .subscribe()
        .topic("user/chatty")
        .after(seen.to_string())
        .records()
        .await
        .expect("resume on the fresh instance");
    assert!(
        resumed.is_reset(),
        "conformance: a resume point the engine trimmed past must be a reset"
    );
    let page = b
        .history_of("user/chatty", HistoryQuery::since(seen.to_string()))
        .await
        .expect("a history read");
    assert!(
        page.reset,
        "conformance: a history read past the trim must say so"
    );
}

/// A history read a fresh instance's memory does not cover comes from the
/// engine: the events after an id, and the newest few, capped and clipped
/// as from memory.
pub async fn a_history_read_beyond_memory_comes_from_the_engine<H: Harness>(harness: &H) {
    let a = instance(harness).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let data = format!("n{i}");
        ids.push(publish_to(&a, Some("orders/7"), Event::default().data(data)).await);
    }
    flood(&a, "room/busy", 20 * KEPT).await;
    let b = instance(harness).await;
    let since = b
        .history_of("orders/7", HistoryQuery::since(ids[2].to_string()))
        .await
        .expect("a history read");
    let got: Vec<EventId> = since.events.iter().map(|r| r.id()).collect();
    assert_eq!(
        (got.as_slice(), since.reset, since.clipped),
        (&ids[3..], false, false),
        "conformance: the events after an id, from the engine"
    );
    let clipped = b
        .history_of("orders/7", HistoryQuery::since(ids[0].to_string()).limit(4))
        .await
        .expect("a history read");
    let got: Vec<EventId> = clipped.events.iter().map(|r| r.id()).collect();
    assert_eq!((got.as_slice(), clipped.clipped), (&ids[1..5], true));
    let last = b
        .history_of("orders/7", HistoryQuery::last(3))
        .await
        .expect("a history read");
    let got: Vec<&str> = last.events.iter().map(|r| r.data()).collect();
    assert_eq!(
        (got, last.clipped, last.reset),
        (vec!["n7", "n8", "n9"], true, false),
        "conformance: the newest events, from the engine"
    );
    // And a stream of this instance is not disturbed by the reads.
    let mut on_b = b
        .subscribe()
        .topic("orders/7")
        .records()
        .await
        .expect("subscribe on B");
    let live = publish_to(&a, Some("orders/7"), Event::default().data("live")).await;
    let record = within("the live event", item(&mut on_b))
        .await
        .expect("the stream is open")
        .expect("not lagged");
    assert_eq!(record.id(), live);
}
