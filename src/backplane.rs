//! Many instances, one stream: the Redis backplane.
//!
//! Every event goes into one Redis Stream (`XADD … MAXLEN ~ <history>`), and
//! every instance reads that stream with one blocking `XREAD` connection and
//! appends what it reads to its local hub, in stream order, under the id the
//! stream gave it. So ids mean the same on every instance, each instance's
//! history is the tail of the stream, and a browser resumes on any instance
//! as it would on one. Publishing costs one round trip to Redis; fanning out
//! stays local (encode once per instance, wake only local readers).
//!
//! Ids: a stream entry id `<ms>-<seq>` becomes the number `ms << 20 | seq`
//! (increasing as the entry ids do; `seq` below 2^20 — a million entries in
//! one millisecond — which Redis cannot reach).

use std::{
    collections::{hash_map::RandomState, HashMap},
    hash::{BuildHasher, Hasher},
    sync::Arc,
    time::Duration,
};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    streams::{StreamId, StreamRangeReply, StreamReadReply},
    AsyncConnectionConfig, Client, Value,
};

use crate::{event::Event, hub::Hub, Error, EventId};

/// The stream key used unless [`RedisBackplane::key`] sets another.
const DEFAULT_KEY: &str = "tower-sse:events";
/// How long one `XREAD` blocks before the reader checks the hub is open.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries read per `XREAD`.
const BATCH: usize = 1000;

/// A Redis backplane: several instances of an app share one event stream,
/// with the same ids, history and resume guarantees as a single instance.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_sse::Error> {
/// use tower_sse::{RedisBackplane, SseLayer};
///
/// let backplane = RedisBackplane::connect("redis://127.0.0.1/").await?;
/// let layer = SseLayer::new("/events").history(4096).backplane(backplane);
/// let publisher = layer.publisher();
/// // With a backplane, publish with `send` (it waits for Redis):
/// publisher.send(tower_sse::Event::default().data("hello")).await?;
/// # Ok(()) }
/// ```
///
/// Each instance keeps one connection for publishing (redis-rs's
/// `ConnectionManager`, which reconnects by itself) and one that blocks in
/// `XREAD`. While Redis is unreachable, `send` returns
/// [`Error::Backplane`] (the event reached no one) and the reader retries
/// with exponential backoff and jitter; once back, it catches up from the
/// stream, and if the stream no longer holds the entry it had read last
/// (Redis restarted without persistence, or trimmed past it), it cannot tell
/// what it missed: it drops its history and ends every stream, so browsers
/// reconnect and get the reset event. Each change is logged with `tracing`.
#[derive(Clone)]
pub struct RedisBackplane {
    link: Arc<Link>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("key", &self.link.key)
            .finish_non_exhaustive()
    }
}

/// What a hub holds of its backplane.
pub(crate) struct Link {
    client: Client,
    publish: ConnectionManager,
    key: String,
}

fn backplane_error(e: redis::RedisError) -> Error {
    Error::Backplane(e.to_string())
}

impl RedisBackplane {
    /// Connects to Redis at `url` (`redis://host:port/db`, `rediss://` for
    /// TLS is not enabled). Fails with [`Error::Backplane`] when Redis cannot
    /// be reached now: the app decides whether to start without it.
    pub async fn connect(url: &str) -> Result<RedisBackplane, Error> {
        let client = Client::open(url).map_err(backplane_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let mut publish = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(backplane_error)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut publish)
            .await
            .map_err(backplane_error)?;
        Ok(RedisBackplane {
            link: Arc::new(Link {
                client,
                publish,
                key: DEFAULT_KEY.into(),
            }),
        })
    }

    /// The Redis Stream key the events go through (default
    /// `tower-sse:events`): instances that share a stream share a key; apps
    /// sharing one Redis use different keys.
    pub fn key(self, key: impl Into<String>) -> RedisBackplane {
        let link = &self.link;
        RedisBackplane {
            link: Arc::new(Link {
                client: link.client.clone(),
                publish: link.publish.clone(),
                key: key.into(),
            }),
        }
    }

    pub(crate) fn into_link(self) -> Arc<Link> {
        self.link
    }
}

