//! Presence events: a user's first stream on an announced topic publishes
//! `join`, its last `leave` (so a user with many tabs, or a client churning
//! its subscription, makes no more of them than one arrival).

use std::sync::Arc;

use super::{Hub, Inner};
use crate::record::Message;

/// A user, and a topic it follows.
pub(super) type UserTopic = (Arc<str>, Arc<str>);

/// Publishes a `join` or `leave` event (`name`) of `user` to `topics`.
pub(super) fn announce(hub: &Hub, user: &str, topics: &[Arc<str>], name: &str) {
    for topic in topics {
        let event = crate::event::Event::default().event(name).data(user);
        let published = Message::new(Some(topic), event).and_then(|m| hub.publish(m));
        if let Err(e) = published {
            tracing::debug!(error = %e, topic = &**topic, "presence event not published");
        }
    }
}

/// Announces that a user left, when the subscription that joined goes.
pub(super) struct Leave {
    /// Weak: a subscription does not keep the hub open.
    pub(super) hub: std::sync::Weak<Inner>,
    pub(super) user: Arc<str>,
    pub(super) topics: Vec<Arc<str>>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Some(inner) = self.hub.upgrade() {
            let last = inner.present(&self.user, &self.topics, false);
            announce(&Hub { inner }, &self.user, &last, "leave");
        }
    }
}

impl Inner {
    /// Counts a stream of `user` on `topics` in (`joined`) or out; returns
    /// the topics where it is the user's first (or last) stream, which alone
    /// are announced: a user with many tabs, or a client churning its
    /// subscription, makes no more presence events than one arrival.
    pub(super) fn present(
        &self,
        user: &Arc<str>,
        topics: &[Arc<str>],
        joined: bool,
    ) -> Vec<Arc<str>> {
        let mut present = self.present.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .filter(|topic| {
                let key = (user.clone(), (*topic).clone());
                if joined {
                    let count = present.entry(key).or_default();
                    *count += 1;
                    *count == 1
                } else {
                    match present.get_mut(&key) {
                        Some(count) if *count > 1 => {
                            *count -= 1;
                            false
                        }
                        Some(_) => {
                            present.remove(&key);
                            true
                        }
                        None => false,
                    }
                }
            })
            .cloned()
            .collect()
    }
}
