//! What a process uses, read from `/proc`: CPU time and memory. Included
//! by `#[path]` from the fanout and scale benches.

use std::time::Duration;

/// Resident memory of a process, from `/proc/<pid>/smaps_rollup`.
#[derive(Clone, Copy, Default, Debug)]
pub struct Memory {
    /// Resident set size, in bytes: every page the process has in memory,
    /// shared ones whole.
    pub rss: u64,
    /// Proportional set size, in bytes: shared pages split between the
    /// processes that share them.
    pub pss: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, other: Memory) -> Memory {
        Memory {
            rss: self.rss + other.rss,
            pss: self.pss + other.pss,
        }
    }
}

impl std::iter::Sum for Memory {
    fn sum<I: Iterator<Item = Memory>>(iter: I) -> Memory {
        iter.fold(Memory::default(), |a, b| a + b)
    }
}

/// The memory of process `pid` (zero once it is gone).
pub fn memory(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Memory {
        rss: field("Rss:"),
        pss: field("Pss:"),
    }
}

/// User + system CPU time of process `pid` so far (zero once it is gone).
pub fn cpu_of(pid: u32) -> Duration {
    stat_fields(pid).map_or(Duration::ZERO, |f| ticks(&f[11..13]))
}

/// Clock ticks (`/proc/<pid>/stat` fields) as a duration.
fn ticks(fields: &[String]) -> Duration {
    let ticks: u64 = fields.iter().map(|t| t.parse::<u64>().unwrap()).sum();
    // The clock tick is 100 Hz on Linux x86_64 and arm64.
    Duration::from_millis(ticks * 10)
}

/// User + system CPU time so far of process `root` and all its descendants
/// (PostgreSQL's postmaster and its backends and background workers): each
/// live process's own time plus that of the children it has waited for
/// (`cutime` + `cstime`), so a backend that exited still counts, once.
pub fn tree_cpu(root: u32) -> Duration {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(pid) {
            processes.push((pid, f[1].parse::<u32>().unwrap_or(0), ticks(&f[11..15])));
        }
    }
    let mut tree = vec![root];
    let mut total = Duration::ZERO;
    while let Some(pid) = tree.pop() {
        for (child, parent, cpu) in &processes {
            if *child == pid {
                total += *cpu;
            }
            if *parent == pid {
                tree.push(*child);
            }
        }
    }
    total
}

/// Fields of `/proc/<pid>/stat` after the command name.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}
