//! The history's bookkeeping over every topic's ring ([`Store`]): each
//! topic kept by its own rule (count, age), all under one byte budget that
//! takes from the topics holding the most; the last ids of topics that
//! went; history reads ([`Page`]).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    sync::Arc,
};
use tokio::time::Instant;

use super::{
    history::{Ring, Topic},
    rule::HistoryRule,
};
use crate::record::Record;

/// How many forgotten topics the store remembers the last id of. Past it,
/// the oldest is dropped and its id raises the floor every unknown topic
/// resumes from (so a resume there may get a reset it did not need, never
/// a silent gap).
const FORGOTTEN: usize = 16 * 1024;

/// A page of a topic's history, as [`Store::read`] gives it.
pub(crate) struct Page {
    pub(crate) records: Vec<Record>,
    pub(crate) clipped: bool,
    pub(crate) gap: bool,
    /// Fewer than asked for, and events of the topic may have left the
    /// history: an engine may hold more.
    pub(crate) partial: bool,
}

/// The bookkeeping over every topic's ring: the byte budget, the topics
/// that were forgotten, and what evicting costs each.
pub(crate) struct Store {
    max_lag: usize,
    bytes: usize,
    byte_limit: usize,
    events: usize,
    /// How many retained records carry an id set by the app: while none do,
    /// a `Last-Event-ID` is read as a number without searching.
    app_ids: usize,
    /// Whether any topic may have an age limit (else the clock is not read).
    aging: bool,
    /// The last id of topics that held nothing and nobody followed, so they
    /// went: a client resuming on one is judged by its own events.
    forgotten: HashMap<Arc<str>, u64>,
    forgotten_order: VecDeque<(Arc<str>, u64)>,
    /// Highest id that may have been an event of a topic the store knows
    /// nothing of (at start, the id before the first).
    pub(crate) floor: u64,
    /// Highest id before which this hub lost events the engine never took:
    /// no engine holds them, so resuming from before is never replayed
    /// from one.
    pub(crate) lost_up_to: u64,
}

impl Store {
    pub(crate) fn new(max_lag: usize, byte_limit: usize, aging: bool, floor: u64) -> Store {
        Store {
            max_lag,
            bytes: 0,
            byte_limit,
            events: 0,
            app_ids: 0,
            aging,
            forgotten: HashMap::new(),
            forgotten_order: VecDeque::new(),
            floor,
            lost_up_to: 0,
        }
    }

