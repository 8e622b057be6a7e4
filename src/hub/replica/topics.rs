//! Reading one topic back from the engine: what memory no longer holds of
//! it, for a client resuming from there and for a history read.

use tokio::time::Instant;

use super::{bounded, read_batch, Replica, NEWEST_FOR};
use crate::{
    error::BoxError,
    event::EventId,
    hub::{
        control::Control,
        state::{Core, Gap},
    },
    recent::{HistoryPage, HistoryQuery},
    record::Record,
};

impl Replica {
    /// Reads back from the engine, for each of `topics` (and the default
    /// topic) whose memory misses events after `after`, the events the
    /// engine holds there, and puts them back in memory: a client resuming
    /// after `after` is then replayed without loss, and live events follow
    /// with no gap and no duplicate. A topic the engine no longer holds
    /// whole (or holds more of than the topic keeps) is left as it is, and
    /// the resume gets its reset.
    pub(super) async fn fill(&self, core: &Core, topics: &[&str], after: u64) {
        for gap in core.gaps(topics, after) {
            match self.read_gap(core, &gap, after).await {
                Ok(Some(records)) => {
                    let count = records.len();
                    let filled = core.fill(&gap, after, records);
                    tracing::debug!(topic = ?gap.topic, count, filled, "backplane: replayed from the engine");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, topic = ?gap.topic, "backplane: cannot replay from the engine");
                }
            }
        }
    }

    /// The engine's events of `gap`'s topic after `after` and below
    /// `gap.before`, read in batches bounded by count and bytes; `None`
    /// when the engine cannot read a topic, no longer holds them all, or
    /// holds more than a topic keeps.
    async fn read_gap(
        &self,
        core: &Core,
        gap: &Gap,
        after: u64,
    ) -> Result<Option<Vec<Record>>, BoxError> {
        let (batch, room) = (read_batch(core), core.history_limit());
        let mut records = Vec::new();
        let mut from = EventId::new(after);
        loop {
            let read = self.backplane.read_topic(gap.topic.as_deref(), from, batch);
            let Some(read) = bounded(read, "read a topic").await? else {
                return Ok(None);
            };
            if !read.held {
                return Ok(None);
            }
            let full = read.records.len() >= batch;
            for record in read.records {
                if record.id().as_u64() >= gap.before {
                    return Ok(Some(records));
                }
                if record.id() <= from {
                    continue;
                }
                from = record.id();
                records.push(record);
                if records.len() > room {
                    return Ok(None);
                }
            }
            if !full {
                return Ok(Some(records));
            }
        }
    }

    /// A history read from the engine, for when the memory does not cover
    /// `query`: the events after its id (one read of at most `limit`, fewer
    /// when the hub's events are large: the page says it was clipped), or
    /// the newest `limit` (the topic read in bounded batches, keeping only
    /// the newest). `None` when the engine cannot read a topic, or fails.
    pub(crate) async fn history(
        &self,
        core: &Core,
        topic: Option<&str>,
        query: &HistoryQuery,
        limit: usize,
    ) -> Option<HistoryPage> {
        let batch = read_batch(core);
        let read = |after: EventId, limit: usize| async move {
            let read = self.backplane.read_topic(topic, after, limit);
            match bounded(read, "read a topic").await {
                Ok(read) => read,
                Err(e) => {
                    tracing::debug!(error = %e, "backplane: cannot read a topic's history");
                    None
                }
            }
        };
        let events = |records: Vec<Record>| -> Vec<Record> {
            records
                .into_iter()
                .filter(|r| Control::of(r.message()).is_none())
                .collect()
        };
        match query.since.as_deref() {
            Some(since) => {
                let after = since
                    .parse::<u64>()
                    .ok()
                    .filter(|a| *a <= core.published())?;
                // In batches, up to one past the limit (to tell it was cut).
                let (mut records, mut from, mut held) = (Vec::new(), EventId::new(after), None);
                while records.len() <= limit {
                    let page = read(from, batch.min(limit + 1 - records.len())).await?;
                    held.get_or_insert(page.held);
                    let Some(last) = page.records.last().map(Record::id) else {
                        break;
                    };
                    from = last;
                    records.extend(events(page.records));
                }
                let clipped =
                    records.len() > limit || (limit < query.limit && records.len() == limit);
                records.truncate(limit);
                Some(HistoryPage {
                    events: records,
                    clipped,
                    reset: held == Some(false),
                })
            }
            None => {
                let mut newest = std::collections::VecDeque::with_capacity(limit);
                let (mut from, mut seen) = (EventId::new(0), 0usize);
                loop {
                    let page = read(from, batch).await?;
                    let full = page.records.len() >= batch;
                    if let Some(last) = page.records.last() {
                        from = last.id();
                    }
                    for record in events(page.records) {
                        seen += 1;
                        if newest.len() == limit {
                            newest.pop_front();
                        }
                        if limit > 0 {
                            newest.push_back(record);
                        }
                    }
                    if !full {
                        break;
                    }
                }
                Some(HistoryPage {
                    clipped: seen > newest.len(),
                    events: newest.into(),
                    reset: false,
                })
            }
        }
    }

    /// The engine's newest id (`None`: it holds none), or the error that
    /// kept it from answering: asked once per [`NEWEST_FOR`] at most, so
    /// that clients resuming from ids nobody knows cost the engine little.
    pub(super) async fn newest_id(&self) -> Result<Option<EventId>, BoxError> {
        let mut newest = self.newest.lock().await;
        if let Some((at, id)) = *newest {
            if at.elapsed() < NEWEST_FOR {
                return Ok(id);
            }
        }
        let id = self.backplane.last_id().await.inspect_err(|e| {
            tracing::debug!(error = %e, "backplane: no newest id to catch up to");
        })?;
        *newest = Some((Instant::now(), id));
        Ok(id)
    }
}
