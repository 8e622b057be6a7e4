//! A loom model of the hub's races: publishing (the state lock, the ring's
//! write lock, the `published` mark, the wake), subscribing (registering a
//! cursor under the state lock), eviction (the byte budget and the lag
//! bound dropping what a cursor has not read) and the cursor's read under
//! the rings' read locks. It drives the real `Core` and `Subscription`: the
//! hub's locks and atomics are loom's under `--cfg loom` (`crate::sync`),
//! so loom runs every interleaving of them, up to its preemption bound.
//!
//! ```text
//! LOOM_MAX_PREEMPTIONS=2 cargo rustc --release --lib --profile bench -- --cfg loom
//! # then run the test binary it built with `hub::loom_model`; .ci/run does both
//! ```
//!
//! What it proves, for every interleaving explored: no record is offered
//! twice or out of id order to a cursor; each id carries the event that
//! was published under it; a record that left the history before the cursor
//! read it is a `Lagged` (the stream ends and resumes into a `reset`),
//! never another record read in its place; a subscriber registered during a
//! publish gets the event or starts after its id, and its wake-up is never
//! lost (a lost one leaves the reader parked for good, which loom reports as
//! a deadlock).

use loom::{future::block_on, thread};
use std::{future::poll_fn, sync::Arc, task::Poll};

use super::{
    seats::Owner,
    settings::Settings,
    start::{Resume, StartKind},
    state::Core,
    subscription::{Lagged, Subscription},
};
use crate::{event::Event, record::Message};

/// Runs `f` under loom, with at most two preemptions per execution unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise (more takes hours, not a minute).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}

/// A hub numbering its events 1, 2, 3… (as under an engine), so that every
/// thread knows the ids before they exist.
fn core(history: usize, max_lag: usize, history_bytes: usize) -> Arc<Core> {
    let mut settings = Settings {
        max_lag,
        history_bytes,
        ..Settings::default()
    };
    settings.rules.default.events = history;
    Core::new(settings, true)
}

/// Publishes to `topic` (`None`: the default topic, which every reader
/// follows).
fn publish(core: &Core, topic: Option<&str>, data: &str) -> u64 {
    let message = Message::new(topic, Event::default().data(data)).unwrap();
    core.publish(message).unwrap().as_u64()
}

fn open(core: &Arc<Core>, topics: &[&str], resume: Resume) -> Subscription {
    Subscription::open(core, topics, &resume, Owner::default()).unwrap()
}

/// What a reader got: (id, data) in the order offered.
type Got = Vec<(u64, String)>;

/// Reads as a stream does (register the waker, then read) until `done`
/// says it has all, or the read lags; parks in between, so a wake-up the
/// publisher loses leaves it parked for good.
fn read_until(
    sub: &mut Subscription,
    got: &mut Got,
    done: impl Fn(&Got) -> bool,
) -> Result<(), Lagged> {
    block_on(poll_fn(|cx| {
        assert_eq!(sub.poll_ended(cx), None, "nothing ends this subscription");
        sub.read(|r| {
            got.push((r.id().as_u64(), r.data().to_owned()));
            true
        })?;
        if done(got) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }))
}

/// Every id offered is above the one before, and carries its own event.
fn in_order_and_true(got: &Got, event: impl Fn(u64) -> String) {
    for pair in got.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "offered out of order or twice: {got:?}"
        );
    }
    for (id, data) in got {
        assert_eq!(*data, event(*id), "id {id} read as another event: {got:?}");
    }
}

