//! Fan-out comparison, one run, same machine: tower-sse against the
//! hand-rolled axum way (`axum::response::Sse` over `tokio::sync::broadcast`,
//! an `Event` built per subscriber) and Nchan (the nginx pub/sub module).
//!
//! `cargo bench --bench fanout --features axum,serve,redis,ws,postgres,nats`
//! (installs nginx + Nchan, redis-server, PostgreSQL and nats-server from
//! Debian's packages when missing: run as root, or leave them out with
//! `FANOUT_SKIP=nchan,redis,postgres,nats`).
//!
//! Each server runs in its own process(es), so its CPU time and memory are
//! read from `/proc` apart from the load client's (see `server.rs`). The
//! client opens real TCP subscribers (HTTP/1.1 `GET`), waits until each has
//! its response head (every server subscribes before answering), publishes
//! events with `POST` on one keep-alive connection, each carrying its send
//! time, and waits until every subscriber has every event of its topic: a
//! lost event fails the run.
//!
//! Scenarios (`FANOUT_SCENARIOS`, comma-separated, default all):
//! tower-sse runs twice in each fan-out scenario: with `EventSource`-style
//! subscribers (`tower-sse`) and with WebSocket subscribers on `/ws` of the
//! same server (`tower-sse-ws`).
//!
//! - `burst`: 5,000 subscribers × 300 events as fast as the publisher goes,
//!   repeated `FANOUT_REPEAT` times (default 3), servers interleaved; the
//!   ratios are medians of the per-repetition ratios;
//! - `sweep`: the burst at 1,000 and 2,500 subscribers too, for the chart;
//! - `paced`: 10,000 subscribers × 100 events/s for 5 s (saturation on
//!   this machine), `FANOUT_REPEAT` times; idle memory per subscriber is
//!   read here, with all 10,000 connected and nothing sent, and how well
//!   the app's own requests are served meanwhile: the events/s the
//!   publisher got accepted and the p99 of `GET /health`, polled every 10 ms;
//! - `topics`: 1,000 topics × 10 subscribers, 20,000 events round-robin;
//! - `churn`: 50,000 connect/disconnect cycles, 100 at a time;
//! - `cross`: two tower-sse nodes sharing a backplane, once per engine
//!   (Redis, PostgreSQL, NATS JetStream: a server the bench starts on a free
//!   port and stops), 100 subscribers on node B, 3,000 events at 1,000/s
//!   published on node A, each against one node without a backplane
//!   measured just before it; CPU per delivery counts both nodes and the
//!   engine's processes;
//! - `stuck`: 1,000 readers × 300 paced 4 KiB events, with and without 100
//!   clients that never read (tower-sse only);
//! - `coalesce`: 1,000 subscribers (`FANOUT_COALESCE_N`) × 100 events/s
//!   for 5 s, below saturation (where streams batch by themselves), tower-sse with
//!   `SseLayer::coalesce(20 ms)` and without, against axum-broadcast,
//!   `FANOUT_REPEAT` times;
//! - `storm`: 5,000 streams reconnect at once with a `Last-Event-ID` 500
//!   events behind (a deploy, a load balancer's failover), tower-sse and
//!   Nchan (which both replay from a history), `FANOUT_REPEAT` times: time
//!   until every stream has what it missed, CPU, and memory at the peak.
//!
//! `FANOUT_QUICK=1` shrinks every scenario (to check the bench itself).
//! `FANOUT_QUEUE_DEPTH=1` makes the in-process servers print how many tasks
//! wait in tokio's global run queue, each second.
//! A full run (none of the variables above set) rewrites the generated part
//! of `BENCHMARKS.md` and `docs/fanout.svg`.

#[path = "../common/app.rs"]
mod app;
mod client;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/engine.rs"]
mod engine;
mod report;
mod server;
#[path = "../common/usage.rs"]
mod usage;

use client::{Control, Sub, WsSub};

/// A subscriber of either transport.
enum Reader {
    Sse(Sub),
    Ws(Box<WsSub>),
}
use server::{Engine, EngineProcess, Kind, ServerProcess};
use std::time::{Duration, Instant};

