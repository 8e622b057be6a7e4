//! [`NatsBackplane`]: many instances, one stream, through a NATS JetStream
//! stream (replicated across a NATS cluster with
//! [`replicas`](NatsBuilder::replicas)).
//!
//! Every event is one message of one stream, so the stream's sequence
//! orders all topics. An event's id is the stream's epoch — the time the
//! engine made it, in microseconds, kept in the stream's description
//! (`tower-sse epoch <µs>`) — plus its sequence: the same on every instance,
//! and above every id a browser kept when a stream is made again after a
//! loss (a stream lives longer in microseconds than it has messages). A
//! stream made by hand without that description has epoch 0. Each instance
//! reads the stream with an ordered consumer from the last sequence it
//! applied; a jump in the sequence is a gap (messages dropped before it read
//! them), which the hub answers with a reload and the reset.
//!
//! The message, so that any program can publish with a plain `nats pub`:
//! the subject is the prefix (`tower-sse.events` unless
//! [`subject`](NatsBuilder::subject) sets another) for an event to every
//! subscriber, or `<prefix>.<topic>` for a topic's, each `.` of the topic
//! written `%2E` (a topic `room/7` is `tower-sse.events.room/7`, so a NATS
//! subscriber can follow `tower-sse.events.>` too); the data is the payload;
//! headers `Tower-Sse-Event` (the name), `Tower-Sse-Id` (the app's own id),
//! `Tower-Sse-Retry` (milliseconds) and `Tower-Sse-Comment` (line breaks
//! written `\n`) are optional. The stream keeps each topic's history
//! apart, as the subject carries the topic: `max_messages_per_subject` (the
//! largest count a hub's rule keeps, at least `max_lag`) and `max_age`, with
//! no limit on the whole stream, so a flood on one topic never costs a
//! quiet one its events. Every instance sharing a stream must keep the same
//! (a stream that keeps another count or age per subject is refused with an
//! error saying so). An instance that finds a hole in the stream (a flood
//! trimmed a subject before it read it: it was cut off, or far behind)
//! names the subjects whose oldest message is past where it was, as trims
//! of their topics (up to 1,000 subjects, and when no age limit is set: a
//! subject can then go whole, unseen); other holes, and a stream cut at
//! its front, make it reload everything.

use async_nats::{
    jetstream::{
        self,
        stream::{self, Config, Stream},
        Context,
    },
    HeaderMap,
};
use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

mod builder;
mod reader;
mod topics;

pub use builder::NatsBuilder;

use reader::{last, Reader};

use super::{Backplane, BackplaneReader, BoxFuture, Retention, TopicRead};

use crate::{
    error::{BoxError, Error},
    event::EventId,
    record::Message,
};

/// The client options [`NatsBuilder::options`] takes (credentials, NKeys,
/// TLS, …), re-exported so the app needs no `async-nats` of its own.
pub use async_nats::ConnectOptions;

const DEFAULT_STREAM: &str = "TOWER_SSE";
const DEFAULT_SUBJECT: &str = "tower-sse.events";
/// How long a read waits for a message when there is none.
const BLOCK: Duration = Duration::from_secs(1);
/// How often a reader checks the stream is still the one it reads.
const CHECK_EVERY: Duration = Duration::from_secs(1);

const EVENT: &str = "Tower-Sse-Event";
const ID: &str = "Tower-Sse-Id";
const RETRY: &str = "Tower-Sse-Retry";
const COMMENT: &str = "Tower-Sse-Comment";
/// JetStream's de-duplication header.
const MESSAGE_ID: &str = "Nats-Msg-Id";

/// A NATS JetStream backplane: several instances of an app share one event
/// stream, with the same ids, history and resume guarantees as a single
/// instance.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_sse::Error> {
/// use tower_sse::{Event, Hub, NatsBackplane, SseLayer};
///
/// let backplane = NatsBackplane::connect("nats://127.0.0.1:4222").await?;
/// let hub = Hub::builder().history(4096).backplane(backplane).build();
/// let layer = SseLayer::new("/events").hub(&hub);
/// let id = layer.publisher().publish(Event::default().data("hello"))?.await?;
/// # let _ = id; Ok(()) }
/// ```
///
/// On a cluster, give every server (the client also learns them from the
/// one it reaches) and keep the stream on three:
///
/// ```no_run
/// # async fn run() -> Result<(), tower_sse::Error> {
/// use tower_sse::NatsBackplane;
///
/// let backplane = NatsBackplane::builder()
///     .servers("nats://n1:4222,nats://n2:4222,nats://n3:4222")
///     .replicas(3)
///     .connect()
///     .await?;
/// # let _ = backplane; Ok(()) }
/// ```
///
/// The stream is created if missing (file storage), and its limits follow
/// the hubs' history. Publishing waits for JetStream's acknowledgement (on
/// a cluster: once a majority of the stream's servers have the message).
/// See the [module documentation](self) for the message format.
#[derive(Clone)]
pub struct NatsBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    context: Context,
    stream: String,
    /// The subject prefix.
    subject: String,
    replicas: usize,
    retention: Mutex<Option<Retention>>,
    /// The stream's epoch as last read, and the last sequence acknowledged.
    epoch: Mutex<(u64, u64)>,
    /// This backplane's prefix of `Nats-Msg-Id`s (random), and how many
    /// messages it sent.
    instance: String,
    sent: AtomicU64,
}

