//! What the soak tells: RSS of each instance over time, what was published
//! and delivered, the reconnects, and the checks (which decide the exit
//! code). Written as Markdown, for RELIABILITY.md.

use std::{fmt::Write, sync::atomic::Ordering, time::Duration};
use tokio::time::Instant;

use crate::{Run, Settings};

/// What one instance reported at one time: its RSS in KiB, then its live
/// heap in bytes and its open streams (`None`: gone, or no answer).
pub type Sample = (Option<u64>, Option<(u64, u64)>);

/// Memory samples: seconds since start, then one [`Sample`] per instance
/// (in run order).
#[derive(Default)]
pub struct Samples {
    pub rows: Vec<(f64, Vec<Sample>)>,
}

impl Samples {
    pub async fn take(&mut self, start: Instant, runs: &mut [Run]) {
        let at = start.elapsed().as_secs_f64();
        let mut row = Vec::new();
        for instance in runs.iter_mut().flat_map(|run| run.instances.iter_mut()) {
            row.push(match instance.alive() {
                true => (instance.rss_kib(), heap_and_streams(&instance.url).await),
                false => (None, None),
            });
        }
        self.rows.push((at, row));
    }
}

/// What an instance's `GET /stats` answers (within 5 s).
pub async fn stats(base: &str) -> Option<String> {
    let answer = async {
        reqwest::get(format!("{base}/stats"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .ok()?
}

/// The live heap and the open streams an instance reports (`heap=` and
/// `streams=` in `GET /stats`).
async fn heap_and_streams(base: &str) -> Option<(u64, u64)> {
    let text = stats(base).await?;
    let field = |name: &str| -> Option<u64> {
        text.split_whitespace()
            .find_map(|part| part.strip_prefix(name))?
            .parse()
            .ok()
    };
    Some((field("heap=")?, field("streams=")?))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Prints the report (and writes it where asked); whether every check passed.
pub fn report(
    settings: &Settings,
    runs: &mut [Run],
    samples: &Samples,
    events: &[String],
    drain_took: Duration,
) -> bool {
    let mut out = String::new();
    let mut failures: Vec<String> = Vec::new();
    let secs = settings.duration.as_secs_f64();
    let _ = writeln!(
        out,
        "Soak of {:.0} s: {} streams and {} publishes/s per engine over {} topics, 2 instances \
         per engine, engines restarted every {:.0} s (down {:.1} s), alternately keeping and \
         losing their data; streams stay open 1 s to {:.0} s, then resume with Last-Event-ID.\n",
        secs,
        settings.streams,
        settings.rate,
        settings.topics,
        settings.restart_every.as_secs_f64(),
        settings.down_for.as_secs_f64(),
        settings.churn.as_secs_f64() + 1.0,
    );
    for event in events {
        let _ = writeln!(out, "- {event}");
    }
    let _ = writeln!(
        out,
        "\n| engine | published | accepted | refused | timed out | delivered | verified | \
         covered by reset | lost | dup/disorder | wrong | unconfirmed |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in runs.iter() {
        let c = &run.soak.counts;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.kind.name(),
            n(&c.published),
            n(&c.accepted),
            n(&c.refused),
            n(&c.timed_out),
            n(&c.delivered),
            n(&c.verified),
            n(&c.covered),
            n(&c.lost),
            n(&c.duplicate_or_disorder),
            n(&c.wrong),
            n(&c.unconfirmed),
        );
        let name = run.kind.name();
        if n(&c.lost) > 0 {
            failures.push(format!(
                "{name}: {} accepted events missed without a reset",
                n(&c.lost)
            ));
        }
        if n(&c.duplicate_or_disorder) > 0 {
            failures.push(format!(
                "{name}: {} events delivered twice or out of order",
                n(&c.duplicate_or_disorder)
            ));
        }
        if n(&c.wrong) > 0 {
            failures.push(format!(
                "{name}: {} ids delivered as another event",
                n(&c.wrong)
            ));
        }
        if n(&c.verified) == 0 {
            failures.push(format!("{name}: nothing delivered was verified"));
        }
        if let Some(last) = run.accepted_per_interval.last() {
            if *last == 0 {
                failures.push(format!("{name}: nothing accepted after the last restart"));
            }
        }
    }
    let _ = writeln!(
        out,
        "\nReconnects (streams):\n\n| engine | churn (client closed, resumed) | ended by the server or broken | connects failed | resets received | engine outages seen by the instances (down / up again) |\n|---|---:|---:|---:|---:|---|"
    );
    for run in runs.iter() {
        let c = &run.soak.counts;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            run.kind.name(),
            n(&c.churned),
            n(&c.ended),
            n(&c.connect_failed),
            n(&c.resets),
            run.outages.join("; "),
        );
    }
    let per_interval: Vec<String> = runs
        .iter()
        .map(|r| format!("{}: {:?}", r.kind.name(), r.accepted_per_interval))
        .collect();
    let _ = writeln!(
        out,
        "\nAccepted publishes per restart interval: {}\n\nDrain (the streams reading what was left after the last publish): {:.1} s",
        per_interval.join("; "),
        drain_took.as_secs_f64()
    );

    // Memory: a table over time (at most ~13 rows), then the drift check.
    // The live heap follows the histories and the streams an instance
    // holds (about 2 KB each on tower_sse::serve, 30 KB on axum::serve),
    // which move between the instances as they resume; RSS keeps the
    // highest of it (the allocator keeps what it got).
    let names: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.instances
                .iter()
                .map(|i| format!("{} {}", i.engine.name(), i.n))
        })
        .collect();
    let _ = writeln!(
        out,
        "\nRSS, live heap (MiB) and open streams of each instance over time:\n\n| s | {} |\n|---:|{}",
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    let step = samples.rows.len().div_ceil(12).max(1);
    for (k, (at, row)) in samples.rows.iter().enumerate() {
        if k % step == 0 || k + 1 == samples.rows.len() {
            let cells: Vec<String> = row
                .iter()
                .map(|(r, s)| {
                    format!(
                        "{} / {}",
                        r.map_or("gone".into(), mib),
                        s.map_or("?".into(), |(heap, streams)| {
                            format!("{} / {streams}", mib(heap / 1024))
                        })
                    )
                })
                .collect();
            let _ = writeln!(out, "| {at:.0} | {} |", cells.join(" | "));
        }
    }
    let warm = settings.warm_up.as_secs_f64();
    let _ = writeln!(
        out,
        "\nRSS after warm-up ({warm:.0} s): median of the first and last quarter of the \
         samples, their drift (at most {:.0}%), and the range:\n\n| instance | first quarter \
         | last quarter | drift | min | max |\n|---|---:|---:|---:|---:|---:|",
        settings.rss_tolerance * 100.0
    );
    for (col, name) in names.iter().enumerate() {
        let after: Vec<Option<u64>> = samples
            .rows
            .iter()
            .filter(|(at, _)| *at >= warm)
            .map(|(_, row)| row[col].0)
            .collect();
        if after.iter().any(Option::is_none) {
            failures.push(format!("{name}: the instance exited"));
            continue;
        }
        let after: Vec<u64> = after.into_iter().flatten().collect();
        if after.len() < 4 {
            failures.push(format!("{name}: too few RSS samples after warm-up"));
            continue;
        }
        let quarter = after.len() / 4;
        let first = median(&mut after[..quarter].to_vec());
        let last = median(&mut after[after.len() - quarter..].to_vec());
        let drift = (last as f64 - first as f64) / first as f64;
        let (min, max) = (after.iter().min().unwrap(), after.iter().max().unwrap());
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:+.1}% | {} | {} |",
            mib(first),
            mib(last),
            drift * 100.0,
            mib(*min),
            mib(*max)
        );
        if drift.abs() > settings.rss_tolerance {
            failures.push(format!(
                "{name}: RSS drifted {:+.1}% after warm-up ({} → {} MiB)",
                drift * 100.0,
                mib(first),
                mib(last)
            ));
        }
    }
    for run in runs.iter() {
        for instance in &run.instances {
            let log = std::fs::read_to_string(&instance.log).unwrap_or_default();
            let (warn, error) = (
                log.lines().filter(|l| l.contains(" WARN ")).count(),
                log.lines().filter(|l| l.contains(" ERROR ")).count(),
            );
            let _ = writeln!(
                out,
                "\n{} {}: {warn} WARN and {error} ERROR log lines{}",
                instance.engine.name(),
                instance.n,
                log.lines()
                    .filter(|l| l.contains(" ERROR "))
                    .take(3)
                    .map(|l| format!("\n    {l}"))
                    .collect::<String>()
            );
        }
    }
    let passed = failures.is_empty();
    let _ = writeln!(
        out,
        "\n**{}**{}",
        if passed { "PASSED" } else { "FAILED" },
        failures
            .iter()
            .map(|f| format!("\n- {f}"))
            .collect::<String>()
    );
    println!("\n{out}");
    if let Some(path) = &settings.report {
        if let Err(e) = std::fs::write(path, &out) {
            eprintln!("could not write {}: {e}", path.display());
        }
    }
    passed
}
