//! Fan-out comparison, one run, same machine: tower-sse against the
//! hand-rolled axum way (`axum::response::Sse` over a `tokio::sync::broadcast`
//! receiver, one `Event` built per subscriber).
//!
//! `cargo bench --bench fanout --features axum`
//!
//! Each server runs in its own process (this binary, re-executed with
//! `FANOUT_SERVER=<name>`), so its CPU time is read from `/proc/<pid>/stat`
//! apart from the load client's. The client opens N real TCP subscribers
//! (HTTP/1.1 `GET /events`), waits until every one has its response head
//! (both servers subscribe before answering), then publishes M events with
//! `POST /publish`, each carrying its send time, and waits until every
//! subscriber has every event: a lost event fails the run.
//!
//! Scenario so far: burst (N subscribers × M events as fast as the
//! publisher goes). Environment: `FANOUT_N` (default 5000), `FANOUT_M`
//! (default 300). Still to come (issue 4): paced, topics, idle memory,
//! churn, Nchan as a third peer, the chart and BENCHMARKS.md.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::TcpStream,
};

fn main() {
    if let Ok(kind) = std::env::var("FANOUT_SERVER") {
        return server(&kind);
    }
    let n: usize = env_or("FANOUT_N", 5000);
    let m: usize = env_or("FANOUT_M", 300);
    println!(
        "burst: {n} subscribers × {m} events, server in its own process, 2 worker threads each"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results = Vec::new();
    let only = std::env::var("FANOUT_ONLY").ok();
    for kind in ["axum-broadcast", "tower-sse"] {
        if only.as_deref().is_some_and(|only| only != kind) {
            continue;
        }
        let result = runtime.block_on(burst(kind, n, m));
        println!("{result}");
        results.push(result);
    }
    let [peer, ours] = &results[..] else {
        return;
    };
    println!("\nratios tower-sse / axum-broadcast (lower is better):");
    println!(
        "  server CPU per delivery  {:.2}",
        ours.cpu_per_delivery_ns / peer.cpu_per_delivery_ns
    );
    println!(
        "  p50 latency              {:.2}",
        ours.p50_us / peer.p50_us
    );
    println!(
        "  p99 latency              {:.2}",
        ours.p99_us / peer.p99_us
    );
    println!(
        "  deliveries per second    {:.2} (higher is better)",
        ours.deliveries_per_s / peer.deliveries_per_s
    );
    println!(
        "  time to connect N        {:.2}",
        ours.connect_s / peer.connect_s
    );
}

/// Reads done by all subscribers: events per read shows how well a server
/// batches a burst into few writes.
static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    kind: &'static str,
    cpu_per_delivery_ns: f64,
    deliveries_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    connect_s: f64,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>15}: server CPU {:7.0} ns/delivery, {:9.0} deliveries/s, latency p50 {:8.0} µs p99 {:8.0} µs max {:8.0} µs, connect {:.2} s",
            self.kind, self.cpu_per_delivery_ns, self.deliveries_per_s, self.p50_us, self.p99_us, self.max_us, self.connect_s
        )
    }
}

/// A server process; killed when dropped.
struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn start(kind: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("FANOUT_SERVER", kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        ServerProcess { child, port }
    }

    /// User + system CPU time of the server process so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY-free: the clock tick is 100 Hz on Linux x86_64 and arm64.
        Duration::from_millis(ticks * 10)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

async fn burst(kind: &'static str, n: usize, m: usize) -> Outcome {
    let server = ServerProcess::start(kind);
    eprintln!("{kind} server pid {}", server.child.id());
    let addr = format!("127.0.0.1:{}", server.port);
    let epoch = Instant::now();

    let connect_start = Instant::now();
    let mut subscribers = Vec::with_capacity(n);
    for _ in 0..n {
        subscribers.push(subscribe(&addr).await);
    }
    let connect_s = connect_start.elapsed().as_secs_f64();

    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|reader| tokio::spawn(read_events(reader, m, epoch)))
        .collect();

    let cpu_before = server.cpu();
    let start = Instant::now();
    let publisher = TcpStream::connect(&addr).await.unwrap();
    publisher.set_nodelay(true).unwrap();
    let mut publisher = AsyncBufReader::new(publisher);
    for _ in 0..m {
        let sent = epoch.elapsed().as_nanos().to_string();
        let request = format!(
            "POST /publish HTTP/1.1\r\nhost: bench\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{sent}",
            sent.len()
        );
        publisher
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        read_response(&mut publisher).await;
    }
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for reader in readers {
        let histogram = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .unwrap_or_else(|_| {
                panic!("{kind}: events were lost: a subscriber did not get all {m}")
            })
            .unwrap();
        latencies.add(histogram).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let reads = READS.swap(0, std::sync::atomic::Ordering::Relaxed);
    println!(
        "{kind}: {:.2} events per client read",
        (n * m) as f64 / reads as f64
    );
    let cpu = (server.cpu() - cpu_before).as_secs_f64();
    let deliveries = (n * m) as f64;
    assert_eq!(
        latencies.len(),
        (n * m) as u64,
        "{kind}: deliveries missing"
    );
    Outcome {
        kind,
        cpu_per_delivery_ns: cpu * 1e9 / deliveries,
        deliveries_per_s: deliveries / elapsed,
        p50_us: latencies.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: latencies.value_at_quantile(0.99) as f64 / 1e3,
        max_us: latencies.max() as f64 / 1e3,
        connect_s,
    }
}

/// Opens a subscriber and returns once the response head arrived.
async fn subscribe(addr: &str) -> AsyncBufReader<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut reader = AsyncBufReader::new(stream);
    reader
        .get_mut()
        .write_all(b"GET /events HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            return reader;
        }
    }
}

