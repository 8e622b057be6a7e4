//! Tables of figures and ratios (printed, and written into BENCHMARKS.md
//! between its `fanout` markers) and the chart (docs/fanout.svg).

use crate::{
    server::{Engine, Kind},
    Churn, Figures, Storm,
};
use std::fmt::Write;

const BEGIN: &str = "<!-- fanout:begin (written by `cargo bench --bench fanout`) -->";
const END: &str = "<!-- fanout:end -->";

#[derive(Default)]
pub struct Report {
    quick: bool,
    text: String,
    /// (subscribers, figures) points for the chart.
    points: Vec<(usize, Figures)>,
    targets: Vec<(String, bool)>,
    /// tower-sse's memory per idle subscriber in the paced scenario, when
    /// it ran: the storm's per-stream figure is read against it.
    idle: Option<f64>,
}

/// Reads one figure.
type Get = fn(&Figures) -> f64;

/// A figure of [`Figures`]: its name, how to read it, how to show it, and
/// whether lower is better.
struct Row {
    name: &'static str,
    get: Get,
    unit: &'static str,
    lower_is_better: bool,
}

const ROWS: &[Row] = &[
    Row {
        name: "server CPU per delivery",
        get: |f| f.cpu_ns,
        unit: "ns",
        lower_is_better: true,
    },
    Row {
        name: "deliveries per second",
        get: |f| f.per_s,
        unit: "/s",
        lower_is_better: false,
    },
    Row {
        name: "latency p50",
        get: |f| f.p50_us,
        unit: "µs",
        lower_is_better: true,
    },
    Row {
        name: "latency p99",
        get: |f| f.p99_us,
        unit: "µs",
        lower_is_better: true,
    },
    Row {
        name: "latency max",
        get: |f| f.max_us,
        unit: "µs",
        lower_is_better: true,
    },
    Row {
        name: "time to connect all",
        get: |f| f.connect_s * 1e3,
        unit: "ms",
        lower_is_better: true,
    },
    Row {
        name: "memory per idle subscriber",
        get: |f| f.idle_bytes,
        unit: "B",
        lower_is_better: true,
    },
    Row {
        name: "events published per second",
        get: |f| f.publish_per_s,
        unit: "/s",
        lower_is_better: false,
    },
    Row {
        name: "`GET /health` p99 while sending",
        get: |f| f.health_p99_us,
        unit: "µs",
        lower_is_better: true,
    },
    Row {
        name: "events per client read",
        get: |f| f.events_per_read,
        unit: "",
        lower_is_better: false,
    },
];

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn show(value: f64, unit: &str) -> String {
    let digits = if value.abs() >= 100.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {unit}").trim_end().to_string()
}

impl Report {
    pub fn new(quick: bool) -> Report {
        Report {
            quick,
            ..Report::default()
        }
    }

