//! The load client's side: raw HTTP/1.1 over tokio's TCP, so the client
//! costs the same whichever server it talks to.

use crate::Poller;
use hdrhistogram::Histogram;
use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
};

/// Reads done by all subscribers: events per read shows how well a server
/// batches a burst into few writes.
pub static READS: AtomicU64 = AtomicU64::new(0);

pub type Sub = BufReader<TcpStream>;

fn request(path: &str) -> String {
    request_after(path, None)
}

/// The subscriber's request, resuming after `last_id` when given.
fn request_after(path: &str, last_id: Option<&str>) -> String {
    let resume = last_id.map_or(String::new(), |id| format!("last-event-id: {id}\r\n"));
    format!("GET {path} HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n{resume}\r\n")
}

/// Opens a subscriber and returns once its response head arrived (every
/// server subscribes before it answers).
pub async fn subscribe(addr: &str, path: &str) -> Sub {
    let stream = TcpStream::connect(addr).await.unwrap();
    subscribe_on(stream, path).await
}

/// Like [`subscribe`], from the loopback source address `source` (each
/// source address has its own range of ephemeral ports, so a long churn does
/// not run out of them while closed connections sit in TIME_WAIT).
pub async fn subscribe_from(source: std::net::IpAddr, addr: &str, path: &str) -> Sub {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    subscribe_on(stream, path).await
}

/// Like [`subscribe`], resuming after `last_id` (the `Last-Event-ID` a
/// browser sends when it reconnects).
pub async fn subscribe_after(addr: &str, path: &str, last_id: &str) -> Sub {
    let stream = TcpStream::connect(addr).await.unwrap();
    subscribe_with(stream, path, Some(last_id)).await
}

async fn subscribe_on(stream: TcpStream, path: &str) -> Sub {
    subscribe_with(stream, path, None).await
}

async fn subscribe_with(stream: TcpStream, path: &str, last_id: Option<&str>) -> Sub {
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(request_after(path, last_id).as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{path}: {line}");
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            return reader;
        }
    }
}

/// A WebSocket subscriber (tower-sse's `/ws`), once it got `subscribed`.
pub type WsSub = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub async fn subscribe_ws(addr: &str, path: &str) -> WsSub {
    use futures_util::StreamExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) if t.contains("subscribed") => {
            ws
        }
        other => panic!("expected `subscribed`, got {other:?}"),
    }
}

/// Reads `m` events from a WebSocket subscriber (the first line of each
/// event's data is its send time) and records their latency. A repeated or
/// out-of-order event fails the run (see [`check_order`]).
pub async fn read_ws_events(
    mut ws: WsSub,
    m: usize,
    epoch: Instant,
) -> hdrhistogram::Histogram<u64> {
    use futures_util::StreamExt;
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let (mut seen, mut last) = (0, 0);
    while seen < m {
        READS.fetch_add(1, Ordering::Relaxed);
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            other => panic!("WebSocket ended after {seen} of {m} events: {other:?}"),
        };
        let now = epoch.elapsed().as_nanos() as u64;
        let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        if value["type"] != "event" {
            continue;
        }
        let sent: u64 = value["data"]
            .as_str()
            .and_then(|d| d.lines().next())
            .and_then(|l| l.parse().ok())
            .unwrap();
        check_order(&mut last, sent, seen, m);
        histogram.record(now.saturating_sub(sent).max(1)).unwrap();
        seen += 1;
    }
    histogram
}

/// Events are published one after the other (each `POST` answered before
/// the next), so each subscriber's send times strictly increase: an event
/// delivered twice could otherwise stand in for a lost one in the count.
fn check_order(last: &mut u64, sent: u64, seen: usize, m: usize) {
    assert!(
        sent > *last,
        "event {} of {m} repeated or out of order (sent at {sent} ns, after one sent at {last} ns)",
        seen + 1
    );
    *last = sent;
}

/// A subscriber that never reads, with a 4 KiB receive buffer: once its
/// window is full the server can send it nothing more.
pub async fn stuck(addr: &str, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    stream.write_all(request(path).as_bytes()).await.unwrap();
    stream
}

/// Reads `m` events (lines `data: <sent nanos>`) and records their latency.
/// Other lines (ids, comments, chunk framing, padding data) are skipped. A
/// repeated or out-of-order event fails the run (see [`check_order`]).
pub async fn read_events(
    mut reader: Sub,
    m: usize,
    epoch: Instant,
) -> hdrhistogram::Histogram<u64> {
    read_events_from(&mut reader, m, epoch, None).await
}