fn main() {
    if let Ok(kind) = std::env::var("FANOUT_SERVER") {
        return server::serve(&kind);
    }
    let quick = std::env::var("FANOUT_QUICK").is_ok();
    let scale = |n: usize| if quick { (n / 20).max(2) } else { n };
    let repeat = env_or("FANOUT_REPEAT", if quick { 1 } else { 3 });
    let scenarios = std::env::var("FANOUT_SCENARIOS")
        .unwrap_or_else(|_| "burst,sweep,paced,topics,churn,cross,stuck,coalesce,storm".into());
    let skip = std::env::var("FANOUT_SKIP").unwrap_or_default();
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| !skip.split(',').any(|s| s == k.name()))
        .collect();
    let wants = |name: &str| scenarios.split(',').any(|s| s == name);

    let runtime = common::runtime(2);
    // Only a full run (every scenario, every server, full size) rewrites
    // BENCHMARKS.md and the chart.
    let full = !quick
        && std::env::var_os("FANOUT_SCENARIOS").is_none()
        && std::env::var_os("FANOUT_SKIP").is_none();
    let mut report = report::Report::new(!full);

    if wants("burst") {
        let (n, m) = (scale(5000), 300);
        println!("\n== burst: {n} subscribers × {m} events, {repeat} repetitions");
        // And tower-sse with `coalesce(20 ms)` (issue 23's target).
        let mut kinds = kinds.clone();
        if !skip.split(',').any(|s| s == Kind::TowerSseCoalesce.name()) {
            kinds.push(Kind::TowerSseCoalesce);
        }
        let runs = repeated(repeat, &kinds, |kind| {
            runtime.block_on(run(kind, &Load::burst(n, m)))
        });
        report.burst(n, m, runs);
    }
    if wants("sweep") {
        for n in [scale(1000), scale(2500)] {
            println!("\n== sweep: burst at {n} subscribers × 300 events");
            for &kind in &kinds {
                let figures = runtime.block_on(run(kind, &Load::burst(n, 300)));
                println!("  {figures}");
                report.sweep(n, figures);
            }
        }
    }
    if wants("paced") {
        let n = scale(10_000);
        println!("\n== paced: {n} subscribers × 100 events/s for 5 s, {repeat} repetitions");
        let runs = repeated(repeat, &kinds, |kind| {
            runtime.block_on(run(kind, &Load::paced(n, 500, 100)))
        });
        report.paced(n, runs);
    }
    if wants("topics") {
        let (topics, m) = (scale(1000), scale(20_000));
        println!("\n== topics: {topics} topics × 10 subscribers, {m} events round-robin");
        let runs = kinds
            .iter()
            .map(|&kind| {
                let figures = runtime.block_on(run(kind, &Load::topics(topics, 10, m)));
                println!("  {figures}");
                figures
            })
            .collect();
        report.topics(topics, m, runs);
    }
    if wants("churn") {
        let cycles = scale(50_000);
        println!("\n== churn: {cycles} connect/disconnect cycles, 100 at a time");
        // (Churn is measured for the SSE servers: a WebSocket handshake is
        // another request shape.)
        let runs = kinds
            .iter()
            .filter(|k| **k != Kind::TowerSseWs)
            .map(|&kind| {
                let figures = runtime.block_on(churn(kind, cycles));
                println!("  {figures}");
                figures
            })
            .collect();
        report.churn(cycles, runs);
    }
    if wants("cross") {
        let (n, m) = (scale(100), scale(3000));
        println!("\n== cross-node: {n} subscribers on node B, 1,000 events/s published on node A through each backplane, against one node without one");
        let load = Load::paced(n, m, 1000);
        let mut runs = Vec::new();
        for engine in Engine::ALL
            .into_iter()
            .filter(|e| !skip.split(',').any(|s| s == e.short_name()))
        {
            // The baseline just before, so both see the same machine.
            let single = runtime.block_on(run(Kind::TowerSse, &load));
            println!("  one node:  {single}");
            let process = EngineProcess::start(engine);
            // One after the other: `start_with` returns once the node's hub
            // reads the engine's log. Dropped in reverse, the engine last.
            let a = ServerProcess::start_with(engine.kind(), &process.url());
            let b = ServerProcess::start_with(engine.kind(), &process.url());
            let cross = runtime.block_on(run_on(
                engine.kind(),
                &[&a, &b],
                Some(&process),
                &b,
                &a,
                &load,
            ));
            println!("  two nodes: {cross}");
            runs.push((engine, single, cross));
        }
        report.cross(n, runs);
    }
    if wants("stuck") {
        let (n, k) = (scale(1000), scale(100));
        println!("\n== stuck: {n} readers × 300 paced 4 KiB events, with and without {k} never-reading clients");
        let mut load = Load::paced(n, 300, 100);
        load.padding = 4096;
        let without = runtime.block_on(run(Kind::TowerSse, &load));
        println!("  without: {without}");
        load.stuck = k;
        let with = runtime.block_on(run(Kind::TowerSse, &load));
        println!("  with:    {with}");
        report.stuck(n, k, without, with);
    }
    if wants("storm") {
        let (n, behind) = (scale(5000), 500);
        println!("\n== storm: {n} streams reconnect at once, each {behind} events behind, {repeat} repetitions");
        // The servers that replay from a history (the hand-rolled peer has
        // none: its clients would lose what they missed).
        let kinds: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|k| [Kind::TowerSse, Kind::Nchan].contains(k))
            .collect();
        let runs = repeated(repeat, &kinds, |kind| {
            runtime.block_on(storm(kind, n, behind))
        });
        report.storm(n, behind, runs);
    }
    if wants("coalesce") {
        let n = scale(env_or("FANOUT_COALESCE_N", 1000));
        println!("\n== coalesce: {n} subscribers × 100 events/s for 5 s, with coalesce(20 ms) and without, {repeat} repetitions");
        let kinds = [Kind::TowerSse, Kind::TowerSseCoalesce, Kind::AxumBroadcast];
        let runs = repeated(repeat, &kinds, |kind| {
            runtime.block_on(run(kind, &Load::paced(n, 500, 100)))
        });
        report.coalesce(n, runs);
    }
    report.finish();
}

