//! One measured run: instances already started, load clients started here,
//! idle streams opened, events published, figures read.

use crate::{
    client::{event_data, unix_ns},
    engine::EngineProcess,
    server::Instance,
    usage::Memory,
};
use hdrhistogram::Histogram;
use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    net::IpAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub struct Settings {
    /// Events published in each run.
    pub events: usize,
    /// Streams per load client process, at most.
    pub per_client: usize,
}

/// The loopback source addresses handed to the load clients, each used by
/// one client in the whole bench (a closed connection keeps its port in
/// TIME_WAIT a while).
pub struct Sources(u8);

impl Default for Sources {
    fn default() -> Self {
        Sources(2)
    }
}

impl Sources {
    fn take(&mut self) -> IpAddr {
        let host = self.0;
        self.0 = host
            .checked_add(1)
            .expect("out of 127.0.0.x source addresses");
        IpAddr::from([127, 0, 0, host])
    }
}

/// What one run measured.
pub struct Figures {
    pub instances: usize,
    pub streams: usize,
    pub clients: usize,
    pub events: usize,
    /// The instances' memory in all: before any stream, with every stream
    /// idle, after the events.
    pub before: Memory,
    pub idle: Memory,
    pub after: Memory,
    /// The largest instance's RSS with every stream idle.
    pub idle_rss_largest: u64,
    /// Until every stream had its response head.
    pub connect: Duration,
    /// For each event: from its publishing until the last stream read it.
    pub delivery: Vec<Duration>,
    /// User + system CPU of the instances (and of the engine) while the
    /// events went out.
    pub cpu: Duration,
    pub engine_cpu: Duration,
    /// Latencies (ns) at the streams on the instance the events are
    /// published on, and on the others.
    pub local: Histogram<u64>,
    pub remote: Histogram<u64>,
}

impl Figures {
    pub fn delivery_median(&self) -> Duration {
        let mut sorted = self.delivery.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    }

    pub fn delivery_max(&self) -> Duration {
        self.delivery.iter().copied().max().unwrap_or_default()
    }

    /// Server CPU per delivered event.
    pub fn cpu_per_delivery(&self) -> Duration {
        self.cpu / (self.streams * self.events) as u32
    }

    /// RSS growth per stream while the streams connected.
    pub fn rss_per_stream(&self) -> f64 {
        self.idle.rss.saturating_sub(self.before.rss) as f64 / self.streams as f64
    }

    pub fn pss_per_stream(&self) -> f64 {
        self.idle.pss.saturating_sub(self.before.pss) as f64 / self.streams as f64
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let ms = |ns: u64| ns as f64 / 1e6;
        writeln!(
            f,
            "  {} streams on {} instance(s), {} client processes, connected in {:.1} s",
            self.streams,
            self.instances,
            self.clients,
            self.connect.as_secs_f64()
        )?;
        writeln!(
            f,
            "  RSS before {:.1} MiB, idle {:.1} MiB ({:.0} B/stream; largest instance {:.1} MiB), after {:.1} MiB",
            mib(self.before.rss),
            mib(self.idle.rss),
            self.rss_per_stream(),
            mib(self.idle_rss_largest),
            mib(self.after.rss)
        )?;
        writeln!(
            f,
            "  PSS before {:.1} MiB, idle {:.1} MiB ({:.0} B/stream), after {:.1} MiB",
            mib(self.before.pss),
            mib(self.idle.pss),
            self.pss_per_stream(),
            mib(self.after.pss)
        )?;
        let each: Vec<String> = self
            .delivery
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect();
        writeln!(
            f,
            "  delivery to every stream: median {:.0} ms, max {:.0} ms (each: {} ms)",
            self.delivery_median().as_secs_f64() * 1e3,
            self.delivery_max().as_secs_f64() * 1e3,
            each.join(", ")
        )?;
        for (name, h) in [("local", &self.local), ("other instances", &self.remote)] {
            if h.is_empty() {
                continue;
            }
            writeln!(
                f,
                "  latency at the streams on {name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events read)",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                h.len()
            )?;
        }
        write!(
            f,
            "  CPU while the events went out: instances {:.2} s ({:.1} µs/delivery), engine {:.2} s",
            self.cpu.as_secs_f64(),
            self.cpu_per_delivery().as_secs_f64() * 1e6,
            self.engine_cpu.as_secs_f64()
        )
    }
}

/// A load client process (see `client.rs`); stopped when dropped.
struct ClientProcess {
    child: Child,
    /// Ports of the instances its streams go to, in its plan's order.
    ports: Vec<u16>,
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        self.child.wait().ok();
    }
}

/// The clients' report lines, each client's in its order.
struct Lines {
    from: mpsc::Receiver<(usize, Option<String>)>,
    queued: Vec<VecDeque<Option<String>>>,
}

impl Lines {
    /// The next line of client `c`, waiting up to `timeout` for it; fails
    /// on a stream's failure or on a client that exited.
    fn next(&mut self, c: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let line = loop {
            if let Some(line) = self.queued[c].pop_front() {
                break line;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok((from, line)) => self.queued[from].push_back(line),
                Err(_) => panic!("client {c} said nothing for {timeout:?}"),
            }
        };
        let line = line.unwrap_or_else(|| panic!("client {c} exited"));
        assert!(!line.starts_with("failed"), "client {c}: {line}");
        line
    }
}

