//! The servers under test, each in its own process(es): tower-sse and the
//! hand-rolled axum peer run as this binary re-executed with
//! `FANOUT_SERVER=<kind>`; Nchan runs as nginx with a config written to a
//! temporary directory.
//!
//! Every server offers the same routes (see [`Kind::sub_path`]): the event
//! stream of one topic, `POST /pub/<topic>` to publish the body as one
//! event's data, and a count of connected subscribers.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
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
    /// tower-sse's server, its subscribers on WebSocket (`/ws`).
    TowerSseWs,
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
            Kind::TowerSse | Kind::TowerSseRedis => format!("/events?topic={topic}"),
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

    pub fn name(self) -> &'static str {
        match self {
            Kind::TowerSse => "tower-sse",
            Kind::AxumBroadcast => "axum-broadcast",
            Kind::Nchan => "nchan",
            Kind::TowerSseRedis => "tower-sse+redis",
            Kind::TowerSseWs => "tower-sse-ws",
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

    /// Starts `kind`, with `redis` as its backplane's URL when it has one.
    pub fn start_with(kind: Kind, redis: &str) -> ServerProcess {
        match kind {
            Kind::Nchan => start_nchan(),
            _ => {
                let mut child = Command::new(std::env::current_exe().unwrap())
                    .env("FANOUT_SERVER", kind.name())
                    .env("FANOUT_REDIS", redis)
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
        self.pids()
            .into_iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
            .filter_map(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .sum::<u64>()
            * 1024
    }
}

/// User + system CPU time of process `pid` so far (zero once it is gone).
fn cpu_of(pid: u32) -> Duration {
    stat_fields(pid).map_or(Duration::ZERO, |f| {
        let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // The clock tick is 100 Hz on Linux x86_64 and arm64.
        Duration::from_millis(ticks * 10)
    })
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
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        let app = match kind {
            "tower-sse" | "tower-sse-ws" => ours(None).await,
            "tower-sse+redis" => ours(std::env::var("FANOUT_REDIS").ok()).await,
            "axum-broadcast" => hand_rolled(),
            other => panic!("unknown server {other}"),
        };
        // Ends when the client closes our stdin or sends SIGTERM.
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        });
        tokio::select! {
            _ = axum::serve(listener, app) => {}
            _ = stdin_closed => {}
        }
    });
}

/// tower-sse: the layer serves `/events?topic=…`; handlers publish (through
/// Redis when `redis` is a backplane's URL).
async fn ours(redis: Option<String>) -> axum::Router {
    use axum::extract::Path;
    use tower_sse::{Event, Hub, Publisher, RedisBackplane, SseLayer};

    async fn publish(
        publisher: Publisher,
        Path(topic): Path<String>,
        body: String,
    ) -> axum::http::StatusCode {
        match publisher.publish_to(&topic, Event::default().data(body)) {
            Ok(published) => match published.await {
                Ok(_) => axum::http::StatusCode::ACCEPTED,
                Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
            },
            Err(_) => axum::http::StatusCode::BAD_REQUEST,
        }
    }
    async fn count(publisher: Publisher) -> String {
        publisher.subscriber_count().to_string()
    }
    let mut hub = Hub::builder().history(4096).max_lag(4096);
    if let Some(url) = redis {
        let backplane = RedisBackplane::connect(&url).await.expect("Redis is up");
        hub = hub.backplane(backplane.key("fanout"));
    }
    let layer = SseLayer::new("/events").hub(&hub.build()).websocket("/ws");
    axum::Router::new()
        .route("/pub/{topic}", axum::routing::post(publish))
        .route("/count", axum::routing::get(count))
        .layer(layer)
}

/// A `redis-server` for the cross-node scenario (installed from Debian's
/// packages when missing), without persistence, on a free port.
pub struct RedisProcess {
    child: Child,
    port: u16,
}

impl RedisProcess {
    pub fn start() -> RedisProcess {
        if !which("redis-server") {
            apt_install("redis-server", "or leave out the cross scenario");
        }
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().contains("Ready to accept connections") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        RedisProcess { child, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// CPU time redis-server used so far.
    pub fn cpu(&self) -> Duration {
        cpu_of(self.child.id())
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
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
        .with_state(Topics::default())
}
