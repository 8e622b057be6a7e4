//! [`RedisBackplane`]: many instances, one stream, through a Redis Stream.
//!
//! Every event is one entry of one Redis Stream (`XADD … MAXLEN ~ <history>`),
//! and every instance reads that stream with one blocking `XREAD` connection
//! into its hub, in stream order, under the id the stream gave it. So ids
//! mean the same on every instance, each instance's history is the tail of
//! the stream, and a browser resumes on any instance as it would on one.
//! Publishing costs one round trip to Redis (events published together are
//! pipelined); fanning out stays local.
//!
//! Ids: a stream entry id `<ms>-<seq>` becomes the number `ms << 20 | seq`
//! (increasing as the entry ids do; `seq` below 2^20 — a million entries in
//! one millisecond, or a clock far behind the stream's last id). Entry ids
//! come from the clock, so ids stay above every earlier one even after Redis
//! lost the stream. An entry whose id does not fit (added with an explicit
//! id) makes the reader fail with an error saying so, rather than skip.
//!
//! Each topic is kept apart too: a stream per topic (`<key>:topic:<topic>`,
//! `<key>:default` for events to every subscriber) holds the topic's newest
//! events under the log's ids, trimmed exactly to the count a topic keeps
//! and by age, and one script appends to the log and the topic's stream at
//! once. A resume the instance's memory no longer covers is replayed from
//! it (see the `topics` module's notes in the source). An entry added to the
//! log by another program (a plain `XADD`) is read by every instance but is
//! not in a topic's stream: it is replayed from memory only.
//!
//! The entry's fields (all but `data` optional), so that any program can
//! publish with a plain `XADD`: `topic` (absent: every subscriber), `event`
//! (the name), `data`, `id` (the app's own id), `retry` (milliseconds),
//! `comment`. An entry that is not a valid event is skipped and logged.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use redis::{
    aio::MultiplexedConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
    streams::StreamRangeReply,
    AsyncConnectionConfig, Client,
};

mod reader;
mod topics;

use reader::Reader;

use super::{Backplane, BackplaneReader, BoxFuture, Retention, TopicRead};
use crate::{
    error::{BoxError, Error},
    event::EventId,
    record::Message,
};

/// The stream key used unless [`RedisBackplane::key`] sets another.
const DEFAULT_KEY: &str = "tower-sse:events";
/// How long one `XREAD` blocks waiting for an entry.
const BLOCK: Duration = Duration::from_secs(1);
/// How long the publishing connection may stay unused before it is checked
/// (`PING`) before use.
const IDLE: Duration = Duration::from_secs(1);

/// A Redis backplane: several instances of an app share one event stream,
/// with the same ids, history and resume guarantees as a single instance.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_sse::Error> {
/// use tower_sse::{Event, Hub, RedisBackplane, SseLayer};
///
/// let backplane = RedisBackplane::connect("redis://127.0.0.1/").await?;
/// let hub = Hub::builder().history(4096).backplane(backplane).build();
/// let layer = SseLayer::new("/events").hub(&hub);
/// // Publishing is the same call as without a backplane; await it to know
/// // that Redis holds the event.
/// let id = layer.publisher().publish(Event::default().data("hello"))?.await?;
/// # let _ = id; Ok(()) }
/// ```
///
/// Redis as it is bought: a user and password in the URL
/// (`redis://user:secret@host/`, Redis ACLs), TLS with `rediss://` (feature
/// `redis-tls`; [`connect_tls`](RedisBackplane::connect_tls) for a private
/// CA), and Sentinel ([`connect_sentinel`](RedisBackplane::connect_sentinel)):
/// the engine asks the sentinels for the primary on every connection, so
/// after a failover it follows the new one, and it waits for a replica to
/// acknowledge each batch (`WAIT`) so an acknowledged event survives one.
///
/// Each instance keeps one connection for publishing (made again after an
/// error) and one that blocks in `XREAD`. The hub keeps the
/// [`Backplane`](crate::backplane) contract around it: while Redis is
/// unreachable publishing is refused with [`Error::Backplane`], the reader
/// reconnects with backoff, catches up from the stream, and when the stream
/// no longer holds what followed the last entry it read (Redis restarted
/// without persistence, or trimmed past it) it restarts the history and ends
/// every stream, so browsers reconnect and get the reset event. The
/// log keeps several topics' worth (`MAXLEN ~`), and each topic's stream its
/// newest events by the count and age the hubs keep: every instance sharing
/// a key must keep the same (`<key>:retention` holds it; an instance that
/// keeps another is refused with an error saying so).
#[derive(Clone)]
pub struct RedisBackplane {
    target: Target,
    publish: Arc<tokio::sync::Mutex<Option<Publishing>>>,
    key: Arc<str>,
    /// The `MAXLEN` of each `XADD` to the log: several topics' worth.
    max_len: Arc<AtomicUsize>,
    /// What the hubs that use it keep (the largest asked), once one asked.
    retention: Arc<std::sync::Mutex<Option<Retention>>>,
    /// How many replicas must acknowledge a batch (`WAIT`), if any.
    replicas: usize,
}

