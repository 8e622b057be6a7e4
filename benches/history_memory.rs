//! What the history costs in memory: 300 events of about 1 MiB published to
//! a default layer (history bounded by 1,024 events and 32 MiB), against the
//! same with no byte budget (bounded by count only, as before there was
//! one), each in a fresh process of its own; resident memory before and
//! after, from `/proc/self/statm`. `cargo bench --bench history_memory`.

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
}
