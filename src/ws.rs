//! The same hub over WebSocket (feature `ws`), for clients that change
//! their topics without reconnecting or cannot use `EventSource`.
//!
//! The protocol (JSON text frames) is documented on
//! [`SseLayer::websocket`](crate::SseLayer::websocket).

use std::{collections::BTreeSet, future::poll_fn, sync::Arc, task::Poll, time::Duration};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Message, Utf8Bytes,
    },
    WebSocketStream,
};

use crate::{
    authorize::Access,
    body::OwnBody,
    hub::{Read, Resume, SubscribeError, Subscription},
    layer::Config,
    service,
    subscribe::{self, is_valid_topic},
    Publisher,
};

/// The largest message a client may send, and the largest frame.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;
/// Events sent per wake-up before checking the client's messages again.
const BATCH: usize = 256;

/// One event as the text frame every WebSocket client gets: built once per
/// event from its encoded fields, then shared.
pub(crate) fn event_frame(hub_id: u64, topic: &str, sse: &[u8]) -> Utf8Bytes {
    let text = String::from_utf8_lossy(sse);
    let (mut event, mut data, mut id) = (None, Vec::new(), None);
    for line in text.split('\n') {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value),
            "data" => data.push(value),
            "id" => id = Some(value),
            _ => {}
        }
    }
    json!({
        "type": "event",
        "id": id.map_or_else(|| hub_id.to_string(), str::to_owned),
        "event": event.unwrap_or("message"),
        "topic": topic,
        "data": data.join("\n"),
    })
    .to_string()
    .into()
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
fn text(status: StatusCode, message: &str) -> Response<OwnBody> {
    let mut response = service::text(status, format!("{message}\n"));
    if status == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    response
}

/// Answers a request on the WebSocket path: checks the handshake, runs the
/// authorization hook, subscribes, and hands the upgraded connection to a
/// session task.
pub(crate) async fn respond(
    mut parts: Parts,
    publisher: Publisher,
    config: Arc<Config>,
) -> Response<OwnBody> {
    let handshake = match handshake(&parts) {
        Ok(handshake) => handshake,
        Err((status, message)) => return text(status, message),
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "WebSocket needs a hyper-based server that supports upgrades",
        );
    };
    let request = match subscribe::parse(&parts, &config.topic_param, config.max_topics) {
        Ok(request) => request,
        Err(rejection) => return text(rejection.status, &rejection.message),
    };
    let access = match &config.authorize {
        None => Access::all(),
        Some(hook) => {
            let decision = std::panic::AssertUnwindSafe(async { (hook.0)(parts).await })
                .catch_unwind()
                .await;
            match decision {
                Ok(Ok(access)) => access,
                Ok(Err(refusal)) => return refusal.map(OwnBody::full),
                Err(_) => return service::hook_panicked(),
            }
        }
    };
    if let Some(topic) = request.topics.iter().find(|t| !access.allows(t)) {
        return service::forbidden(topic);
    }
    let topics: BTreeSet<String> = request.topics.iter().cloned().collect();
    let mut session = Session {
        publisher,
        config,
        access,
        topics,
        subscription: None,
        last: None,
    };
    // With a backplane, the same wait as a stream's: for the history to load,
    // or for an id the client saw on another instance.
    #[cfg(feature = "redis")]
    if let Some(id) = session.publisher.hub().wait_for(&request.resume()) {
        session.publisher.hub().caught_up(id).await;
    }
    if let Err(error) = session.subscribe(request.resume()) {
        return service::refused(&session.config, error);
    }
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

/// Why a session ends, and the close frame that says so.
struct Close(CloseCode, String);

struct Session {
    publisher: Publisher,
    config: Arc<Config>,
    access: Access,
    /// Topics the client asked for (the default topic and topics the hook
    /// makes it follow come on top).
    topics: BTreeSet<String>,
    subscription: Option<Subscription>,
    /// Hub id of the last event sent, or the one the session started after.
    last: Option<u64>,
}

impl Session {
    /// (Re)subscribes to the current topics from `resume`.
    fn subscribe(&mut self, resume: Resume<'_>) -> Result<(), SubscribeError> {
        // Leave first: a session that changes topics at the subscriber limit
        // must not be refused for counting twice.
        self.subscription = None;
        let mut topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        topics.extend(service::followed(&self.access));
        self.subscription = Some(self.publisher.hub().subscribe(&topics, resume)?);
        Ok(())
    }