impl std::fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("stream", &self.inner.stream)
            .field("subject", &self.inner.subject)
            .field("replicas", &self.inner.replicas)
            .finish_non_exhaustive()
    }
}

fn backplane_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Backplane(Box::new(e))
}

impl NatsBackplane {
    /// Connects to NATS at `servers` (`nats://host:4222`, comma-separated
    /// for several) with the default stream; [`builder`](Self::builder)
    /// for more.
    pub async fn connect(servers: &str) -> Result<NatsBackplane, Error> {
        NatsBackplane::builder().servers(servers).connect().await
    }

    /// A backplane to configure: servers, client options, stream, subject,
    /// replicas.
    pub fn builder() -> NatsBuilder {
        NatsBuilder {
            servers: "nats://127.0.0.1:4222".into(),
            options: None,
            stream: DEFAULT_STREAM.into(),
            subject: DEFAULT_SUBJECT.into(),
            replicas: 1,
        }
    }

    /// The stream, created if missing, with the retention the hubs ask for
    /// and the replicas asked for.
    async fn ensure_stream(&self) -> Result<Stream, BoxError> {
        let retention = *self
            .inner
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        let subject = &self.inner.subject;
        let mut config = Config {
            name: self.inner.stream.clone(),
            subjects: vec![subject.clone(), format!("{subject}.>")],
            storage: stream::StorageType::File,
            num_replicas: self.inner.replicas,
            description: Some(format!("{EPOCH}{start}")),
            ..Config::default()
        };
        if let Some(retention) = retention {
            topics::limits(&mut config, retention);
        }
        let context = &self.inner.context;
        let mut stream = match context.get_or_create_stream(config.clone()).await {
            Ok(stream) => stream,
            // Another instance made it between our look and our create (its
            // description carries its own epoch): theirs is the one. (The
            // subjects of another stream are the original error.)
            Err(e) if made_meanwhile(&e) => match context.get_stream(&config.name).await {
                Ok(stream) => stream,
                Err(_) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        let current = info(&mut stream).await?.config.clone();
        if !config.subjects.iter().all(|s| current.subjects.contains(s)) {
            return Err(format!(
                "the stream {} exists with the subjects {:?}, not {:?}: every instance sharing \
                 a stream must use the same subject prefix (`NatsBuilder::subject`)",
                config.name, current.subjects, config.subjects
            )
            .into());
        }
        self.set_epoch(epoch(&current));
        if retention.is_some() {
            topics::agree(&current, &config)?;
        }
        let mut update = current.clone();
        update.num_replicas = config.num_replicas;
        if retention.is_some() {
            update.max_messages = config.max_messages;
            update.max_messages_per_subject = config.max_messages_per_subject;
            update.max_bytes = config.max_bytes;
            update.max_age = config.max_age;
        }
        if (
            update.num_replicas,
            update.max_messages,
            update.max_messages_per_subject,
            update.max_bytes,
            update.max_age,
        ) != (
            current.num_replicas,
            current.max_messages,
            current.max_messages_per_subject,
            current.max_bytes,
            current.max_age,
        ) {
            context.update_stream(update).await?;
        }
        Ok(stream)
    }

    /// The subject of an event to `topic` (or to every subscriber).
    fn subject_of(&self, topic: Option<&str>) -> String {
        match topic {
            None => self.inner.subject.clone(),
            Some(topic) => format!("{}.{}", self.inner.subject, topic.replace('.', "%2E")),
        }
    }
}

impl NatsBackplane {
    /// Publishes `messages` in order on one connection, each with its
    /// `Nats-Msg-Id` of `ids`, then awaits their acknowledgements.
    async fn send(&self, messages: &[Message], ids: &[String]) -> Result<Vec<EventId>, BoxError> {
        // While the client reconnects it would keep what is published and
        // send it once back, after the caller was told the publish failed:
        // refused here instead, so an error means not sent.
        let state = self.inner.context.client().connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(format!("not connected to NATS ({state})").into());
        }
        let mut acks = Vec::with_capacity(messages.len());
        for (message, id) in messages.iter().zip(ids) {
            let mut headers = headers(message);
            headers.insert(MESSAGE_ID, id.as_str());
            let ack = self
                .inner
                .context
                .publish_with_headers(
                    self.subject_of(message.topic()),
                    headers,
                    message.data().to_owned().into(),
                )
                .await?;
            acks.push(ack);
        }
        let mut ids = Vec::with_capacity(acks.len());
        for ack in acks {
            ids.push(self.id_of(ack.await?.sequence).await?);
        }
        Ok(ids)
    }

    fn set_epoch(&self, epoch: u64) {
        let mut current = self.inner.epoch.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != epoch {
            *current = (epoch, 0);
        }
    }

    /// The id of the message acknowledged under `sequence`; a sequence not
    /// above the last one means the stream was made again: its epoch is read
    /// anew first.
    async fn id_of(&self, sequence: u64) -> Result<EventId, BoxError> {
        let stale = {
            let current = self.inner.epoch.lock().unwrap_or_else(|e| e.into_inner());
            sequence <= current.1
        };
        if stale {
            let mut stream = self.inner.context.get_stream(&self.inner.stream).await?;
            self.set_epoch(epoch(&info(&mut stream).await?.config));
        }
        let mut current = self.inner.epoch.lock().unwrap_or_else(|e| e.into_inner());
        current.1 = current.1.max(sequence);
        Ok(EventId::new(current.0.saturating_add(sequence)))
    }
}

/// A prefix of message ids no other backplane uses: random, with the
/// process and the time.
fn instance_id() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{random:016x}{:x}{now:x}", std::process::id())
}

