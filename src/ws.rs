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
use serde_json::json;
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
};

mod control;
mod handshake;

#[cfg(fuzzing)]
pub use control::fuzz;
pub(crate) use handshake::respond;

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

/// The longest close reason, in bytes: a control frame carries at most 125,
/// two of which are the code (RFC 6455, 5.5). A longer one (a reason naming
/// a long topic) would make the client fail the connection without a code.
const MAX_CLOSE_REASON: usize = 123;

/// The largest index at most `max` that starts a character of `text`, so
/// cutting there leaves valid UTF-8.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    // A character is at most 4 bytes: one of these 4 indices is a boundary.
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// Why a session ends: the close frame that says so, and the reason counted.
#[derive(Debug)]
struct Close(CloseCode, String, Reason);

/// How long a closing session waits for the client's part of the close
/// handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Awaits a write to the client, unless the client takes nothing for
/// `stall` (its socket or HTTP/2 window stays full, pings answered or
/// not): then the session ends as one that fell behind. `Err(None)` when
/// the write failed (the client left).
async fn bounded<T, E>(
    stall: Duration,
    write: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Option<Close>> {
    match tokio::time::timeout(stall, write).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some(Close(
            CloseCode::Again,
            "the client took nothing for too long; reconnect with last_event_id".into(),
            Reason::Lagged,
        ))),
    }
}

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
        // The new subscription opens before the old one is dropped, so the
        // topics kept are followed throughout: their presence sees no one
        // leave and come back, only the topics that changed do. Both hold
        // the connection's one seat under the hub's limits, taken at the
        // handshake: a change is never refused for a limit.
        let subscription = self.admitted.subscribe(&topics, resume).await?;
        self.subscription = Some(subscription);
        Ok(())
    }

    /// The answer to a message that changed nothing: the topics, and the
    /// session going on after the last event it sent.
    fn unchanged(&self) -> Utf8Bytes {
        let after = self.last.map(|id| id.to_string());
        json!({"type": "subscribed", "topics": self.topics, "after": after})
            .to_string()
            .into()
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
        if let Some(Close(code, mut reason, _)) = close {
            tracing::debug!(?code, reason, "WebSocket session closes");
            reason.truncate(floor_char_boundary(&reason, MAX_CLOSE_REASON));
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            // Bounded: a client that stalled takes no close frame either.
            let close = ws.send(Message::Close(Some(frame)));
            if tokio::time::timeout(CLOSE_WAIT, close).await.is_err() {
                return;
            }
        }
        // Let the close handshake finish (bounded).
        tokio::time::timeout(CLOSE_WAIT, async {
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
        match self.session(ws).await {
            Err(end) => end,
            Ok(never) => match never {},
        }
    }

    /// The session's loop: `Err(None)` when the client left.
    async fn session<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
    ) -> Result<std::convert::Infallible, Option<Close>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let stall = self.publisher.config().write_stall;
        for frame in self.opening() {
            bounded(stall, ws.feed(Message::Text(frame))).await?;
        }
        bounded(stall, ws.flush()).await?;
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
        let mut budget = control::Budget::new();
        loop {
            let subscription = self.subscription.as_mut().ok_or(None)?;
            tokio::select! {
                incoming = ws.next() => match incoming {
                    None | Some(Ok(Message::Close(_))) => return Err(None),
                    Some(Ok(Message::Text(message))) => {
                        budget.take().map_err(Some)?;
                        let frames = if self.handle(&message).await.map_err(Some)? {
                            self.opening()
                        } else {
                            vec![self.unchanged()]
                        };
                        for frame in frames {
                            bounded(stall, ws.feed(Message::Text(frame))).await?;
                        }
                        bounded(stall, ws.flush()).await?;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        return Err(Some(Close(
                            CloseCode::Unsupported,
                            "binary messages are not part of the protocol".into(),
                            Reason::Protocol,
                        )))
                    }
                    Some(Ok(_)) => {} // ping, pong: answered by tungstenite
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                        return Err(Some(Close(
                            CloseCode::Size,
                            format!("message too big: the limit is {MAX_MESSAGE} bytes"),
                            Reason::Protocol,
                        )))
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket read failed");
                        return Err(None);
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
                    read.map_err(Some)?;
                    if let Some(life) = &self.life {
                        life.delivered(out.len());
                    }
                    // Measured only when coalescing: a full batch does not wait.
                    let wait = coalesce.filter(|_| {
                        out.len() < BATCH
                            && out.iter().map(|(_, json)| json.len()).sum::<usize>() < BATCH_BYTES
                    });
                    for (id, json) in out.drain(..) {
                        bounded(stall, ws.feed(event_frame(&json))).await?;
                        // A state topic's current value may be older than
                        // where the session started: it does not move back.
                        self.last = self.last.max(Some(id));
                    }
                    bounded(stall, ws.flush()).await?;
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
                    bounded(stall, ws.send(Message::Ping(Bytes::new()))).await?;
                }
            }
        }
    }

    /// A client message: `subscribe` or `unsubscribe`. `Ok(false)` when it
    /// changed nothing (the topics were already so, and it names no resume
    /// point): the subscription goes on as it was.
    async fn handle(&mut self, message: &str) -> Result<bool, Close> {
        let change = control::parse(message)?;
        let before = self.topics.clone();
        if change.subscribe {
            self.topics.extend(change.topics);
        } else {
            for topic in &change.topics {
                self.topics.remove(topic);
            }
        }
        if self.topics == before && change.last_event_id.is_none() {
            return Ok(false);
        }
        // Continue right after what was sent (or where the client says), so
        // changing topics loses nothing of the topics kept.
        let resume = match change
            .last_event_id
            .or_else(|| self.last.map(|id| id.to_string()))
        {
            Some(id) => Resume::After(id),
            None => Resume::Live,
        };
        self.subscribe(&resume)
            .await
            .map_err(|refusal| Close::refusal(&refusal))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_reason_is_cut_at_a_character_boundary() {
        assert_eq!(floor_char_boundary("short", MAX_CLOSE_REASON), 5);
        let ascii = "a".repeat(200);
        assert_eq!(floor_char_boundary(&ascii, MAX_CLOSE_REASON), 123);
        // 'é' is 2 bytes, '€' 3, '𝄞' 4: never a cut inside one.
        for c in ['é', '€', '𝄞'] {
            for prefix in 0..4 {
                let text = format!("{}{}", "a".repeat(prefix), c.to_string().repeat(100));
                let cut = floor_char_boundary(&text, MAX_CLOSE_REASON);
                assert!(cut <= MAX_CLOSE_REASON && cut + c.len_utf8() > MAX_CLOSE_REASON);
                assert!(text.is_char_boundary(cut));
            }
        }
    }
}
