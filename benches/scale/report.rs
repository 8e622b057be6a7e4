//! The run's figures as a Markdown section for BENCHMARKS.md (printed at the
//! end), with each target met or missed.

use crate::{engine::Engine, run::Figures};
use std::fmt::Write;

/// 19,000 idle streams on one instance: at most this RSS in all.
const SINGLE_TARGET: u64 = 110 * 1024 * 1024;
/// 100,000 streams over 6 instances: at most this RSS in all.
const CROSS_TARGET: u64 = 6 * 1024 * 1024 * 1024 / 10;

#[derive(Default)]
pub struct Report {
    single: Option<Figures>,
    /// The axum peer with as many streams on one instance.
    peer: Option<Figures>,
    cross: Vec<(Engine, Figures)>,
    notes: Vec<String>,
}

/// A row of the single-instance table: its name, and its value for a run.
type Row = (&'static str, fn(&Figures) -> String);

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**MISSED**"
    }
}

impl Report {
    pub fn single(&mut self, figures: Figures, quiet: Option<String>) {
        self.notes
            .extend(quiet.map(|q| format!("One instance: {q}.")));
        self.single = Some(figures);
    }

    pub fn peer(&mut self, figures: Figures, quiet: Option<String>) {
        self.notes
            .extend(quiet.map(|q| format!("The axum peer: {q}.")));
        self.peer = Some(figures);
    }

    pub fn cross(&mut self, engine: Engine, figures: Figures, quiet: Option<String>) {
        self.notes
            .extend(quiet.map(|q| format!("{}: {q}.", engine.name())));
        self.cross.push((engine, figures));
    }

