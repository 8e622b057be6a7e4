//! Helpers for end-to-end tests: a real server on an ephemeral loopback port
//! and independent clients (reqwest + the `eventsource-stream` parser).
#![allow(dead_code)]

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub mod faults;
pub mod proxy;
#[cfg(feature = "serve")]
pub mod served;
pub mod services;
use tower_sse::Publisher;

/// Guard for every wait: long enough for a loaded CI machine, short enough
/// that a hang fails the test instead of the whole run.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Whether [`Server`] serves with `tower_sse::serve` and its lean path for
/// HTTP/1.1 streams (with feature `serve`, unless `TOWER_SSE_TEST_SERVER`
/// is `axum`), or with `axum::serve`, where hyper keeps every stream. CI
/// runs the transport suites both ways.
pub fn lean_path() -> bool {
    cfg!(feature = "serve")
        && std::env::var("TOWER_SSE_TEST_SERVER").map_or(true, |server| server != "axum")
}

/// An axum app served on 127.0.0.1 with graceful shutdown that closes the
/// hub: by `tower_sse::serve` or `axum::serve` (see [`lean_path`]).
pub struct Server {
    pub addr: SocketAddr,
    pub publisher: Publisher,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(app: axum::Router, publisher: Publisher) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Server::start_on(listener, app, publisher)
    }

    /// The same on a listener of the caller's (an address to serve again).
    pub fn start_on(listener: TcpListener, app: axum::Router, publisher: Publisher) -> Server {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let closer = publisher.clone();
        let shutdown = async move {
            rx.await.ok();
            closer.close();
        };
        #[cfg(feature = "serve")]
        if lean_path() {
            // `tower_sse::serve`, whose HTTP/1.1 streams leave hyper once
            // admitted. Every test client comes from 127.0.0.1.
            let served = tower_sse::serve(listener, app)
                .max_connections_per_address(usize::MAX)
                .with_graceful_shutdown(shutdown);
            return Server {
                addr,
                publisher,
                shutdown: Some(tx),
                task: tokio::spawn(std::future::IntoFuture::into_future(served)),
            };
        }
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        });
        Server {
            addr,
            publisher,
            shutdown: Some(tx),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Starts graceful shutdown (which closes the hub).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
    }
}