/// Work on a thread of its own (outside the load client's runtime), every
/// `every` until finished: `poll` updates the state `finish` returns.
pub struct Poller<T> {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<T>,
}

impl<T: Send + 'static> Poller<T> {
    pub fn start(
        every: Duration,
        mut state: T,
        mut poll: impl FnMut(&mut T) + Send + 'static,
    ) -> Poller<T> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    poll(&mut state);
                    // The polling interval (a bench's pace, not a wait for
                    // something to happen).
                    std::thread::sleep(every);
                }
                state
            }
        });
        Poller { stop, thread }
    }

    /// Stops polling (after the poll under way) and returns the state.
    pub fn finish(self) -> T {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// `measure` of each of `kinds` in turn, `repeat` times (servers
/// interleaved, so each repetition sees the same machine), each printed:
/// one row of figures per repetition.
fn repeated<T: std::fmt::Display>(
    repeat: usize,
    kinds: &[Kind],
    mut measure: impl FnMut(Kind) -> T,
) -> Vec<Vec<T>> {
    (0..repeat)
        .map(|rep| {
            kinds
                .iter()
                .map(|&kind| {
                    let figures = measure(kind);
                    println!("  #{rep} {figures}");
                    figures
                })
                .collect()
        })
        .collect()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the client does to a server: who subscribes to what, then what is
/// published, how fast.
pub struct Load {
    /// Subscribers per topic.
    topics: Vec<(String, usize)>,
    /// Events: the index of their topic, in publishing order.
    schedule: Vec<usize>,
    /// Events per second, or as fast as the publisher goes.
    rate: Option<u32>,
    /// Bytes of data added to each event (a second `data:` line).
    padding: usize,
    /// Clients that never read, subscribed to the first topic.
    stuck: usize,
}

impl Load {
    fn burst(n: usize, m: usize) -> Load {
        Load {
            topics: vec![("all".into(), n)],
            schedule: vec![0; m],
            rate: None,
            padding: 0,
            stuck: 0,
        }
    }

    fn paced(n: usize, m: usize, rate: u32) -> Load {
        Load {
            rate: Some(rate),
            ..Load::burst(n, m)
        }
    }

    fn topics(topics: usize, each: usize, m: usize) -> Load {
        Load {
            topics: (0..topics).map(|t| (format!("t{t}"), each)).collect(),
            schedule: (0..m).map(|i| i % topics).collect(),
            rate: None,
            padding: 0,
            stuck: 0,
        }
    }
}

/// What one server did under one load.
#[derive(Clone)]
pub struct Figures {
    pub kind: Kind,
    pub subscribers: usize,
    /// Server CPU (user + system, all its processes) per delivered event.
    pub cpu_ns: f64,
    /// The backplane engine's CPU (user + system, all its processes) per
    /// delivered event, over the same time as `cpu_ns`; 0 without one.
    pub engine_cpu_ns: f64,
    pub per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub connect_s: f64,
    /// Server memory (PSS) per connected idle subscriber.
    pub idle_bytes: f64,
    /// Server memory growth while the events went out.
    pub growth_bytes: f64,
    pub events_per_read: f64,
    /// Events the publisher got accepted per second (below the target rate
    /// when the server answers `POST` slowly).
    pub publish_per_s: f64,
    /// p99 of the answer time of `GET /health` (an ordinary route of the
    /// app), polled every 10 ms while the events went out.
    pub health_p99_us: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>14}: CPU {:6.0} ns/delivery, {:9.0} deliveries/s, p50 {:7.0} µs, p99 {:7.0} µs, max {:7.0} µs, connect {:.2} s, {:5.0} B/idle subscriber, +{:.1} MB while sending, {:.1} events/read, {:.0} published/s, /health p99 {:.0} µs",
            self.kind.name(),
            self.cpu_ns,
            self.per_s,
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.connect_s,
            self.idle_bytes,
            self.growth_bytes / 1e6,
            self.events_per_read,
            self.publish_per_s,
            self.health_p99_us
        )?;
        if self.kind.engine().is_some() {
            write!(f, ", engine CPU {:.0} ns/delivery", self.engine_cpu_ns)?;
        }
        Ok(())
    }
}