    /// A table: one column per server, then ratios tower-sse / each peer.
    /// `runs` holds one set of figures per repetition (servers in the same
    /// order); values are medians, ratios medians of per-repetition ratios.
    fn table(&mut self, runs: &[Vec<Figures>]) -> Vec<(Kind, f64)> {
        let kinds: Vec<Kind> = runs[0].iter().map(|f| f.kind).collect();
        let ours = kinds.iter().position(|k| *k == Kind::TowerSse);
        let peers: Vec<usize> = (0..kinds.len()).filter(|&i| Some(i) != ours).collect();
        let mut t = String::from("| figure |");
        for k in &kinds {
            write!(t, " {} |", k.name()).unwrap();
        }
        if ours.is_some() {
            for &p in &peers {
                write!(t, " tower-sse / {} |", kinds[p].name()).unwrap();
            }
        }
        t.push_str("\n|---|");
        for _ in 0..kinds.len() + if ours.is_some() { peers.len() } else { 0 } {
            t.push_str("---:|");
        }
        t.push('\n');
        let mut cpu_ratios = Vec::new();
        for row in ROWS {
            write!(t, "| {} |", row.name).unwrap();
            for i in 0..kinds.len() {
                let v = median(runs.iter().map(|r| (row.get)(&r[i])).collect());
                write!(t, " {} |", show(v, row.unit)).unwrap();
            }
            if let Some(o) = ours {
                for &p in &peers {
                    let ratio = median(
                        runs.iter()
                            .map(|r| (row.get)(&r[o]) / (row.get)(&r[p]))
                            .collect(),
                    );
                    let better = if row.lower_is_better {
                        ratio <= 1.0
                    } else {
                        ratio >= 1.0
                    };
                    write!(t, " {ratio:.2}×{} |", if better { "" } else { " (worse)" }).unwrap();
                    if row.name == "server CPU per delivery" {
                        cpu_ratios.push((kinds[p], ratio));
                    }
                }
            }
            t.push('\n');
        }
        if runs.len() > 1 {
            if let Some(o) = ours {
                for &p in &peers {
                    let each: Vec<String> = runs
                        .iter()
                        .map(|r| format!("{:.2}", r[o].cpu_ns / r[p].cpu_ns))
                        .collect();
                    writeln!(
                        t,
                        "\nCPU per delivery, tower-sse / {} in each repetition: {}.",
                        kinds[p].name(),
                        each.join(", ")
                    )
                    .unwrap();
                }
            }
        }
        self.text.push_str(&t);
        println!("\n{t}");
        cpu_ratios
    }

    fn heading(&mut self, text: &str) {
        write!(self.text, "\n### {text}\n\n").unwrap();
    }

    /// A sentence of the report, after the last table.
    fn line(&mut self, text: String) {
        println!("{text}");
        write!(self.text, "\n{text}\n").unwrap();
    }

    fn target(&mut self, what: String, met: bool) {
        println!("target {}: {what}", if met { "met" } else { "MISSED" });
        self.targets.push((what, met));
    }

    fn ratio_of(runs: &[Vec<Figures>], peer: Kind, get: Get) -> Option<f64> {
        Self::ratio(runs, Kind::TowerSse, peer, get)
    }

    /// The median over the repetitions of `ours`' figure over `peer`'s.
    fn ratio(runs: &[Vec<Figures>], ours: Kind, peer: Kind, get: Get) -> Option<f64> {
        let o = runs[0].iter().position(|f| f.kind == ours)?;
        let p = runs[0].iter().position(|f| f.kind == peer)?;
        Some(median(
            runs.iter().map(|r| get(&r[o]) / get(&r[p])).collect(),
        ))
    }

    pub fn burst(&mut self, n: usize, m: usize, runs: Vec<Vec<Figures>>) {
        self.heading(&format!(
            "Burst: {n} subscribers × {m} events as fast as the publisher goes (median of {} repetitions)",
            runs.len()
        ));
        self.table(&runs);
        if let Some(r) = Self::ratio_of(&runs, Kind::AxumBroadcast, |f| f.cpu_ns) {
            self.target(
                format!("burst CPU per delivery ≤ 0.5× axum-broadcast: {r:.2}×"),
                r <= 0.5,
            );
        }
        if let Some(r) = Self::ratio_of(&runs, Kind::Nchan, |f| f.cpu_ns) {
            self.target(
                format!("burst CPU per delivery ≤ 0.2× nchan: {r:.2}×"),
                r <= 0.2,
            );
        }
        // Issue 23: the same burst with `coalesce(20 ms)`.
        let coalesced = Self::ratio(&runs, Kind::TowerSseCoalesce, Kind::AxumBroadcast, |f| {
            f.cpu_ns
        });
        if let Some(r) = coalesced {
            self.target(
                format!(
                    "burst CPU per delivery with coalesce(20 ms) ≤ 0.35× axum-broadcast: {r:.2}×"
                ),
                r <= 0.35,
            );
        }
        // The chart's point at n: the median figures.
        for i in 0..runs[0].len() {
            let mut f = runs[0][i].clone();
            f.p99_us = median(runs.iter().map(|r| r[i].p99_us).collect());
            f.cpu_ns = median(runs.iter().map(|r| r[i].cpu_ns).collect());
            self.points.push((n, f));
        }
    }

