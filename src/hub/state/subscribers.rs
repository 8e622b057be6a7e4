//! Subscriptions coming and going: the limits checked before waiting,
//! registering a reader on its topics from where it resumes (or the reset),
//! unregistering it, and who follows a topic.

use std::sync::{atomic::Ordering, Arc};
use tokio::sync::watch;

use super::{Core, DEFAULT_TOPIC};
use crate::hub::{
    history::Follow,
    registry::Reader,
    start::{Resume, Start, StartKind, SubscribeError},
};

impl Core {
    /// Whether a subscription would be refused now, checked before waiting
    /// for anything (the limits were counted when its stream took its seat).
    pub(crate) fn refuses(&self) -> Option<SubscribeError> {
        self.is_closed().then_some(SubscribeError::Closed)
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

    /// Registers `reader`, a subscription to `topics` (the default topic is
    /// always followed) starting at `resume`. The limits are not counted
    /// here: its stream took its seat when it was admitted.
    pub(crate) fn register(
        &self,
        topics: &[&str],
        resume: &Resume,
        reader: &Arc<Reader>,
    ) -> Result<(Vec<Follow>, Start), SubscribeError> {
        let mut state = self.state();
        if state.closed {
            return Err(SubscribeError::Closed);
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
    pub(crate) fn unregister(&self, follows: &[Follow]) {
        let mut state = self.state();
        for follow in follows {
            if follow.topic.followers().remove(follow.key) == 0 {
                // Back to what its rule keeps, no longer what readers may lag.
                let now = state.store.now();
                state.store.settle(&follow.topic, now);
                state.forget_if_idle(&follow.topic);
            }
        }
        let count = self.subscribers.fetch_sub(1, Ordering::Relaxed) - 1;
        self.count.send_replace(count);
    }
}
