//! Where the heap memory of an idle event stream goes, by allocation site:
//! `cargo bench --bench stream_memory --features axum,serve`.
//!
//! The bench runs a tower-sse server in a child process under dhat's heap
//! profiler, once per server (`axum::serve`; `tower_sse::serve` with its
//! HTTP/1.1 streams kept by hyper, `lean_streams(false)`, and by default,
//! where they leave hyper; and `tower_sse::serve` with the streams over
//! HTTP/2 connections), opens
//! `STREAM_MEMORY_N` streams (default 2,000) that then sit idle, and stops
//! the child while they are open: the bytes still allocated then, less
//! those of a run with no stream, divided by the streams, are each stream's
//! heap cost. Each allocation is put in a group by the first frame of its
//! stack that names a known owner (hyper's read or write buffer, the
//! connection task, tower-sse's subscription…). The kernel's socket
//! buffers are not heap and are not counted here (the fan-out bench's PSS
//! figure does not count them either).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

#[path = "common/mod.rs"]
mod common;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    if let Ok(kind) = std::env::var("STREAM_MEMORY_SERVER") {
        return server(&kind);
    }
    let n: usize = std::env::var("STREAM_MEMORY_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    println!("heap per idle stream, {n} streams, by owner (bytes)\n");
    let mut table: Vec<(&str, BTreeMap<String, f64>, f64)> = Vec::new();
    for kind in [
        "axum-serve",
        "tower-serve-hyper",
        "tower-serve-hyper-8k",
        "tower-serve",
        "tower-serve-h2",
    ] {
        let base = profile(kind, 0);
        let with = profile(kind, n);
        let mut groups: BTreeMap<String, f64> = BTreeMap::new();
        for (group, bytes) in &with {
            let before = base.get(group).copied().unwrap_or(0);
            groups.insert(group.clone(), (*bytes as f64 - before as f64) / n as f64);
        }
        for (group, bytes) in &base {
            groups
                .entry(group.clone())
                .or_insert(-(*bytes as f64) / n as f64);
        }
        let total = groups.values().sum();
        table.push((kind, groups, total));
    }
    let mut owners: Vec<String> = table
        .iter()
        .flat_map(|(_, g, _)| g.keys().cloned())
        .collect();
    owners.sort();
    owners.dedup();
    print!("{:<44}", "owner");
    for (kind, _, _) in &table {
        print!("{kind:>16}");
    }
    println!();
    for owner in owners {
        print!("{owner:<44}");
        for (_, groups, _) in &table {
            print!("{:>16.0}", groups.get(&owner).copied().unwrap_or(0.0));
        }
        println!();
    }
    print!("{:<44}", "total");
    for (_, _, total) in &table {
        print!("{total:>16.0}");
    }
    println!();
}

