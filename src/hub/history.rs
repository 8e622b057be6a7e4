//! The history: each topic's ring of recent records, and the order of all of
//! them across topics, which decides what leaves first (by count and age).
//!
//! A topic's ring doubles as the queue its subscribers read from: a
//! subscriber keeps a cursor (a topic-local sequence number) per topic it
//! follows, and nothing is queued per subscriber.

use std::{
    collections::VecDeque,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::Duration,
};
use tokio::time::Instant;

use super::registry::Followers;
use crate::record::Record;

/// One topic: its ring and who follows it.
pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    ring: RwLock<Ring>,
    pub(crate) followers: Arc<Followers>,
}

/// The retained records of one topic, in id order.
pub(crate) struct Ring {
    pub(crate) entries: VecDeque<Record>,
    /// Topic-local sequence number of `entries[0]`; cursors count in it.
    pub(crate) first_seq: u64,
    /// Highest id of this topic that left the history (or, for a topic made
    /// after some eviction, the highest id of any topic that left it).
    pub(crate) evicted_up_to: u64,
}

impl Ring {
    /// Sequence number of the next record this topic will get.
    pub(crate) fn head_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    /// Sequence number of the first record with an id above `id`.
    pub(crate) fn seq_after(&self, id: u64) -> u64 {
        self.first_seq + self.entries.partition_point(|r| r.id().as_u64() <= id) as u64
    }

    /// Drops every record, keeping the sequence numbering.
    fn clear(&mut self, up_to: u64) {
        self.first_seq = self.head_seq();
        self.entries.clear();
        self.evicted_up_to = self.evicted_up_to.max(up_to);
    }
}

