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

pub use crate::engine::{Engine, EngineProcess};
use crate::{
    app,
    engine::{apt_install, free_port, which, TempDir},
    usage::{cpu_of, memory, stat_fields},
};
use std::{
    process::{Child, Command, Stdio},
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
    /// The same app as `TowerSse`, served by `axum::serve` rather than
    /// `tower_sse::serve`: what a user who keeps axum's server pays.
    TowerSseAxumServe,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::TowerSse,
        Kind::AxumBroadcast,
        Kind::Nchan,
        Kind::TowerSseWs,
        Kind::TowerSseAxumServe,
    ];

    /// Where a subscriber to `topic` connects.
    pub fn sub_path(self, topic: &str) -> String {
        match self {
            Kind::TowerSse
            | Kind::TowerSseRedis
            | Kind::TowerSsePostgres
            | Kind::TowerSseNats
            | Kind::TowerSseCoalesce
            | Kind::TowerSseAxumServe => {
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
            Kind::TowerSseAxumServe => "tower-sse-axum-serve",
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
                let (child, port) =
                    crate::common::start_server(command.env("FANOUT_SERVER", kind.name()));
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
    pids.iter().map(|&pid| memory(pid).pss).sum()
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

const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// Installs nginx and Nchan from Debian's packages when missing.
pub fn ensure_nchan() {
    if std::path::Path::new(NCHAN_MODULE).exists() && which("nginx") {
        return;
    }
    apt_install("nginx-light libnginx-mod-nchan", "or set FANOUT_SKIP=nchan");
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
    let runtime = crate::common::runtime(2);
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
            "tower-sse" | "tower-sse-ws" | "tower-sse-axum-serve" => {
                app::tower_sse(None, None).await
            }
            "tower-sse-coalesce" => app::tower_sse(None, Some(COALESCE)).await,
            "axum-broadcast" => app::hand_rolled(),
            other => {
                let engine = Engine::ALL
                    .into_iter()
                    .find(|e| e.kind().name() == other)
                    .unwrap_or_else(|| panic!("unknown server {other}"));
                let url = std::env::var(engine.env()).expect("the engine's URL");
                app::tower_sse(Some((engine, url)), None).await
            }
        };
        // Ready (and connected to the engine, if any): the parent waits for
        // this line before it starts the next node.
        println!("{}", listener.local_addr().unwrap().port());
        // tower-sse runs on its own server, as its README shows (HTTP/1.1
        // streams leave hyper for the lean writer); the hand-rolled peer
        // and `tower-sse-axum-serve` on axum's. Ends when the client closes
        // our stdin or sends SIGTERM.
        if matches!(kind, "axum-broadcast" | "tower-sse-axum-serve") {
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                () = crate::common::stdin_closed() => {}
            }
        } else {
            // Every client comes from 127.0.0.1, thousands of them.
            let server = tower_sse::serve(listener, app).max_connections_per_address(usize::MAX);
            tokio::select! {
                _ = server => {}
                () = crate::common::stdin_closed() => {}
            }
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
impl Engine {
    /// The tower-sse server with this engine's backplane.
    pub fn kind(self) -> Kind {
        match self {
            Engine::Redis => Kind::TowerSseRedis,
            Engine::Postgres => Kind::TowerSsePostgres,
            Engine::Nats => Kind::TowerSseNats,
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