    pub fn sweep(&mut self, n: usize, figures: Figures) {
        self.points.push((n, figures));
    }

    pub fn paced(&mut self, n: usize, runs: Vec<Vec<Figures>>) {
        self.heading(&format!(
            "Paced: {n} subscribers × 100 events/s for 5 s (memory per idle subscriber read with all {n} connected; median of {} repetitions)",
            runs.len()
        ));
        self.table(&runs);
        if let Some(o) = runs[0].iter().position(|f| f.kind == Kind::TowerSse) {
            self.idle = Some(median(runs.iter().map(|r| r[o].idle_bytes).collect()));
        }
        // The publishers are paced at 100 events/s: both at the pace is
        // level, and the rate (to the last answer) has about 1% of jitter.
        let checks: [(&str, Get, bool, f64); 4] = [
            ("paced p99 latency", |f| f.p99_us, true, 1.0),
            ("idle memory per subscriber", |f| f.idle_bytes, true, 1.0),
            (
                "events/s the publisher got accepted (within 1%)",
                |f| f.publish_per_s,
                false,
                0.99,
            ),
            ("`GET /health` p99", |f| f.health_p99_us, true, 1.0),
        ];
        // Issue 23: an idle HTTP/1.1 stream at half of Nchan's memory.
        if let Some(r) = Self::ratio_of(&runs, Kind::Nchan, |f| f.idle_bytes) {
            self.target(
                format!("idle memory per subscriber ≤ 0.5× nchan's: {r:.2}×"),
                r <= 0.5,
            );
        }
        for (what, get, lower, bound) in checks {
            if let Some(r) = Self::ratio_of(&runs, Kind::AxumBroadcast, get) {
                let (sign, met) = if lower {
                    ("≤", r <= bound)
                } else {
                    ("≥", r >= bound)
                };
                self.target(format!("{what} {sign} axum-broadcast's: {r:.3}×"), met);
            }
        }
    }

    pub fn coalesce(&mut self, n: usize, runs: Vec<Vec<Figures>>) {
        self.heading(&format!(
            "Coalesced writes: {n} subscribers × 100 events/s for 5 s, `coalesce(20 ms)` (median of {} repetitions)",
            runs.len()
        ));
        self.table(&runs);
        let of = |kind: Kind, get: Get| -> Vec<f64> {
            let i = runs[0].iter().position(|f| f.kind == kind).unwrap();
            runs.iter().map(|r| get(&r[i])).collect()
        };
        let (ours, peer) = (
            of(Kind::TowerSseCoalesce, |f| f.cpu_ns),
            of(Kind::AxumBroadcast, |f| f.cpu_ns),
        );
        // Below saturation a 20 ms window holds about two events: the CPU
        // is told, not held to the burst's target (see `burst`).
        let cpu = median(ours.iter().zip(&peer).map(|(o, p)| o / p).collect());
        self.line(format!(
            "With coalesce(20 ms) at 100 events/s, CPU per delivery: {cpu:.2}× axum-broadcast's."
        ));
        let (ours, peer) = (
            of(Kind::TowerSseCoalesce, |f| f.p99_us),
            of(Kind::AxumBroadcast, |f| f.p99_us),
        );
        let added = median(
            ours.iter()
                .zip(&peer)
                .map(|(o, p)| (o - p) / 1000.0)
                .collect(),
        );
        self.target(
            format!("with coalesce(20 ms), p99 ≤ axum-broadcast's + 20 ms: {added:+.1} ms"),
            added <= 20.0,
        );
    }

