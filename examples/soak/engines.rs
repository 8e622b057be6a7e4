//! The engines of the soak: each a server of its own (redis-server,
//! PostgreSQL's pg_ctl, nats-server -js) on a free port, its files in the
//! soak's directory, restarted with or without its data, stopped at the end.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::services::{free_port, Service};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Postgres,
    Nats,
}

impl Kind {
    pub fn parse(name: &str) -> Result<Kind, String> {
        match name {
            "redis" => Ok(Kind::Redis),
            "postgres" => Ok(Kind::Postgres),
            "nats" => Ok(Kind::Nats),
            other => Err(format!("unknown engine {other:?} (redis, postgres, nats)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Postgres => "postgres",
            Kind::Nats => "nats",
        }
    }
}

/// One engine server of the soak.
pub struct Engine {
    pub kind: Kind,
    port: u16,
    dir: PathBuf,
    /// redis-server or nats-server (PostgreSQL runs under pg_ctl).
    process: Option<Service>,
}

impl Engine {
    /// Starts `kind` on a free port with its files under `dir`.
    pub fn start(kind: Kind, dir: &Path) -> Engine {
        let dir = dir.join(kind.name());
        std::fs::create_dir_all(&dir).unwrap();
        let mut engine = Engine {
            kind,
            port: free_port(),
            dir,
            process: None,
        };
        if kind == Kind::Postgres {
            engine.as_postgres_owner(&engine.dir);
            engine.initdb();
        }
        engine.up();
        engine
    }

    /// What an instance connects with.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}/", self.port),
            Kind::Postgres => format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
                self.port
            ),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn up(&mut self) {
        match self.kind {
            Kind::Redis => {
                std::fs::create_dir_all(self.data()).unwrap();
                let mut command = Command::new("redis-server");
                command
                    .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "yes", "--appendfsync"])
                    .args(["always", "--dir"])
                    .arg(self.data());
                self.process = Some(Service::start(
                    command,
                    "apt-get install redis-server",
                    "Ready to accept connections",
                ));
            }
            Kind::Nats => {
                std::fs::create_dir_all(self.data()).unwrap();
                let mut command = Command::new("nats-server");
                command
                    .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
                    .arg("-sd")
                    .arg(self.data());
                self.process = Some(Service::start(
                    command,
                    "apt-get install nats-server",
                    "Server is ready",
                ));
            }
            Kind::Postgres => {
                let options = format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
                    self.port,
                    self.dir.display()
                );
                let (data, log) = (self.data(), self.dir.join("log"));
                pg(&["-D", s(&data), "-l", s(&log), "-o", &options, "-w", "start"]);
            }
        }
    }

    /// Stops the server at once (SIGKILL; PostgreSQL: immediate shutdown).
    pub fn down(&mut self) {
        match self.kind {
            Kind::Postgres => pg(&["-D", s(&self.data()), "-m", "immediate", "-w", "stop"]),
            _ => {
                if let Some(mut process) = self.process.take() {
                    process.kill();
                }
            }
        }
    }

    /// Starts it again, with what it held (`keep`) or empty: Redis without
    /// its append-only file, NATS with an empty store directory, PostgreSQL
    /// with a new database cluster (the table gone).
    pub fn restart(&mut self, keep: bool, down_for: std::time::Duration) {
        self.down();
        if !keep {
            std::fs::remove_dir_all(self.data()).unwrap();
            if self.kind == Kind::Postgres {
                self.initdb();
            }
        }
        std::thread::sleep(down_for);
        self.up();
    }

    fn initdb(&self) {
        let data = self.data();
        let args = ["-D", s(&data), "-U", "postgres", "--auth=trust"];
        run(
            &binary("initdb"),
            &[&args[..], &["-E", "UTF8", "--no-sync"]].concat(),
        );
    }

    /// PostgreSQL refuses to run as root: its files belong to `postgres`.
    fn as_postgres_owner(&self, dir: &Path) {
        if is_root() {
            let ok = Command::new("chown").arg("postgres:").arg(dir).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown postgres: {dir:?}");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.kind == Kind::Postgres {
            let data = self.data();
            let _ = command(&binary("pg_ctl"))
                .args(["-D", s(&data), "-m", "immediate", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("the soak's directory is UTF-8")
}

fn pg(args: &[&str]) {
    run(&binary("pg_ctl"), args)
}

/// A PostgreSQL binary: on the `PATH`, or in Debian's versioned directory.
fn binary(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.exists())
    });
    let debian = || {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin").join(name)))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found.pop()
    };
    on_path
        .or_else(debian)
        .unwrap_or_else(|| panic!("{name} is needed for the soak: apt-get install postgresql"))
}

fn is_root() -> bool {
    // SAFETY-free: the effective uid from /proc, without a libc call.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// `binary`, as `postgres` when we are root.
fn command(binary: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

fn run(binary: &Path, args: &[&str]) {
    let status = command(binary)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", binary.display()));
    assert!(status.success(), "{} {args:?} failed", binary.display());
}
