//! The conformance case of a trim past an instance that lags: the engine
//! keeps each topic by itself, so a flood on one topic trims that topic
//! alone, maybe before a lagging instance read it. The streams of that
//! topic there end or are told (never go on past the hole); every other
//! topic's streams carry on and its resumes work.

use super::{flood_ids, item, next, publish_to, reading_pair, resume, within, Harness};
use crate::{
    event::{Event, EventId},
    publisher::Publisher,
    stream::RecordStream,
};

/// More than an instance of the suite keeps of a topic (1,024, its lag
/// bound): the engine trims the flood's oldest.
const FLOOD: usize = 1_500;

/// Instance A floods `room/busy` while B follows it and `user/quiet`, live:
/// the engine trims the busy topic, maybe past what B has read. B's busy
/// stream delivers the flood without a hole, or ends (or is cut off for
/// lagging) and resuming from the last event it delivered continues
/// without a hole or is a reset. B's quiet stream carries on (the next
/// quiet event reaches it), and a client resuming the quiet topic on B gets
/// what it missed, not a reset.
pub async fn a_trim_past_a_lagging_instance_costs_only_its_topic<H: Harness>(harness: &H) {
    let (a, b) = reading_pair(harness).await;
    let (mut quiet, mut busy) = (live(&b, "user/quiet").await, live(&b, "room/busy").await);
    let seen = publish_to(&a, Some("user/quiet"), Event::default().data("seen")).await;
    assert_eq!(next(&mut quiet, "the quiet event").await.id(), seen);
    let first = publish_to(&a, Some("room/busy"), Event::default().data("first")).await;
    assert_eq!(
        next(&mut busy, "the busy topic's first event").await.id(),
        first
    );

    let flooded = flood_ids(&a, "room/busy", FLOOD).await;
    let last = *flooded.last().expect("a flood");
    // Resuming from an id B has not read yet waits until it has.
    let caught_up = resume(&b, "room/busy", last).await;
    assert!(!caught_up.is_reset(), "conformance: B read the flood");

    // The busy topic: what B's live stream delivered has no hole.
    let delivered = drain(&mut busy, &flooded).await;
    if delivered < FLOOD {
        let from = delivered.checked_sub(1).map_or(first, |i| flooded[i]);
        let mut resumed = resume(&b, "room/busy", from).await;
        if !resumed.is_reset() {
            let rest = drain(&mut resumed, &flooded[delivered..]).await;
            assert_eq!(
                rest,
                FLOOD - delivered,
                "conformance: a resume of the trimmed topic that is no reset replays it all"
            );
        }
        if delivered == 0 {
            assert!(
                resumed.is_reset(),
                "conformance: the engine trimmed the flood's first event: resuming before it is a reset"
            );
        }
    }

    // The quiet topic: its live stream carries on, and its resume works.
    let after = publish_to(&a, Some("user/quiet"), Event::default().data("after")).await;
    let record = next(&mut quiet, "the quiet event after the flood").await;
    assert_eq!(
        (record.id(), record.data()),
        (after, "after"),
        "conformance: the quiet topic's stream carries on past another topic's trim"
    );
    let mut resumed = resume(&b, "user/quiet", seen).await;
    assert!(
        !resumed.is_reset(),
        "conformance: a trim of another topic cost the quiet topic its history"
    );
    assert_eq!(
        next(&mut resumed, "the quiet event missed").await.id(),
        after
    );
}

/// A live stream of `topic` on `publisher`'s hub.
async fn live(publisher: &Publisher, topic: &str) -> RecordStream {
    let stream = publisher.subscribe().topic(topic).records().await;
    stream.expect("subscribe")
}

/// Reads `stream` while it delivers `expected` in order, until it has them
/// all or ends (or is cut off for lagging); returns how many it delivered.
/// Any other event is a hole: the test fails.
async fn drain(stream: &mut RecordStream, expected: &[EventId]) -> usize {
    let mut delivered = 0;
    while delivered < expected.len() {
        match within("the busy topic's stream", item(stream)).await {
            Some(Ok(record)) => {
                assert_eq!(
                    record.id(),
                    expected[delivered],
                    "conformance: a stream of the trimmed topic went on past a hole"
                );
                delivered += 1;
            }
            Some(Err(_)) | None => break,
        }
    }
    delivered
}