/// [`read_events`], and when `first` is given the first event must be the
/// one sent at `first` (a resumed stream starts right after its id: not
/// before, which would repeat events, nor after, which would lose them).
pub async fn read_events_from(
    reader: &mut Sub,
    m: usize,
    epoch: Instant,
    first: Option<u64>,
) -> hdrhistogram::Histogram<u64> {
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut pending = Vec::new();
    let (mut seen, mut last) = (0, 0);
    while seen < m {
        buf.clear();
        READS.fetch_add(1, Ordering::Relaxed);
        if reader.read_buf(&mut buf).await.unwrap() == 0 {
            panic!("stream ended after {seen} of {m} events");
        }
        let now = epoch.elapsed().as_nanos() as u64;
        pending.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            if let Some(sent) = line
                .strip_prefix(b"data: ")
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                if seen == 0 {
                    if let Some(first) = first {
                        assert_eq!(
                            sent, first,
                            "the resumed stream does not start right after its id"
                        );
                    }
                }
                check_order(&mut last, sent, seen, m);
                histogram.record(now.saturating_sub(sent).max(1)).unwrap();
                seen += 1;
            }
            start += end + 1;
        }
        pending.drain(..start);
    }
    histogram
}

/// Reads `m` events with their ids (the `id:` and `data: <sent nanos>`
/// lines of each block, in whatever order the server writes them): (id,
/// sent) in order. Blocks without data (a bare id, a comment) are skipped.
pub async fn read_ids(mut reader: Sub, m: usize) -> Vec<(String, u64)> {
    let mut events = Vec::with_capacity(m);
    let (mut line, mut id, mut data) = (String::new(), None, None);
    while events.len() < m {
        line.clear();
        if reader.read_line(&mut line).await.unwrap() == 0 {
            panic!("stream ended after {} of {m} events", events.len());
        }
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim().to_owned());
        } else if let Some(sent) = line
            .strip_prefix("data:")
            .and_then(|s| s.trim().parse().ok())
        {
            data = Some(sent);
        } else if line.trim().is_empty() {
            if let Some(sent) = data.take() {
                events.push((id.take().expect("every event has an id"), sent));
            }
            id = None;
        }
    }
    events
}

/// One keep-alive HTTP/1.1 connection for publishing and queries.
pub struct Control {
    reader: BufReader<TcpStream>,
}

impl Control {
    pub async fn connect(addr: &str) -> Control {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Control {
            reader: BufReader::new(stream),
        }
    }

    /// Publishes `body` to `path` and waits for the 2xx answer.
    pub async fn post(&mut self, path: &str, body: &str) {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let (status, answer) = self.response().await;
        assert!(
            (200..300).contains(&status),
            "publish answered {status}: {answer}"
        );
    }

    /// Status and body of `GET path`.
    pub async fn get(&mut self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\naccept: text/plain\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        self.response().await
    }

    /// Reads a response (content-length or chunked): status and body.
    async fn response(&mut self) -> (u16, String) {
        let reader = &mut self.reader;
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {line:?}"));
        let (mut length, mut chunked) = (0, false);
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line).await.unwrap();
                let size = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).await.unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length, 0);
            reader.read_exact(&mut body).await.unwrap();
        }
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Subscribers the server counts, from its count route's answer (Nchan
    /// answers 404 for a channel that no longer exists: none).
    pub async fn count(&mut self, path: &str) -> usize {
        let (status, text) = self.get(path).await;
        if status == 404 {
            return 0;
        }
        let text = text.trim();
        text.parse().ok().unwrap_or_else(|| {
            text.lines()
                .find_map(|l| l.strip_prefix("active subscribers:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no subscriber count in {text:?}"))
        })
    }

    /// Waits (polling the count route every 20 ms, up to 60 s) until the
    /// server counts `n` subscribers.
    pub async fn wait_count(&mut self, path: &str, n: usize) -> Duration {
        let start = Instant::now();
        loop {
            if self.count(path).await == n {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the server still counts subscribers other than {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `GET /health` on its own thread and connection (outside the load
/// client's runtime, so its figures are the server's answer time and not
/// the client's scheduling), every 10 ms until finished: how long the
/// server makes an ordinary request of the app wait while it fans out.
/// [`Poller::finish`] gives the connection and the answer times in µs.
pub fn health_probe(
    addr: &str,
) -> Poller<(std::io::BufReader<std::net::TcpStream>, Histogram<u64>)> {
    use std::io::{BufRead, Read, Write};
    let stream = std::io::BufReader::new(std::net::TcpStream::connect(addr).unwrap());
    stream.get_ref().set_nodelay(true).unwrap();
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let answers = Histogram::<u64>::new(3).unwrap();
    let mut line = String::new();
    Poller::start(
        Duration::from_millis(10),
        (stream, answers),
        move |(stream, answers)| {
            let start = Instant::now();
            stream
                .get_mut()
                .write_all(b"GET /health HTTP/1.1\r\nhost: bench\r\n\r\n")
                .unwrap();
            let mut length = 0;
            loop {
                line.clear();
                if stream.read_line(&mut line).unwrap() == 0 {
                    panic!("the server closed the /health connection");
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            stream.read_exact(&mut body).unwrap();
            answers.record(start.elapsed().as_micros() as u64).unwrap();
        },
    )
}
