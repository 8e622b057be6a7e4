//! The WebSocket transport (feature `ws`): the same hub for clients that
//! change their topics without reconnecting or cannot use `EventSource`.
//!
//! The protocol (JSON text frames) is documented on
//! [`SseLayer::websocket`](crate::SseLayer::websocket).

use std::{collections::BTreeSet, future::poll_fn, task::Poll, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{
            frame::{
                coding::{CloseCode, Data, OpCode},
                Frame,
            },
            CloseFrame, Role, WebSocketConfig,
        },
        Message, Utf8Bytes,
    },
    WebSocketStream,
};

use crate::{
    admission::{self, Admitted, Credentials},
    body::{refused, text, OwnBody},
    hub::{Ended, Resume, StartKind, Subscription},
    observe::{Reason, StreamLife, Transport},
    publisher::Publisher,
    record::Encoding,
    record::Record,
    refusal::{Kind, Refusal},
    request,
    sse::RESET_EVENT,
    topic,
};

/// The largest message a client may send, and the largest frame.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;
/// Events sent per wake-up before checking the client's messages again.
const BATCH: usize = 256;
/// And about as many bytes at most, so a replay holds little at once.
const BATCH_BYTES: usize = 256 * 1024;

/// A record as the JSON text every WebSocket client gets: built once per
/// event, from the record's fields, by the first session that sends it.
const ENCODING: Encoding = Encoding { slot: 1, encode };

fn encode(record: &Record) -> Bytes {
    json!({
        "type": "event",
        "id": record.last_event_id(),
        "event": record.event().unwrap_or("message"),
        "topic": record.topic().unwrap_or(""),
        "data": record.data(),
    })
    .to_string()
    .into()
}

/// A shared encoded event as a text frame (valid UTF-8: it came from a
/// `String`), without copying or checking it again.
fn event_frame(json: &Bytes) -> Message {
    Message::Frame(Frame::message(json.clone(), OpCode::Data(Data::Text), true))
}

/// What makes a request a WebSocket handshake, and how to answer it.
enum Handshake {
    /// HTTP/1.1 `Upgrade: websocket`: answered `101` with this accept key.
    Upgrade(String),
    /// HTTP/2 extended `CONNECT` (RFC 8441): answered `200`.
    Connect,
}

