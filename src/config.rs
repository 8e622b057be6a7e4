//! What every stream of a layer shares, whichever transport serves it and
//! whether the layer's path or a handler opened it.

use bytes::Bytes;
use http::request::Parts;
use std::{fmt, net::IpAddr, sync::Arc, time::Duration};

use crate::wire;

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
    /// How to find the client's address in a request, if not the default.
    pub(crate) client_address: Option<ClientAddress>,
    /// After a stream writes, how long it collects events before its next
    /// write ([`SseLayer::coalesce`](crate::SseLayer::coalesce)); `None`:
    /// each write as soon as there is something to send.
    pub(crate) coalesce: Option<Duration>,
    /// How long a WebSocket session's write may wait for the client
    /// ([`SseLayer::write_stall_timeout`](crate::SseLayer::write_stall_timeout)).
    pub(crate) write_stall: Duration,
}

/// A function that finds the client's address in a request head.
#[derive(Clone)]
pub(crate) struct ClientAddress(pub(crate) Arc<FindAddress>);

type FindAddress = dyn Fn(&Parts) -> Option<IpAddr> + Send + Sync;

impl fmt::Debug for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientAddress(..)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keep_alive: Some((Duration::from_secs(15), wire::comment_block("keep-alive"))),
            prelude: Bytes::new(),
            topic_param: "topic".into(),
            max_topics: 64,
            retry_after: Duration::from_secs(5),
            client_address: None,
            coalesce: None,
            write_stall: Duration::from_secs(10),
        }
    }
}

/// The default settings, shared.
pub(crate) fn default() -> Arc<Config> {
    static DEFAULT: std::sync::OnceLock<Arc<Config>> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| Arc::new(Config::default())).clone()
}
