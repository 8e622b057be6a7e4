//! What every stream of a layer shares, whichever transport serves it and
//! whether the layer's path or a handler opened it.

use bytes::Bytes;
use std::{sync::Arc, time::Duration};

use crate::{authorize::Authorize, wire};

/// The settings of the streams a layer serves (set with the
/// [`SseLayer`](crate::SseLayer) builder).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// The keep-alive interval, and the comment block sent then.
    pub(crate) keep_alive: Option<(Duration, Bytes)>,
    /// Sent first on every event stream (the `retry:` hint), possibly empty.
    pub(crate) prelude: Bytes,
    pub(crate) topic_param: Box<str>,
    pub(crate) max_topics: usize,
    pub(crate) retry_after: Duration,
    pub(crate) authorize: Option<Authorize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keep_alive: Some((Duration::from_secs(15), wire::comment_block("keep-alive"))),
            prelude: Bytes::new(),
            topic_param: "topic".into(),
            max_topics: 64,
            retry_after: Duration::from_secs(5),
            authorize: None,
        }
    }
}

/// The default settings, shared.
pub(crate) fn default() -> Arc<Config> {
    static DEFAULT: std::sync::OnceLock<Arc<Config>> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| Arc::new(Config::default())).clone()
}