/// The connection that publishes, and when it was last used.
struct Publishing {
    conn: MultiplexedConnection,
    used: Instant,
}

/// Where the Redis primary is.
#[derive(Clone)]
enum Target {
    /// At this address.
    Direct(Arc<Client>),
    /// Wherever these sentinels say it is now.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl Target {
    /// A client of the primary, as it is now.
    async fn client(&self) -> redis::RedisResult<Client> {
        match self {
            Target::Direct(client) => Ok(Client::clone(client)),
            Target::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }

    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout));
        self.client()
            .await?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("key", &self.key)
            .field("sentinel", &matches!(self.target, Target::Sentinel(_)))
            .finish_non_exhaustive()
    }
}

fn backplane_error(e: redis::RedisError) -> Error {
    Error::Backplane(Box::new(e))
}

impl RedisBackplane {
    /// Connects to Redis at `url` (`redis://[user:password@]host:port/db`;
    /// `rediss://` with the `redis-tls` feature, trusting the webpki roots).
    /// Fails with [`Error::Backplane`] when Redis cannot be reached (or
    /// refuses the credentials) now: the app decides whether to start
    /// without it.
    pub async fn connect(url: &str) -> Result<RedisBackplane, Error> {
        #[cfg(feature = "redis-tls")]
        install_crypto();
        let client = Client::open(url).map_err(backplane_error)?;
        RedisBackplane::start(Target::Direct(Arc::new(client)), 0).await
    }

