//! The reader of a [`RedisBackplane`](super::RedisBackplane)'s stream: one
//! connection blocked in `XREAD`, which also tells whether the stream still
//! holds what was read (trims, a restart that lost it, a failover).

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::{
    aio::MultiplexedConnection,
    streams::{StreamId, StreamRangeReply, StreamReadReply},
    Value,
};

use super::{pack, unpack, BLOCK};
use crate::{
    backplane::{BackplaneReader, BoxFuture, Read, Tail},
    error::BoxError,
    event::{Event, EventId},
    record::{Message, Record},
};

/// One connection that reads the stream.
pub(super) struct Reader {
    conn: MultiplexedConnection,
    key: Arc<str>,
}

impl Reader {
    /// A reader of the stream `key` on `conn`.
    pub(super) fn new(conn: MultiplexedConnection, key: Arc<str>) -> Reader {
        Reader { conn, key }
    }

    /// The newest entry id the stream ever gave (`XINFO STREAM`), or `None`
    /// when there is no stream.
    async fn last_generated(&mut self) -> Result<Option<u64>, BoxError> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&*self.key)
            .query_async(&mut self.conn)
            .await?;
        if !exists {
            return Ok(None);
        }
        let info: HashMap<String, Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&*self.key)
            .query_async(&mut self.conn)
            .await?;
        let id = info.get("last-generated-id").and_then(|v| match v {
            Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(pack),
            Value::SimpleString(s) => pack(s),
            _ => None,
        });
        Ok(id)
    }
}

impl BackplaneReader for Reader {
    fn tail(&mut self, limit: usize) -> BoxFuture<'_, Result<Tail, BoxError>> {
        Box::pin(async move {
            // The newest id first: an entry added after it is in the range
            // read next, or is read later (it is above `last`).
            let last = self.last_generated().await?.map(EventId::new);
            let tail: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&*self.key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(limit.max(1))
                .query_async(&mut self.conn)
                .await?;
            let records = tail.ids.iter().rev().filter_map(record).collect();
            Ok(Tail::new(records, last))
        })
    }

    fn holds(&mut self, after: EventId) -> BoxFuture<'_, Result<bool, BoxError>> {
        Box::pin(async move {
            // The stream is trimmed from its oldest end only: if it still has
            // an entry at or before `after`, it has everything after it.
            let first: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&*self.key)
                .arg("-")
                .arg(unpack(after.as_u64()))
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn)
                .await?;
            if !first.ids.is_empty() {
                // And it must not hold less than was read: a failover to a
                // replica that had not the newest entries, or a restore.
                let last = self.last_generated().await?;
                return Ok(last.is_some_and(|last| last >= after.as_u64()));
            }
            let len: usize = redis::cmd("XLEN")
                .arg(&*self.key)
                .query_async(&mut self.conn)
                .await?;
            if len > 0 {
                // Its oldest entry is after `after`: something in between may be gone.
                return Ok(false);
            }
            // Empty: nothing was lost if nothing was added after `after`.
            let last = self.last_generated().await?;
            Ok(last.map_or(after.as_u64() == 0, |last| last <= after.as_u64()))
        })
    }

    fn read(&mut self, after: EventId, limit: usize) -> BoxFuture<'_, Result<Read, BoxError>> {
        Box::pin(async move {
            let from = unpack(after.as_u64());
            // Pipelined on this connection, so `XRANGE` runs right after the
            // `XREAD` returns: if the stream then still has an entry at or
            // before `after`, it had everything after it when it was read
            // (trimming takes the oldest first). If it has none, something
            // may have been trimmed before the read: said as a gap (also,
            // rarely, when the trim came just after it).
            let (reply, held): (Option<StreamReadReply>, StreamRangeReply) = redis::pipe()
                .cmd("XREAD")
                .arg("COUNT")
                .arg(limit.max(1))
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&*self.key)
                .arg(&from)
                .cmd("XRANGE")
                .arg(&*self.key)
                .arg("-")
                .arg(&from)
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn)
                .await?;
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|key| key.ids)
                .collect();
            if !entries.is_empty() && after.as_u64() > 0 && held.ids.is_empty() {
                return Ok(Read::Gap);
            }
            let up_to = match entries.last() {
                None => None,
                Some(entry) => match pack(&entry.id) {
                    Some(id) => Some(EventId::new(id)),
                    // Reading on after it is impossible: said, not looped on.
                    None => {
                        return Err(format!(
                            "stream entry id {} does not fit an event id (milliseconds \
                             below 2^43, sequence below 2^20): was it added with an \
                             explicit id?",
                            entry.id
                        )
                        .into())
                    }
                },
            };
            let records = entries.iter().filter_map(record).collect();
            Ok(Read::Records { records, up_to })
        })
    }
}

/// One stream entry as a record; an entry that is not a valid event is
/// logged and skipped.
pub(super) fn record(entry: &StreamId) -> Option<Record> {
    let Some(id) = pack(&entry.id) else {
        tracing::warn!(id = %entry.id, "backplane: skipping an entry with an unexpected id");
        return None;
    };
    let field = |name| text(&entry.map, name);
    let mut event = Event::default();
    if let Some(name) = field("event") {
        event = event.event(name);
    }
    if let Some(data) = field("data") {
        event = event.data(data);
    }
    if let Some(app_id) = field("id") {
        event = event.id(app_id);
    }
    if let Some(retry) = field("retry").and_then(|ms| ms.parse().ok()) {
        event = event.retry(Duration::from_millis(retry));
    }
    if let Some(comment) = field("comment") {
        event = event.comment(comment);
    }
    let topic = field("topic");
    match Message::new(topic.as_deref(), event) {
        Ok(message) => Some(Record::new(EventId::new(id), message)),
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "backplane: skipping an entry that is not a valid event");
            None
        }
    }
}

fn text(map: &HashMap<String, Value>, field: &str) -> Option<String> {
    let bytes = match map.get(field)? {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        _ => return None,
    };
    String::from_utf8(bytes).ok()
}
