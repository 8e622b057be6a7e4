//! A hub's settings, fixed when it is built.

use super::rule::Rules;
use crate::backplane::Retention;

/// How many topics' worth of events an engine's log keeps.
const ENGINE_TOPICS: usize = 8;

/// A hub's limits, fixed when it is built.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// What each topic keeps: the default rule (`history`, `history_ttl`)
    /// and those by prefix.
    pub(crate) rules: Rules,
    pub(crate) history_bytes: usize,
    pub(crate) max_lag: usize,
    pub(crate) max_event_size: usize,
    pub(crate) max_subscribers: usize,
    pub(crate) max_streams_per_user: usize,
    pub(crate) max_streams_per_address: usize,
    /// Topic prefixes whose streams announce their users' comings and goings.
    pub(crate) presence_events: Vec<String>,
    /// Bytes of events that may wait for the engine.
    pub(crate) backplane_backlog: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rules: Rules::default(),
            history_bytes: 32 * 1024 * 1024,
            max_lag: 1024,
            max_event_size: 1024 * 1024,
            max_subscribers: 10_000,
            max_streams_per_user: usize::MAX,
            max_streams_per_address: 100,
            presence_events: Vec::new(),
            backplane_backlog: 32 * 1024 * 1024,
        }
    }
}

impl Settings {
    /// The most events one topic keeps (while followed, at least what a
    /// subscriber may lag): what a hub loads from an engine's tail.
    pub(crate) fn history_limit(&self) -> usize {
        self.rules
            .all()
            .map(|rule| rule.events)
            .fold(self.max_lag, usize::max)
    }

    /// What the engine keeps: of each topic, the largest count a rule keeps
    /// (at least `max_lag`); of the log all topics share, several topics'
    /// worth of the largest count (so a reader that falls behind in a burst
    /// still finds what it has not read, and the log holds more than one
    /// busy topic), the byte budget, and the longest age any rule keeps
    /// (none if one keeps events whatever their age).
    pub(crate) fn engine_retention(&self) -> Retention {
        let age = self
            .rules
            .all()
            .map(|rule| rule.ttl)
            .try_fold(std::time::Duration::ZERO, |longest, ttl| {
                ttl.map(|ttl| longest.max(ttl))
            });
        Retention::new(
            self.history_limit().saturating_mul(ENGINE_TOPICS),
            self.history_bytes,
            age,
        )
        .with_per_topic(self.history_limit())
    }

    /// How often the hub drops aged events, if some topic has an age limit:
    /// a quarter of the shortest, from 100 ms to 10 s.
    pub(crate) fn sweep_interval(&self) -> Option<std::time::Duration> {
        use std::time::Duration;
        self.rules
            .all()
            .filter_map(|rule| rule.ttl)
            .min()
            .map(|ttl| (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)))
    }

    /// Whether some topic has an age limit.
    pub(crate) fn aging(&self) -> bool {
        self.rules.all().any(|rule| rule.ttl.is_some())
    }
}