/// Reads `m` events (lines `data: <sent nanos>`) from a chunked stream and
/// records their latency. Chunk-size lines are skipped: they never start
/// with `data: `, and an event line is never split by this client's reads
/// because lines are read whole from the decoded... raw stream.
async fn read_events(
    mut reader: AsyncBufReader<TcpStream>,
    m: usize,
    epoch: Instant,
) -> hdrhistogram::Histogram<u64> {
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut pending = Vec::new();
    let mut seen = 0;
    while seen < m {
        buf.clear();
        READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if reader.read_buf(&mut buf).await.unwrap() == 0 {
            panic!("stream ended after {seen} of {m} events");
        }
        let now = epoch.elapsed().as_nanos() as u64;
        pending.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            if let Some(sent) = line.strip_prefix(b"data: ") {
                // A chunk boundary can fall inside a line: strip chunk framing
                // digits only when the line is not a plain number.
                if let Some(sent) = std::str::from_utf8(sent)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    histogram.record(now.saturating_sub(sent).max(1)).unwrap();
                    seen += 1;
                }
            }
            start += end + 1;
        }
        pending.drain(..start);
    }
    histogram
}

async fn read_response(reader: &mut AsyncBufReader<TcpStream>) {
    let mut line = String::new();
    let mut length = 0;
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 2"), "publish answered {line}");
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
}

fn server(kind: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        let app = match kind {
            "tower-sse" => ours(),
            "axum-broadcast" => hand_rolled(),
            other => panic!("unknown server {other}"),
        };
        // Ends when the client closes our stdin (or kills us).
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

fn ours() -> axum::Router {
    use tower_sse::{Event, Publisher, SseLayer};
    async fn publish(publisher: Publisher, body: String) -> axum::http::StatusCode {
        match publisher.publish(Event::default().data(body)) {
            Ok(_) => axum::http::StatusCode::ACCEPTED,
            Err(_) => axum::http::StatusCode::BAD_REQUEST,
        }
    }
    axum::Router::new()
        .route("/publish", axum::routing::post(publish))
        .layer(SseLayer::new("/events").history(4096).max_lag(4096))
}

/// What axum's documentation leads to: `Sse` over a broadcast receiver, an
/// `Event` built per subscriber.
fn hand_rolled() -> axum::Router {
    use axum::{
        extract::State,
        response::sse::{Event, KeepAlive, Sse},
    };
    use futures_util::StreamExt;
    use tokio::sync::broadcast;
    use tokio_stream::wrappers::BroadcastStream;

    type Tx = Arc<broadcast::Sender<String>>;
    async fn events(
        State(tx): State<Tx>,
    ) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
        let stream = BroadcastStream::new(tx.subscribe()).filter_map(|message| async move {
            message.ok().map(|m| Ok(Event::default().data(m)))
        });
        Sse::new(stream).keep_alive(KeepAlive::default())
    }
    async fn publish(State(tx): State<Tx>, body: String) -> axum::http::StatusCode {
        tx.send(body).ok();
        axum::http::StatusCode::ACCEPTED
    }
    let (tx, _) = broadcast::channel::<String>(4096);
    axum::Router::new()
        .route("/events", axum::routing::get(events))
        .route("/publish", axum::routing::post(publish))
        .with_state(Arc::new(tx))
}