async fn run(kind: Kind, load: &Load) -> Figures {
    let server = ServerProcess::start(kind);
    run_on(kind, &[&server], None, &server, &server, load).await
}

/// Runs `load` with the subscribers on `subscribe` and the publisher on
/// `publish`; CPU and memory are those of all `servers`, and the CPU of
/// `engine` (their backplane's) is read over the same time.
async fn run_on(
    kind: Kind,
    servers: &[&ServerProcess],
    engine: Option<&EngineProcess>,
    subscribe: &ServerProcess,
    publish: &ServerProcess,
    load: &Load,
) -> Figures {
    let cpu_of = || servers.iter().map(|s| s.cpu()).sum::<Duration>();
    let memory_of = || servers.iter().map(|s| s.memory()).sum::<u64>();
    let addr = subscribe.addr();
    let epoch = Instant::now();
    let mut control = Control::connect(&publish.addr()).await;
    control.get(&kind.count_path("warm-up")).await;
    let memory_before = memory_of();

    let mut stuck = Vec::new();
    for _ in 0..load.stuck {
        stuck.push(client::stuck(&addr, &kind.sub_path(&load.topics[0].0)).await);
    }
    let connect_start = Instant::now();
    let mut subscribers: Vec<(Reader, usize)> = Vec::new();
    for (topic_index, (topic, n)) in load.topics.iter().enumerate() {
        let events = load.schedule.iter().filter(|&&t| t == topic_index).count();
        for _ in 0..*n {
            subscribers.push((
                if kind == Kind::TowerSseWs {
                    Reader::Ws(Box::new(
                        client::subscribe_ws(&addr, &kind.sub_path(topic)).await,
                    ))
                } else {
                    Reader::Sse(client::subscribe(&addr, &kind.sub_path(topic)).await)
                },
                events,
            ));
        }
    }
    let connect_s = connect_start.elapsed().as_secs_f64();
    let n = subscribers.len();
    let memory_idle = memory_of();

    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|(reader, m)| {
            tokio::spawn(async move {
                match reader {
                    Reader::Sse(reader) => client::read_events(reader, m, epoch).await,
                    Reader::Ws(ws) => client::read_ws_events(*ws, m, epoch).await,
                }
            })
        })
        .collect();
    client::READS.store(0, std::sync::atomic::Ordering::Relaxed);
    let cpu_before = cpu_of();
    let engine_cpu_of = || engine.map_or(Duration::ZERO, |e| e.cpu());
    let engine_cpu_before = engine_cpu_of();
    let health = client::health_probe(&publish.addr());
    let start = Instant::now();
    let padding = "x".repeat(load.padding);
    let mut ticks = load
        .rate
        .map(|rate| tokio::time::interval(Duration::from_secs(1) / rate));
    let paths: Vec<String> = load
        .topics
        .iter()
        .map(|(topic, _)| format!("/pub/{topic}"))
        .collect();
    for &topic in &load.schedule {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        let sent = epoch.elapsed().as_nanos().to_string();
        let body = if padding.is_empty() {
            sent
        } else {
            format!("{sent}\n{padding}")
        };
        control.post(&paths[topic], &body).await;
    }
    let publish_s = start.elapsed().as_secs_f64();
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for reader in readers {
        let histogram = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: events were lost: a subscriber did not get all of its events",
                    kind.name()
                )
            })
            .unwrap();
        latencies.add(histogram).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (_, health) = health.finish();
    let cpu = (cpu_of() - cpu_before).as_secs_f64();
    let engine_cpu = engine_cpu_of().saturating_sub(engine_cpu_before);
    let deliveries: usize = load
        .topics
        .iter()
        .enumerate()
        .map(|(t, (_, n))| n * load.schedule.iter().filter(|&&s| s == t).count())
        .sum();
    assert_eq!(
        latencies.len(),
        deliveries as u64,
        "{}: deliveries missing",
        kind.name()
    );
    let reads = client::READS.load(std::sync::atomic::Ordering::Relaxed);
    let growth = memory_of().saturating_sub(memory_idle);
    drop(stuck);
    Figures {
        kind,
        subscribers: n,
        cpu_ns: cpu * 1e9 / deliveries as f64,
        engine_cpu_ns: engine_cpu.as_secs_f64() * 1e9 / deliveries as f64,
        per_s: deliveries as f64 / elapsed,
        p50_us: latencies.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: latencies.value_at_quantile(0.99) as f64 / 1e3,
        max_us: latencies.max() as f64 / 1e3,
        connect_s,
        idle_bytes: memory_idle.saturating_sub(memory_before) as f64 / n as f64,
        growth_bytes: growth as f64,
        events_per_read: deliveries as f64 / reads as f64,
        publish_per_s: load.schedule.len() as f64 / publish_s,
        health_p99_us: health.value_at_quantile(0.99) as f64,
    }
}

