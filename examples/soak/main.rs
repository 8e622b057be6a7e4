//! The soak (issue 24): two instances on each engine (Redis, PostgreSQL,
//! NATS JetStream), thousands of streams that close and resume with
//! Last-Event-ID, a steady rate of publishes, and every engine restarted at
//! an interval, alternately with its data and without it. It checks that
//! every accepted event reached every stream of its topic once and in order
//! (or a `reset` came in its place), that each instance's RSS stays flat,
//! and that publishing works after each restart; it exits non-zero when a
//! check fails.
//!
//! ```text
//! scripts/soak                       # 1 hour, a restart every 10 minutes
//! scripts/soak --duration 3m --restart-every 1m
//! ```
//!
//! Every engine is started by the soak itself, on free ports, its files in
//! a directory of its own, and stopped at the end: never a shared server.

mod clients;
mod engines;
mod heap;
mod instance;
mod report;
#[allow(dead_code)]
#[path = "../../tests/common/services.rs"]
mod services;

use std::{
    io::BufRead,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};
use tokio::{sync::watch, time::Instant};

use clients::{Phase, Rng, Soak};
use engines::{Engine, Kind};

/// Counted, so that an instance reports the heap it holds.
#[global_allocator]
static HEAP: heap::Counting = heap::Counting;

/// How long `services` waits for a server to say it is ready.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The soak's settings (`--name value`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub duration: Duration,
    pub restart_every: Duration,
    /// How long an engine stays down when restarted.
    pub down_for: Duration,
    /// Streams per engine (spread over its two instances).
    pub streams: usize,
    /// Publishes per second per engine.
    pub rate: u64,
    pub topics: usize,
    /// A stream stays open up to this long (at least a second), then
    /// closes and resumes.
    pub churn: Duration,
    pub warm_up: Duration,
    pub sample_every: Duration,
    /// How much an instance's RSS may drift after warm-up.
    pub rss_tolerance: f64,
    pub engines: Vec<Kind>,
    /// Where to write the report (Markdown) besides stdout.
    pub report: Option<PathBuf>,
}

fn usage() -> &'static str {
    "usage: soak [--duration 1h] [--restart-every 10m] [--down-for 2s] [--streams 2000] \
     [--rate 200] [--topics 50] [--churn 60s] [--warm-up D] [--sample-every D] \
     [--rss-tolerance 0.05] [--engines redis,postgres,nats] [--report FILE]\n\
     durations: 90s, 3m, 1h; streams and rate are per engine"
}

fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.trim_end_matches(|c: char| c.is_alphabetic()).len());
    let n: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("not a duration: {text:?} (90s, 3m, 1h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn settings(args: &[String]) -> Result<Settings, String> {
    let mut s = Settings {
        duration: Duration::from_secs(3600),
        restart_every: Duration::from_secs(600),
        down_for: Duration::from_secs(2),
        streams: 2000,
        rate: 200,
        topics: 50,
        churn: Duration::from_secs(60),
        warm_up: Duration::ZERO,
        sample_every: Duration::ZERO,
        rss_tolerance: 0.05,
        engines: vec![Kind::Redis, Kind::Postgres, Kind::Nats],
        report: None,
    };
    let (mut warm_up, mut sample_every) = (None, None);
    let mut args = args.iter();
    while let Some(name) = args.next() {
        let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match name.as_str() {
            "--duration" => s.duration = duration(value)?,
            "--restart-every" => s.restart_every = duration(value)?,
            "--down-for" => s.down_for = duration(value)?,
            "--streams" => s.streams = number(value)? as usize,
            "--rate" => s.rate = number(value)?,
            "--topics" => s.topics = number(value)?.max(1) as usize,
            "--churn" => s.churn = duration(value)?,
            "--warm-up" => warm_up = Some(duration(value)?),
            "--sample-every" => sample_every = Some(duration(value)?),
            "--rss-tolerance" => {
                s.rss_tolerance = value.parse().map_err(|_| format!("{name}: {value}"))?
            }
            "--engines" => {
                s.engines = value
                    .split(',')
                    .map(Kind::parse)
                    .collect::<Result<_, _>>()?
            }
            "--report" => s.report = Some(value.into()),
            _ => return Err(format!("unknown option {name}")),
        }
    }
    if s.duration.is_zero() || s.restart_every.is_zero() || s.rate == 0 {
        return Err("duration, restart interval and rate must be above zero".into());
    }
    // Warm-up: until the first restart is behind (a sixth of the run at most).
    s.warm_up = warm_up.unwrap_or((s.restart_every + s.restart_every / 4).min(s.duration / 6));
    s.sample_every = sample_every
        .unwrap_or((s.duration / 60).clamp(Duration::from_secs(2), Duration::from_secs(30)));
    Ok(s)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if args.first().map(String::as_str) == Some("instance") {
        let outcome = match (args.get(1).map(|k| Kind::parse(k)), args.get(2)) {
            (Some(Ok(kind)), Some(url)) => runtime.block_on(instance::run(kind, url)),
            _ => Err("usage: soak instance redis|postgres|nats URL".into()),
        };
        if let Err(e) = outcome {
            eprintln!("instance: {e}");
            std::process::exit(2);
        }
        return;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", usage());
        return;
    }
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}\n{}", usage());
            std::process::exit(2);
        }
    };
    let passed = runtime.block_on(drive(settings));
    std::process::exit(if passed { 0 } else { 1 });
}