impl Topic {
    pub(crate) fn new(name: Arc<str>, evicted_up_to: u64) -> Arc<Topic> {
        Arc::new(Topic {
            name,
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                first_seq: 0,
                evicted_up_to,
            }),
            followers: Arc::default(),
        })
    }

    pub(crate) fn ring(&self) -> RwLockReadGuard<'_, Ring> {
        // A panic under the lock cannot leave the ring in a state that matters
        // more than refusing every later reader.
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    fn ring_mut(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the topic holds nothing and nobody follows or watches it (it
    /// may go).
    pub(crate) fn is_idle(&self) -> bool {
        self.followers.count() == 0
            && !self.followers.is_watched()
            && self.ring().entries.is_empty()
    }
}

/// Where one subscription is in one topic it follows.
pub(crate) struct Follow {
    pub(crate) topic: Arc<Topic>,
    /// Its key among the topic's followers.
    pub(crate) key: usize,
    /// Sequence number of the next record to deliver.
    pub(crate) cursor: u64,
    /// Sequence number of the first record published after the
    /// subscription: the replayed backlog before it does not count as lag.
    pub(crate) joined: u64,
}

impl Follow {
    /// Index in `ring` of the first record after the cursor, or `None` when
    /// the subscriber lags too far: an unread record left the history, or
    /// more than `max_lag` records published since it subscribed are unread.
    pub(crate) fn unread_start(&self, ring: &Ring, max_lag: u64) -> Option<usize> {
        let start = self.cursor.checked_sub(ring.first_seq)?;
        let behind = ring.head_seq().saturating_sub(self.cursor.max(self.joined));
        (behind <= max_lag).then_some(start as usize)
    }
}

/// Every retained record in id order, across topics: what leaves next.
pub(crate) struct History {
    order: VecDeque<Retained>,
    limit: usize,
    /// What the retained records hold, as [`Record::footprint`] counts it,
    /// and how much they may.
    bytes: usize,
    byte_limit: usize,
    ttl: Option<Duration>,
    /// How many retained records carry an id set by the app: while none do,
    /// a `Last-Event-ID` is read as a number without searching.
    app_ids: usize,
    /// Highest id that left the history (at start, the id before the first):
    /// a client that saw less than this may have missed some.
    pub(crate) evicted_up_to: u64,
}

struct Retained {
    record: Record,
    topic: Arc<Topic>,
    at: Option<Instant>,
}

impl History {
    pub(crate) fn new(
        limit: usize,
        byte_limit: usize,
        ttl: Option<Duration>,
        evicted_up_to: u64,
    ) -> History {
        History {
            order: VecDeque::new(),
            limit,
            bytes: 0,
            byte_limit,
            ttl,
            app_ids: 0,
            evicted_up_to,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// How many records, and how many bytes, it holds now.
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.order.len(), self.bytes)
    }

    /// The time, when the history has an age limit (the clock is read only then).
    pub(crate) fn now(&self) -> Option<Instant> {
        self.ttl.map(|_| Instant::now())
    }

    /// Appends `record` to `topic` (its id above every retained one) at `now`
    /// (as given by [`History::now`]).
    pub(crate) fn push(&mut self, topic: &Arc<Topic>, record: Record, now: Option<Instant>) {
        self.app_ids += usize::from(record.message().app_id().is_some());
        self.bytes += record.footprint();
        topic.ring_mut().entries.push_back(record.clone());
        self.order.push_back(Retained {
            record,
            topic: topic.clone(),
            at: now,
        });
    }

    /// Drops the oldest records beyond the count, beyond the byte budget
    /// (the newest record always stays), and older than the age limit at
    /// `now`; `emptied` gets each topic whose ring became empty.
    pub(crate) fn evict(&mut self, now: Option<Instant>, mut emptied: impl FnMut(&Arc<Topic>)) {
        while let Some(oldest) = self.order.front() {
            let expired = match (self.ttl, now, oldest.at) {
                (Some(ttl), Some(now), Some(at)) => now.duration_since(at) > ttl,
                _ => false,
            };
            let over_budget = self.bytes > self.byte_limit && self.order.len() > 1;
            if !expired && !over_budget && self.order.len() <= self.limit {
                return;
            }
            let Some(old) = self.order.pop_front() else {
                return;
            };
            let id = old.record.id().as_u64();
            self.app_ids -= usize::from(old.record.message().app_id().is_some());
            self.bytes -= old.record.footprint();
            let empty = {
                let mut ring = old.topic.ring_mut();
                if ring.entries.front().is_some_and(|r| r.same(&old.record)) {
                    ring.entries.pop_front();
                    ring.first_seq += 1;
                }
                ring.evicted_up_to = id;
                ring.entries.is_empty()
            };
            self.evicted_up_to = id;
            if empty {
                emptied(&old.topic);
            }
        }
    }

    /// Forgets every record: from now on only ids above `up_to` are known.
    pub(crate) fn clear<'a>(&mut self, up_to: u64, topics: impl Iterator<Item = &'a Arc<Topic>>) {
        self.order.clear();
        self.app_ids = 0;
        self.bytes = 0;
        self.evicted_up_to = self.evicted_up_to.max(up_to);
        for topic in topics {
            topic.ring_mut().clear(up_to);
        }
    }

    /// The id a client's `Last-Event-ID` stands for, if any: an id set by the
    /// app (newest first), else the text read as a hub id.
    pub(crate) fn resolve(&self, last: &str) -> Option<u64> {
        let app = (self.app_ids > 0)
            .then(|| {
                self.order
                    .iter()
                    .rev()
                    .find(|r| r.record.message().app_id() == Some(last))
            })
            .flatten();
        app.map(|r| r.record.id().as_u64())
            .or_else(|| last.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Event, EventId},
        record::Message,
    };

    fn record(id: u64, app_id: Option<&str>) -> Record {
        let mut event = Event::default().data(id.to_string());
        if let Some(app_id) = app_id {
            event = event.id(app_id);
        }
        Record::new(EventId::new(id), Message::new(None, event).unwrap())
    }

    fn ids(topic: &Topic) -> Vec<u64> {
        topic
            .ring()
            .entries
            .iter()
            .map(|r| r.id().as_u64())
            .collect()
    }

    #[test]
    fn the_oldest_leave_first_across_topics() {
        let (a, b) = (Topic::new("a".into(), 9), Topic::new("b".into(), 9));
        let mut history = History::new(3, usize::MAX, None, 9);
        let mut emptied = Vec::new();
        for (id, topic) in [(10, &a), (11, &b), (12, &a), (13, &a)] {
            history.push(topic, record(id, None), None);
            history.evict(None, |t| emptied.push(t.name.clone()));
        }
        assert_eq!((ids(&a), ids(&b)), (vec![12, 13], vec![11]));
        assert_eq!(a.ring().evicted_up_to, 10);
        assert_eq!(b.ring().evicted_up_to, 9);
        assert_eq!(a.ring().first_seq, 1, "the cursor numbering goes on");
        history.push(&a, record(14, None), None);
        history.evict(None, |t| emptied.push(t.name.clone()));
        assert_eq!(ids(&b), Vec::<u64>::new());
        assert_eq!(emptied, [Arc::<str>::from("b")]);
        assert_eq!(history.evicted_up_to, 11);
    }

    #[tokio::test(start_paused = true)]
    async fn records_older_than_the_ttl_leave() {
        let topic = Topic::new("t".into(), 0);
        let mut history = History::new(100, usize::MAX, Some(Duration::from_secs(60)), 0);
        history.push(&topic, record(1, None), history.now());
        tokio::time::advance(Duration::from_secs(30)).await;
        history.push(&topic, record(2, None), history.now());
        tokio::time::advance(Duration::from_secs(31)).await;
        history.evict(history.now(), |_| {});
        assert_eq!(ids(&topic), [2]);
        assert_eq!(history.evicted_up_to, 1);
    }

    #[test]
    fn app_ids_are_found_newest_first_then_numbers() {
        let topic = Topic::new("t".into(), 0);
        let mut history = History::new(2, usize::MAX, None, 0);
        assert_eq!(history.resolve("42"), Some(42));
        assert_eq!(history.resolve("x"), None);
        history.push(&topic, record(5, Some("x")), None);
        history.push(&topic, record(6, Some("x")), None);
        assert_eq!(history.resolve("x"), Some(6));
        history.push(&topic, record(7, Some("7000")), None);
        assert_eq!(history.resolve("7000"), Some(7), "the app's id first");
        history.evict(None, |_| {});
        history.push(&topic, record(8, None), None);
        history.evict(None, |_| {});
        history.push(&topic, record(9, None), None);
        history.evict(None, |_| {});
        assert_eq!(history.app_ids, 0);
        assert_eq!(history.resolve("x"), None);
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_but_keeps_the_newest() {
        let topic = Topic::new("t".into(), 0);
        let big = |id: u64| {
            let event = Event::default().data("x".repeat(1000));
            Record::new(EventId::new(id), Message::new(None, event).unwrap())
        };
        let one = big(1).footprint();
        let mut history = History::new(100, 2 * one, None, 0);
        for id in 1..=3 {
            history.push(&topic, big(id), None);
            history.evict(None, |_| {});
        }
        assert_eq!(ids(&topic), [2, 3]);
        assert_eq!(history.size(), (2, 2 * one));
        assert_eq!(history.evicted_up_to, 1);
        // A budget smaller than one record keeps the newest.
        let mut tiny = History::new(100, 10, None, 0);
        let topic = Topic::new("u".into(), 0);
        tiny.push(&topic, big(7), None);
        tiny.evict(None, |_| {});
        assert_eq!(ids(&topic), [7]);
    }

    #[test]
    fn clear_keeps_the_numbering_and_raises_what_is_known() {
        let topic = Topic::new("t".into(), 0);
        let mut history = History::new(10, usize::MAX, None, 0);
        history.push(&topic, record(1, None), None);
        history.push(&topic, record(2, None), None);
        history.clear(50, [&topic].into_iter());
        let ring = topic.ring();
        assert_eq!((ring.first_seq, ring.entries.len()), (2, 0));
        assert_eq!(ring.evicted_up_to, 50);
        assert_eq!(history.evicted_up_to, 50);
    }

    #[test]
    fn a_cursor_lags_when_its_next_record_left_or_too_many_are_unread() {
        let topic = Topic::new("t".into(), 0);
        let mut history = History::new(3, usize::MAX, None, 0);
        let follow = |cursor, joined| Follow {
            topic: topic.clone(),
            key: 0,
            cursor,
            joined,
        };
        for id in 1..=5 {
            history.push(&topic, record(id, None), None);
            history.evict(None, |_| {});
        }
        // Ring holds seq 2..5 (ids 3, 4, 5).
        let ring = topic.ring();
        assert_eq!(follow(1, 0).unread_start(&ring, 10), None, "seq 1 left");
        assert_eq!(follow(2, 0).unread_start(&ring, 10), Some(0));
        assert_eq!(follow(2, 0).unread_start(&ring, 2), None, "3 unread > 2");
        assert_eq!(
            follow(2, 4).unread_start(&ring, 2),
            Some(0),
            "a replayed backlog is not lag"
        );
        assert_eq!(ring.seq_after(3), 3);
        assert_eq!(ring.seq_after(0), 2);
        assert_eq!(ring.seq_after(99), 5);
    }
}