    /// How many records, and how many bytes, it holds now.
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.events, self.bytes)
    }

    /// The time, when some topic has an age limit (the clock is read only then).
    pub(crate) fn now(&self) -> Option<Instant> {
        self.aging.then(Instant::now)
    }

    /// A new topic named `name` under `rule`: it may have had events before
    /// (it was forgotten, or the store forgot some topics altogether).
    pub(crate) fn topic(&mut self, name: Arc<str>, rule: Arc<HistoryRule>) -> Arc<Topic> {
        let evicted_up_to = self.known_after(&name);
        self.forgotten.remove(&name);
        Topic::new(name, rule, evicted_up_to)
    }

    /// Highest id that may have been an event of `name`, a topic it does
    /// not hold: a client that saw less may have missed some.
    pub(crate) fn known_after(&self, name: &str) -> u64 {
        self.forgotten.get(name).copied().unwrap_or(self.floor)
    }

    /// Remembers the last id of `topic`, which goes.
    pub(crate) fn forget(&mut self, topic: &Topic) {
        let up_to = topic.ring().evicted_up_to;
        self.remember(topic.name.clone(), up_to);
    }

    /// Remembers that events of `name`, a topic it does not hold, up to
    /// `up_to` may be missing.
    pub(crate) fn remember(&mut self, name: Arc<str>, up_to: u64) {
        if up_to <= self.known_after(&name) {
            return;
        }
        self.forgotten.insert(name.clone(), up_to);
        self.forgotten_order.push_back((name, up_to));
        while self.forgotten_order.len() > FORGOTTEN {
            let Some((name, id)) = self.forgotten_order.pop_front() else {
                break;
            };
            // Only the entry it was queued for: a topic forgotten again since
            // has a newer one, queued behind.
            if self.forgotten.get(&name) == Some(&id) {
                self.forgotten.remove(&name);
                self.floor = self.floor.max(id);
            }
        }
    }

    /// Appends `record` to `topic` (its id above every retained one) at
    /// `now` (as given by [`Store::now`]), and drops what the topic's rule
    /// no longer keeps.
    pub(crate) fn push(&mut self, topic: &Topic, record: Record, now: Option<Instant>) {
        self.app_ids += usize::from(record.message().app_id().is_some());
        let footprint = record.footprint();
        self.bytes += footprint;
        self.events += 1;
        let mut ring = topic.ring_mut();
        ring.bytes += footprint;
        if ring.entries.capacity() == 0 {
            // Most topics hold one event: room for one, then it grows.
            ring.entries.reserve_exact(1);
        }
        ring.entries.push_back(record);
        if let (Some(now), Some(_)) = (now, topic.rule.ttl) {
            ring.arrived.get_or_insert_default().push_back(now);
        }
        self.trim(topic, &mut ring, now);
    }

    /// Drops what `topic`'s rule no longer keeps at `now` (if given): beyond
    /// its count, older than its age. Returns whether it is left empty.
    pub(crate) fn settle(&mut self, topic: &Topic, now: Option<Instant>) -> bool {
        let mut ring = topic.ring_mut();
        self.trim(topic, &mut ring, now);
        ring.entries.is_empty()
    }

    fn trim(&mut self, topic: &Topic, ring: &mut Ring, now: Option<Instant>) {
        let bound = topic.bound(self.max_lag);
        while ring.entries.len() > bound {
            self.pop_front(ring);
        }
        let (Some(ttl), Some(now)) = (topic.rule.ttl, now) else {
            return;
        };
        let keep = usize::from(topic.rule.state);
        while ring.entries.len() > keep
            && ring
                .arrived
                .as_ref()
                .and_then(|arrived| arrived.front())
                .is_some_and(|at| now.duration_since(*at) > ttl)
        {
            self.pop_front(ring);
        }
    }

    fn pop_front(&mut self, ring: &mut Ring) {
        let Some(old) = ring.entries.pop_front() else {
            return;
        };
        if let Some(arrived) = &mut ring.arrived {
            arrived.pop_front();
        }
        ring.first_seq += 1;
        ring.evicted_up_to = ring.evicted_up_to.max(old.id().as_u64());
        let footprint = old.footprint();
        ring.bytes -= footprint;
        self.bytes -= footprint;
        self.events -= 1;
        self.app_ids -= usize::from(old.message().app_id().is_some());
    }

    /// Over the byte budget, drops the oldest records of the topics that
    /// hold the most, one record at a time, down to 15/16 of the budget (so
    /// a flood pays for this once per sixteenth of the budget, not on every
    /// event). `newest` (the record just appended) always stays. Returns
    /// the topics it took from, for those left empty to be forgotten.
    pub(crate) fn shed<'a>(
        &mut self,
        topics: impl Iterator<Item = &'a Arc<Topic>>,
        newest: &Record,
    ) -> Vec<Arc<Topic>> {
        if self.bytes <= self.byte_limit {
            return Vec::new();
        }
        let target = self.byte_limit - self.byte_limit / 16;
        // Each ring's size read once, under its lock once.
        let mut candidates = Vec::new();
        let mut heap = BinaryHeap::new();
        for topic in topics {
            let bytes = topic.ring().bytes;
            if bytes > 0 {
                heap.push((bytes, Reverse(candidates.len())));
                candidates.push(topic.clone());
            }
        }
        let mut shed = Vec::new();
        while self.bytes > target {
            let Some((_, Reverse(i))) = heap.pop() else {
                break;
            };
            let topic = &candidates[i];
            let mut ring = topic.ring_mut();
            if ring.entries.front().is_some_and(|r| r.same(newest)) {
                continue;
            }
            self.pop_front(&mut ring);
            if !shed.iter().any(|t| Arc::ptr_eq(t, topic)) {
                shed.push(topic.clone());
            }
            if ring.bytes > 0 {
                heap.push((ring.bytes, Reverse(i)));
            }
        }
        shed
    }

    /// Drops, from every topic with an age limit, what is older than it at
    /// `now`; returns the topics left empty.
    pub(crate) fn expire<'a>(
        &mut self,
        topics: impl Iterator<Item = &'a Arc<Topic>>,
        now: Instant,
    ) -> Vec<Arc<Topic>> {
        topics
            .filter(|t| t.rule.ttl.is_some())
            .filter(|t| self.settle(t, Some(now)))
            .cloned()
            .collect()
    }

    /// Forgets every record of `topic`: events of it up to `up_to` may be
    /// missing (an engine trimmed them before this hub read them), so a
    /// client that saw less than it must not be replayed from here.
    pub(crate) fn empty(&mut self, topic: &Topic, up_to: u64) {
        let mut ring = topic.ring_mut();
        while !ring.entries.is_empty() {
            self.pop_front(&mut ring);
        }
        ring.evicted_up_to = ring.evicted_up_to.max(up_to);
    }

    /// Forgets every record: from now on only ids above `up_to` are known.
    pub(crate) fn clear<'a>(&mut self, up_to: u64, topics: impl Iterator<Item = &'a Arc<Topic>>) {
        self.app_ids = 0;
        self.bytes = 0;
        self.events = 0;
        self.floor = self.floor.max(up_to);
        self.forgotten.clear();
        self.forgotten_order.clear();
        for topic in topics {
            let mut ring = topic.ring_mut();
            ring.first_seq = ring.head_seq();
            ring.entries.clear();
            ring.arrived = None;
            ring.bytes = 0;
            ring.evicted_up_to = ring.evicted_up_to.max(up_to);
        }
    }

    /// Raises to `up_to` the highest id that may have been an event of
    /// every topic, and before which events were lost: a resume from below
    /// it gets the reset. A record held keeps its place (the bound stops
    /// below the oldest one of its topic).
    pub(crate) fn raise_floor<'a>(
        &mut self,
        up_to: u64,
        topics: impl Iterator<Item = &'a Arc<Topic>>,
    ) {
        self.floor = self.floor.max(up_to);
        self.lost_up_to = self.lost_up_to.max(up_to);
        // What the floor now stands for.
        self.forgotten.retain(|_, known| *known > up_to);
        self.forgotten_order.retain(|(_, known)| *known > up_to);
        for topic in topics {
            let mut ring = topic.ring_mut();
            let below_oldest = ring
                .entries
                .front()
                .map_or(up_to, |r| r.id().as_u64().saturating_sub(1));
            ring.evicted_up_to = ring.evicted_up_to.max(up_to.min(below_oldest));
        }
    }

    /// The id a client's `Last-Event-ID` stands for, if any: an id set by the
    /// app to an event of one of `topics` (newest first), else the text read
    /// as a hub id.
    pub(crate) fn resolve<'a>(
        &self,
        last: &str,
        topics: impl IntoIterator<Item = &'a Arc<Topic>>,
    ) -> Option<u64> {
        let app = (self.app_ids > 0)
            .then(|| {
                topics
                    .into_iter()
                    .filter_map(|topic| {
                        let ring = topic.ring();
                        ring.entries
                            .iter()
                            .rev()
                            .find(|r| r.message().app_id() == Some(last))
                            .map(|r| r.id().as_u64())
                    })
                    .max()
            })
            .flatten();
        app.or_else(|| last.parse().ok())
    }

    /// Up to `limit` records of `topic`: those after `after` (oldest first),
    /// or without it the newest. `clipped` when more were there; `gap` when
    /// records after `after` may have left the history already.
    pub(crate) fn read(topic: &Topic, after: Option<u64>, limit: usize) -> Page {
        let ring = topic.ring();
        let (start, gap) = match after {
            Some(after) => (
                ring.entries.partition_point(|r| r.id().as_u64() <= after),
                ring.evicted_up_to > after,
            ),
            None => (ring.entries.len().saturating_sub(limit), false),
        };
        let records: Vec<Record> = ring.entries.range(start..).take(limit).cloned().collect();
        let clipped = ring.entries.len() - start > records.len() || (after.is_none() && start > 0);
        Page {
            partial: records.len() < limit && ring.evicted_up_to > 0,
            records,
            clipped,
            gap,
        }
    }

    /// Puts `records` (a topic's events read back from an engine, oldest
    /// first, every one after `after` and older than the ring's first)
    /// before the ring's first record, so a client resuming after `after`
    /// is replayed from memory: the ring then covers every event of the
    /// topic after `after`. Refused (`false`) when the topic's bound has no
    /// room for them, or when followers' cursors could not be kept.
    pub(crate) fn prepend(
        &mut self,
        topic: &Topic,
        records: Vec<Record>,
        after: u64,
        now: Option<Instant>,
    ) -> bool {
        let mut ring = topic.ring_mut();
        let count = records.len();
        if ring.entries.len() + count > topic.bound(self.max_lag)
            || records.first().is_some_and(|r| r.id().as_u64() <= after)
            || records
                .last()
                .zip(ring.entries.front())
                .is_some_and(|(last, first)| last.id() >= first.id())
        {
            return false;
        }
        // Sequence numbers of the records prepended: those they had when
        // this ring held them (it read the same log), or, with nobody
        // following, the numbering moved up.
        if ring.first_seq < count as u64 {
            if topic.follower_count() > 0 {
                return false;
            }
            ring.first_seq = count as u64;
        }
        ring.first_seq -= count as u64;
        let arrived_at = ring
            .arrived
            .as_ref()
            .and_then(|a| a.front().copied())
            .or(now);
        for record in records.into_iter().rev() {
            let footprint = record.footprint();
            self.bytes += footprint;
            self.events += 1;
            self.app_ids += usize::from(record.message().app_id().is_some());
            ring.bytes += footprint;
            ring.entries.push_front(record);
            if let (Some(at), Some(_)) = (arrived_at, topic.rule.ttl) {
                ring.arrived.get_or_insert_default().push_front(at);
            }
        }
        ring.evicted_up_to = ring.evicted_up_to.min(after);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::history::Follow;
    use crate::{
        event::{Event, EventId},
        record::Message,
    };
    use std::time::Duration;

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

    fn topic(store: &mut Store, name: &str, rule: HistoryRule) -> Arc<Topic> {
        store.topic(name.into(), Arc::new(rule))
    }

    #[test]
    fn each_topic_keeps_its_own_count() {
        let mut store = Store::new(1, usize::MAX, false, 9);
        let busy = topic(&mut store, "busy", HistoryRule::events(2));
        let quiet = topic(&mut store, "quiet", HistoryRule::events(2));
        store.push(&quiet, record(10, None), None);
        for id in 11..100 {
            store.push(&busy, record(id, None), None);
        }
        assert_eq!(ids(&quiet), [10], "a flood elsewhere takes nothing");
        assert_eq!(quiet.ring().evicted_up_to, 9);
        assert_eq!(ids(&busy), [98, 99]);
        assert_eq!(busy.ring().evicted_up_to, 97);
        assert_eq!(busy.ring().first_seq, 87, "the cursor numbering goes on");
        assert_eq!(store.size().0, 3);
    }

    #[test]
    fn a_followed_topic_keeps_what_its_readers_may_still_read() {
        let mut store = Store::new(3, usize::MAX, false, 0);
        let t = topic(&mut store, "t", HistoryRule::nothing());
        let reader = super::super::registry::Reader::new(None);
        let key = t.followers().add(reader);
        for id in 1..=5 {
            store.push(&t, record(id, None), None);
        }
        assert_eq!(ids(&t), [3, 4, 5], "max_lag while followed");
        t.followers().remove(key);
        assert!(
            store.settle(&t, None),
            "the rule's count once nobody follows"
        );
        assert_eq!(t.ring().evicted_up_to, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn records_older_than_their_topics_ttl_leave_but_a_state_keeps_its_latest() {
        let minute = Duration::from_secs(60);
        let mut store = Store::new(1, usize::MAX, true, 0);
        let aging = topic(&mut store, "a", HistoryRule::events(10).ttl(minute));
        let state = topic(&mut store, "s", HistoryRule::latest().ttl(minute));
        let forever = topic(&mut store, "f", HistoryRule::events(10));
        store.push(&aging, record(1, None), store.now());
        store.push(&state, record(2, None), store.now());
        store.push(&forever, record(3, None), store.now());
        tokio::time::advance(Duration::from_secs(30)).await;
        store.push(&aging, record(4, None), store.now());
        tokio::time::advance(Duration::from_secs(31)).await;
        let all = [aging.clone(), state.clone(), forever.clone()];
        let emptied = store.expire(all.iter(), Instant::now());
        assert!(emptied.is_empty());
        assert_eq!(
            (ids(&aging), ids(&state), ids(&forever)),
            (vec![4], vec![2], vec![3])
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        let emptied = store.expire(all.iter(), Instant::now());
        assert_eq!(emptied.len(), 1);
        assert_eq!(aging.ring().evicted_up_to, 4);
    }

    #[test]
    fn over_the_budget_the_largest_topics_give_first_and_the_newest_stays() {
        let one = record(1, None).footprint();
        let mut store = Store::new(1, 10 * one, false, 0);
        let busy = topic(&mut store, "busy", HistoryRule::events(100));
        let quiet = topic(&mut store, "quiet", HistoryRule::events(100));
        store.push(&quiet, record(1, None), None);
        store.push(&quiet, record(2, None), None);
        let mut shed = Vec::new();
        for id in 3..50 {
            let r = record(id, None);
            store.push(&busy, r.clone(), None);
            shed.extend(store.shed([busy.clone(), quiet.clone()].iter(), &r));
        }
        assert_eq!(ids(&quiet), [1, 2], "the quiet topic keeps its events");
        assert!(store.size().1 <= 10 * one);
        assert!(shed.iter().all(|t| Arc::ptr_eq(t, &busy)));
        // A budget smaller than one record keeps the newest.
        let mut tiny = Store::new(1, 10, false, 0);
        let t = topic(&mut tiny, "t", HistoryRule::events(5));
        for id in 1..=3 {
            let r = record(id, None);
            tiny.push(&t, r.clone(), None);
            tiny.shed([t.clone()].iter(), &r);
        }
        assert_eq!(ids(&t), [3]);
    }

    proptest::proptest! {
        /// Under the byte budget, shedding is water-filling: a topic gives
        /// a record only while no other topic holds more, so a topic that
        /// lost records by it is within one record of the largest after.
        #[test]
        fn the_budget_takes_from_the_largest_topics_first(
            pushes in proptest::collection::vec((0usize..6, 1usize..40), 1..300),
            budget in 1usize..30,
        ) {
            let one = record(1_000, None).footprint();
            let mut store = Store::new(1, budget * one, false, 0);
            let topics: Vec<Arc<Topic>> = (0..6)
                .map(|i| topic(&mut store, &format!("t{i}"), HistoryRule::events(12 + i)))
                .collect();
            for (id, (i, _)) in pushes.iter().enumerate() {
                // Equal footprints: data of one width.
                let r = record(1_000 + id as u64, None);
                store.push(&topics[*i], r.clone(), None);
                let shed = store.shed(topics.iter(), &r);
                let counts: Vec<usize> = topics.iter().map(|t| t.ring().entries.len()).collect();
                let largest = counts.iter().copied().max().unwrap_or(0);
                for t in &shed {
                    let held = t.ring().entries.len();
                    proptest::prop_assert!(held + 1 >= largest, "{counts:?}");
                }
                proptest::prop_assert!(
                    store.size().1 <= budget * one || store.size().0 == 1,
                    "over the budget: {:?}", store.size()
                );
                proptest::prop_assert!(topics[*i].ring().entries.back().is_some_and(|b| b.same(&r)));
            }
        }
    }

    #[test]
    fn forgotten_topics_keep_their_last_id_then_raise_the_floor() {
        let mut store = Store::new(1, usize::MAX, false, 5);
        let t = topic(&mut store, "t", HistoryRule::nothing());
        store.push(&t, record(7, None), None);
        assert!(t.ring().entries.is_empty());
        store.forget(&t);
        assert_eq!(
            topic(&mut store, "t", HistoryRule::nothing())
                .ring()
                .evicted_up_to,
            7
        );
        assert_eq!(
            topic(&mut store, "u", HistoryRule::nothing())
                .ring()
                .evicted_up_to,
            5
        );
        // A topic it never held, whose events were lost on the way.
        store.remember("lost".into(), 9);
        let lost = topic(&mut store, "lost", HistoryRule::nothing());
        assert_eq!(lost.ring().evicted_up_to, 9);
        for i in 0..=FORGOTTEN as u64 {
            let t = topic(&mut store, &format!("n{i}"), HistoryRule::nothing());
            store.push(&t, record(10 + i, None), None);
            store.forget(&t);
        }
        assert_eq!(store.floor, 10, "the oldest forgotten went");
        assert_eq!(store.forgotten.len(), FORGOTTEN);
    }

    #[test]
    fn app_ids_are_found_newest_first_in_the_topics_given_then_numbers() {
        let mut store = Store::new(1, usize::MAX, false, 0);
        let t = topic(&mut store, "t", HistoryRule::events(2));
        let other = topic(&mut store, "o", HistoryRule::events(2));
        assert_eq!(store.resolve("42", [&t]), Some(42));
        assert_eq!(store.resolve("x", [&t]), None);
        store.push(&t, record(5, Some("x")), None);
        store.push(&t, record(6, Some("x")), None);
        store.push(&other, record(8, Some("y")), None);
        assert_eq!(store.resolve("x", [&t, &other]), Some(6));
        assert_eq!(store.resolve("y", [&t]), None, "not a topic it follows");
        store.push(&t, record(7, Some("7000")), None);
        assert_eq!(store.resolve("7000", [&t]), Some(7), "the app's id first");
        store.push(&t, record(9, None), None);
        store.push(&t, record(10, None), None);
        store.push(&other, record(11, None), None);
        store.push(&other, record(12, None), None);
        assert_eq!(store.app_ids, 0);
    }

    #[test]
    fn a_read_is_clipped_and_tells_of_a_gap() {
        let mut store = Store::new(1, usize::MAX, false, 0);
        let t = topic(&mut store, "t", HistoryRule::events(4));
        for id in 1..=6 {
            store.push(&t, record(id, None), None);
        }
        let page = Store::read(&t, None, 2);
        let got: Vec<u64> = page.records.iter().map(|r| r.id().as_u64()).collect();
        assert_eq!((got, page.clipped, page.gap), (vec![5, 6], true, false));
        let page = Store::read(&t, Some(3), 2);
        let got: Vec<u64> = page.records.iter().map(|r| r.id().as_u64()).collect();
        assert_eq!((got, page.clipped, page.gap), (vec![4, 5], true, false));
        let page = Store::read(&t, Some(1), 10);
        let got: Vec<u64> = page.records.iter().map(|r| r.id().as_u64()).collect();
        assert_eq!(
            (got, page.clipped, page.gap),
            (vec![3, 4, 5, 6], false, true)
        );
        let page = Store::read(&t, None, 10);
        assert_eq!((page.records.len(), page.clipped), (4, false));
    }

    #[test]
    fn records_read_back_from_an_engine_go_before_the_ring_within_its_bound() {
        let mut store = Store::new(1, usize::MAX, false, 0);
        let t = topic(&mut store, "t", HistoryRule::events(4));
        for id in 1..=6 {
            store.push(&t, record(id, None), None);
        }
        assert_eq!((ids(&t), t.ring().evicted_up_to), (vec![3, 4, 5, 6], 2));
        assert!(
            !store.prepend(&t, vec![record(2, None)], 1, None),
            "no room: the topic keeps 4"
        );
        let u = topic(&mut store, "u", HistoryRule::events(4));
        store.push(&u, record(9, None), None);
        u.lost_up_to(8);
        assert!(store.prepend(&u, vec![record(7, None), record(8, None)], 6, None));
        assert_eq!((ids(&u), u.ring().evicted_up_to), (vec![7, 8, 9], 6));
        assert_eq!(u.ring().seq_after(6) + 3, u.ring().head_seq());
        assert_eq!(store.size().0, 7);
        assert!(
            !store.prepend(&u, vec![record(9, None)], 5, None),
            "not older than the ring's first"
        );
    }

    #[test]
    fn a_cursor_lags_when_its_next_record_left_or_too_many_are_unread() {
        let mut store = Store::new(1, usize::MAX, false, 0);
        let topic = topic(&mut store, "t", HistoryRule::events(3));
        let follow = |cursor, joined| Follow {
            topic: topic.clone(),
            key: 0,
            cursor,
            joined,
        };
        for id in 1..=5 {
            store.push(&topic, record(id, None), None);
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