    /// Connects to Redis over TLS at `url` (`rediss://…`), trusting the CA
    /// whose certificate `ca_pem` holds (PEM) rather than the webpki roots:
    /// for a Redis with a certificate of a private CA.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub async fn connect_tls(url: &str, ca_pem: &[u8]) -> Result<RedisBackplane, Error> {
        install_crypto();
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = Client::build_with_tls(url, certificates).map_err(backplane_error)?;
        RedisBackplane::start(Target::Direct(Arc::new(client)), 0).await
    }

    /// Connects to the primary of the Redis set `master` that the sentinels
    /// at `sentinels` (`redis://host:26379`, …) watch, asking them again on
    /// every connection, so a failover is followed. Each batch of events is
    /// acknowledged only once a replica has it too (`WAIT 1`); see
    /// [`wait_for_replicas`](RedisBackplane::wait_for_replicas). The
    /// primary's user and password, if any, come with `master_url`
    /// (`redis://user:secret@/`, its host unused).
    pub async fn connect_sentinel(
        sentinels: &[&str],
        master: &str,
        master_url: Option<&str>,
    ) -> Result<RedisBackplane, Error> {
        #[cfg(feature = "redis-tls")]
        install_crypto();
        let node = match master_url {
            None => None,
            Some(url) => {
                let info = redis::IntoConnectionInfo::into_connection_info(url)
                    .map_err(backplane_error)?;
                Some(
                    SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(info.redis_settings().clone()),
                )
            }
        };
        let sentinel = SentinelClient::build(
            sentinels.to_vec(),
            String::from(master),
            node,
            SentinelServerType::Master,
        )
        .map_err(backplane_error)?;
        let target = Target::Sentinel(Arc::new(tokio::sync::Mutex::new(sentinel)));
        RedisBackplane::start(target, 1).await
    }

    async fn start(target: Target, replicas: usize) -> Result<RedisBackplane, Error> {
        let backplane = RedisBackplane {
            target,
            publish: Arc::new(tokio::sync::Mutex::new(None)),
            key: DEFAULT_KEY.into(),
            max_len: Arc::new(AtomicUsize::new(1024)),
            retention: Arc::default(),
            replicas,
        };
        let mut conn = backplane.publisher().await.map_err(backplane_error)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(backplane_error)?;
        Ok(backplane)
    }

    /// The Redis Stream key the events go through (default
    /// `tower-sse:events`): instances that share a stream share a key; apps
    /// sharing one Redis use different keys.
    pub fn key(mut self, key: impl Into<String>) -> RedisBackplane {
        self.key = key.into().into();
        self
    }

    /// How many replicas must have each batch of events before it is
    /// acknowledged (`WAIT n`, up to a second; fewer is an error, though the
    /// primary may keep the events). Default: 0, and 1 with
    /// [`connect_sentinel`](RedisBackplane::connect_sentinel).
    pub fn wait_for_replicas(mut self, replicas: usize) -> RedisBackplane {
        self.replicas = replicas;
        self
    }

    /// The publishing connection, made again after an error. One idle for
    /// [`IDLE`] is asked a `PING` first: a connection Redis dropped
    /// meanwhile (it restarted) is made again before anything is sent on
    /// it, where a failure would leave the events' fate unknown.
    async fn publisher(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut publish = self.publish.lock().await;
        if let Some(idle) = publish.as_mut() {
            if idle.used.elapsed() < IDLE {
                idle.used = Instant::now();
                return Ok(idle.conn.clone());
            }
            let pong: redis::RedisResult<String> =
                redis::cmd("PING").query_async(&mut idle.conn).await;
            match pong {
                Ok(_) => {
                    idle.used = Instant::now();
                    return Ok(idle.conn.clone());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "backplane: the idle Redis connection is gone; connecting again");
                }
            }
        }
        let conn = self.target.connect(Duration::from_secs(2)).await?;
        *publish = Some(Publishing {
            conn: conn.clone(),
            used: Instant::now(),
        });
        Ok(conn)
    }

    /// Runs `command` on the publishing connection; after an error the
    /// connection is made again (with Sentinel: to the primary of the time).
    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &(dyn Fn(&mut redis::Pipeline) + Sync),
    ) -> Result<T, BoxError> {
        let mut conn = self.publisher().await?;
        let mut pipe = redis::pipe();
        command(&mut pipe);
        match pipe.query_async(&mut conn).await {
            Ok(reply) => Ok(reply),
            Err(e) => {
                *self.publish.lock().await = None;
                Err(e.into())
            }
        }
    }
}

/// rustls needs one process-wide crypto provider: ring, unless the app
/// installed another.
#[cfg(feature = "redis-tls")]
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Backplane for RedisBackplane {
    fn retain(&self, retention: Retention) {
        self.max_len.store(retention.events, Ordering::Relaxed);
        let mut kept = self.retention.lock().unwrap_or_else(|e| e.into_inner());
        *kept = Some(kept.map_or(retention, |kept| kept.covering(retention)));
    }

    fn append<'a>(
        &'a self,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<Vec<EventId>, BoxError>> {
        Box::pin(async move {
            let max_len = self.max_len.load(Ordering::Relaxed);
            let retention = self.retained();
            let replicas = self.replicas;
            let (ids, acked): (Vec<String>, Option<usize>) = self
                .query(&|pipe| {
                    for message in messages {
                        match retention {
                            Some(retention) => {
                                topics::append(pipe, &self.key, max_len, retention, message)
                            }
                            None => xadd(pipe, &self.key, max_len, message),
                        }
                    }
                    let (ids, wait) = (pipe, replicas > 0);
                    if wait {
                        ids.cmd("WAIT").arg(replicas).arg(1000);
                    }
                })
                .await
                .map(|mut reply: Vec<redis::Value>| {
                    let acked = (replicas > 0)
                        .then(|| reply.pop())
                        .flatten()
                        .and_then(|v| redis::from_redis_value::<usize>(v).ok());
                    let ids = reply
                        .into_iter()
                        .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                        .collect();
                    (ids, acked)
                })?;
            if replicas > 0 && acked.unwrap_or(0) < replicas {
                return Err(format!(
                    "{} of {replicas} replicas acknowledged the events in a second; \
                     the primary has them, a failover could lose them",
                    acked.unwrap_or(0)
                )
                .into());
            }
            if ids.len() != messages.len() {
                return Err(format!(
                    "Redis answered {} ids for {} events",
                    ids.len(),
                    messages.len()
                )
                .into());
            }
            ids.iter()
                .map(|id| {
                    pack(id)
                        .map(EventId::new)
                        .ok_or_else(|| format!("unexpected stream entry id {id:?}").into())
                })
                .collect()
        })
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BoxError>> {
        Box::pin(async move {
            let (newest,): (StreamRangeReply,) = self
                .query(&|pipe| {
                    pipe.cmd("XREVRANGE")
                        .arg(&*self.key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1);
                })
                .await?;
            Ok(newest
                .ids
                .first()
                .and_then(|e| pack(&e.id))
                .map(EventId::new))
        })
    }

    fn read_topic<'a>(
        &'a self,
        topic: Option<&'a str>,
        after: EventId,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<TopicRead>, BoxError>> {
        Box::pin(async move {
            let retention = self.retained();
            let read = self.read_stream(topic, after, limit, retention).await?;
            Ok(Some(read))
        })
    }

    fn reader(&self) -> BoxFuture<'_, Result<Box<dyn BackplaneReader>, BoxError>> {
        Box::pin(async move {
            if let Some(retention) = self.retained() {
                self.agree(retention).await?;
            }
            let conn = self.target.connect(BLOCK + Duration::from_secs(2)).await?;
            // A reader is opened again after the log was lost (Redis
            // restarted, a failover): the publishing connection, made
            // before, is made again too before it is used.
            *self.publish.lock().await = None;
            Ok(Box::new(Reader::new(conn, self.key.clone())) as Box<dyn BackplaneReader>)
        })
    }
}

