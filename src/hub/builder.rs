//! [`HubBuilder`]: a hub's settings, checked and fixed when it is built.

use std::{
    fmt,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use super::{
    replica::Replica, rule::BuildError, settings::Settings, state::Core, HistoryRule, Hub, Inner,
};
use crate::{authorize::Policy, backplane::Backplane};
#[cfg(doc)]
use crate::{error::Error, published::Published};

/// The settings of a [`Hub`], fixed when it is built.
#[derive(Clone, Default)]
#[must_use]
pub struct HubBuilder {
    settings: Settings,
    backplane: Option<Arc<dyn Backplane>>,
    /// Set by `authorize` or `open_access` (in `crate::admission`).
    pub(crate) policy: Option<Policy>,
}

impl HubBuilder {
    /// How many recent events each topic keeps (unless a
    /// [`history_rule`](Self::history_rule) says otherwise), so a client
    /// that reconnects with `Last-Event-ID` gets what it missed. Each topic
    /// keeps its own: a flood on one topic never pushes out another's.
    /// Default: 1024. (While a topic has streams open, it also keeps what
    /// they have not read yet, up to [`max_lag`](Self::max_lag).)
    pub fn history(mut self, events: usize) -> Self {
        self.settings.rules.default.events = events;
        self
    }

    /// What topics starting with `prefix` keep, instead of
    /// [`history`](Self::history) and [`history_ttl`](Self::history_ttl):
    /// a count, an age, or only their latest event as a *state* topic whose
    /// current value every new stream gets first. The longest matching
    /// prefix wins; the hub's byte budget still bounds them all.
    ///
    /// An empty or repeated prefix, one no topic can match, an age of zero
    /// or a state topic keeping nothing is refused by
    /// [`try_build`](Self::try_build) (and [`build`](Self::build) panics).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::{HistoryRule, Hub};
    ///
    /// let hub = Hub::builder()
    ///     .history(100) // every other topic: its last 100 events
    ///     .history_rule("prices/", HistoryRule::latest())
    ///     .history_rule("chat/", HistoryRule::events(500).ttl(Duration::from_secs(3600)))
    ///     .history_rule("tmp/", HistoryRule::nothing())
    ///     .try_build()?;
    /// # let _ = hub;
    /// # Ok::<(), tower_sse::BuildError>(())
    /// ```
    pub fn history_rule(mut self, prefix: impl Into<String>, rule: HistoryRule) -> Self {
        self.settings.rules.add(prefix.into(), rule);
        self
    }

    /// How many bytes the history of all topics together may hold. Past
    /// it, events leave from the topics that hold the most (their oldest
    /// first), never a smaller topic's while a larger one holds more; the
    /// newest event always stays. Default: 32 MiB.
    ///
    /// An event counts about twice its size (name, data, ids, as
    /// [`max_event_size`](Self::max_event_size) counts it: its fields, and
    /// its stream bytes) plus a few hundred bytes; a WebSocket frame, built
    /// once its first session reads it, comes on top. A client whose resume
    /// point left the history gets the reset, as with the count, and a
    /// subscriber whose unread events left it is cut off and resumes:
    /// nothing is lost silently.
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.settings.history_bytes = bytes;
        self
    }

    /// Also drops events older than `age` from each topic's history
    /// (unless a [`history_rule`](Self::history_rule) says otherwise).
    /// Default: no age limit.
    pub fn history_ttl(mut self, age: Duration) -> Self {
        self.settings.rules.default.ttl = Some(age);
        self
    }

    /// How many events a subscriber may have unread before its stream is
    /// ended. The browser reconnects with `Last-Event-ID` and is replayed
    /// from history, so nothing is lost while the history covers the gap.
    /// Default: 1024.
    pub fn max_lag(mut self, events: usize) -> Self {
        self.settings.max_lag = events.max(1);
        self
    }

    /// The largest event `publish` accepts: its name, data and ids together,
    /// in bytes; a larger one is [`Error::TooLarge`]. Default: 1 MiB.
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.settings.max_event_size = bytes;
        self
    }

    /// How many streams may be open at once; past it, new streams are
    /// refused (`503 Service Unavailable` with `Retry-After`). A stream is
    /// counted once, from its first subscription to its end, under this
    /// limit and the per-user and per-address ones: an SSE or gRPC stream,
    /// or a WebSocket connection whatever topics it changes to
    /// ([`Publisher::subscriber_count`](crate::Publisher::subscriber_count)
    /// counts subscriptions: a WebSocket changing topics holds two for a
    /// moment). Default:
    /// 10,000 (about 210 MB of idle streams, and over HTTP/1.1 one
    /// descriptor each: half of a 20,000-descriptor process). `usize::MAX`
    /// for no limit.
    pub fn max_subscribers(mut self, streams: usize) -> Self {
        self.settings.max_subscribers = streams;
        self
    }

    /// Streams of a user (named by the authorization hook with
    /// [`Access::user`](crate::Access::user)) that join or leave a topic
    /// starting with `prefix` publish a `join` or `leave` event to it, whose
    /// data is the user: a room's followers see who comes and goes. Off by
    /// default; may be given several times. With a backplane the events go
    /// through it like any other.
    pub fn presence_events(mut self, prefix: impl Into<String>) -> Self {
        self.settings.presence_events.push(prefix.into());
        self
    }

    /// How many streams one user (as the authorization hook names it with
    /// [`Access::user`](crate::Access::user)) may have open at once on this
    /// instance; past it, new ones are refused with `429 Too Many Requests`
    /// and `Retry-After`. Default: no limit (`usize::MAX`): only a signed-in
    /// client has a user, and [`max_streams_per_address`](Self::max_streams_per_address)
    /// and [`max_subscribers`](Self::max_subscribers) bound it too.
    pub fn max_streams_per_user(mut self, streams: usize) -> Self {
        self.settings.max_streams_per_user = streams;
        self
    }

    /// How many streams one client address may have open at once on this
    /// instance; past it, `429` with `Retry-After`. The address is axum's
    /// `ConnectInfo<SocketAddr>` (serve with
    /// `into_make_service_with_connect_info`), or a `SocketAddr` in the
    /// request's extensions; a request without one is not counted. Default:
    /// 100: one HTTP/2 connection's streams, or a NAT of a dozen users with
    /// six tabs each, while one host takes at most 1% of
    /// [`max_subscribers`](Self::max_subscribers). `usize::MAX` for no limit.
    /// Behind a proxy, say where the client's address is
    /// ([`SseLayer::client_address`](crate::SseLayer::client_address)), or
    /// every client shares the proxy's.
    pub fn max_streams_per_address(mut self, streams: usize) -> Self {
        self.settings.max_streams_per_address = streams;
        self
    }

    /// Shares the hub's events with other instances through an engine:
    /// events published on any instance reach streams on every instance,
    /// ids are global, and a client resumes on whichever instance it
    /// reconnects to. See [`Backplane`](crate::backplane) for what an engine
    /// guarantees, and [`RedisBackplane`](crate::RedisBackplane).
    ///
    /// Publishing is the same call with or without one; with one, the
    /// [`Published`] an event returns resolves once the engine holds it.
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Some(Arc::new(backplane));
        self
    }

    /// How many bytes of events may wait for the backplane (accepted by
    /// `publish`, not yet taken by the engine: it is slow, hung or
    /// unreachable); past it `publish` is refused with [`Error::Backlog`]
    /// rather than holding more. Counted as [`max_event_size`](Self::max_event_size)
    /// counts an event, plus its topic and about 256 bytes; one event is
    /// always accepted, whatever its size. At most 16,384 events wait, too.
    /// Default: 32 MiB.
    pub fn backplane_backlog(mut self, bytes: usize) -> Self {
        self.settings.backplane_backlog = bytes;
        self
    }

    /// The hub. Its tasks (waking large topics, dropping aged events,
    /// reading the backplane) start on the Tokio runtime at hand, now or
    /// with its first subscriber.
    ///
    /// # Panics
    ///
    /// When [`try_build`](Self::try_build) refuses the settings (a history
    /// rule that makes no sense), with its message: a configuration mistake
    /// found when the app starts, as axum's router does with conflicting
    /// routes.
    pub fn build(self) -> Hub {
        match self.try_build() {
            Ok(hub) => hub,
            Err(e) => panic!("tower-sse: {e}"),
        }
    }

    /// The hub, or why its settings are refused: a history rule with an
    /// empty, repeated or impossible prefix, an age limit of zero, or a
    /// state topic that keeps nothing.
    pub fn try_build(mut self) -> Result<Hub, BuildError> {
        self.settings.rules.check()?;
        let replica = self.backplane.map(|backplane| {
            backplane.retain(self.settings.engine_retention());
            Replica::new(backplane, self.settings.backplane_backlog)
        });
        let hub = Hub {
            inner: Arc::new(Inner {
                core: Core::new(self.settings, replica.is_some()),
                replica,
                fan_out: Mutex::new(None),
                present: Mutex::default(),
                policy: self.policy.map(OnceLock::from).unwrap_or_default(),
            }),
        };
        hub.ensure_replica();
        if tokio::runtime::Handle::try_current().is_ok() {
            // Without a runtime now, the tasks start with the first stream.
            let _ = hub.ensure_fan_out();
        }
        Ok(hub)
    }
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("settings", &self.settings)
            .field("backplane", &self.backplane.is_some())
            .field("policy", &self.policy)
            .finish()
    }
}
