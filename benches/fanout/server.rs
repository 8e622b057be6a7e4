//! The servers under test, each in its own process(es): tower-sse and the
//! hand-rolled axum peer run as this binary re-executed with
//! `FANOUT_SERVER=<kind>`; Nchan runs as nginx with a config written to a
//! temporary directory. The cross-node scenario's engines (Redis,
//! PostgreSQL, NATS JetStream) run as their own servers on free ports, see
//! [`EngineProcess`].
//!
//! Every server offers the same routes (see [`Kind::sub_path`]): the event
//! stream of one topic, `POST /pub/<topic>` to publish the body as one
//! event's data, and a count of connected subscribers.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    TowerSse,
    AxumBroadcast,
    Nchan,
    /// tower-sse with a Redis backplane (`FANOUT_REDIS` is its URL).
    TowerSseRedis,
    /// tower-sse with a PostgreSQL backplane (`FANOUT_POSTGRES` is its
    /// connection string).
    TowerSsePostgres,
    /// tower-sse with a NATS JetStream backplane (`FANOUT_NATS` is its URL).
    TowerSseNats,
    /// tower-sse's server, its subscribers on WebSocket (`/ws`).
    TowerSseWs,
    /// tower-sse with `SseLayer::coalesce(20 ms)` (the `coalesce` scenario).
    TowerSseCoalesce,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::TowerSse,
        Kind::AxumBroadcast,
        Kind::Nchan,
        Kind::TowerSseWs,
    ];

    /// Where a subscriber to `topic` connects.
    pub fn sub_path(self, topic: &str) -> String {
        match self {
            Kind::TowerSse
            | Kind::TowerSseRedis
            | Kind::TowerSsePostgres
            | Kind::TowerSseNats
            | Kind::TowerSseCoalesce => {
                format!("/events?topic={topic}")
            }
            Kind::TowerSseWs => format!("/ws?topic={topic}"),
            _ => format!("/sub/{topic}"),
        }
    }

    /// Where the number of subscribers of `topic` is read: a number, or for
    /// Nchan a channel-info text with an `active subscribers: N` line.
    pub fn count_path(self, topic: &str) -> String {
        match self {
            Kind::Nchan => format!("/pub/{topic}"),
            _ => "/count".into(),
        }
    }

    /// The engine of its backplane, if it has one.
    pub fn engine(self) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.kind() == self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::TowerSse => "tower-sse",
            Kind::AxumBroadcast => "axum-broadcast",
            Kind::Nchan => "nchan",
            Kind::TowerSseRedis => "tower-sse+redis",
            Kind::TowerSsePostgres => "tower-sse+postgres",
            Kind::TowerSseNats => "tower-sse+nats",
            Kind::TowerSseWs => "tower-sse-ws",
            Kind::TowerSseCoalesce => "tower-sse-coalesce",
        }
    }
}

/// A running server; stopped (with its workers) when dropped.
pub struct ServerProcess {
    child: Child,
    pub port: u16,
    _dir: Option<TempDir>,
}

impl ServerProcess {
    pub fn start(kind: Kind) -> ServerProcess {
        Self::start_with(kind, "")
    }

    /// Starts `kind`, with `backplane` as its engine's URL (connection
    /// string for PostgreSQL) when it has one. Returns once the server
    /// listens and, with an engine, is connected to it.
    pub fn start_with(kind: Kind, backplane: &str) -> ServerProcess {
        match kind {
            Kind::Nchan => start_nchan(),
            _ => {
                let mut command = Command::new(std::env::current_exe().unwrap());
                if let Some(engine) = kind.engine() {
                    command.env(engine.env(), backplane);
                }
                let mut child = command
                    .env("FANOUT_SERVER", kind.name())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut line = String::new();
                BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let port = line.trim().parse().expect("the server prints its port");
                ServerProcess {
                    child,
                    port,
                    _dir: None,
                }
            }
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's processes: the one we started and its children (nginx's
    /// workers).
    fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        let mut pids = vec![root];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if stat_fields(pid).is_some_and(|f| f[1] == root.to_string()) {
                pids.push(pid);
            }
        }
        pids
    }

    /// User + system CPU time of all the server's processes so far.
    pub fn cpu(&self) -> Duration {
        self.pids().into_iter().map(cpu_of).sum()
    }

    /// Proportional set size of all the server's processes, in bytes (shared
    /// pages split between the processes that share them, so nginx's shared
    /// memory zone is counted once).
    pub fn memory(&self) -> u64 {
        pss(&self.pids())
    }

    /// Samples [`memory`](Self::memory) every 10 ms on a thread of its own
    /// until finished: the peak so far.
    pub fn peak_memory(&self) -> crate::Poller<u64> {
        let pids = self.pids();
        crate::Poller::start(Duration::from_millis(10), 0, move |peak| {
            *peak = (*peak).max(pss(&pids));
        })
    }
}