    pub fn storm(&mut self, n: usize, behind: usize, runs: Vec<Vec<Storm>>) {
        self.heading(&format!(
            "Resume storm: {n} streams reconnect at once, each {behind} events behind (median of {} repetitions)",
            runs.len()
        ));
        let kinds: Vec<Kind> = runs[0].iter().map(|s| s.kind).collect();
        let mut t = String::from("| figure |");
        for k in &kinds {
            write!(t, " {} |", k.name()).unwrap();
        }
        t.push_str(" tower-sse / nchan |\n|---|");
        for _ in 0..=kinds.len() {
            t.push_str("---:|");
        }
        t.push('\n');
        type StormGet = fn(&Storm) -> f64;
        let rows: [(&str, StormGet, &str); 5] = [
            (
                "time until every stream caught up",
                |s| s.catch_up_s * 1e3,
                "ms",
            ),
            ("server CPU meanwhile", |s| s.cpu_s * 1e3, "ms"),
            (
                "memory growth at the peak",
                |s| s.peak_growth as f64 / 1e6,
                "MB",
            ),
            ("the same per stream", Storm::peak_per_stream, "B"),
            (
                "bytes replayed to each stream",
                |s| s.replay_bytes as f64,
                "B",
            ),
        ];
        let ours = kinds.iter().position(|k| *k == Kind::TowerSse);
        let nchan = kinds.iter().position(|k| *k == Kind::Nchan);
        for (name, get, unit) in rows {
            write!(t, "| {name} |").unwrap();
            for i in 0..kinds.len() {
                let v = median(runs.iter().map(|r| get(&r[i])).collect());
                write!(t, " {} |", show(v, unit)).unwrap();
            }
            match (ours, nchan) {
                (Some(o), Some(p)) => {
                    let r = median(runs.iter().map(|r| get(&r[o]) / get(&r[p])).collect());
                    writeln!(t, " {r:.2}× |").unwrap();
                }
                _ => t.push_str(" – |\n"),
            }
        }
        t.push_str(
            "\nMemory is the server's PSS; after the catch-up it stays at the peak (the allocator keeps what was freed), so only the peak is shown.\n",
        );
        let mut target = None;
        if let (Some(o), Some(idle)) = (ours, self.idle) {
            let held = median(runs.iter().map(|r| r[o].peak_per_stream() - idle).collect());
            let replayed = runs[0][o].replay_bytes as f64;
            writeln!(
                t,
                "\nLess an idle stream's memory in the paced scenario of this run ({}), a tower-sse stream held {} at the peak for its replay, of the {} replayed to it: the history is shared, and a stream's frame leaves its memory as the socket takes it.",
                show(idle, "B"),
                show(held, "B"),
                show(replayed, "B"),
            )
            .unwrap();
            target = Some((
                format!(
                    "resume storm: memory per stream at the peak ≤ an idle stream's + the bytes replayed to it: {} + {} of {}",
                    show(idle, "B"),
                    show(held, "B"),
                    show(replayed, "B")
                ),
                held <= replayed,
            ));
        }
        self.text.push_str(&t);
        println!("\n{t}");
        if let (Some(o), Some(p)) = (ours, nchan) {
            let r = median(
                runs.iter()
                    .map(|r| r[o].catch_up_s / r[p].catch_up_s)
                    .collect(),
            );
            self.target(
                format!("resume storm: time to catch up ≤ 0.5× nchan's: {r:.2}×"),
                r <= 0.5,
            );
        }
        if let Some((what, met)) = target {
            self.target(what, met);
        }
    }

    pub fn topics(&mut self, topics: usize, m: usize, runs: Vec<Figures>) {
        self.heading(&format!(
            "Topics: {topics} topics × 10 subscribers, {m} events spread round-robin"
        ));
        self.table(&[runs]);
    }

