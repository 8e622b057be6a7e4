//! A topic of the history: its ring of recent records and who follows it
//! ([`Topic`]), the hub's topics by name ([`Topics`]), and where a
//! subscription is in one ([`Follow`]). What is kept, and what leaves, is
//! the store's (`store.rs`).
//!
//! A topic's ring doubles as the queue its subscribers read from: a
//! subscriber keeps a cursor (a topic-local sequence number) per topic it
//! follows, and nothing is queued per subscriber. So while a topic has
//! followers its ring also keeps what they may still read, up to `max_lag`.

use std::{
    borrow::Borrow,
    collections::{HashSet, VecDeque},
    hash::{Hash, Hasher},
    sync::{Arc, OnceLock},
};
use tokio::time::Instant;

use super::{registry::Followers, rule::HistoryRule};
use crate::{
    record::Record,
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

/// One topic: its rule, its ring and who follows it. Kept small: an app
/// may have a hundred thousand quiet topics of one event each.
pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    /// Shared by every topic under the same rule.
    pub(crate) rule: Arc<HistoryRule>,
    ring: RwLock<Ring>,
    /// Made by its first follower (or watcher): most topics have none.
    followers: OnceLock<Arc<Followers>>,
}

/// The retained records of one topic, in id order.
pub(crate) struct Ring {
    pub(crate) entries: VecDeque<Record>,
    /// When each entry arrived, for a topic with an age limit (else none:
    /// most topics have no age limit, and an empty queue costs 32 bytes).
    #[allow(clippy::box_collection)] // 8 bytes in every topic, not 32
    pub(super) arrived: Option<Box<VecDeque<Instant>>>,
    /// Topic-local sequence number of `entries[0]`; cursors count in it.
    pub(crate) first_seq: u64,
    /// Highest id that may have been an event of this topic and left the
    /// history: a client that saw less than this may have missed some.
    pub(crate) evicted_up_to: u64,
    /// What the entries hold, as [`Record::footprint`] counts it.
    pub(super) bytes: usize,
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
}

impl Topic {
    pub(super) fn new(name: Arc<str>, rule: Arc<HistoryRule>, evicted_up_to: u64) -> Arc<Topic> {
        Arc::new(Topic {
            name,
            rule,
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                arrived: None,
                first_seq: 0,
                evicted_up_to,
                bytes: 0,
            }),
            followers: OnceLock::new(),
        })
    }

    /// Its followers, made now if it never had any.
    pub(crate) fn followers(&self) -> &Arc<Followers> {
        self.followers.get_or_init(Arc::default)
    }

    /// Its followers, if it ever had any.
    pub(crate) fn followed_by(&self) -> Option<&Arc<Followers>> {
        self.followers.get()
    }

    /// How many subscriptions follow it.
    pub(crate) fn follower_count(&self) -> usize {
        self.followed_by().map_or(0, |f| f.count())
    }

    pub(crate) fn ring(&self) -> RwLockReadGuard<'_, Ring> {
        // A panic under the lock cannot leave the ring in a state that matters
        // more than refusing every later reader.
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn ring_mut(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the topic holds nothing and nobody follows or watches it (it
    /// may go).
    pub(crate) fn is_idle(&self) -> bool {
        self.followed_by()
            .is_none_or(|f| f.count() == 0 && !f.is_watched())
            && self.ring().entries.is_empty()
    }

    /// Events of this topic up to `id` may be missing: a client that saw
    /// less than it must get the reset.
    pub(crate) fn lost_up_to(&self, id: u64) {
        let mut ring = self.ring_mut();
        ring.evicted_up_to = ring.evicted_up_to.max(id);
    }

    /// Where a subscription starting after `after` begins reading this
    /// topic: after that id, except that a state topic with nothing newer
    /// to replay starts at its newest record (the current value) — unless
    /// the client resumes from that very record (`resumed`), so it has it.
    pub(crate) fn start_seq(&self, after: u64, resumed: bool) -> u64 {
        let ring = self.ring();
        let seq = ring.seq_after(after);
        match ring.entries.back() {
            Some(newest)
                if self.rule.state
                    && seq == ring.head_seq()
                    && !(resumed && newest.id().as_u64() == after) =>
            {
                seq - 1
            }
            _ => seq,
        }
    }

    /// How many records the ring keeps: the rule's count, and while
    /// followed, what a follower may still read (up to `max_lag`).
    pub(super) fn bound(&self, max_lag: usize) -> usize {
        let kept = if self.follower_count() > 0 {
            self.rule.events.max(max_lag)
        } else {
            self.rule.events
        };
        kept.max(usize::from(self.rule.state))
    }
}

/// The hub's topics by name: a set of the topics themselves (each knows
/// its name), so an entry costs a pointer, not a name and a pointer.
#[derive(Default)]
pub(crate) struct Topics(HashSet<Named>);

/// A topic as a set entry: hashed and compared by its name.
struct Named(Arc<Topic>);

impl Hash for Named {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl PartialEq for Named {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Named {}

impl Borrow<str> for Named {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl Topics {
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Topic>> {
        self.0.get(name).map(|named| &named.0)
    }

    pub(crate) fn insert(&mut self, topic: Arc<Topic>) {
        self.0.replace(Named(topic));
    }

    pub(crate) fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<Topic>> {
        self.0.iter().map(|named| &named.0)
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Arc<Topic>) -> bool) {
        self.0.retain(|named| keep(&named.0));
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
