//! A hung engine costs at most the backlog bound: what waits for it is
//! bounded by bytes, and past the bound `publish` is refused with
//! `Error::Backlog`. Alone in its test binary, so that the process's RSS is
//! this test's. Run with `cargo test --features testing --test backlog`.

use futures_util::StreamExt;
use std::time::Duration;
use tower_sse::{testing::MemoryBackplane, Error, Event, Hub};

const TIMEOUT: Duration = Duration::from_secs(10);
const MIB: usize = 1024 * 1024;

/// The process's resident set, in bytes (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's resident field");
    pages * 4096
}

#[tokio::test]
async fn a_hung_engine_holds_at_most_the_backlog_bound_then_delivers_what_it_accepted() {
    let engine = MemoryBackplane::new();
    let bound = 16 * MIB;
    let hub = Hub::builder()
        .history(64)
        .backplane_backlog(bound)
        .backplane(engine.clone())
        .build();
    let publisher = hub.publisher();
    let mut stream = publisher.subscribe().records().await.unwrap();
    tokio::time::timeout(
        TIMEOUT,
        publisher.publish(Event::default().data("up")).unwrap(),
    )
    .await
    .expect("the engine to take the first event")
    .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().data(), "up");

    engine.hang_appends(true);
    let data = "x".repeat(256 * 1024);
    let before = rss();
    // Fire and forget, as the app did, until 50 were refused past
    // the bound (each 256 KB event costs milliseconds to check in a debug
    // build: 4,000 would take minutes).
    let (mut accepted, mut refused, mut peak) = (0usize, 0usize, 0usize);
    let mut last_refusal = None;
    while refused < 50 && accepted < 4000 {
        match publisher.publish(Event::default().data(&data)) {
            Ok(published) => {
                accepted += 1;
                drop(published);
            }
            Err(e @ Error::Backlog { .. }) => {
                refused += 1;
                last_refusal = Some(e);
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
        peak = peak.max(rss().saturating_sub(before));
    }
    let Some(Error::Backlog {
        events,
        bytes,
        limit,
    }) = &last_refusal
    else {
        panic!("never refused: {accepted} accepted");
    };
    eprintln!(
        "accepted {accepted}, refused {refused}; waiting: {events} events, {bytes} bytes \
         (bound {limit}); RSS peak growth {} KiB",
        peak / 1024
    );
    assert_eq!(*limit, bound);
    assert!(
        *bytes <= bound,
        "{bytes} bytes wait, over the bound {bound}"
    );
    assert_eq!(*events, accepted, "everything accepted still waits");
    assert!(accepted * data.len() <= bound, "{accepted} events accepted");
    assert!(
        accepted * (data.len() + 1024) > bound - data.len() - 1024,
        "the bound is used, not refused early: {accepted} accepted"
    );
    let message = last_refusal.as_ref().unwrap().to_string();
    assert!(
        message.contains("not keeping up") && message.contains("backplane_backlog"),
        "{message}"
    );
    // The target: RSS grows by at most the bound plus 10%.
    assert!(
        peak <= bound + bound / 10,
        "RSS grew by {} KiB for a bound of {} KiB",
        peak / 1024,
        bound / 1024
    );

    // Back: every accepted event reaches the stream, in order, and
    // publishing is accepted again.
    engine.hang_appends(false);
    tokio::time::timeout(TIMEOUT, async {
        for _ in 0..accepted {
            let record = stream.next().await.unwrap().unwrap();
            assert_eq!(record.data().len(), data.len());
        }
    })
    .await
    .expect("the accepted events after the engine came back");
    let after = tokio::time::timeout(
        TIMEOUT,
        publisher.publish(Event::default().data("after")).unwrap(),
    )
    .await
    .expect("the engine to take an event after it came back")
    .unwrap();
    let record = stream.next().await.unwrap().unwrap();
    assert_eq!((record.id(), record.data()), (after, "after"));
}