    pub fn churn(&mut self, cycles: usize, runs: Vec<Churn>) {
        self.heading(&format!(
            "Churn: {cycles} connect / response head / close cycles, 100 at a time"
        ));
        let mut t = String::from(
            "| server | cycles/s | CPU per cycle | memory at start | after 2% warm-up | at the end | end − warm-up | count back to 0 after |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for c in &runs {
            writeln!(
                t,
                "| {} | {:.0} | {:.1} µs | {:.1} MB | {:.1} MB | {:.1} MB | {:+.2} MB | {:.2} s |",
                c.kind.name(),
                c.cycles_per_s,
                c.cpu_us_per_cycle,
                c.memory_start as f64 / 1e6,
                c.memory_warm as f64 / 1e6,
                c.memory_end as f64 / 1e6,
                (c.memory_end as f64 - c.memory_warm as f64) / 1e6,
                c.settle_s
            )
            .unwrap();
        }
        if let (Some(o), Some(p)) = (
            runs.iter().find(|c| c.kind == Kind::TowerSse),
            runs.iter().find(|c| c.kind == Kind::AxumBroadcast),
        ) {
            writeln!(
                t,
                "\nRatios tower-sse / axum-broadcast: CPU per cycle {:.2}×, cycles/s {:.2}×.",
                o.cpu_us_per_cycle / p.cpu_us_per_cycle,
                o.cycles_per_s / p.cycles_per_s
            )
            .unwrap();
        }
        println!("\n{t}");
        self.text.push_str(&t);
    }

    /// One run per engine: `(engine, one node measured just before, two
    /// nodes through the engine)`.
    pub fn cross(&mut self, n: usize, runs: Vec<(Engine, Figures, Figures)>) {
        if runs.is_empty() {
            return;
        }
        let names: Vec<&str> = runs.iter().map(|(e, _, _)| e.name()).collect();
        self.heading(&format!(
            "Cross-node ({} backplanes): {n} subscribers on node B, events published on node A at 1,000/s, each against one node without a backplane measured just before it",
            names.join(", ")
        ));
        let mut t = String::from(
            "| | latency p50 | latency p99 | latency max | tower-sse CPU per delivery | engine CPU per delivery | events published per second |\n|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for (engine, single, cross) in &runs {
            for (name, f, engine_cpu) in [
                (
                    format!("one node (before {})", engine.name()),
                    single,
                    "—".to_string(),
                ),
                (
                    format!("two nodes via {}", engine.name()),
                    cross,
                    format!("{:.0} ns", cross.engine_cpu_ns),
                ),
            ] {
                writeln!(
                    t,
                    "| {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} ns | {engine_cpu} | {:.0} |",
                    f.p50_us, f.p99_us, f.max_us, f.cpu_ns, f.publish_per_s
                )
                .unwrap();
            }
        }
        t.push_str(
            "\n| backplane | p99 added over one node | CPU per delivery, both nodes + engine | against one node |\n|---|---:|---:|---:|\n",
        );
        for (engine, single, cross) in &runs {
            let total = cross.cpu_ns + cross.engine_cpu_ns;
            writeln!(
                t,
                "| {} | {:+.2} ms ({:.2}×) | {total:.0} ns | {:.2}× |",
                engine.name(),
                (cross.p99_us - single.p99_us) / 1e3,
                cross.p99_us / single.p99_us,
                total / single.cpu_ns
            )
            .unwrap();
        }
        t.push_str(
            "\nCPU is user + system time from `/proc`, from the first event published to the last one delivered: tower-sse's is both nodes' processes; the engine's is redis-server's or nats-server's process (all its threads), or PostgreSQL's postmaster with all its child processes (backends, WAL writer, checkpointer, …, and the children it reaped meanwhile).\n",
        );
        println!("\n{t}");
        self.text.push_str(&t);
        for (engine, single, cross) in &runs {
            let delta_ms = (cross.p99_us - single.p99_us) / 1e3;
            self.target(
                format!(
                    "cross-node p99 via {} within 2 ms of one node at 1,000 events/s: {delta_ms:+.2} ms",
                    engine.name()
                ),
                delta_ms <= 2.0,
            );
        }
    }

