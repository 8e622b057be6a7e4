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

/// A client that saw an event on another instance resumes on one whose
/// reader is behind (reconnecting after the engine went away, say). The
/// engine holds that id, so the instance waits for its reader rather than
/// answer with a reset and then hand the client again the events it saw.
/// (Virtual time: the first wait, 2 s, passes while the readers stall.)
#[tokio::test(start_paused = true)]
async fn a_resume_from_an_id_the_instance_has_not_read_waits_for_it_rather_than_repeat() {
    resume_on_an_instance_behind(false).await;
}

/// The same, while the engine cannot be asked whether it holds the id (it
/// is down: the instance's reader is reconnecting too). An unanswered
/// question is no loss: the instance waits for its reader rather than
/// answer with a reset below the client's id.
#[tokio::test(start_paused = true)]
async fn a_resume_while_the_engine_cannot_be_asked_waits_rather_than_repeat() {
    resume_on_an_instance_behind(true).await;
}

/// Instance A publishes while B's reader stalls (and, if `engine_down`,
/// the engine then goes down); a client resumes on B from A's id, waits
/// past the first 2 s (and the 2 s the engine is asked for), then gets no
/// reset and the next event.
async fn resume_on_an_instance_behind(engine_down: bool) {
    use futures_util::StreamExt;
    use std::time::Duration;
    use tower_sse::{Event, Hub};

    let engine = MemoryBackplane::new();
    let hub = || Hub::builder().backplane(engine.clone()).build().publisher();
    let (a, b) = (hub(), hub());
    for hub in [&a, &b] {
        hub.watch_backplane()
            .wait_for(|s| s.is_up())
            .await
            .expect("the hub is open");
    }
    engine.stall_readers(true);
    let seen = a
        .publish(Event::default().data("seen on another instance"))
        .unwrap()
        .await
        .unwrap();
    engine.set_down(engine_down);
    let resume = tokio::spawn({
        let b = b.clone();
        async move { b.subscribe().after(seen.to_string()).records().await }
    });
    // Well within the 15 s an instance then waits.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!resume.is_finished(), "B answered before it read the id");
    engine.stall_readers(false);
    engine.set_down(false);
    let mut resumed = resume.await.unwrap().unwrap();
    assert!(!resumed.is_reset(), "a reset, and the seen event again");
    a.watch_backplane()
        .wait_for(|s| s.is_up())
        .await
        .expect("A is up");
    let next = a
        .publish(Event::default().data("next"))
        .unwrap()
        .await
        .unwrap();
    let record = tokio::time::timeout(Duration::from_secs(10), resumed.next())
        .await
        .expect("the next event")
        .unwrap()
        .unwrap();
    assert_eq!(record.id(), next);
}

/// The engine restarts empty (no event, no newest id: a Redis without
/// persistence, say) while other instances had read further than this one.
/// An id between the last one read here and the first of the new log may
/// have been a lost event another instance delivered: a client resuming
/// from it gets the reset, before the new log's first event and after it,
/// never a resume that silently skips what was lost. (Virtual time.)
#[tokio::test(start_paused = true)]
async fn after_a_traceless_loss_a_resume_from_an_id_between_the_logs_is_a_reset() {
    use futures_util::StreamExt;
    use std::time::Duration;
    use tower_sse::{Event, Hub, Lagged, Record, RecordStream};

    async fn next(live: &mut RecordStream) -> Option<Option<Result<Record, Lagged>>> {
        tokio::time::timeout(Duration::from_secs(30), live.next())
            .await
            .ok()
    }

    let engine = MemoryBackplane::new();
    let hub = Hub::builder().backplane(engine.clone()).build().publisher();
    hub.watch_backplane()
        .wait_for(|s| s.is_up())
        .await
        .expect("the hub is open");
    let mut live = hub.subscribe().records().await.unwrap();
    let read = hub
        .publish(Event::default().data("read here"))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(next(&mut live).await.unwrap().unwrap().unwrap().id(), read);
    engine.lose_data();
    // The reload ends the streams of this instance.
    assert!(
        !matches!(next(&mut live).await.expect("the reload"), Some(Ok(_))),
        "the stream ends at the reload"
    );
    // The id after the last one read here, which the lost log may have
    // held (read by another instance).
    let between = (read.as_u64() + 1).to_string();
    let resumed = hub.subscribe().after(between.clone()).records().await;
    assert!(
        resumed.unwrap().is_reset(),
        "before the new log's first event"
    );
    hub.watch_backplane()
        .wait_for(|s| s.is_up())
        .await
        .expect("the hub is up");
    let mut live = hub.subscribe().records().await.unwrap();
    let first = hub
        .publish(Event::default().data("the new log's first"))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(next(&mut live).await.unwrap().unwrap().unwrap().id(), first);
    let resumed = hub.subscribe().after(between).records().await;
    assert!(
        resumed.unwrap().is_reset(),
        "after the new log's first event"
    );
    let mut from_new = hub
        .subscribe()
        .after(first.to_string())
        .records()
        .await
        .unwrap();
    assert!(!from_new.is_reset(), "an id of the new log resumes");
    let second = hub
        .publish(Event::default().data("second"))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        next(&mut from_new).await.unwrap().unwrap().unwrap().id(),
        second
    );
}