    /// The frames that open a subscription: `reset` when the client's
    /// resume point is gone, then `subscribed` with the id it starts after.
    fn opening(&mut self) -> Vec<Utf8Bytes> {
        let Some(subscription) = &mut self.subscription else {
            return Vec::new();
        };
        let (after, reset) = subscription.take_start_ws();
        if after.is_some() {
            self.last = after;
        }
        let after = self.last.map(|id| id.to_string());
        let mut frames = Vec::new();
        if reset {
            frames.push(json!({"type": "reset", "after": after}).to_string().into());
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
        if let Some(Close(code, reason)) = close {
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
        let interval = self.config.keep_alive.as_ref().map(|(i, _)| *i);
        let mut ping = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
        ping.tick().await;
        let mut out = Vec::with_capacity(BATCH);
        loop {
            let subscription = self.subscription.as_mut()?;
            tokio::select! {
                incoming = ws.next() => match incoming {
                    None | Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(Message::Text(message))) => {
                        if let Err(close) = self.handle(&message) {
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
                        ))
                    }
                    Some(Ok(_)) => {} // ping, pong: answered by tungstenite
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                        return Some(Close(
                            CloseCode::Size,
                            format!("message too big: the limit is {MAX_MESSAGE} bytes"),
                        ))
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket read failed");
                        return None;
                    }
                },
                read = poll_fn(|cx| {
                    subscription.register(cx.waker());
                    if subscription.is_disconnected() {
                        return Poll::Ready(Err(Close(
                            CloseCode::Restart,
                            "the server ended every stream; reconnect with last_event_id".into(),
                        )));
                    }
                    match subscription.read_ws(&mut out, BATCH) {
                        Read::Events(_) => Poll::Ready(Ok(())),
                        Read::Lagged => Poll::Ready(Err(Close(
                            CloseCode::Again,
                            "fell behind the lag bound; reconnect with last_event_id".into(),
                        ))),
                        Read::Nothing if subscription.is_closed() => Poll::Ready(Err(Close(
                            CloseCode::Away,
                            "the server is shutting down".into(),
                        ))),
                        Read::Nothing => Poll::Pending,
                    }
                }) => {
                    if let Err(close) = read {
                        return Some(close);
                    }
                    for (id, frame) in out.drain(..) {
                        ws.feed(Message::Text(frame)).await.ok()?;
                        self.last = Some(id);
                    }
                    ws.flush().await.ok()?;
                }
                _ = ping.tick(), if interval.is_some() => {
                    ws.send(Message::Ping(Bytes::new())).await.ok()?;
                }
            }
        }
    }

    /// A client message: `subscribe` or `unsubscribe`.
    fn handle(&mut self, message: &str) -> Result<(), Close> {
        let protocol = |why: &str| Close(CloseCode::Protocol, format!("protocol error: {why}"));
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
        for topic in &topics {
            if !is_valid_topic(topic) {
                return Err(protocol(&format!(
                    "invalid topic {topic:?}: use 1 to 128 characters from `A-Z a-z 0-9 - _ . / : @ ~`"
                )));
            }
        }
        let last_event_id = match message.get("last_event_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Err(protocol("`last_event_id` is a string")),
        };
        match kind {
            Some("subscribe") => {
                for topic in &topics {
                    if !self.access.allows(topic) {
                        return Err(Close(
                            CloseCode::Policy,
                            format!("not allowed to follow topic {topic:?}"),
                        ));
                    }
                }
                self.topics.extend(topics.iter().map(|t| (*t).to_owned()));
                if self.topics.len() > self.config.max_topics {
                    return Err(Close(
                        CloseCode::Policy,
                        format!("too many topics: at most {}", self.config.max_topics),
                    ));
                }
            }
            Some("unsubscribe") => {
                for topic in &topics {
                    self.topics.remove(*topic);
                }
            }
            _ => return Err(protocol("`type` is `subscribe` or `unsubscribe`")),
        }
        // Continue right after what was sent (or where the client says), so
        // changing topics loses nothing of the topics kept.
        let resume_from = last_event_id.or_else(|| self.last.map(|id| id.to_string()));
        let resume = match &resume_from {
            Some(id) => Resume::After(id),
            None => Resume::Live,
        };
        self.subscribe(resume).map_err(|error| {
            let status = service::refused(&self.config, error).status();
            Close(CloseCode::Again, format!("could not subscribe: {status}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_becomes_one_json_frame() {
        let frame = event_frame(
            7,
            "room/a",
            b"event: greet\ndata: one\ndata: two\nid: 7\n\n",
        );
        let value: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(
            value,
            json!({"type": "event", "id": "7", "event": "greet", "topic": "room/a", "data": "one\ntwo"})
        );
        let frame = event_frame(8, "", b"data: x\nid: custom\n\n");
        let value: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(value["id"], "custom");
        assert_eq!(value["event"], "message");
    }
}