    pub fn stuck(&mut self, n: usize, k: usize, without: Figures, with: Figures) {
        self.heading(&format!(
            "Never-reading clients (tower-sse): {n} readers × 300 events of 4 KiB at 100/s, without and with {k} clients that never read"
        ));
        let mut t = String::from(
            "| | readers' p50 | readers' p99 | readers' max | server memory growth while sending |\n|---|---:|---:|---:|---:|\n",
        );
        for (name, f) in [("without", &without), (&*format!("with {k} stuck"), &with)] {
            writeln!(
                t,
                "| {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} MB |",
                f.p50_us,
                f.p99_us,
                f.max_us,
                f.growth_bytes / 1e6
            )
            .unwrap();
        }
        writeln!(
            t,
            "\nRatios with / without: p50 {:.2}×, p99 {:.2}×. Memory held per stuck client: {:.0} KB (the events themselves live once, in the shared history).",
            with.p50_us / without.p50_us,
            with.p99_us / without.p99_us,
            (with.growth_bytes - without.growth_bytes) / k as f64 / 1e3
        )
        .unwrap();
        println!("\n{t}");
        self.text.push_str(&t);
    }

    pub fn finish(mut self) {
        if !self.targets.is_empty() {
            self.text.push_str("\n### Targets\n\n");
            for (what, met) in &self.targets {
                writeln!(
                    self.text,
                    "- {} {what}",
                    if *met { "met:" } else { "**missed**:" }
                )
                .unwrap();
            }
        }
        if self.quick {
            println!("(partial run: BENCHMARKS.md and the chart are left alone)");
            return;
        }
        let root = env!("CARGO_MANIFEST_DIR");
        let mut section = format!("{BEGIN}\n\nMeasured {} on {}.\n", today(), machine());
        if !self.points.is_empty() {
            chart(&self.points, &format!("{root}/docs/fanout.svg"));
            section.push_str(
                "\n![p99 latency and CPU per delivery against subscribers](docs/fanout.svg)\n",
            );
        }
        section.push_str(&self.text);
        section.push('\n');
        section.push_str(END);
        let path = format!("{root}/BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
            _ => format!("{old}\n{section}\n"),
        };
        std::fs::write(&path, new).unwrap();
        println!("wrote BENCHMARKS.md and docs/fanout.svg");
    }
}

fn today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "an unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, Linux {}; client and servers share the cores, each server in its own process(es) with 2 worker threads (nginx: 2 worker processes)",
        kernel.trim()
    )
}

/// p99 latency and CPU per delivery against subscribers, one line per
/// server, as SVG.
fn chart(points: &[(usize, Figures)], path: &str) {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (left, right) = root.split_horizontally(480);
    let max_n = points.iter().map(|(n, _)| *n).max().unwrap_or(1) as f64 * 1.05;
    let colors = [
        RGBColor(200, 60, 30),
        RGBColor(40, 90, 180),
        RGBColor(60, 150, 60),
        RGBColor(150, 80, 170),
        RGBColor(120, 120, 120),
    ];
    let panels: [(&str, Get); 2] = [
        ("p99 latency (ms), burst", |f| f.p99_us / 1e3),
        ("server CPU per delivery (ns), burst", |f| f.cpu_ns),
    ];
    for (area, (title, get)) in [&left, &right].into_iter().zip(panels) {
        let max_y = points.iter().map(|(_, f)| get(f)).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_n, 0.0..max_y)
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("subscribers")
            .light_line_style(WHITE)
            .draw()
            .unwrap();
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let mut line: Vec<(f64, f64)> = points
                .iter()
                .filter(|(_, f)| f.kind == kind)
                .map(|(n, f)| (*n as f64, get(f)))
                .collect();
            if line.is_empty() {
                continue;
            }
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .unwrap()
                .label(kind.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .unwrap();
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .unwrap();
    }
    root.present().unwrap();
}