impl Link {
    /// Adds the event to the stream; it comes back to every instance (this
    /// one included) through their readers.
    pub(crate) async fn publish(
        &self,
        hub: &Hub,
        topic: &str,
        event: Event,
    ) -> Result<EventId, Error> {
        if hub.is_closed() {
            return Err(Error::Closed);
        }
        let custom_id = event.custom_id().map(str::to_owned);
        let prepared = event.prepare(hub.max_event_size())?;
        let mut command = redis::cmd("XADD");
        command
            .arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(hub.history_limit())
            .arg("*")
            .arg("t")
            .arg(topic)
            .arg("e")
            .arg(prepared.fields());
        if let Some(custom_id) = &custom_id {
            command.arg("i").arg(custom_id);
        }
        let id: String = command
            .query_async(&mut self.publish.clone())
            .await
            .map_err(backplane_error)?;
        pack(&id)
            .map(EventId)
            .ok_or_else(|| Error::Backplane(format!("unexpected stream entry id {id:?}")))
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

/// The reader: keeps the hub's history equal to the tail of the stream,
/// until the hub closes.
pub(crate) async fn read(hub: Arc<Hub>, link: Arc<Link>) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
    // Id of the last entry applied to the hub, once there is one.
    let mut last: Option<u64> = None;
    let mut failures = 0u32;
    let mut was_down = false;
    while !hub.is_closed() {
        let result = async {
            let mut conn = link
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let caught_up = catch_up(&hub, &link, &mut conn, &mut last).await?;
            Ok::<_, redis::RedisError>((conn, caught_up))
        }
        .await;
        let mut conn = match result {
            Ok((conn, caught_up)) => {
                hub.set_loaded();
                if was_down {
                    tracing::info!(key = %link.key, caught_up, "backplane: Redis is back, reading the stream again");
                } else {
                    tracing::info!(key = %link.key, "backplane: reading the stream");
                }
                failures = 0;
                was_down = false;
                conn
            }
            Err(e) => {
                let delay = backoff(failures);
                tracing::warn!(key = %link.key, error = %e, ?delay, "backplane: cannot read from Redis; retrying");
                failures += 1;
                was_down = true;
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        while !hub.is_closed() {
            let from = last.map_or_else(|| "0-0".to_owned(), unpack);
            let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&link.key)
                .arg(&from)
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(reply) => {
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        for entry in key.ids {
                            apply(&hub, &entry, &mut last);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(key = %link.key, error = %e, "backplane: lost Redis; reconnecting");
                    was_down = true;
                    break;
                }
            }
        }
    }
}

/// On (re)connecting: if the stream still holds the last entry applied,
/// the next `XREAD` continues right after it. Otherwise (first start, Redis
/// restarted without it, or trimmed past it) the hub's history restarts from
/// the stream's tail, and resuming from any older id gets the reset event.
/// Returns how many entries were loaded.
async fn catch_up(
    hub: &Hub,
    link: &Link,
    conn: &mut MultiplexedConnection,
    last: &mut Option<u64>,
) -> redis::RedisResult<usize> {
    if let Some(id) = *last {
        let here: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&link.key)
            .arg(unpack(id))
            .arg(unpack(id))
            .query_async(conn)
            .await?;
        if !here.ids.is_empty() {
            return Ok(0);
        }
        tracing::warn!(
            key = %link.key,
            last = id,
            "backplane: the stream no longer holds the last event read; \
             restarting the history (resuming browsers get the reset event)"
        );
    }
    let tail: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&link.key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(hub.history_limit())
        .query_async(conn)
        .await?;
    // Known from here on: the stream's oldest entry. After a gap, also
    // whatever followed the last entry read may be lost, so even a browser
    // that saw that one must get the reset.
    let first = tail.ids.last().and_then(|e| pack(&e.id));
    let up_to = first
        .map_or(0, |id| id - 1)
        .max(last.map_or(0, |id| id + 1));
    hub.restart_history(up_to);
    let loaded = tail.ids.len();
    for entry in tail.ids.iter().rev() {
        apply(hub, entry, last);
    }
    if last.is_none() {
        *last = Some(up_to);
    }
    Ok(loaded)
}

/// Appends one stream entry to the hub. An entry that is not an event of
/// ours (written by someone else under the key) is logged and skipped.
fn apply(hub: &Hub, entry: &StreamId, last: &mut Option<u64>) {
    let Some(id) = pack(&entry.id) else {
        tracing::warn!(id = %entry.id, "backplane: skipping an entry with an unexpected id");
        return;
    };
    *last = Some(id);
    let (Some(topic), Some(fields)) = (text(&entry.map, "t"), bytes(&entry.map, "e")) else {
        tracing::warn!(id = %entry.id, "backplane: skipping an entry that is not a tower-sse event");
        return;
    };
    let custom_id = text(&entry.map, "i").map(Into::into);
    if let Err(e) = hub.insert(&topic, id, custom_id, &fields) {
        tracing::debug!(error = %e, "backplane: entry not applied");
    }
}

fn bytes(map: &HashMap<String, Value>, field: &str) -> Option<Vec<u8>> {
    match map.get(field)? {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn text(map: &HashMap<String, Value>, field: &str) -> Option<String> {
    String::from_utf8(bytes(map, field)?).ok()
}

/// 100 ms doubling up to 5 s, times a random factor in [0.5, 1).
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.saturating_pow(failures.min(6));
    let base = base.min(Duration::from_secs(5));
    let random = RandomState::new().build_hasher().finish();
    base.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(pack("1-1048576"), None);
        assert_eq!(pack("x-1"), None);
        assert_eq!(pack("17"), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_ceiling() {
        for failures in 0..20 {
            let d = backoff(failures);
            let base = (Duration::from_millis(100) * 2u32.pow(failures.min(6)))
                .min(Duration::from_secs(5));
            assert!(d >= base / 2 && d < base, "{failures}: {d:?}");
        }
    }
}
