//! A scale run (issue 23): how many idle HTTP/1.1 event streams an instance
//! of `tower_sse::serve` holds in how much memory, and how fast an event
//! reaches all of them; then 100,000 streams over 6 instances sharing a
//! backplane (NATS JetStream, Redis).
//!
//! `cargo bench --bench scale --features axum,serve,redis,nats,ws,postgres`
//! (installs redis-server and nats-server from Debian's packages when
//! missing; the bench starts its own on free ports and stops them).
//!
//! A process may open 20,000 descriptors on the machine this was written
//! for, so every process stays below that: each instance and each load
//! client is a process of its own (this binary re-executed with
//! `SCALE_ROLE=server` or `client`), every client holds at most
//! `SCALE_CLIENT_STREAMS` streams (default 5,000) from a loopback source
//! address of its own (127.0.0.2, 127.0.0.3, …), and every process raises
//! its soft descriptor limit to the hard one.
//!
//! 1. One instance, `SCALE_STREAMS` idle streams (default 19,000): its
//!    memory (RSS and PSS, from `/proc`) before any stream, with all of them
//!    idle, and after the events; then `SCALE_EVENTS` events (default 10),
//!    each published once the one before reached every stream, each carrying
//!    its send time: the delivery time (publish until the last stream has
//!    it), the latency at every stream (p50, p99), the instance's CPU.
//!    Then the same for the hand-rolled axum peer (`axum::serve`, `Sse` over
//!    a `broadcast` receiver), whose latencies the targets compare
//!    with (`SCALE_PEER=0` leaves it out).
//! 2. For each engine of `SCALE_ENGINES` (default `nats,redis`):
//!    `SCALE_INSTANCES` instances (default 6) sharing it, `SCALE_TOTAL`
//!    streams spread evenly over them (default 100,000), the events
//!    published on the first: every stream gets every event. The latency at
//!    the streams on the other instances against that of the single
//!    instance of step 1 (the added cross-node p99), and the instances'
//!    memory in all.
//!
//! Another benchmark on the same machine would skew the figures: before
//! each step of a full-size run (no size variable set) the bench waits
//! while one runs (`pgrep -f deps/fanout-` or `cargo test`), polling every
//! 30 s for up to 20 minutes, then runs anyway and says so.

#[path = "../common/app.rs"]
mod app;
mod client;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/engine.rs"]
mod engine;
mod report;
mod run;
mod server;
#[path = "../common/usage.rs"]
mod usage;

use engine::{Engine, EngineProcess};
use server::Instance;

fn main() {
    match std::env::var("SCALE_ROLE").as_deref() {
        Ok("server") => return server::serve(),
        Ok("client") => return client::run(),
        _ => {}
    }
    let sized = [
        "SCALE_STREAMS",
        "SCALE_TOTAL",
        "SCALE_INSTANCES",
        "SCALE_EVENTS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    let settings = run::Settings {
        events: env_or("SCALE_EVENTS", 10),
        per_client: env_or("SCALE_CLIENT_STREAMS", 5000),
    };
    let n = env_or("SCALE_STREAMS", 19_000);
    let total = env_or("SCALE_TOTAL", 100_000);
    let instances = env_or("SCALE_INSTANCES", 6);
    let engines: Vec<Engine> = std::env::var("SCALE_ENGINES")
        .unwrap_or_else(|_| "nats,redis".into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|name| {
            Engine::ALL
                .into_iter()
                .find(|e| e.short_name() == name)
                .unwrap_or_else(|| panic!("unknown engine {name}"))
        })
        .collect();
    let mut sources = run::Sources::default();
    let mut report = report::Report::default();

    println!(
        "\n== one instance, {n} idle streams, {} events",
        settings.events
    );
    let quiet = if sized { None } else { Some(wait_quiet()) };
    let single = {
        let instance = Instance::start(None);
        run::measure(&[instance], TOWER_SSE, &[n], None, &settings, &mut sources)
    };
    println!("{single}");
    report.single(single, quiet);

    if std::env::var("SCALE_PEER").as_deref() != Ok("0") {
        println!("\n== the axum peer, one instance, {n} idle streams");
        let quiet = if sized { None } else { Some(wait_quiet()) };
        let instance = Instance::axum_peer();
        let peer = run::measure(&[instance], "/sub/all", &[n], None, &settings, &mut sources);
        println!("{peer}");
        report.peer(peer, quiet);
    }

    for engine in engines {
        println!(
            "\n== {instances} instances on {}, {total} streams, {} events",
            engine.name(),
            settings.events
        );
        let quiet = if sized { None } else { Some(wait_quiet()) };
        let process = EngineProcess::start(engine);
        // One after the other: `start` returns once the instance reads the
        // engine's log. Dropped before the engine.
        let nodes: Vec<Instance> = (0..instances)
            .map(|_| Instance::start(Some((engine, process.url()))))
            .collect();
        let spread: Vec<usize> = (0..instances)
            .map(|i| total / instances + usize::from(i < total % instances))
            .collect();
        let figures = run::measure(
            &nodes,
            TOWER_SSE,
            &spread,
            Some(&process),
            &settings,
            &mut sources,
        );
        drop(nodes);
        println!("{figures}");
        report.cross(engine, figures, quiet);
    }
    report.finish();
}

/// Where a tower-sse stream is served (`common/app.rs`).
const TOWER_SSE: &str = "/events?topic=all";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits while another benchmark or a test run uses the machine, polling
/// every 30 s for up to 20 minutes: what happened, for the report.
fn wait_quiet() -> String {
    let busy = || {
        ["deps/fanout-", "cargo test"].iter().any(|pattern| {
            std::process::Command::new("pgrep")
                .args(["-f", pattern])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        })
    };
    let start = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(20 * 60);
    while busy() {
        if start.elapsed() >= limit {
            let note = "ran while another benchmark or test run was on the machine (waited 20 min)";
            println!("  {note}");
            return note.into();
        }
        println!("  another benchmark or test run is on the machine; waiting");
        // The polling interval, not a wait for something to happen.
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
    let waited = start.elapsed().as_secs() / 60;
    if waited == 0 {
        "the machine was otherwise quiet".into()
    } else {
        format!("ran after waiting {waited} min for another benchmark to finish")
    }
}
