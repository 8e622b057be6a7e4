//! A hub's settings, fixed when it is built.

use std::time::Duration;

/// A hub's limits, fixed when it is built.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) history: usize,
    pub(crate) history_ttl: Option<Duration>,
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
            history: 1024,
            history_ttl: None,
            history_bytes: 32 * 1024 * 1024,
            max_lag: 1024,
            max_event_size: 1024 * 1024,
            max_subscribers: usize::MAX,
            max_streams_per_user: usize::MAX,
            max_streams_per_address: usize::MAX,
            presence_events: Vec::new(),
            backplane_backlog: 32 * 1024 * 1024,
        }
    }
}

impl Settings {
    /// The history keeps at least what a subscriber may lag.
    pub(crate) fn history_limit(&self) -> usize {
        self.history.max(self.max_lag)
    }
}