/// What a server did when every stream reconnected at once, behind.
pub struct Storm {
    pub kind: Kind,
    /// From the first reconnect until every stream had every event it
    /// missed.
    pub catch_up_s: f64,
    /// Server CPU meanwhile.
    pub cpu_s: f64,
    pub streams: usize,
    /// Server memory (PSS) growth at its peak during the storm (the
    /// streams' own memory and what is in flight to them).
    pub peak_growth: u64,
    /// The bytes each stream was sent: its share of the history.
    pub replay_bytes: usize,
}

impl Storm {
    /// The memory growth at the peak, per stream.
    pub fn peak_per_stream(&self) -> f64 {
        self.peak_growth as f64 / self.streams as f64
    }
}

impl std::fmt::Display for Storm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>14}: caught up in {:.2} s, CPU {:.2} s, memory +{:.1} MB at the peak ({:.0} B per stream), {} B replayed per stream",
            self.kind.name(),
            self.catch_up_s,
            self.cpu_s,
            self.peak_growth as f64 / 1e6,
            self.peak_per_stream(),
            self.replay_bytes
        )
    }
}

/// `2 × behind` events are published and read, with their ids, by one
/// probe; then `n` streams connect at once with `Last-Event-ID` the id of
/// event `behind`, and each must get the `behind` events after it (the
/// first of them first: none repeated, none lost).
async fn storm(kind: Kind, n: usize, behind: usize) -> Storm {
    let server = ServerProcess::start(kind);
    let addr = server.addr();
    let path = kind.sub_path("storm");
    let epoch = Instant::now();
    let mut control = Control::connect(&addr).await;
    control.get(&kind.count_path("storm")).await;
    let probe = client::subscribe(&addr, &path).await;
    for _ in 0..2 * behind {
        control
            .post("/pub/storm", &epoch.elapsed().as_nanos().to_string())
            .await;
    }
    let events = client::read_ids(probe, 2 * behind).await;
    let (last_id, first) = (events[behind - 1].0.clone(), events[behind].1);
    // What each stream is sent: ids and data lines of the events after.
    let replay_bytes = events[behind..]
        .iter()
        .map(|(id, sent)| format!("id: {id}\ndata: {sent}\n\n").len())
        .sum();
    let memory_before = server.memory();
    let sampler = server.peak_memory();
    let cpu_before = server.cpu();
    let start = Instant::now();
    let streams: Vec<_> = (0..n)
        .map(|_| {
            let (addr, path, last_id) = (addr.clone(), path.clone(), last_id.clone());
            tokio::spawn(async move {
                let mut reader = client::subscribe_after(&addr, &path, &last_id).await;
                client::read_events_from(&mut reader, behind, epoch, Some(first)).await;
                // Kept open until all caught up: a stream that went away
                // would free its memory before the peak is read.
                reader
            })
        })
        .collect();
    let mut open = Vec::with_capacity(n);
    for stream in streams {
        open.push(
            tokio::time::timeout(Duration::from_secs(120), stream)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: a resumed stream did not get all it missed",
                        kind.name()
                    )
                })
                .unwrap(),
        );
    }
    let catch_up_s = start.elapsed().as_secs_f64();
    let cpu_s = (server.cpu() - cpu_before).as_secs_f64();
    let peak = sampler.finish().max(server.memory());
    drop(open);
    Storm {
        kind,
        streams: n,
        catch_up_s,
        cpu_s,
        peak_growth: peak.saturating_sub(memory_before),
        replay_bytes,
    }
}