/// Whether creating the stream failed because another instance may have
/// created it first ("already in use with a different configuration", or
/// "subjects overlap" with the one just made).
fn made_meanwhile(error: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(e)
            if [
                jetstream::ErrorCode::STREAM_NAME_EXIST,
                jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP,
            ].contains(&e.error_code())
    )
}

/// How long a question about the stream may take: while a cluster elects
/// the stream's leader, questions go unanswered, and the hub should know it
/// soon (and reconnect) rather than after `async-nats`' 5 s.
const ASK: Duration = Duration::from_secs(2);

/// The stream's current information, within [`ASK`].
async fn info(stream: &mut Stream) -> Result<&stream::Info, BoxError> {
    match tokio::time::timeout(ASK, stream.info()).await {
        Ok(info) => Ok(info?),
        Err(_) => Err("NATS did not answer about the stream within 2 s".into()),
    }
}

/// The prefix of the stream description that carries its epoch.
const EPOCH: &str = "tower-sse epoch ";

/// A stream's epoch, from its description (0 when it has none).
fn epoch(config: &Config) -> u64 {
    config
        .description
        .as_deref()
        .and_then(|d| d.strip_prefix(EPOCH))
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

impl Backplane for NatsBackplane {
    fn retain(&self, retention: Retention) {
        let mut kept = self
            .inner
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *kept = Some(kept.map_or(retention, |kept| kept.covering(retention)));
    }

    fn append<'a>(
        &'a self,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<Vec<EventId>, BoxError>> {
        Box::pin(async move {
            // Each message carries an id of its own (`Nats-Msg-Id`), so the
            // batch can be sent again once after an error (a connection
            // made again, an acknowledgement lost in an election):
            // JetStream drops what it already holds and answers with its
            // sequence, so nothing is held twice.
            let first = self
                .inner
                .sent
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            let ids: Vec<String> = (first..)
                .take(messages.len())
                .map(|n| format!("{}-{n}", self.inner.instance))
                .collect();
            match self.send(messages, &ids).await {
                Ok(ids) => Ok(ids),
                Err(e) => {
                    tracing::debug!(error = %e, "backplane: NATS did not acknowledge a batch; \
                                    sending it once more (JetStream drops duplicates by id)");
                    self.send(messages, &ids).await
                }
            }
        })
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BoxError>> {
        Box::pin(async move {
            let mut stream = self.inner.context.get_stream(&self.inner.stream).await?;
            let info = info(&mut stream).await?;
            Ok(last(epoch(&info.config), &info.state))
        })
    }

    fn read_topic<'a>(
        &'a self,
        topic: Option<&'a str>,
        after: EventId,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<TopicRead>, BoxError>> {
        Box::pin(async move { Ok(Some(self.read_subject(topic, after, limit).await?)) })
    }

    fn reader(&self) -> BoxFuture<'_, Result<Box<dyn BackplaneReader>, BoxError>> {
        Box::pin(async move {
            let mut stream = self.ensure_stream().await?;
            let epoch = epoch(&info(&mut stream).await?.config);
            Ok(
                Box::new(Reader::new(stream, epoch, self.inner.subject.clone()))
                    as Box<dyn BackplaneReader>,
            )
        })
    }
}

fn headers(message: &Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(event) = message.event() {
        headers.insert(EVENT, event);
    }
    if let Some(id) = message.app_id() {
        headers.insert(ID, id);
    }
    if let Some(retry) = message.retry() {
        headers.insert(RETRY, retry.as_millis().to_string().as_str());
    }
    if let Some(comment) = message.comment() {
        let escaped = comment.replace('\\', "\\\\").replace('\n', "\\n");
        headers.insert(COMMENT, escaped.as_str());
    }
    headers
}
