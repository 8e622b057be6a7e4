//! What the history costs in memory, each case in a fresh process of its
//! own, resident memory before and after from `/proc/self/statm`:
//!
//! - 300 events of about 1 MiB published to a default layer (1,024 events a
//!   topic and 32 MiB in all), against the same with no byte budget (bounded
//!   by count only, as before there was one);
//! - 100,000 topics holding one small event each, against 100,000 events of
//!   the same size on one topic: what a topic costs beyond its event.
//!
//! `cargo bench --bench history_memory`.

use std::process::Command;
use tower_sse::{Event, Hub, SseLayer};

const EVENTS: usize = 300;
const SIZE: usize = 1_000_000;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's resident field");
    pages * 4096
}

/// Publishes the events and prints the growth, in bytes.
fn measure(budget: Option<usize>) {
    let hub = match budget {
        Some(bytes) => Hub::builder().history_bytes(bytes).build(),
        None => Hub::new(),
    };
    let layer = SseLayer::new("/events").hub(&hub);
    let publisher = layer.publisher();
    let data = "x".repeat(SIZE);
    let before = resident_bytes();
    for _ in 0..EVENTS {
        publisher
            .publish(Event::default().data(&data))
            .expect("an event under max_event_size");
    }
    let after = resident_bytes();
    let (events, bytes) = publisher.history_size();
    println!("{} {} {}", after.saturating_sub(before), events, bytes);
}

const TOPICS: usize = 100_000;

/// Publishes one 16-byte event to each of `TOPICS` topics (or as many to
/// one topic) and prints the growth, in bytes.
fn measure_topics(spread: bool) {
    let hub = Hub::builder()
        .history(TOPICS)
        .history_bytes(usize::MAX)
        .build();
    let publisher = hub.publisher();
    let names: Vec<String> = (0..TOPICS).map(|i| format!("user/{i:08}")).collect();
    let before = resident_bytes();
    for name in &names {
        let topic = if spread {
            name.as_str()
        } else {
            "user/00000000"
        };
        publisher
            .publish_to(topic, Event::default().data("sixteen bytes!!!"))
            .expect("a small event");
    }
    let after = resident_bytes();
    let (events, bytes) = publisher.history_size();
    println!("{} {} {}", after.saturating_sub(before), events, bytes);
}

fn run(case: &str) -> (usize, usize, usize) {
    let out = Command::new(std::env::current_exe().expect("this bench"))
        .env("HISTORY_MEMORY_CASE", case)
        .output()
        .expect("run a case");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<usize> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    match fields[..] {
        [grown, events, bytes] => (grown, events, bytes),
        _ => panic!("case {case} printed {text:?}"),
    }
}

fn main() {
    match std::env::var("HISTORY_MEMORY_CASE").as_deref() {
        Ok("default") => return measure(None),
        Ok("unbounded") => return measure(Some(usize::MAX)),
        Ok("topics") => return measure_topics(true),
        Ok("one-topic") => return measure_topics(false),
        _ => {}
    }
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let (grown, events, bytes) = run("default");
    let (grown_unbounded, events_unbounded, _) = run("unbounded");
    println!(
        "{EVENTS} events of {SIZE} bytes, each case in a fresh process:\n\
         default (32 MiB budget): RSS +{:.1} MiB, history {events} events, {:.1} MiB counted\n\
         no byte budget (count only): RSS +{:.1} MiB, history {events_unbounded} events\n\
         default / no budget: {:.2}×",
        mib(grown),
        mib(bytes),
        mib(grown_unbounded),
        grown as f64 / grown_unbounded as f64
    );
    let (spread, events, _) = run("topics");
    let (one, events_one, _) = run("one-topic");
    println!(
        "{TOPICS} topics of one 16-byte event each: RSS +{:.1} MiB ({events} events), {} bytes a topic\n\
         {TOPICS} events on one topic: RSS +{:.1} MiB ({events_one} events), {} bytes an event\n\
         a topic beyond its event: {} bytes",
        mib(spread),
        spread / TOPICS,
        mib(one),
        one / TOPICS,
        (spread.saturating_sub(one)) / TOPICS
    );
}