    /// Prints the section.
    pub fn finish(self) {
        let mut out = String::new();
        let single = self.single.as_ref().expect("the single-instance run");
        let total = self.cross.first().map_or(0, |(_, f)| f.streams);
        let instances = self.cross.first().map_or(0, |(_, f)| f.instances);
        writeln!(
            out,
            "\n## Scale: {} streams on one instance, {} over {}\n",
            thousands(single.streams),
            thousands(total),
            instances
        )
        .unwrap();
        writeln!(
            out,
            "`cargo bench --bench scale --features axum,serve,redis,nats,ws,postgres`: idle HTTP/1.1 \
             streams on `tower_sse::serve` (lean path on, as by default), held by load client processes \
             of their own ({} for one instance{}), each from its own 127.0.0.x source address; then {} \
             events, each published once the one before reached every stream. Memory is the instances' \
             own, from `/proc/<pid>/smaps_rollup`.\n",
            single.clients,
            self.cross
                .first()
                .map_or(String::new(), |(_, f)| format!(", {} for {}", f.clients, thousands(f.streams))),
            single.events
        )
        .unwrap();
        writeln!(
            out,
            "**One instance, {} streams**\n",
            thousands(single.streams)
        )
        .unwrap();
        let columns: Vec<&Figures> = std::iter::once(single).chain(&self.peer).collect();
        let (peer_head, peer_rule) = if self.peer.is_some() {
            (" | the axum peer (`axum::serve`)", "---:|")
        } else {
            ("", "")
        };
        writeln!(
            out,
            "| | tower-sse (`tower_sse::serve`){peer_head} |\n|---|---:|{peer_rule}"
        )
        .unwrap();
        let rows: [Row; 11] = [
            ("RSS before any stream", |f| mib(f.before.rss)),
            ("RSS with every stream idle", |f| mib(f.idle.rss)),
            ("RSS after the events", |f| mib(f.after.rss)),
            ("RSS per idle stream", |f| {
                format!("{:.0} B", f.rss_per_stream())
            }),
            ("PSS before / idle / after", |f| {
                format!(
                    "{} / {} / {}",
                    mib(f.before.pss),
                    mib(f.idle.pss),
                    mib(f.after.pss)
                )
            }),
            ("PSS per idle stream", |f| {
                format!("{:.0} B", f.pss_per_stream())
            }),
            ("connecting every stream", |f| {
                format!("{:.1} s", f.connect.as_secs_f64())
            }),
            ("delivery to every stream (median / slowest event)", |f| {
                format!(
                    "{:.0} ms / {:.0} ms",
                    f.delivery_median().as_secs_f64() * 1e3,
                    f.delivery_max().as_secs_f64() * 1e3
                )
            }),
            ("latency p50", |f| ms(f.local.value_at_quantile(0.5))),
            ("latency p99", |f| ms(f.local.value_at_quantile(0.99))),
            ("server CPU while the events went out", |f| {
                format!(
                    "{:.2} s ({:.1} µs per delivery)",
                    f.cpu.as_secs_f64(),
                    f.cpu_per_delivery().as_secs_f64() * 1e6
                )
            }),
        ];
        for (name, value) in rows {
            let values: Vec<String> = columns.iter().map(|f| value(f)).collect();
            writeln!(out, "| {name} | {} |", values.join(" | ")).unwrap();
        }
        if !self.cross.is_empty() {
            writeln!(
                out,
                "\n**{} streams over {} instances sharing a backplane** (events published on the first \
                 instance; every stream gets every event)\n",
                thousands(total),
                instances
            )
            .unwrap();
            writeln!(
                out,
                "| engine | RSS in all: before / idle / after | PSS idle | delivery (median / slowest) \
                 | p50 / p99 on the publishing instance | p50 / p99 on the others | added cross-node p99 \
                 | CPU: instances / engine |\n|---|---:|---:|---:|---:|---:|---:|---:|"
            )
            .unwrap();
            let single_p99 = single.local.value_at_quantile(0.99);
            for (engine, f) in &self.cross {
                let remote_p99 = f.remote.value_at_quantile(0.99);
                writeln!(
                    out,
                    "| {} | {} / {} / {} | {} | {:.0} / {:.0} ms | {} / {} | {} / {} | {:+.1} ms | {:.1} s / {:.1} s |",
                    engine.name(),
                    mib(f.before.rss),
                    mib(f.idle.rss),
                    mib(f.after.rss),
                    mib(f.idle.pss),
                    f.delivery_median().as_secs_f64() * 1e3,
                    f.delivery_max().as_secs_f64() * 1e3,
                    ms(f.local.value_at_quantile(0.5)),
                    ms(f.local.value_at_quantile(0.99)),
                    ms(f.remote.value_at_quantile(0.5)),
                    ms(remote_p99),
                    (remote_p99 as f64 - single_p99 as f64) / 1e6,
                    f.cpu.as_secs_f64(),
                    f.engine_cpu.as_secs_f64()
                )
                .unwrap();
            }
            writeln!(
                out,
                "\nThe added cross-node p99 is the p99 at the streams on the other instances less the \
                 single instance's p99 above ({}), both from this run.",
                ms(single_p99)
            )
            .unwrap();
        }
        writeln!(out, "\n**Targets**\n").unwrap();
        writeln!(
            out,
            "- {} idle streams on one instance at most 110 MiB RSS in all: {} ({}){}",
            thousands(single.streams),
            mib(single.idle.rss),
            verdict(single.idle.rss <= SINGLE_TARGET),
            if single.streams == 19_000 {
                ""
            } else {
                " — the target is for 19,000"
            }
        )
        .unwrap();
        for (engine, f) in &self.cross {
            writeln!(
                out,
                "- {} streams over {} instances ({}) at most 0.6 GiB RSS in all: idle {} ({}), after the events {} ({})",
                thousands(f.streams),
                f.instances,
                engine.name(),
                mib(f.idle.rss),
                verdict(f.idle.rss <= CROSS_TARGET),
                mib(f.after.rss),
                verdict(f.after.rss <= CROSS_TARGET)
            )
            .unwrap();
        }
        match &self.peer {
            Some(peer) => {
                for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
                    let (ours, theirs) = (
                        single.local.value_at_quantile(q),
                        peer.local.value_at_quantile(q),
                    );
                    writeln!(
                        out,
                        "- latency {name} at or below the axum peer's (one instance, {} streams): {} against {} ({})",
                        thousands(single.streams),
                        ms(ours),
                        ms(theirs),
                        verdict(ours <= theirs)
                    )
                    .unwrap();
                }
            }
            None => writeln!(
                out,
                "- latency against the axum peer's: not measured (SCALE_PEER=0)"
            )
            .unwrap(),
        }
        for note in &self.notes {
            writeln!(out, "- {note}").unwrap();
        }
        println!("{out}");
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