/// What a server did under connect/disconnect churn.
pub struct Churn {
    pub kind: Kind,
    pub cycles_per_s: f64,
    pub cpu_us_per_cycle: f64,
    pub memory_start: u64,
    pub memory_warm: u64,
    pub memory_end: u64,
    /// Time until the server counted 0 subscribers after the last close.
    pub settle_s: f64,
}

impl std::fmt::Display for Churn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>14}: {:6.0} cycles/s, CPU {:5.1} µs/cycle, memory start {:.1} MB, after warm-up {:.1} MB, end {:.1} MB, count 0 after {:.2} s",
            self.kind.name(),
            self.cycles_per_s,
            self.cpu_us_per_cycle,
            self.memory_start as f64 / 1e6,
            self.memory_warm as f64 / 1e6,
            self.memory_end as f64 / 1e6,
            self.settle_s
        )
    }
}

/// `cycles` subscribers connect, get their response head and close (FIN),
/// 100 at a time; then the server must count none and its memory is read.
async fn churn(kind: Kind, cycles: usize) -> Churn {
    let server = ServerProcess::start(kind);
    let addr = server.addr();
    let path = kind.sub_path("churn");
    let count_path = kind.count_path("churn");
    let mut control = Control::connect(&addr).await;
    control.get(&count_path).await;
    let memory_start = server.memory();
    let warm_up = (cycles / 50).max(1);
    let cycle = |from: usize, to: usize| {
        let addr = addr.clone();
        let path = path.clone();
        async move {
            let tasks: Vec<_> = (0..100)
                .map(|lane| {
                    let (addr, path) = (addr.clone(), path.clone());
                    tokio::spawn(async move {
                        // Each lane its own loopback source address.
                        let source = std::net::IpAddr::from([127, 0, 1, lane as u8 + 1]);
                        for _ in (from + lane..to).step_by(100) {
                            drop(client::subscribe_from(source, &addr, &path).await);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        }
    };
    cycle(0, warm_up).await;
    control.wait_count(&count_path, 0).await;
    let memory_warm = server.memory();
    let cpu_before = server.cpu();
    let start = Instant::now();
    cycle(warm_up, cycles).await;
    let elapsed = start.elapsed().as_secs_f64();
    let settle_s = control.wait_count(&count_path, 0).await.as_secs_f64();
    let cpu = (server.cpu() - cpu_before).as_secs_f64();
    Churn {
        kind,
        cycles_per_s: (cycles - warm_up) as f64 / elapsed,
        cpu_us_per_cycle: cpu * 1e6 / (cycles - warm_up) as f64,
        memory_start,
        memory_warm,
        memory_end: server.memory(),
        settle_s,
    }
}