/// Opens `streams[i]` idle streams (at `path`) on each `instances[i]`,
/// measures their memory, publishes the events on the first instance and
/// measures their delivery; `engine` is the instances' backplane, if any.
pub fn measure(
    instances: &[Instance],
    path: &str,
    streams: &[usize],
    engine: Option<&EngineProcess>,
    settings: &Settings,
    sources: &mut Sources,
) -> Figures {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A connection per request: one kept from before the streams connected
    // may have been closed by the instance meanwhile (its idle timeout is
    // the header read timeout, 10 s), and reused as it closes.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let count = |instance: &Instance| -> usize {
        runtime.block_on(async {
            let answer = http.get(instance.url("/count")).send().await.unwrap();
            answer.text().await.unwrap().trim().parse().unwrap()
        })
    };
    for instance in instances {
        assert_eq!(count(instance), 0);
    }
    let memory = || instances.iter().map(Instance::memory).sum::<Memory>();
    let cpu = || instances.iter().map(Instance::cpu).sum::<Duration>();
    let engine_cpu = || engine.map_or(Duration::ZERO, EngineProcess::cpu);
    let before = memory();

    // Each client takes up to `per_client` streams, in the instances' order.
    let mut plans: Vec<Vec<(u16, usize)>> = Vec::new();
    let mut room = 0;
    for (instance, &n) in instances.iter().zip(streams) {
        let mut left = n;
        while left > 0 {
            if room == 0 {
                plans.push(Vec::new());
                room = settings.per_client;
            }
            let take = left.min(room);
            plans.last_mut().unwrap().push((instance.port, take));
            (left, room) = (left - take, room - take);
        }
    }
    let (tell, from) = mpsc::channel();
    let start = Instant::now();
    let clients: Vec<ClientProcess> = plans
        .iter()
        .enumerate()
        .map(|(c, plan)| spawn_client(c, sources.take(), plan, path, settings.events, tell.clone()))
        .collect();
    let mut lines = Lines {
        from,
        queued: clients.iter().map(|_| VecDeque::new()).collect(),
    };
    for c in 0..clients.len() {
        let line = lines.next(c, Duration::from_secs(600));
        assert_eq!(line, "connected", "client {c}");
    }
    let connect = start.elapsed();
    for (instance, &n) in instances.iter().zip(streams) {
        assert_eq!(count(instance), n, "streams the instance counts");
    }
    let idle_each: Vec<Memory> = instances.iter().map(Instance::memory).collect();
    let idle = idle_each.iter().copied().sum::<Memory>();

    let (cpu_before, engine_cpu_before) = (cpu(), engine_cpu());
    let mut delivery = Vec::with_capacity(settings.events);
    for k in 0..settings.events {
        let sent = unix_ns();
        runtime.block_on(async {
            let answer = http
                .post(instances[0].url("/pub/all"))
                .body(event_data(k, sent))
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success(), "publish: {answer:?}");
        });
        let mut last = sent;
        for c in 0..clients.len() {
            let line = lines.next(c, Duration::from_secs(120));
            let (event, at) = line
                .strip_prefix("event ")
                .and_then(|rest| rest.split_once(' '))
                .unwrap_or_else(|| panic!("client {c}: {line}"));
            assert_eq!(event.parse::<usize>().unwrap(), k, "client {c}");
            last = last.max(at.parse().unwrap());
        }
        delivery.push(Duration::from_nanos(last - sent));
    }
    let cpu = cpu() - cpu_before;
    let engine_cpu = engine_cpu().saturating_sub(engine_cpu_before);
    let after = memory();

    let (mut local, mut remote) = (Histogram::new(3).unwrap(), Histogram::new(3).unwrap());
    for (c, client) in clients.iter().enumerate() {
        for _ in &client.ports {
            let line = lines.next(c, Duration::from_secs(60));
            let mut words = line
                .strip_prefix("latency ")
                .unwrap_or_else(|| panic!("client {c}: {line}"))
                .split(' ');
            let port: u16 = words.next().unwrap().parse().unwrap();
            let into = if port == instances[0].port {
                &mut local
            } else {
                &mut remote
            };
            for pair in words.filter(|w| !w.is_empty()) {
                let (value, n) = pair.split_once(':').unwrap();
                into.record_n(value.parse().unwrap(), n.parse().unwrap())
                    .unwrap();
            }
        }
    }
    assert_eq!(
        local.len() + remote.len(),
        (streams.iter().sum::<usize>() * settings.events) as u64,
        "deliveries missing"
    );
    Figures {
        instances: instances.len(),
        streams: streams.iter().sum(),
        clients: clients.len(),
        events: settings.events,
        before,
        idle,
        after,
        idle_rss_largest: idle_each.iter().map(|m| m.rss).max().unwrap_or(0),
        connect,
        delivery,
        cpu,
        engine_cpu,
        local,
        remote,
    }
}

/// Starts load client `c` from `source` with `plan` (port, streams) for
/// streams at `path`; its
/// report lines go to `tell`, then `None` once it exits.
fn spawn_client(
    c: usize,
    source: IpAddr,
    plan: &[(u16, usize)],
    path: &str,
    events: usize,
    tell: mpsc::Sender<(usize, Option<String>)>,
) -> ClientProcess {
    let plan_text: Vec<String> = plan.iter().map(|(p, n)| format!("{p}:{n}")).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("SCALE_ROLE", "client")
        .env("SCALE_SOURCE", source.to_string())
        .env("SCALE_PLAN", plan_text.join(","))
        .env("SCALE_PATH", path)
        .env("SCALE_EVENTS", events.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tell.send((c, Some(line))).is_err() {
                return;
            }
        }
        tell.send((c, None)).ok();
    });
    ClientProcess {
        child,
        ports: plan.iter().map(|(p, _)| *p).collect(),
    }
}