/// Runs the server `kind` with `n` idle streams; the heap bytes still
/// allocated at its end, by owner.
fn profile(kind: &str, n: usize) -> BTreeMap<String, u64> {
    let dir = std::env::temp_dir().join(format!("stream-memory-{}-{kind}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut child, port) = common::start_server(
        Command::new(std::env::current_exe().unwrap())
            .env("STREAM_MEMORY_SERVER", kind)
            .current_dir(&dir),
    );
    let addr = format!("127.0.0.1:{port}");
    let streams: Vec<Box<dyn std::any::Any>> = if kind.ends_with("-h2") {
        h2_streams(&addr, n)
    } else {
        (0..n)
            .map(|_| Box::new(h1_stream(&addr)) as Box<dyn std::any::Any>)
            .collect()
    };
    // The server's end, with every stream still open.
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "the server failed");
    drop(streams);
    let json = std::fs::read_to_string(dir.join("dhat-heap.json")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    by_owner(&json)
}

/// One HTTP/1.1 stream whose response head was read.
fn h1_stream(addr: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.write_all(b"GET /events?topic=t HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tcp.read(&mut buf).unwrap();
        assert!(read > 0, "closed before its head");
        seen.extend_from_slice(&buf[..read]);
    }
    tcp
}

/// `n` streams over HTTP/2 connections (prior knowledge, no TLS: the
/// server tells the protocols apart by the preface), 100 per connection.
fn h2_streams(addr: &str, n: usize) -> Vec<Box<dyn std::any::Any>> {
    let runtime = common::runtime(1);
    let addr = addr.to_owned();
    let held = runtime.block_on(async move {
        use http_body_util::Empty;
        let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        let mut opened = 0;
        while opened < n {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (mut send, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            for _ in 0..100.min(n - opened) {
                send.ready().await.unwrap();
                let request = http::Request::get(format!("http://{addr}/events?topic=t"))
                    .body(Empty::<bytes::Bytes>::new())
                    .unwrap();
                let response = send.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                held.push(Box::new(response));
                opened += 1;
            }
            held.push(Box::new(send));
        }
        held
    });
    vec![Box::new(runtime), Box::new(held)]
}

/// The child: a tower-sse app (the fan-out bench's routes) under dhat,
/// until its stdin closes.
fn server(kind: &str) {
    let profiler = dhat::Profiler::new_heap();
    let runtime = common::runtime(2);
    runtime.block_on(async {
        use tower_sse::{Hub, SseLayer};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Every client comes from 127.0.0.1, thousands of them: no stream limit.
        let hub = Hub::builder()
            .history(4096)
            .max_lag(4096)
            .max_subscribers(usize::MAX)
            .max_streams_per_address(usize::MAX)
            .build();
        let app = axum::Router::new().layer(SseLayer::new("/events").hub(&hub));
        println!("{}", listener.local_addr().unwrap().port());
        match kind {
            "axum-serve" => {
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    () = common::stdin_closed() => {}
                }
            }
            _ => {
                tokio::select! {
                    // Thousands of connections from 127.0.0.1: no per-address cap.
                    _ = tower_sse::serve(listener, app)
                        .max_connections_per_address(usize::MAX)
                        // `tower-serve-hyper*`: the streams stay with hyper;
                        // `-8k` with hyper's smallest read buffer limit.
                        .lean_streams(!kind.starts_with("tower-serve-hyper"))
                        .http1_max_buf_size(if kind == "tower-serve-hyper-8k" {
                            8192
                        } else {
                            64 * 1024
                        })
                        .into_future() => {}
                    () = common::stdin_closed() => {}
                }
            }
        }
    });
    // Written with the streams still open: what they hold is "at the end".
    drop(profiler);
    std::process::exit(0);
}

use std::future::IntoFuture;

/// Owners, each named by a pattern of a frame; an allocation belongs to
/// the owner of the innermost frame of its stack that matches one.
const OWNERS: &[(&str, &str)] = &[
    ("hyper h1: read buffer", "poll_read_from_io"),
    ("hyper h1: write buffer", "io::WriteBuf"),
    ("hyper h1: request head", "hyper::proto::h1::role"),
    ("hyper h2: streams and buffers", "h2::"),
    ("tokio: task", "tokio::runtime::task::"),
    ("tokio: timer", "tokio::runtime::time"),
    ("tokio: timer", "tokio::time::"),
    ("tokio: I/O registration", "tokio::runtime::io"),
    ("tower-sse: stream", "tower_sse::sse::"),
    ("tower-sse: subscription", "tower_sse::hub::"),
    ("tower-sse: open", "tower_sse::open::"),
    ("tower-sse: serve", "tower_sse::serve::"),
    ("tower-sse: other", "tower_sse::"),
    ("axum", "axum::"),
    ("http: request parts", "http::"),
    ("hyper h1: connection", "hyper::proto::h1"),
    ("hyper-util: connection", "hyper_util::"),
    ("hyper: other", "hyper::"),
];

/// Bytes allocated at the profile's end, by owner.
fn by_owner(json: &str) -> BTreeMap<String, u64> {
    let profile: serde_json::Value = serde_json::from_str(json).unwrap();
    let frames: Vec<&str> = profile["ftbl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap_or(""))
        .collect();
    let mut owners = BTreeMap::new();
    for pp in profile["pps"].as_array().unwrap() {
        let bytes = pp["eb"].as_u64().unwrap_or(0);
        if bytes == 0 {
            continue;
        }
        let owner = pp["fs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| frames[i.as_u64().unwrap() as usize])
            .find_map(|frame| {
                OWNERS
                    .iter()
                    .find(|(_, pattern)| frame.contains(pattern))
                    .map(|(owner, _)| *owner)
            })
            .unwrap_or("other");
        *owners.entry(owner.to_owned()).or_insert(0) += bytes;
    }
    owners
}
