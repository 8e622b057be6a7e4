//! Filling a topic's ring back from an engine: a client resumes from a point
//! this instance's memory no longer covers (it started after, or the byte
//! budget dropped a quiet topic's events) but the engine still holds, so the
//! replica reads the topic's events from the engine and puts them back
//! before the ring's first record ([`Gap`], [`Core::fill`]). And the other
//! way: a topic the engine trimmed before this instance read it is
//! forgotten here ([`Core::trimmed`]).

use std::sync::Arc;

use super::{Core, DEFAULT_TOPIC};
use crate::{
    backplane::Trim,
    hub::{control::Control, history::Topic, registry::Ended},
    observe,
    record::Record,
};

/// A followed topic whose memory does not cover a resume, as it was when
/// looked at: the engine's records are put back only if it has not moved
/// since (a reload, an eviction) — else the resume gets its reset.
#[derive(Debug)]
pub(crate) struct Gap {
    /// The topic (`None`: the default one).
    pub(crate) topic: Option<Arc<str>>,
    /// The engine's records are wanted below this id: the memory holds (or
    /// gets live) the topic's records from it on.
    pub(crate) before: u64,
    /// The ring's first sequence number, if the hub held the topic.
    first_seq: Option<u64>,
    evicted: u64,
    generation: u64,
}

impl Core {
    /// The topics of a subscription to `topics` (and the default topic)
    /// whose memory misses events after `after`.
    pub(crate) fn gaps(&self, topics: &[&str], after: u64) -> Vec<Gap> {
        let state = self.state();
        let published = self.published();
        if after > published || after < state.store.lost_up_to || state.closed {
            return Vec::new();
        }
        let generation = self.generation();
        let mut names = vec![DEFAULT_TOPIC];
        for name in topics {
            if !names.contains(name) {
                names.push(name);
            }
        }
        let mut gaps = Vec::new();
        for name in names {
            let gap = match state.topics.get(name) {
                Some(topic) => {
                    let ring = topic.ring();
                    Gap {
                        topic: (name != DEFAULT_TOPIC).then(|| topic.name.clone()),
                        before: ring
                            .entries
                            .front()
                            .map_or(published + 1, |r| r.id().as_u64()),
                        first_seq: Some(ring.first_seq),
                        evicted: ring.evicted_up_to,
                        generation,
                    }
                }
                None => Gap {
                    topic: Some(name.into()),
                    before: published + 1,
                    first_seq: None,
                    evicted: state.store.known_after(name),
                    generation,
                },
            };
            if gap.evicted > after {
                gaps.push(gap);
            }
        }
        gaps
    }

    /// The engine trimmed these topics' events past what this hub read
    /// (while it lagged): each topic's memory is forgotten, so it holds no
    /// event with a gap behind it, and resuming from before the trim asks
    /// the engine (whose copy of the topic says what it lost); its streams
    /// end, to resume (a live stream would otherwise go on past the gap).
    /// Other topics, and what the engine lost nothing of, are untouched.
    pub(crate) fn trimmed(&self, trims: &[Trim]) {
        let ended: Vec<Arc<Topic>> = {
            let mut state = self.state();
            let state = &mut *state;
            let mut ended = Vec::with_capacity(trims.len());
            for trim in trims {
                let (name, up_to) = (trim.topic.as_deref(), trim.up_to.as_u64());
                let topic = match name {
                    None => Some(self.default_topic.clone()),
                    Some(name) => state.topics.get(name).cloned(),
                };
                match (topic, name) {
                    (Some(topic), _) => {
                        state.store.empty(&topic, up_to);
                        state.forget_if_idle(&topic);
                        ended.push(topic);
                    }
                    // Held nowhere here: remembered as a topic that went.
                    (None, Some(name)) => state.store.remember(name.into(), up_to),
                    (None, None) => {}
                }
            }
            let (events, bytes) = state.store.size();
            observe::history(events, bytes);
            ended
        };
        for topic in &ended {
            tracing::debug!(topic = %topic.name, "backplane: a topic was trimmed past this instance; its streams resume");
            if let Some(followers) = topic.followed_by() {
                followers.end(None, Ended::Disconnected);
            }
        }
    }

    /// `first` is the first event read after a loss that left the engine
    /// with no trace of its log (no event, no newest id): every id below it
    /// was of the lost log (seen on another instance, maybe) or of none, so
    /// a resume from one gets the reset, and none is filled from the engine.
    pub(crate) fn lost_below(&self, first: u64) {
        let mut state = self.state();
        let state = &mut *state;
        state
            .store
            .raise_floor(first.saturating_sub(1), state.topics.values());
    }

    /// Events up to `id` may be lost, the engine's copy too: a resume from
    /// before it is never filled from the engine (it gets its reset).
    pub(crate) fn lost_before(&self, id: u64) {
        let mut state = self.state();
        state.store.lost_up_to = state.store.lost_up_to.max(id);
    }

    /// Puts `records` (the engine's events of `gap`'s topic after `after`
    /// and below `gap.before`, oldest first: every one it holds) back
    /// before the topic's ring, unless the topic moved since [`gaps`]
    /// looked or has no room. Returns whether it did.
    ///
    /// [`gaps`]: Core::gaps
    pub(crate) fn fill(&self, gap: &Gap, after: u64, records: Vec<Record>) -> bool {
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| Control::of(r.message()).is_none())
            .collect();
        let mut state = self.state();
        let state = &mut *state;
        if state.closed || self.generation() != gap.generation {
            return false;
        }
        let name = gap.topic.as_deref().unwrap_or(DEFAULT_TOPIC);
        let topic = match state.topics.get(name) {
            Some(topic) => topic.clone(),
            None if gap.first_seq.is_none() && state.store.known_after(name) == gap.evicted => {
                state.topic(name, None, &self.settings)
            }
            None => return false,
        };
        {
            let ring = topic.ring();
            if ring.first_seq != gap.first_seq.unwrap_or(0) || ring.evicted_up_to != gap.evicted {
                return false;
            }
        }
        let newest = records.last().cloned();
        let now = state.store.now();
        if !state.store.prepend(&topic, records, after, now) {
            return false;
        }
        if let Some(newest) = newest {
            for shed in state.store.shed(state.topics.values(), &newest) {
                state.forget_if_idle(&shed);
            }
        }
        let (events, bytes) = state.store.size();
        observe::history(events, bytes);
        true
    }
}
