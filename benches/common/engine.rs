//! The engines the backplanes share events through (Redis, PostgreSQL,
//! NATS JetStream), each a server the bench starts on a free port and stops;
//! and the bits of process plumbing the benches' servers share. Included by
//! `#[path]` from the fanout and scale benches (each bench is its own
//! crate), beside `usage.rs`.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("bench-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

/// A port nothing listens on now (on 127.0.0.1).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Installs Debian `packages` (the bench runs as root on CI machines);
/// fails saying how to do it by hand, or `otherwise`.
pub fn apt_install(packages: &str, otherwise: &str) {
    eprintln!("installing {packages} (apt-get)…");
    let ok = Command::new("sh")
        .args([
            "-c",
            &format!(
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {packages} >/dev/null"
            ),
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "could not install {packages}: run `apt-get install {packages}` as root, {otherwise}"
    );
}

/// Whether `program` is on the `PATH`.
pub fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// An engine a backplane shares events through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    Redis,
    Postgres,
    Nats,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Redis, Engine::Postgres, Engine::Nats];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Redis => "Redis",
            Engine::Postgres => "PostgreSQL",
            Engine::Nats => "NATS JetStream",
        }
    }

    /// Its name in `FANOUT_SKIP` and `SCALE_ENGINES`.
    pub fn short_name(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Postgres => "postgres",
            Engine::Nats => "nats",
        }
    }
}

/// An engine's server, started by the bench on a free port (its binaries
/// installed from Debian's packages when missing) and stopped when dropped:
/// `redis-server` without persistence; `nats-server -js`, its storage in a
/// temporary directory; PostgreSQL (`initdb` + `pg_ctl`) in a temporary
/// directory, as the `postgres` user when we are root.
pub struct EngineProcess {
    url: String,
    running: Running,
    /// Removed after the server stopped (fields drop after `Drop::drop`).
    _dir: Option<TempDir>,
}

enum Running {
    /// redis-server or nats-server, our child.
    Child(Child),
    /// The postmaster `pg_ctl` started in the data directory `data`.
    Postgres {
        pg_ctl: PathBuf,
        data: String,
        postmaster: u32,
    },
}

impl EngineProcess {
    pub fn start(engine: Engine) -> EngineProcess {
        match engine {
            Engine::Redis => start_redis(),
            Engine::Postgres => start_postgres(),
            Engine::Nats => start_nats(),
        }
    }

    /// The backplane's URL (connection string for PostgreSQL).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// User + system CPU time the engine's processes used so far: the
    /// server's process (all its threads), and for PostgreSQL the postmaster
    /// with all its children (backends, WAL writer, checkpointer, …).
    pub fn cpu(&self) -> Duration {
        match &self.running {
            Running::Child(child) => crate::usage::tree_cpu(child.id()),
            Running::Postgres { postmaster, .. } => crate::usage::tree_cpu(*postmaster),
        }
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Child(child) => {
                child.kill().ok();
                child.wait().ok();
            }
            Running::Postgres { pg_ctl, data, .. } => {
                as_postgres(pg_ctl)
                    .args(["-D", data, "-m", "immediate", "-w", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .ok();
            }
        }
    }
}

/// Waits for the line containing `ready` on a server's output, then keeps
/// draining it; fails (and `engine`, dropped, stops the server) when the
/// output ends first.
fn wait_ready(
    engine: EngineProcess,
    output: impl std::io::Read + Send + 'static,
    ready: &str,
) -> EngineProcess {
    let mut lines = BufReader::new(output).lines();
    let found = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains(ready));
    assert!(
        found,
        "{}: the server exited before it was ready",
        engine.url
    );
    std::thread::spawn(move || lines.for_each(drop));
    engine
}

fn start_redis() -> EngineProcess {
    if !which("redis-server") {
        apt_install("redis-server", "or set FANOUT_SKIP=redis");
    }
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-server starts");
    let output = child.stdout.take().unwrap();
    let engine = EngineProcess {
        url: format!("redis://127.0.0.1:{port}/"),
        running: Running::Child(child),
        _dir: None,
    };
    wait_ready(engine, output, "Ready to accept connections")
}

fn start_nats() -> EngineProcess {
    if !which("nats-server") {
        apt_install("nats-server", "or set FANOUT_SKIP=nats");
    }
    let dir = TempDir::new("nats");
    let port = free_port();
    let mut child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&dir.0)
        .stderr(Stdio::piped())
        .spawn()
        .expect("nats-server starts");
    let output = child.stderr.take().unwrap();
    let engine = EngineProcess {
        url: format!("nats://127.0.0.1:{port}"),
        running: Running::Child(child),
        _dir: Some(dir),
    };
    wait_ready(engine, output, "Server is ready")
}

/// A PostgreSQL binary: on the `PATH`, or in Debian's versioned directory
/// (the newest).
fn postgres_binary(name: &str) -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin").join(name)))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found.pop()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command running `binary` as `postgres` when we are root (PostgreSQL
/// refuses to run as root).
fn as_postgres(binary: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

/// Runs a PostgreSQL command to its end; fails with its output.
fn run_postgres(binary: &Path, args: &[&str]) {
    let out = as_postgres(binary)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        binary.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PostgreSQL's default settings (durable commits), a cluster made by
/// `initdb` in a temporary directory, listening on loopback only.
fn start_postgres() -> EngineProcess {
    if postgres_binary("initdb").is_none() || postgres_binary("pg_ctl").is_none() {
        apt_install("postgresql", "or set FANOUT_SKIP=postgres");
    }
    let initdb = postgres_binary("initdb").expect("initdb installed");
    let pg_ctl = postgres_binary("pg_ctl").expect("pg_ctl installed");
    let dir = TempDir::new("postgres");
    if is_root() {
        let ok = Command::new("chown")
            .arg("postgres:")
            .arg(&dir.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not give {} to the postgres user",
            dir.0.display()
        );
    }
    let data = dir.0.join("data").display().to_string();
    // (`--no-sync` spares initdb's own writes; the server keeps `fsync` on.)
    run_postgres(
        &initdb,
        &[
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    );
    let port = free_port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1",
        dir.0.display()
    );
    let log = dir.0.join("log").display().to_string();
    // `-w`: returns once the server accepts connections.
    let started = as_postgres(&pg_ctl)
        .args(["-D", &data, "-l", &log, "-o", &options, "-w", "start"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let postmaster = std::fs::read_to_string(format!("{data}/postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok());
    let engine = EngineProcess {
        url: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        running: Running::Postgres {
            pg_ctl,
            data,
            postmaster: postmaster.unwrap_or(0),
        },
        _dir: Some(dir),
    };
    if !started || postmaster.is_none() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }
    engine
}