impl RedisBackplane {
    /// What the hubs that use it keep, once one asked.
    fn retained(&self) -> Option<Retention> {
        *self.retention.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds one `XADD` of `message` to `pipe` (to the log alone: no hub told
/// what each topic keeps).
fn xadd(pipe: &mut redis::Pipeline, key: &str, max_len: usize, message: &Message) {
    let command = pipe
        .cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*");
    fields(command, message);
}

/// The entry's fields of `message`, as name and value arguments of the
/// pipeline's last command: the log's entry and a topic's (see
/// `topics::append`) hold the same.
fn fields(command: &mut redis::Pipeline, message: &Message) {
    if let Some(topic) = message.topic() {
        command.arg("topic").arg(topic);
    }
    if let Some(event) = message.event() {
        command.arg("event").arg(event);
    }
    command.arg("data").arg(message.data());
    if let Some(id) = message.app_id() {
        command.arg("id").arg(id);
    }
    if let Some(retry) = message.retry() {
        command.arg("retry").arg(retry.as_millis() as u64);
    }
    if let Some(comment) = message.comment() {
        command.arg("comment").arg(comment);
    }
}

/// `<ms>-<seq>` → `ms << 20 | seq`.
fn pack(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (ms < 1 << 43 && seq < 1 << 20).then_some(ms << 20 | seq)
}

fn unpack(id: u64) -> String {
    format!("{}-{}", id >> 20, id & ((1 << 20) - 1))
}

#[cfg(test)]
mod tests {
    use super::{reader::record, *};
    use redis::{streams::StreamId, Value};

    #[test]
    fn ids_pack_in_order_and_back() {
        let ids = [
            "1-0",
            "1-1",
            "1732400000000-0",
            "1732400000000-7",
            "1732400000001-0",
        ];
        let packed: Vec<u64> = ids.iter().map(|id| pack(id).unwrap()).collect();
        assert!(packed.windows(2).all(|w| w[0] < w[1]));
        for (id, packed) in ids.iter().zip(packed) {
            assert_eq!(unpack(packed), *id);
        }
        assert_eq!(unpack(0), "0-0");
        assert_eq!(pack("1-1048576"), None);
        assert_eq!(pack("x-1"), None);
        assert_eq!(pack("17"), None);
    }

    #[test]
    fn an_entry_becomes_a_record_and_a_foreign_one_is_skipped() {
        let entry = |fields: &[(&str, &str)]| StreamId {
            id: "5-1".into(),
            map: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            ..StreamId::default()
        };
        let r = record(&entry(&[
            ("topic", "room/a"),
            ("event", "said"),
            ("data", "hi\nyou"),
        ]))
        .unwrap();
        assert_eq!(r.id().as_u64(), 5 << 20 | 1);
        assert_eq!(
            (r.topic(), r.event(), r.data()),
            (Some("room/a"), Some("said"), "hi\nyou")
        );
        assert!(record(&entry(&[("topic", "not a topic"), ("data", "x")])).is_none());
        assert!(record(&entry(&[("event", "a\nb")])).is_none());
    }
}