/// Proportional set size of processes `pids`, in bytes.
fn pss(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

/// User + system CPU time of process `pid` so far (zero once it is gone).
fn cpu_of(pid: u32) -> Duration {
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
fn tree_cpu(root: u32) -> Duration {
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
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGTERM: nginx's master stops its workers; our servers just exit.
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .ok();
        self.child.wait().ok();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("fanout-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// Installs nginx and Nchan from Debian's packages when missing.
pub fn ensure_nchan() {
    if std::path::Path::new(NCHAN_MODULE).exists() && which("nginx") {
        return;
    }
    apt_install("nginx-light libnginx-mod-nchan", "or set FANOUT_SKIP=nchan");
}

/// Installs Debian `packages` (the bench runs as root on CI machines);
/// fails saying how to do it by hand, or `otherwise`.
fn apt_install(packages: &str, otherwise: &str) {
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

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// nginx with Nchan, 2 worker processes (one per core), on loopback.
fn start_nchan() -> ServerProcess {
    ensure_nchan();
    let dir = std::env::temp_dir().join(format!("fanout-nchan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let d = dir.display();
    let config = format!(
        r#"load_module {NCHAN_MODULE};
user root;
worker_processes 2;
worker_rlimit_nofile 20000;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    nchan_shared_memory_size 256M;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /health {{
            return 200 "ok";
        }}
        location ~ ^/sub/(.+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
        }}
        location ~ ^/pub/(.+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length 4096;
            nchan_message_timeout 5m;
        }}
    }}
}}
"#
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).unwrap();
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c", &conf.display().to_string()])
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .spawn()
        .expect("nginx starts");
    // Wait until it accepts connections (a bench, not a test: polling the
    // port is the readiness signal nginx offers).
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start; see {d}/error.log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ServerProcess {
        child,
        port,
        _dir: Some(TempDir(dir)),
    }
}

/// Runs the in-process server `kind` (the child side of [`ServerProcess`]).
pub fn serve(kind: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("FANOUT_QUEUE_DEPTH").is_some() {
        queue_depth(runtime.handle().clone());
    }
    runtime.block_on(async {
        // The backlog nginx is given below (tokio's `bind` gives 1,024):
        // thousands of clients reconnecting at once must not wait on SYN
        // retries with one server and not the other.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(4096).unwrap();
        let app = match kind {
            "tower-sse" | "tower-sse-ws" => ours(None, None).await,
            "tower-sse-coalesce" => ours(None, Some(COALESCE)).await,
            "axum-broadcast" => hand_rolled(),
            other => {
                let engine = Engine::ALL
                    .into_iter()
                    .find(|e| e.kind().name() == other)
                    .unwrap_or_else(|| panic!("unknown server {other}"));
                let url = std::env::var(engine.env()).expect("the engine's URL");
                ours(Some((engine, url)), None).await
            }
        };
        // Ready (and connected to the engine, if any): the parent waits for
        // this line before it starts the next node.
        println!("{}", listener.local_addr().unwrap().port());
        // Ends when the client closes our stdin or sends SIGTERM.
        tokio::select! {
            _ = axum::serve(listener, app) => {}
            () = crate::common::stdin_closed() => {}
        }
    });
}

/// A diagnostic (`FANOUT_QUEUE_DEPTH=1`): how many tasks wait in the
/// runtime's global queue, sampled every millisecond and printed each
/// second in which any did (the largest and the mean) on stderr. A worker
/// takes from the global queue only every few dozen tasks, so what waits
/// there waits long under load.
fn queue_depth(runtime: tokio::runtime::Handle) {
    std::thread::spawn(move || loop {
        let (mut largest, mut sum) = (0, 0);
        for _ in 0..1000 {
            let depth = runtime.metrics().global_queue_depth();
            largest = largest.max(depth);
            sum += depth;
            std::thread::sleep(Duration::from_millis(1));
        }
        if largest > 0 {
            eprintln!(
                "global queue: largest {largest}, mean {:.0}",
                sum as f64 / 1000.0
            );
        }
    });
}

/// The window of `tower-sse-coalesce`.
pub const COALESCE: Duration = Duration::from_millis(20);

/// tower-sse: the layer serves `/events?topic=…`; handlers publish (through
/// the engine's backplane when `backplane` names one and its URL), with
/// `SseLayer::coalesce(window)` when `coalesce` is given.
async fn ours(backplane: Option<(Engine, String)>, coalesce: Option<Duration>) -> axum::Router {
    use axum::extract::Path;
    use tower_sse::{
        Event, Hub, NatsBackplane, PostgresBackplane, Publisher, RedisBackplane, SseLayer,
    };

    async fn publish(
        publisher: Publisher,
        Path(topic): Path<String>,
        body: String,
    ) -> (axum::http::StatusCode, String) {
        use axum::http::StatusCode;
        // A refusal says why (the client shows the body when it fails).
        match publisher.publish_to(&topic, Event::default().data(body)) {
            Ok(published) => match published.await {
                Ok(_) => (StatusCode::ACCEPTED, String::new()),
                Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:?}")),
            },
            Err(e @ tower_sse::Error::Backplane(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("{e:?}"))
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e:?}")),
        }
    }
    async fn count(publisher: Publisher) -> String {
        publisher.subscriber_count().to_string()
    }
    // Every client comes from 127.0.0.1, thousands of them: no stream limit.
    let hub = Hub::builder()
        .history(4096)
        .max_lag(4096)
        .max_subscribers(usize::MAX)
        .max_streams_per_address(usize::MAX);
    let hub = match backplane {
        None => hub.build(),
        Some((Engine::Redis, url)) => {
            let backplane = RedisBackplane::connect(&url).await.expect("Redis is up");
            hub.backplane(backplane.key("fanout")).build()
        }
        Some((Engine::Postgres, config)) => {
            let backplane = PostgresBackplane::connect(&config)
                .await
                .expect("PostgreSQL is up");
            hub.backplane(backplane).build()
        }
        Some((Engine::Nats, url)) => {
            let backplane = NatsBackplane::connect(&url).await.expect("NATS is up");
            hub.backplane(backplane).build()
        }
    };
    let mut layer = SseLayer::new("/events").hub(&hub).websocket("/ws");
    if let Some(window) = coalesce {
        layer = layer.coalesce(window);
    }
    // Ready once the hub reads the engine's log: publishing is refused
    // before.
    let publisher = layer.publisher();
    let mut status = publisher.watch_backplane();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.is_up()))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the backplane is not up: {:?}",
                publisher.backplane_status()
            )
        })
        .expect("the hub is open");
    axum::Router::new()
        .route("/pub/{topic}", axum::routing::post(publish))
        .route("/count", axum::routing::get(count))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(layer)
}