fn handshake(parts: &Parts) -> Result<Handshake, (StatusCode, &'static str)> {
    if parts.method == Method::CONNECT {
        return match parts.extensions.get::<hyper::ext::Protocol>() {
            Some(p) if p.as_str().eq_ignore_ascii_case("websocket") => Ok(Handshake::Connect),
            _ => Err((
                StatusCode::BAD_REQUEST,
                "CONNECT here needs the websocket protocol (RFC 8441)",
            )),
        };
    }
    if parts.method != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket handshake is a GET",
        ));
    }
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let upgrade = header(header::UPGRADE).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = header(header::CONNECTION).is_some_and(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !upgrade || !connection {
        return Err((
            StatusCode::BAD_REQUEST,
            "this path speaks WebSocket: send `Connection: upgrade` and `Upgrade: websocket`",
        ));
    }
    if header(header::SEC_WEBSOCKET_VERSION) != Some("13") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13",
        ));
    }
    let Some(key) = header(header::SEC_WEBSOCKET_KEY) else {
        return Err((StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    };
    Ok(Handshake::Upgrade(derive_accept_key(key.as_bytes())))
}

/// A plain-text answer to a request that is not a usable handshake.
fn not_a_handshake(status: StatusCode, message: &str) -> Response<OwnBody> {
    let mut response = text(status, format!("{message}\n"));
    if status == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    response
}

/// Answers a request on the WebSocket path: checks the handshake, opens the
/// subscription as the stream path does, and hands the upgraded connection
/// to a session task.
pub(crate) async fn respond(mut parts: Parts, publisher: Publisher) -> Response<OwnBody> {
    let handshake = match handshake(&parts) {
        Ok(handshake) => handshake,
        Err((status, message)) => return not_a_handshake(status, message),
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return not_a_handshake(
            StatusCode::INTERNAL_SERVER_ERROR,
            "WebSocket needs a hyper-based server that supports upgrades",
        );
    };
    let config = publisher.config().clone();
    let opened = async {
        let request = request::parse(&parts, &config.topic_param, config.max_topics)?;
        let credentials = Credentials::Request(Box::new(parts));
        let admitted = admission::admit(publisher.hub(), &config, credentials).await?;
        let mut session = Session {
            publisher,
            admitted,
            topics: request.topics.into_iter().collect(),
            subscription: None,
            last: None,
            life: None,
        };
        session.subscribe(&request.resume).await?;
        session.life = session.subscription.as_ref().map(|subscription| {
            StreamLife::begin(
                Transport::WebSocket,
                subscription.topics(),
                subscription.user(),
                subscription.start().kind == StartKind::Reset,
            )
        });
        Ok::<_, Refusal>(session)
    };
    let session = match opened.await {
        Ok(session) => session,
        Err(refusal) => return refused(refusal),
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // Small buffers: a session mostly idles (tungstenite's
                // defaults, 128 KiB each, would cost that per client).
                let config = WebSocketConfig::default()
                    .read_buffer_size(4 * 1024)
                    .write_buffer_size(16 * 1024)
                    .max_message_size(Some(MAX_MESSAGE))
                    .max_frame_size(Some(MAX_MESSAGE));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session.run(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(OwnBody::full(Bytes::new()));
    if let Handshake::Upgrade(accept) = handshake {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
    }
    response
}

/// Why a session ends: the close frame that says so, and the reason counted.
struct Close(CloseCode, String, Reason);

impl Close {
    /// The close of a subscription ended from outside; `None` for a closing
    /// hub, whose session first sends what was published before.
    fn ended(why: Ended) -> Option<Close> {
        let (code, reason) = match why {
            Ended::Closed => return None,
            Ended::Disconnected => (
                CloseCode::Restart,
                "the server ended every stream; reconnect with last_event_id",
            ),
            Ended::Revoked => (CloseCode::Library(4003), "access revoked"),
            Ended::TopicClosed => (
                CloseCode::Library(4004),
                "a topic of this session was closed",
            ),
            Ended::Expired => (
                CloseCode::Library(4001),
                "access expired; reconnect with fresh credentials",
            ),
        };
        Some(Close(code, reason.into(), why.into()))
    }

    /// The close that refuses a change of topics.
    fn refusal(refusal: &Refusal) -> Close {
        let code = match refusal.kind() {
            Kind::Invalid => CloseCode::Protocol,
            Kind::TooManyTopics | Kind::Forbidden | Kind::Hook => CloseCode::Policy,
            Kind::Unavailable => CloseCode::Again,
            Kind::Expired => CloseCode::Library(4001),
            Kind::Internal => CloseCode::Error,
        };
        let why = match refusal.kind() {
            Kind::Unavailable | Kind::Internal => Reason::Refused,
            _ => Reason::Protocol,
        };
        Close(code, format!("could not subscribe: {refusal}"), why)
    }
}

struct Session {
    publisher: Publisher,
    /// What the session may follow and whose it is, decided once at the
    /// handshake.
    admitted: Admitted,
    /// Topics the client asked for (the default topic and topics the hook
    /// makes it follow come on top).
    topics: BTreeSet<String>,
    subscription: Option<Subscription>,
    /// Hub id of the last event sent, or the one the session started after.
    last: Option<u64>,
    /// Counted and traced from its first subscription to its end.
    life: Option<StreamLife>,
}

impl Session {
    /// (Re)subscribes to the current topics from `resume`, through the same
    /// checks as the stream path.
    async fn subscribe(&mut self, resume: &Resume) -> Result<(), Refusal> {
        let topics = self
            .admitted
            .grant(self.topics.iter().map(String::as_str))?;
        // Leave first: a session that changes topics at the subscriber limit
        // must not be refused for counting twice.
        self.subscription = None;
        self.subscription = Some(self.admitted.subscribe(&topics, resume).await?);
        Ok(())
    }

    /// The frames that open a subscription: `reset` when the client's
    /// resume point is gone, then `subscribed` with the id it starts after.
    fn opening(&mut self) -> Vec<Utf8Bytes> {
        let Some(subscription) = &self.subscription else {
            return Vec::new();
        };
        let start = subscription.start();
        self.last = Some(start.after);
        let after = start.after.to_string();
        let mut frames = Vec::new();
        if start.kind == StartKind::Reset {
            frames.push(
                json!({"type": RESET_EVENT, "after": after})
                    .to_string()
                    .into(),
            );
        }
        frames.push(
            json!({"type": "subscribed", "topics": self.topics, "after": after})
                .to_string()
                .into(),
        );
        frames
    }

    async fn run<S>(mut self, mut ws: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let close = self.serve(&mut ws).await;
        // Unsubscribed now, not after the close handshake.
        self.subscription = None;
        if let (Some(life), Some(close)) = (&mut self.life, &close) {
            life.end(close.2);
        }
        self.life = None;
        if let Some(Close(code, reason, _)) = close {
            tracing::debug!(?code, reason, "WebSocket session closes");
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            ws.send(Message::Close(Some(frame))).await.ok();
        }
        // Let the close handshake finish (bounded).
        tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await
        .ok();
    }

    /// Runs the session until it ends; `None` when the client left.
    async fn serve<S>(&mut self, ws: &mut WebSocketStream<S>) -> Option<Close>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        for frame in self.opening() {
            ws.feed(Message::Text(frame)).await.ok()?;
        }
        ws.flush().await.ok()?;
        let interval = self.publisher.config().keep_alive.as_ref().map(|(i, _)| *i);
        let mut ping = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
        ping.tick().await;
        let mut out = Vec::with_capacity(BATCH);
        // `SseLayer::coalesce`: after a write, events wait for the window's
        // end (several frames in one write) unless the write was a full batch.
        let coalesce = self.publisher.config().coalesce;
        let window = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(window);
        let mut waiting = false;
        loop {
            let subscription = self.subscription.as_mut()?;
            tokio::select! {
                incoming = ws.next() => match incoming {
                    None | Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(Message::Text(message))) => {
                        if let Err(close) = self.handle(&message).await {
                            return Some(close);
                        }
                        for frame in self.opening() {
                            ws.feed(Message::Text(frame)).await.ok()?;
                        }
                        ws.flush().await.ok()?;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        return Some(Close(
                            CloseCode::Unsupported,
                            "binary messages are not part of the protocol".into(),
                            Reason::Protocol,
                        ))
                    }
                    Some(Ok(_)) => {} // ping, pong: answered by tungstenite
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                        return Some(Close(
                            CloseCode::Size,
                            format!("message too big: the limit is {MAX_MESSAGE} bytes"),
                            Reason::Protocol,
                        ))
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket read failed");
                        return None;
                    }
                },
                read = poll_fn(|cx| {
                    let ended = subscription.poll_ended(cx);
                    if let Some(close) = ended.and_then(Close::ended) {
                        return Poll::Ready(Err(close));
                    }
                    // At most `BATCH` events, and about `BATCH_BYTES`, per wake-up.
                    let mut bytes = 0;
                    let read = subscription.read(|record| {
                        if out.len() == BATCH || (bytes >= BATCH_BYTES && !out.is_empty()) {
                            return false;
                        }
                        let json = record.encoded(&ENCODING).clone();
                        bytes += json.len();
                        out.push((record.id().as_u64(), json));
                        true
                    });
                    match read {
                        Err(_) => Poll::Ready(Err(Close(
                            CloseCode::Again,
                            "fell behind the lag bound; reconnect with last_event_id".into(),
                            Reason::Lagged,
                        ))),
                        Ok(()) if !out.is_empty() => Poll::Ready(Ok(())),
                        Ok(()) if ended.is_some() => Poll::Ready(Err(Close(
                            CloseCode::Away,
                            "the server is shutting down".into(),
                            Reason::Shutdown,
                        ))),
                        Ok(()) => Poll::Pending,
                    }
                }), if !waiting => {
                    if let Err(close) = read {
                        return Some(close);
                    }
                    if let Some(life) = &self.life {
                        life.delivered(out.len());
                    }
                    // Measured only when coalescing: a full batch does not wait.
                    let wait = coalesce.filter(|_| {
                        out.len() < BATCH
                            && out.iter().map(|(_, json)| json.len()).sum::<usize>() < BATCH_BYTES
                    });
                    for (id, json) in out.drain(..) {
                        ws.feed(event_frame(&json)).await.ok()?;
                        // A state topic's current value may be older than
                        // where the session started: it does not move back.
                        self.last = self.last.max(Some(id));
                    }
                    ws.flush().await.ok()?;
                    if let Some(delay) = wait {
                        window.as_mut().reset(tokio::time::Instant::now() + delay);
                        waiting = true;
                        // Woken by the window's end, not by each record.
                        if let Some(subscription) = &self.subscription {
                            subscription.park();
                        }
                    }
                }
                () = &mut window, if waiting => waiting = false,
                _ = ping.tick(), if interval.is_some() => {
                    ws.send(Message::Ping(Bytes::new())).await.ok()?;
                }
            }
        }
    }

    /// A client message: `subscribe` or `unsubscribe`.
    async fn handle(&mut self, message: &str) -> Result<(), Close> {
        let protocol = |why: &str| {
            Close(
                CloseCode::Protocol,
                format!("protocol error: {why}"),
                Reason::Protocol,
            )
        };
        let message: Value =
            serde_json::from_str(message).map_err(|_| protocol("a message is a JSON object"))?;
        let kind = message.get("type").and_then(Value::as_str);
        let topics: Vec<&str> = match message.get("topics") {
            None => Vec::new(),
            Some(Value::Array(topics)) => topics
                .iter()
                .map(|t| t.as_str().ok_or_else(|| protocol("topics are strings")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(protocol("`topics` is an array of strings")),
        };
        if let Some(bad) = topics.iter().find(|t| !topic::is_valid(t)) {
            return Err(Close::refusal(&Refusal::invalid_topic(bad)));
        }
        let last_event_id = match message.get("last_event_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Err(protocol("`last_event_id` is a string")),
        };
        match kind {
            Some("subscribe") => self.topics.extend(topics.iter().map(|t| (*t).to_owned())),
            Some("unsubscribe") => {
                for topic in &topics {
                    self.topics.remove(*topic);
                }
            }
            _ => return Err(protocol("`type` is `subscribe` or `unsubscribe`")),
        }
        // Continue right after what was sent (or where the client says), so
        // changing topics loses nothing of the topics kept.
        let resume = match last_event_id.or_else(|| self.last.map(|id| id.to_string())) {
            Some(id) => Resume::After(id),
            None => Resume::Live,
        };
        self.subscribe(&resume)
            .await
            .map_err(|refusal| Close::refusal(&refusal))
    }
}
