//! Subscriptions coming and going: the limits checked before waiting,
//! registering a reader on its topics from where it resumes (or the reset),
//! unregistering it, and who follows a topic.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
};
use tokio::sync::watch;

use super::{Core, DEFAULT_TOPIC};
use crate::hub::{
    history::Follow,
    registry::Reader,
    start::{Owner, Resume, Start, StartKind, SubscribeError},
};

impl Core {
    /// Whether a subscription would be refused now, checked before waiting
    /// for anything (the same checks as [`Core::register`]).
    pub(crate) fn refuses(&self) -> Option<SubscribeError> {
        if self.is_closed() {
            Some(SubscribeError::Closed)
        } else if self.subscribers.load(Ordering::Relaxed) >= self.settings.max_subscribers {
            Some(SubscribeError::TooManySubscribers)
        } else {
            None
        }
    }

    /// How many subscriptions follow `topic`, and their users (distinct;
    /// the first `limit`, and how many in all).
    pub(crate) fn presence(&self, topic: &str, limit: usize) -> (usize, Vec<String>, usize) {
        let topic = match topic {
            DEFAULT_TOPIC => Some(self.default_topic.clone()),
            name => self.state().topics.get(name).cloned(),
        };
        match topic {
            Some(topic) => {
                let Some(followers) = topic.followed_by() else {
                    return (0, Vec::new(), 0);
                };
                let (users, total) = followers.users(limit);
                (followers.count(), users, total)
            }
            None => (0, Vec::new(), 0),
        }
    }

    /// A receiver of how many subscriptions follow `topic`.
    pub(crate) fn watch_topic(&self, topic: &str) -> watch::Receiver<usize> {
        let topic = match topic {
            DEFAULT_TOPIC => self.default_topic.clone(),
            name => self.state().topic(name, None, &self.settings),
        };
        topic.followers().watch()
    }

    /// Registers `reader`, a subscription of `owner` to `topics` (the
    /// default topic is always followed) starting at `resume`.
    pub(crate) fn register(
        &self,
        topics: &[&str],
        resume: &Resume,
        owner: &Owner,
        reader: &Arc<Reader>,
    ) -> Result<(Vec<Follow>, Start), SubscribeError> {
        let mut state = self.state();
        if state.closed {
            return Err(SubscribeError::Closed);
        }
        if self.subscribers.load(Ordering::Relaxed) >= self.settings.max_subscribers {
            return Err(SubscribeError::TooManySubscribers);
        }
        let user_count = owner
            .user
            .as_ref()
            .map(|u| state.per_user.get(u).copied().unwrap_or(0));
        if user_count.is_some_and(|n| n >= self.settings.max_streams_per_user) {
            return Err(SubscribeError::TooManyForUser);
        }
        let address_count = owner
            .address
            .map(|a| state.per_address.get(&a).copied().unwrap_or(0));
        if address_count.is_some_and(|n| n >= self.settings.max_streams_per_address) {
            return Err(SubscribeError::TooManyForAddress);
        }
        if let Some(user) = &owner.user {
            *state.per_user.entry(user.clone()).or_default() += 1;
        }
        if let Some(address) = owner.address {
            *state.per_address.entry(address).or_default() += 1;
        }
        let published = self.published.load(Ordering::Relaxed);

        let mut followed = Vec::with_capacity(topics.len() + 1);
        followed.push(self.default_topic.clone());
        for name in topics {
            if *name != DEFAULT_TOPIC && !followed.iter().any(|t| &*t.name == *name) {
                followed.push(state.topic(name, None, &self.settings));
            }
        }
        // What has aged out must not be replayed (the sweep may not have
        // run yet).
        let now = state.store.now();
        if now.is_some() {
            for topic in &followed {
                state.store.settle(topic, now);
            }
        }

        let covered =
            |id: u64| id <= published && followed.iter().all(|t| t.ring().evicted_up_to <= id);
        let start = match resume {
            Resume::Live => Start {
                after: published,
                kind: StartKind::Live,
            },
            Resume::After(last) => match state.store.resolve(last, &followed) {
                Some(id) if covered(id) => Start {
                    after: id,
                    kind: StartKind::Resumed,
                },
                resolved => {
                    if last.parse::<u64>().is_ok_and(|id| id > published) {
                        // The replica waited for its reader before this, and
                        // the engine said it lost that id (or the wait ran out).
                        tracing::debug!(%last, published, ?resolved, "a resume from an id above every one read here gets the reset");
                    }
                    Start {
                        after: published,
                        kind: StartKind::Reset,
                    }
                }
            },
            Resume::Unknown => Start {
                after: published,
                kind: StartKind::Reset,
            },
        };

        let follows = followed
            .into_iter()
            .map(|topic| {
                let key = topic.followers().add(reader.clone());
                let cursor = topic.start_seq(start.after, start.kind == StartKind::Resumed);
                let joined = topic.ring().head_seq();
                Follow {
                    topic,
                    key,
                    cursor,
                    joined,
                }
            })
            .collect();
        let count = self.subscribers.fetch_add(1, Ordering::Relaxed) + 1;
        self.count.send_replace(count);
        Ok((follows, start))
    }

    /// Unregisters a subscription; topics nobody follows and that hold
    /// nothing go.
    pub(crate) fn unregister(&self, follows: &[Follow], reader: &Reader) {
        let mut state = self.state();
        for follow in follows {
            if follow.topic.followers().remove(follow.key) == 0 {
                // Back to what its rule keeps, no longer what readers may lag.
                let now = state.store.now();
                state.store.settle(&follow.topic, now);
                state.forget_if_idle(&follow.topic);
            }
        }
        if let Some(user) = &reader.user {
            decrement(&mut state.per_user, user);
        }
        if let Some(address) = &reader.address {
            decrement(&mut state.per_address, address);
        }
        let count = self.subscribers.fetch_sub(1, Ordering::Relaxed) - 1;
        self.count.send_replace(count);
    }
}

/// One less under `key`; the entry goes at zero.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}
