//! Each topic kept apart: beside the log every instance reads (one stream,
//! trimmed to several topics' worth, for the order and the ids), a stream
//! per topic (`<key>:topic:<topic>`, `<key>:default` for events to every
//! subscriber) holds the topic's newest events under the log's ids, trimmed
//! exactly to the count each topic keeps (`MAXLEN`) and by age (`MINID`),
//! so a flood on one topic never costs a quiet one its events. One script
//! appends to both, so they never disagree. `<key>:since` holds the first
//! id appended since the keys exist: Redis that lost its data loses it too,
//! so a resume from before it is never replayed. The retention every
//! instance keeps is in `<key>:retention`; an instance that keeps another
//! is refused.

use std::time::Duration;

use redis::{streams::StreamRangeReply, Value};

use super::{pack, reader::record, unpack, RedisBackplane};
use crate::{
    backplane::{Retention, TopicRead},
    error::BoxError,
    event::EventId,
    record::Message,
};

/// Appends one event to the log (`MAXLEN ~`) and, under the same id, to its
/// topic's stream (exactly `MAXLEN`, and `MINID` for the age), and keeps
/// the first id since the keys exist. KEYS: log, topic stream, since.
/// ARGV: the log's count, the topic's count, the age in ms (0: none), then
/// the fields.
const APPEND: &str = r"
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', ARGV[2], id, unpack(fields))
if type(added) == 'table' and added.err then
  -- The topic's stream is ahead of the log (ids went back): it starts
  -- again, and nothing before this id is replayed from any topic.
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], id, unpack(fields))
  redis.call('SET', KEYS[3], id)
end
if ARGV[3] ~= '0' then
  local ms = tonumber(string.match(id, '^(%d+)-'))
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', ms - tonumber(ARGV[3])))
end
redis.call('SET', KEYS[3], id, 'NX')
return id
";

/// Reads a topic's stream after an id, having dropped what aged out: the
/// first id since the keys exist, an id the stream holds every entry after
/// (its first entry's, once it dropped one; `0-0` if it never did), and
/// the entries. KEYS: topic stream, since. ARGV: after, count, age ms.
const READ: &str = r"
local since = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {since, '0-0', {}} end
if ARGV[3] ~= '0' then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', ms - tonumber(ARGV[3])))
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local length, added, first = 0, 0, '0-0'
for i = 1, #info, 2 do
  if info[i] == 'length' then length = info[i + 1] end
  if info[i] == 'entries-added' then added = info[i + 1] end
  if info[i] == 'recorded-first-entry-id' then first = info[i + 1] end
end
-- Trimmed from its oldest end only: it holds every entry after one it
-- still holds, and all of them if it never dropped one.
local trimmed = '0-0'
if added ~= length then trimmed = first end
return {since, trimmed, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])}
";

/// The key of `topic`'s stream.
fn topic_key(key: &str, topic: Option<&str>) -> String {
    match topic {
        None => format!("{key}:default"),
        Some(topic) => format!("{key}:topic:{topic}"),
    }
}

/// An age in milliseconds (0: none).
fn age_ms(age: Option<Duration>) -> u64 {
    age.map_or(0, |age| {
        u64::try_from(age.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

/// Adds the append of `message` to `pipe`.
pub(super) fn append(
    pipe: &mut redis::Pipeline,
    key: &str,
    max_len: usize,
    retention: Retention,
    message: &Message,
) {
    let command = pipe
        .cmd("EVAL")
        .arg(APPEND)
        .arg(3)
        .arg(key)
        .arg(topic_key(key, message.topic()))
        .arg(format!("{key}:since"))
        .arg(max_len)
        .arg(retention.per_topic.max(1))
        .arg(age_ms(retention.age));
    super::fields(command, message);
}

impl RedisBackplane {
    /// Records this instance's retention in `<key>:retention` if none is
    /// there, else refuses one that differs: instances sharing a key must
    /// keep the same history, or one would trim what another replays.
    pub(super) async fn agree(&self, retention: Retention) -> Result<(), BoxError> {
        let key = format!("{}:retention", self.key);
        let ours = (retention.per_topic as u64, age_ms(retention.age));
        let (theirs,): ((Option<u64>, Option<u64>),) = self
            .query(&|pipe| {
                pipe.cmd("HSETNX")
                    .arg(&key)
                    .arg("per_topic")
                    .arg(ours.0)
                    .ignore();
                pipe.cmd("HSETNX")
                    .arg(&key)
                    .arg("age_ms")
                    .arg(ours.1)
                    .ignore();
                pipe.cmd("HMGET").arg(&key).arg("per_topic").arg("age_ms");
            })
            .await?;
        if (theirs.0.unwrap_or(ours.0), theirs.1.unwrap_or(ours.1)) == ours {
            return Ok(());
        }
        let age = |ms: Option<u64>| match ms.unwrap_or(0) {
            0 => "no age limit".to_owned(),
            ms => format!("an age limit of {ms} ms"),
        };
        Err(format!(
            "the key {} keeps {} events of each topic and {}; this instance's hub keeps {} and \
             {}: every instance sharing a key must keep the same history (`HubBuilder::history`, \
             `history_rule`, `history_ttl`, `max_lag`). To change it for all, stop them and run \
             DEL {key}",
            self.key,
            theirs.0.unwrap_or(0),
            age(theirs.1),
            ours.0,
            age(Some(ours.1)),
        )
        .into())
    }

    /// The entries of `topic`'s stream after `after`, at most `limit`, and
    /// whether it holds every one after it: it never trimmed one, or still
    /// holds one at or before it (trims take the oldest), and the keys
    /// existed before it (`since`).
    pub(super) async fn read_stream(
        &self,
        topic: Option<&str>,
        after: EventId,
        limit: usize,
        retention: Option<Retention>,
    ) -> Result<TopicRead, BoxError> {
        let stream = topic_key(&self.key, topic);
        let since = format!("{}:since", self.key);
        let age = age_ms(retention.and_then(|r| r.age));
        let (reply,): (Vec<Value>,) = self
            .query(&|pipe| {
                pipe.cmd("EVAL")
                    .arg(READ)
                    .arg(2)
                    .arg(&stream)
                    .arg(&since)
                    .arg(unpack(after.as_u64()))
                    .arg(limit.max(1))
                    .arg(age);
            })
            .await?;
        let mut reply = reply.into_iter();
        let text = |value: Option<Value>| -> Option<String> {
            value.and_then(|v| redis::from_redis_value::<Option<String>>(v).ok().flatten())
        };
        let since = text(reply.next()).and_then(|id| pack(&id));
        let holds_after = text(reply.next()).and_then(|id| pack(&id)).unwrap_or(0);
        let entries: StreamRangeReply = match reply.next() {
            Some(entries) => redis::from_redis_value(entries)?,
            None => return Err("Redis answered a topic read without entries".into()),
        };
        let after = after.as_u64();
        let held = after > 0 && since.is_some_and(|since| since <= after) && holds_after <= after;
        let records = entries.ids.iter().filter_map(record).collect();
        Ok(TopicRead::new(records, held || after == 0))
    }
}