/// An instance process, killed when dropped.
pub struct Instance {
    pub engine: Kind,
    pub n: usize,
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Instance {
    fn start(engine: &Engine, n: usize, dir: &std::path::Path) -> Instance {
        let log = dir.join(format!("{}-{n}.log", engine.kind.name()));
        let mut child = Command::new(std::env::current_exe().expect("the soak's own path"))
            .args(["instance", engine.kind.name(), &engine.url()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("the instance's log"))
            .spawn()
            .expect("an instance process");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .ok();
        let Some(port) = line.trim().strip_prefix("listening ") else {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            child.kill().ok();
            panic!("{} instance {n} did not start: {said}", engine.kind.name());
        };
        Instance {
            engine: engine.kind,
            n,
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        }
    }

    /// Its resident set, in KiB (from /proc).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// What one engine's part of the soak measured.
pub struct Run {
    pub kind: Kind,
    pub soak: Arc<Soak>,
    pub instances: Vec<Instance>,
    /// `down=N up=M` from each instance at the end.
    pub outages: Vec<String>,
    /// Accepted publishes in each restart interval.
    pub accepted_per_interval: Vec<u64>,
}

async fn drive(settings: Settings) -> bool {
    let dir = std::env::temp_dir().join(format!("tower-sse-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the soak's directory");
    println!("soak: {settings:?}\nsoak: files in {}", dir.display());
    let mut engines = Vec::new();
    let mut runs = Vec::new();
    for &kind in &settings.engines {
        let engine = tokio::task::block_in_place(|| Engine::start(kind, &dir));
        let instances: Vec<Instance> = (0..2).map(|n| Instance::start(&engine, n, &dir)).collect();
        let urls = instances.iter().map(|i| i.url.clone()).collect();
        runs.push(Run {
            kind,
            soak: Soak::new(urls, settings.streams, settings.topics),
            instances,
            outages: Vec::new(),
            accepted_per_interval: Vec::new(),
        });
        engines.push(engine);
    }
    let (phase_tx, phase) = watch::channel(Phase::Run);
    let mut tasks = Vec::new();
    for run in &runs {
        for i in 0..settings.streams {
            tasks.push(tokio::spawn(run.soak.clone().stream(
                i,
                settings.churn,
                phase.clone(),
            )));
        }
    }
    let start = Instant::now();
    let end = start + settings.duration;
    let publishers: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(e, run)| {
            let (soak, rate) = (run.soak.clone(), settings.rate);
            let phase = phase.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut rng = Rng::new(e as u64 + 77);
                let mut seq = 0u64;
                while *phase.borrow() == Phase::Run {
                    tick.tick().await;
                    seq += 1;
                    let topic = rng.below(soak.topics() as u64) as u32;
                    tokio::spawn(soak.clone().publish(seq, topic, (seq % 2) as usize));
                }
            })
        })
        .collect();

    let mut samples = report::Samples::default();
    let mut next_sample = start;
    let mut next_restart = start + settings.restart_every;
    let mut restarts = 0usize;
    let mut next_check = start + clients::HORIZON;
    let mut last_accepted: Vec<u64> = vec![0; runs.len()];
    let mut events: Vec<String> = Vec::new();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next_sample {
            samples.take(start, &mut runs).await;
            next_sample += settings.sample_every;
        }
        if now >= next_check {
            for run in &runs {
                run.soak.check(Some(now - clients::HORIZON));
            }
            next_check += Duration::from_secs(5);
        }
        if now >= next_restart {
            restarts += 1;
            let keep = restarts % 2 == 1;
            for (run, last) in runs.iter_mut().zip(&mut last_accepted) {
                let accepted = run.soak.counts.accepted.load(Ordering::Relaxed);
                run.accepted_per_interval.push(accepted - *last);
                *last = accepted;
            }
            let what = if keep {
                "kept its data"
            } else {
                "lost its data"
            };
            let at = now - start;
            println!(
                "soak: {:>5.0}s restart {restarts}: every engine {what}",
                at.as_secs_f64()
            );
            events.push(format!(
                "{:.0}s: restart {restarts}, {what}",
                at.as_secs_f64()
            ));
            let down_for = settings.down_for;
            let restarting: Vec<_> = engines
                .drain(..)
                .map(|mut engine: Engine| {
                    tokio::task::spawn_blocking(move || {
                        engine.restart(keep, down_for);
                        engine
                    })
                })
                .collect();
            for task in restarting {
                engines.push(task.await.expect("an engine restart"));
            }
            next_restart += settings.restart_every;
        }
        let wake = [next_sample, next_check, next_restart, end]
            .into_iter()
            .min()
            .unwrap();
        tokio::time::sleep_until(wake).await;
    }
    for (run, last) in runs.iter_mut().zip(&last_accepted) {
        let accepted = run.soak.counts.accepted.load(Ordering::Relaxed);
        run.accepted_per_interval.push(accepted - last);
    }
    // Drain: no more publishes or churn; the streams read what is left.
    phase_tx.send_replace(Phase::Drain);
    for publisher in publishers {
        publisher.await.ok();
    }
    let drained = Instant::now();
    // Every publish is answered within 12 s (the client's bound).
    let answered = drained + Duration::from_secs(13);
    while Instant::now() < answered
        && runs.iter().any(|r| {
            let c = &r.soak.counts;
            c.accepted.load(Ordering::Relaxed)
                + c.refused.load(Ordering::Relaxed)
                + c.timed_out.load(Ordering::Relaxed)
                < c.published.load(Ordering::Relaxed)
        })
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !runs.iter().all(|r| r.soak.caught_up()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_took = drained.elapsed();
    samples.take(start, &mut runs).await;
    for run in &mut runs {
        for instance in &run.instances {
            let stats = run.soak_stats(&instance.url).await;
            // `heap=` and `streams=` are in the samples.
            let outages = stats.split(" heap=").next().unwrap_or_default();
            run.outages.push(outages.to_owned());
        }
    }
    phase_tx.send_replace(Phase::Stop);
    for task in tasks {
        task.await.ok();
    }
    for run in &runs {
        run.soak.check(None);
        run.soak.finish();
    }
    let passed = report::report(&settings, &mut runs, &samples, &events, drain_took);
    drop(runs);
    drop(engines);
    if std::env::var_os("SOAK_KEEP").is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    passed
}

impl Run {
    async fn soak_stats(&self, base: &str) -> String {
        report::stats(base)
            .await
            .unwrap_or_else(|| "no answer".into())
    }
}