/// Reads a raw response body until what was read ends with `suffix`.
pub async fn read_until(
    body: &mut (impl Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    suffix: &[u8],
    what: &str,
) -> Vec<u8> {
    let mut seen = Vec::new();
    within(what, async {
        while !seen.ends_with(suffix) {
            seen.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
    })
    .await;
    seen
}

/// Reads raw bytes from a socket until they contain `needle`; the
/// connection closing first fails the test.
pub async fn read_raw(
    tcp: &mut (impl tokio::io::AsyncRead + Unpin),
    needle: &str,
    what: &str,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    within(what, async {
        let mut buf = [0; 4096];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&seen).into_owned()
}

/// Serves `app` on `bind` with `TCP_USER_TIMEOUT` set on every accepted
/// socket (the README's recipe, through axum's `tap_io`).
pub async fn serve_with_user_timeout(
    bind: SocketAddr,
    timeout: Duration,
    app: axum::Router,
) -> SocketAddr {
    use axum::serve::{Listener, ListenerExt};
    let listener = TcpListener::bind(bind).await.unwrap().tap_io(move |tcp| {
        socket2::SockRef::from(&*tcp)
            .set_tcp_user_timeout(Some(timeout))
            .unwrap();
    });
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A client of `addr`'s `/events` with a small receive buffer that never
/// reads, once its window, the server's socket and hyper's buffer are full
/// of `publisher`'s events.
pub async fn never_reading_client(
    addr: SocketAddr,
    publisher: &Publisher,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut tcp = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    tcp.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut count = publisher.watch_subscribers();
    within("the subscriber", count.wait_for(|n| *n >= 1))
        .await
        .unwrap();
    let big = "x".repeat(64 * 1024);
    for _ in 0..200 {
        publisher
            .publish(tower_sse::Event::default().data(&big))
            .unwrap();
    }
    tcp
}

/// The error `hub`'s backplane is refused with (it goes `Down`, within
/// [`TIMEOUT`]), as text.
pub async fn refusal(hub: &tower_sse::Publisher) -> String {
    let down = within(
        "the backplane to be refused",
        hub.watch_backplane()
            .wait_for(|s| matches!(s, tower_sse::BackplaneStatus::Down(_))),
    )
    .await
    .unwrap()
    .clone();
    let tower_sse::BackplaneStatus::Down(error) = down else {
        unreachable!()
    };
    error.to_string()
}

/// A CA, and a certificate for 127.0.0.1 that it signed: (CA PEM, server
/// certificate PEM, server key PEM).
pub fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// A subscriber reading the stream through an independent WHATWG parser.
pub struct Subscriber {
    pub response_headers: reqwest::header::HeaderMap,
    events: Events,
    start: Arc<Mutex<StartId>>,
    /// The `Last-Event-ID` this stream was opened with.
    resumed_from: Option<String>,
    /// The id of the last event read with `next`.
    last_read: Option<String>,
}

/// Finds the id-only block a new stream starts with (`id: N` and a blank
/// line, no data), which `eventsource-stream` does not report: a browser
/// takes it as its `lastEventId` without dispatching anything.
#[derive(Default)]
pub struct StartId {
    line: Vec<u8>,
    id: Option<String>,
    data: bool,
    done: bool,
    pub start: Option<String>,
}

impl StartId {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done {
                return;
            }
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            if line.is_empty() {
                if self.id.is_some() || self.data {
                    self.done = true;
                    if !self.data {
                        self.start = self.id.take();
                    }
                }
            } else if let Some(value) = line.strip_prefix(b"id:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                self.id = Some(String::from_utf8(value.to_vec()).unwrap());
            } else if line.starts_with(b"data") {
                self.data = true;
            }
        }
    }
}

impl Subscriber {
    /// Opens the stream at `url`; returns once the response headers arrived,
    /// that is once the server has registered the subscription.
    pub async fn connect(url: &str) -> Subscriber {
        Self::connect_with(client().get(url)).await
    }

    pub async fn connect_with(request: reqwest::RequestBuilder) -> Subscriber {
        let response = within(
            "the stream's headers",
            request.header("accept", "text/event-stream").send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200, "the stream was refused");
        let response_headers = response.headers().clone();
        let start = Arc::new(Mutex::new(StartId::default()));
        let tracker = start.clone();
        let bytes = response.bytes_stream().inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                tracker.lock().unwrap().feed(chunk);
            }
        });
        Subscriber {
            response_headers,
            events: Box::pin(bytes.eventsource()),
            start,
            resumed_from: None,
            last_read: None,
        }
    }

    /// Reconnects as a browser does: with `Last-Event-ID` when it has one.
    pub async fn resume(url: &str, last_event_id: Option<&str>) -> Subscriber {
        let mut request = client().get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let mut subscriber = Self::connect_with(request).await;
        subscriber.resumed_from = last_event_id.map(str::to_owned);
        subscriber
    }

    /// The `Last-Event-ID` a browser would send after the events read so
    /// far with `next` (events received but not read count as not received).
    pub fn last_event_id(&self) -> Option<String> {
        self.last_read
            .clone()
            .or_else(|| self.start_id())
            .or_else(|| self.resumed_from.clone())
    }

    /// The id a new stream starts after, once its first block was received.
    pub fn start_id(&self) -> Option<String> {
        self.start.lock().unwrap().start.clone()
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Event> {
        within("an event", self.next_unguarded()).await
    }

    /// The next event, waiting as long as it takes (the caller guards the
    /// wait).
    pub async fn next_unguarded(&mut self) -> Option<Event> {
        let event = self.events.next().await.map(|e| e.expect("stream error"))?;
        self.last_read = Some(event.id.clone());
        Some(event)
    }

    /// The next `n` events; fails if the stream ends first.
    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match self.next().await {
                Some(e) => events.push(e),
                None => panic!("stream ended after {} of {n} events", events.len()),
            }
        }
        events
    }
}

/// The id of an event published to a hub without a backplane (which numbers
/// events as it takes them).
pub fn id(published: Result<tower_sse::Published, tower_sse::Error>) -> tower_sse::EventId {
    published
        .unwrap()
        .id()
        .expect("a hub without a backplane numbers events at once")
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket at `url`, with a `Cookie` header if given; the
/// handshake must succeed.
pub async fn ws_open(url: &str, cookie: Option<&str>) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
    }
    let (ws, response) = within("the handshake", tokio_tungstenite::connect_async(request))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The next JSON message (pings skipped), over any connection.
pub async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match within("a message", ws.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The close frame the server ends with.
pub async fn closed(
    ws: &mut Ws,
) -> (
    tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode,
    String,
) {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match within("the close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => return (frame.code, frame.reason.to_string()),
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub async fn send(ws: &mut Ws, message: serde_json::Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        message.to_string().into(),
    ))
    .await
    .unwrap();
}