/// A subscriber registers while two events are published: it gets exactly
/// those after the id it starts from, in order, and is woken for them.
#[test]
fn a_subscriber_registered_during_a_publish_sees_it_or_starts_after_it() {
    model(|| {
        let core = core(16, 16, usize::MAX);
        let publisher = {
            let core = core.clone();
            thread::spawn(move || {
                assert_eq!(publish(&core, Some("a"), "e1"), 1);
                assert_eq!(publish(&core, Some("a"), "e2"), 2);
            })
        };
        let mut sub = open(&core, &["a"], Resume::Live);
        let start = sub.start();
        assert_eq!(start.kind, StartKind::Live);
        let mut got = Got::new();
        read_until(&mut sub, &mut got, |got| {
            start.after >= 2 || got.last().is_some_and(|(id, _)| *id == 2)
        })
        .expect("no lag within the bound");
        publisher.join().unwrap();
        let expected: Got = (start.after + 1..=2)
            .map(|id| (id, format!("e{id}")))
            .collect();
        assert_eq!(got, expected, "started after {}", start.after);
    });
}

/// Two topics published from two threads, one subscriber of both: the
/// merge offers them in id order, none twice, none missed.
#[test]
fn a_reader_of_two_topics_gets_both_in_id_order() {
    model(|| {
        let core = core(16, 16, usize::MAX);
        let mut sub = open(&core, &["a", "b"], Resume::Live);
        let after = sub.start().after;
        let publishers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|topic| {
                let core = core.clone();
                thread::spawn(move || (publish(&core, Some(topic), topic), topic))
            })
            .collect();
        let mut got = Got::new();
        read_until(&mut sub, &mut got, |got| got.len() == 2).expect("no lag within the bound");
        let mut published: Vec<(u64, &str)> =
            publishers.into_iter().map(|p| p.join().unwrap()).collect();
        published.sort();
        assert_eq!(after, 0);
        let expected: Got = published
            .into_iter()
            .map(|(id, t)| (id, t.to_owned()))
            .collect();
        assert_eq!(got, expected);
    });
}

/// The byte budget keeps only the newest event while a reader reads: what
/// it reads is true and in order, an event that left before it read it is
/// a `Lagged`, and resuming from its last id then starts with a reset
/// (the gap told), never with a wrong event.
#[test]
fn an_evicted_position_is_a_gap_told_never_a_wrong_event() {
    evicted_reads(16, 16, 1);
}

/// The same, where the lag bound (one event) is what ends the read.
#[test]
fn a_reader_past_the_lag_bound_lags_and_resumes_into_a_reset() {
    evicted_reads(1, 1, usize::MAX);
}

/// On the default topic alone: shedding walks the hub's topics, a set in
/// the random order of its hasher, which loom cannot replay; with one topic
/// the walk is the same in every execution.
fn evicted_reads(history: usize, max_lag: usize, history_bytes: usize) {
    model(move || {
        let core = core(history, max_lag, history_bytes);
        let mut sub = open(&core, &[], Resume::Live);
        let publisher = {
            let core = core.clone();
            thread::spawn(move || {
                for n in 1..=3 {
                    assert_eq!(publish(&core, None, &format!("e{n}")), n);
                }
            })
        };
        let mut got = Got::new();
        let lagged = read_until(&mut sub, &mut got, |got| got.len() == 3).is_err();
        publisher.join().unwrap();
        drop(sub);
        let event = |id| format!("e{id}");
        in_order_and_true(&got, event);
        if !lagged {
            assert_eq!(got.len(), 3);
            return;
        }
        // The stream ended; the client resumes from the last id it got.
        let last = got.last().map_or(0, |(id, _)| *id);
        let mut resumed = open(&core, &[], Resume::After(last.to_string()));
        let start = resumed.start();
        let mut rest = Got::new();
        resumed
            .read(|r| {
                rest.push((r.id().as_u64(), r.data().to_owned()));
                true
            })
            .expect("a resumed reader reads what the history holds");
        in_order_and_true(&rest, event);
        let first = rest.first().map_or(4, |(id, _)| *id);
        if first > last + 1 {
            assert_eq!(
                start.kind,
                StartKind::Reset,
                "ids {last}..{first} missed untold"
            );
        }
        // A reset starts live after the newest id; else the newest is read.
        let newest = rest.last().map_or(start.after, |(id, _)| *id);
        assert_eq!(newest, 3, "{start:?}: read {got:?}, then {rest:?}");
    });
}
