//! The load client: processes of their own (this binary re-executed with
//! `SCALE_ROLE=client`), each holding a few thousand streams from one
//! loopback source address (each address has its own ephemeral ports, and
//! each process its own descriptors).
//!
//! A client is told its source address (`SCALE_SOURCE`), its streams
//! (`SCALE_PLAN`: `port:count,…`), their path (`SCALE_PATH`) and how many
//! events to expect (`SCALE_EVENTS`). It reports on stdout, one line each:
//! - `connected` once every stream has its response head;
//! - `event <k> <unix ns>` once every stream has event `k`: when the last
//!   of them read it;
//! - `latency <port> <ns>:<count> …` after the last event, for the streams
//!   to each instance: how long after its send time each event was read;
//! - `failed <why>` when a stream could not connect or ended early.
//!
//! It stops when its stdin closes.

use hdrhistogram::Histogram;
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
    sync::{mpsc, Semaphore},
};

/// Connections a client opens at once.
const CONNECTING: usize = 64;

/// Nanoseconds since the Unix epoch: the clock every process of the run
/// shares (the parent stamps each event with it when it publishes).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The event `k` sent at `sent`, as its data line: `data: <k> <sent>`.
pub fn event_data(k: usize, sent: u64) -> String {
    format!("{k} {sent}")
}

/// What the streams of one client share.
struct Shared {
    /// Streams that have event `k`, and when the last of them read it.
    have: Vec<AtomicUsize>,
    last: Vec<AtomicU64>,
    streams: usize,
    /// Latencies of the streams to each instance (by index in the plan).
    latency: Vec<Mutex<Histogram<u64>>>,
}

enum Note {
    Connected,
    Event(usize),
    Failed(String),
}

/// Runs a client (the child side of `ClientProcess`).
pub fn run() {
    let limit = crate::server::raise_nofile();
    let source: IpAddr = env("SCALE_SOURCE").parse().expect("SCALE_SOURCE");
    let plan: Vec<(u16, usize)> = env("SCALE_PLAN")
        .split(',')
        .map(|p| {
            let (port, count) = p.split_once(':').expect("port:count");
            (port.parse().unwrap(), count.parse().unwrap())
        })
        .collect();
    let events: usize = env("SCALE_EVENTS").parse().expect("SCALE_EVENTS");
    let request: &'static [u8] = format!(
        "GET {} HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n",
        env("SCALE_PATH")
    )
    .leak()
    .as_bytes();
    let streams = plan.iter().map(|(_, n)| n).sum();
    assert!(
        streams + 64 < limit,
        "{streams} streams do not fit in {limit} descriptors"
    );
    let shared = Arc::new(Shared {
        have: (0..events).map(|_| AtomicUsize::new(0)).collect(),
        last: (0..events).map(|_| AtomicU64::new(0)).collect(),
        streams,
        latency: plan
            .iter()
            .map(|_| Mutex::new(Histogram::new(3).unwrap()))
            .collect(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (notes, mut noted) = mpsc::unbounded_channel();
        let connecting = Arc::new(Semaphore::new(CONNECTING));
        for (target, &(port, count)) in plan.iter().enumerate() {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            for _ in 0..count {
                let (shared, notes, connecting) =
                    (shared.clone(), notes.clone(), connecting.clone());
                tokio::spawn(async move {
                    let stream = Stream {
                        source,
                        addr,
                        target,
                        request,
                    };
                    if let Err(why) = stream.run(&shared, &notes, &connecting, events).await {
                        notes.send(Note::Failed(why)).ok();
                    }
                });
            }
        }
        let report = async {
            let (mut connected, mut done) = (0, 0);
            while let Some(note) = noted.recv().await {
                match note {
                    Note::Connected => {
                        connected += 1;
                        if connected == streams {
                            println!("connected");
                        }
                    }
                    Note::Event(k) => {
                        println!("event {k} {}", shared.last[k].load(Ordering::Relaxed));
                        done += 1;
                        if done == events {
                            for (target, &(port, _)) in plan.iter().enumerate() {
                                let histogram = shared.latency[target].lock().unwrap();
                                let counts: Vec<String> = histogram
                                    .iter_recorded()
                                    .map(|v| {
                                        format!("{}:{}", v.value_iterated_to(), v.count_at_value())
                                    })
                                    .collect();
                                println!("latency {port} {}", counts.join(" "));
                            }
                        }
                    }
                    Note::Failed(why) => println!("failed {why}"),
                }
            }
        };
        tokio::select! {
            () = report => {}
            () = crate::common::stdin_closed() => {}
        }
    });
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// One stream: from `source` to the instance at `addr` (the plan's
/// `target`), asking with `request`.
struct Stream {
    source: IpAddr,
    addr: SocketAddr,
    target: usize,
    request: &'static [u8],
}

impl Stream {
    /// Connects, reads the response head, then the events (and keep-alive
    /// comments) until the stream ends.
    async fn run(
        self,
        shared: &Shared,
        notes: &mpsc::UnboundedSender<Note>,
        connecting: &Semaphore,
        events: usize,
    ) -> Result<(), String> {
        let Stream {
            source,
            addr,
            target,
            request,
        } = self;
        let permit = connecting.acquire().await.unwrap();
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let mut tcp = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.write_all(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let mut pending = Vec::new();
        let mut buf = [0; 1024];
        let head_end = loop {
            let read = tcp.read(&mut buf).await.map_err(|e| format!("head: {e}"))?;
            if read == 0 {
                return Err(format!("closed before its head: {:?}", ascii(&pending)));
            }
            pending.extend_from_slice(&buf[..read]);
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        if !pending.starts_with(b"HTTP/1.1 200") {
            return Err(format!("refused: {:?}", ascii(&pending)));
        }
        pending.drain(..head_end);
        drop(permit);
        notes.send(Note::Connected).ok();
        let mut seen = 0;
        loop {
            // Lines: `data: <k> <sent>`; the chunk framing, `id:` lines and
            // keep-alive comments are skipped.
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                let line = &pending[start..start + end];
                start += end + 1;
                let Some((k, sent)) = line
                    .strip_prefix(b"data: ")
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.trim().split_once(' '))
                    .and_then(|(k, sent)| {
                        Some((k.parse::<usize>().ok()?, sent.parse::<u64>().ok()?))
                    })
                else {
                    continue;
                };
                if k != seen {
                    return Err(format!("event {k} where {seen} was due"));
                }
                let now = unix_ns();
                shared.latency[target]
                    .lock()
                    .unwrap()
                    .record(now.saturating_sub(sent).max(1))
                    .unwrap();
                shared.last[k].fetch_max(now, Ordering::Relaxed);
                if shared.have[k].fetch_add(1, Ordering::Relaxed) + 1 == shared.streams {
                    notes.send(Note::Event(k)).ok();
                }
                seen += 1;
            }
            pending.drain(..start);
            let read = tcp
                .read(&mut buf)
                .await
                .map_err(|e| format!("after {seen} events: {e}"))?;
            if read == 0 {
                return if seen == events {
                    Ok(())
                } else {
                    Err(format!("stream ended after {seen} of {events} events"))
                };
            }
            pending.extend_from_slice(&buf[..read]);
        }
    }
}

fn ascii(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}