/// An engine a backplane shares events through, for the cross-node scenario.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    Redis,
    Postgres,
    Nats,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Redis, Engine::Postgres, Engine::Nats];

    /// The tower-sse server with this engine's backplane.
    pub fn kind(self) -> Kind {
        match self {
            Engine::Redis => Kind::TowerSseRedis,
            Engine::Postgres => Kind::TowerSsePostgres,
            Engine::Nats => Kind::TowerSseNats,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Redis => "Redis",
            Engine::Postgres => "PostgreSQL",
            Engine::Nats => "NATS JetStream",
        }
    }

    /// Its name in `FANOUT_SKIP`.
    pub fn short_name(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Postgres => "postgres",
            Engine::Nats => "nats",
        }
    }

    /// The variable a server reads the engine's URL (or connection string)
    /// from.
    fn env(self) -> &'static str {
        match self {
            Engine::Redis => "FANOUT_REDIS",
            Engine::Postgres => "FANOUT_POSTGRES",
            Engine::Nats => "FANOUT_NATS",
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
            Running::Child(child) => tree_cpu(child.id()),
            Running::Postgres { postmaster, .. } => tree_cpu(*postmaster),
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
/// What axum's documentation leads to: `Sse` over a `broadcast` receiver
/// (one channel per topic, in a map), an `Event` built per subscriber.
fn hand_rolled() -> axum::Router {
    use axum::{
        extract::{Path, State},
        response::sse::{Event, KeepAlive, Sse},
    };
    use futures_util::StreamExt;
    use std::{collections::HashMap, sync::Mutex};
    use tokio::sync::broadcast;
    use tokio_stream::wrappers::BroadcastStream;

    type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<String>>>>;
    fn sender(topics: &Topics, topic: String) -> broadcast::Sender<String> {
        topics
            .lock()
            .unwrap()
            .entry(topic)
            .or_insert_with(|| broadcast::channel(4096).0)
            .clone()
    }
    async fn events(
        State(topics): State<Topics>,
        Path(topic): Path<String>,
    ) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
        let stream = BroadcastStream::new(sender(&topics, topic).subscribe()).filter_map(
            |message| async move { message.ok().map(|m| Ok(Event::default().data(m))) },
        );
        Sse::new(stream).keep_alive(KeepAlive::default())
    }
    async fn publish(
        State(topics): State<Topics>,
        Path(topic): Path<String>,
        body: String,
    ) -> axum::http::StatusCode {
        sender(&topics, topic).send(body).ok();
        axum::http::StatusCode::ACCEPTED
    }
    async fn count(State(topics): State<Topics>) -> String {
        let topics = topics.lock().unwrap();
        let n: usize = topics.values().map(|tx| tx.receiver_count()).sum();
        n.to_string()
    }
    axum::Router::new()
        .route("/sub/{topic}", axum::routing::get(events))
        .route("/pub/{topic}", axum::routing::post(publish))
        .route("/count", axum::routing::get(count))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .with_state(Topics::default())
}
