//! The hub: where events are numbered, kept as history and fanned out to
//! subscribers. It knows no transport and no engine by name.
//!
//! * [`state`]: ids, topics, appending, the subscriber count;
//! * [`history`]: each topic's ring and the eviction order across topics;
//! * [`registry`]: each topic's wakers and the fan-out task;
//! * [`subscription`]: a subscriber's cursors and the merge read;
//! * [`replica`]: publishing through an engine and reading its log back.

pub(crate) mod control;
mod history;
mod outbox;
mod presence;
mod registry;
mod replica;
mod rule;
mod settings;
mod start;
mod state;
mod store;
mod subscription;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};
use tokio::{sync::watch, task::JoinHandle};

pub use replica::BackplaneStatus;
pub use rule::{BuildError, HistoryRule};
pub(crate) use start::{Owner, Resume, StartKind, SubscribeError};
pub(crate) use subscription::{Ended, Lagged, Subscription};

use crate::{
    authorize::Policy,
    backplane::Backplane,
    error::Error,
    observe,
    published::Published,
    recent::{HistoryPage, HistoryQuery, MAX_HISTORY_READ},
    record::Encoding,
    record::Message,
};
use control::Control;
use replica::Replica;
use settings::Settings;
use state::Core;

/// An event hub: the history and subscribers that an [`SseLayer`], the
/// streams handlers open and every [`Publisher`] share.
///
/// [`SseLayer::new`] makes a hub with the default settings; build one with
/// [`Hub::builder`] to choose them, and hand it to the layers that serve it
/// with [`SseLayer::hub`]. A hub's settings are fixed once built, so no
/// layer reconfigures a hub another layer serves. Clones are cheap handles
/// to the same hub; when the last handle (hub or publisher, including those
/// inside layers and services) is dropped, the hub closes as by
/// [`Publisher::close`].
///
/// ```
/// use std::time::Duration;
/// use tower_sse::{Hub, SseLayer};
///
/// let hub = Hub::builder()
///     .history(4096)
///     .history_ttl(Duration::from_secs(600))
///     .max_lag(512)
///     .build();
/// let layer = SseLayer::new("/events").hub(&hub);
/// let publisher = hub.publisher(); // the same hub as layer.publisher()
/// # let _ = (layer, publisher);
/// ```
///
/// [`SseLayer`]: crate::SseLayer
/// [`SseLayer::new`]: crate::SseLayer::new
/// [`SseLayer::hub`]: crate::SseLayer::hub
/// [`Publisher`]: crate::Publisher
/// [`Publisher::close`]: crate::Publisher::close
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    replica: Option<Arc<Replica>>,
    fan_out: Mutex<Option<JoinHandle<()>>>,
    /// Open streams per user and announced topic: only a user's first
    /// stream on a topic announces `join`, and its last `leave`.
    present: Mutex<HashMap<presence::UserTopic, usize>>,
    /// Who decides what a stream may follow: set once (by the builder, or
    /// the layer that serves the hub), read by every transport's admission.
    policy: OnceLock<Policy>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.core.close();
    }
}

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
    /// refused (`503 Service Unavailable` with `Retry-After`). Default:
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

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// Whether both are handles of one hub.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn same(&self, other: &Hub) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// How its streams are authorized, once decided.
    pub(crate) fn policy(&self) -> Option<&Policy> {
        self.inner.policy.get()
    }

    /// Decides how its streams are authorized, unless that is decided
    /// already: then `Err` with the policy it has.
    pub(crate) fn set_policy(&self, policy: Policy) -> Result<(), &Policy> {
        let mut policy = Some(policy);
        let set = self
            .inner
            .policy
            .get_or_init(|| policy.take().unwrap_or(Policy::Open));
        match policy {
            None => Ok(()),
            Some(_) => Err(set),
        }
    }

    /// A hub with the default settings and no backplane.
    pub fn new() -> Hub {
        HubBuilder::default().build()
    }

    /// A builder to choose the hub's settings.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    fn ensure_replica(&self) {
        if let Some(replica) = &self.inner.replica {
            replica.ensure_running(&self.inner.core);
        }
    }

    /// Takes `message`: numbers and appends it, or queues it for the engine.
    pub(crate) fn publish(&self, message: Message) -> Result<Published, Error> {
        let published = match &self.inner.replica {
            None => self.inner.core.publish(message).map(Published::stored),
            Some(replica) => {
                replica.ensure_running(&self.inner.core);
                replica.publish(&self.inner.core, message)
            }
        };
        if published.is_ok() {
            observe::published();
        }
        published
    }

    /// Waits (briefly) until this instance has what a subscription resuming
    /// at `resume` needs from the engine; at once without one, or when the
    /// subscription would be refused anyway.
    pub(crate) async fn caught_up(&self, resume: &Resume) {
        if self.inner.core.refuses().is_some() {
            return;
        }
        if let Some(replica) = &self.inner.replica {
            self.ensure_replica();
            replica.caught_up(&self.inner.core, resume).await;
        }
    }

    /// Registers a subscriber of `topics` (and the default topic) from
    /// `resume`, for `owner`.
    pub(crate) fn subscribe(
        &self,
        topics: &[&str],
        resume: &Resume,
        owner: Owner,
    ) -> Result<Subscription, SubscribeError> {
        self.ensure_fan_out()?;
        self.ensure_replica();
        let user = owner.user.clone();
        let mut subscription = Subscription::open(&self.inner.core, topics, resume, owner)?;
        let prefixes = &self.inner.core.settings.presence_events;
        if let (Some(user), false) = (user, prefixes.is_empty()) {
            let announced: Vec<Arc<str>> = topics
                .iter()
                .filter(|t| prefixes.iter().any(|p| t.starts_with(p.as_str())))
                .map(|t| Arc::from(*t))
                .collect();
            if !announced.is_empty() {
                let first = self.inner.present(&user, &announced, true);
                presence::announce(self, &user, &first, "join");
                subscription.on_drop(Box::new(presence::Leave {
                    hub: Arc::downgrade(&self.inner),
                    user,
                    topics: announced,
                }));
            }
        }
        Ok(subscription)
    }

    /// Ends the streams `control` names: here at once without an engine;
    /// with one, on every instance as each reads it from the engine (the
    /// returned [`Published`] resolves once the engine holds it).
    pub(crate) fn control(&self, control: Control) -> Result<Option<Published>, Error> {
        match &self.inner.replica {
            None => {
                if self.inner.core.is_closed() {
                    return Err(Error::Closed);
                }
                self.inner.core.apply(&control);
                Ok(None)
            }
            Some(replica) => {
                replica.ensure_running(&self.inner.core);
                replica
                    .publish(&self.inner.core, control.message())
                    .map(Some)
            }
        }
    }

    /// Reads `topic`'s history (`None`: the default topic) as `query` asks.
    pub(crate) fn history(&self, topic: Option<&str>, query: HistoryQuery) -> HistoryPage {
        let limit = query.limit.min(MAX_HISTORY_READ);
        let page = self.inner.core.history(
            topic.unwrap_or(state::DEFAULT_TOPIC),
            query.since.as_deref(),
            limit,
        );
        HistoryPage {
            clipped: page.clipped || query.limit > limit && page.records.len() == limit,
            reset: page.gap,
            events: page.records,
        }
    }

    /// How many subscriptions of this instance follow `topic`, and their
    /// users: the first `limit`, and how many in all.
    pub(crate) fn presence(&self, topic: &str, limit: usize) -> (usize, Vec<String>, usize) {
        self.inner.core.presence(topic, limit)
    }

    pub(crate) fn watch_topic(&self, topic: &str) -> watch::Receiver<usize> {
        self.inner.core.watch_topic(topic)
    }

    /// Starts the task that wakes the readers of large topics, or restarts it
    /// if the runtime it ran on is gone.
    fn ensure_fan_out(&self) -> Result<(), SubscribeError> {
        let mut task = self.inner.fan_out.lock().unwrap_or_else(|e| e.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SubscribeError::NoRuntime)?;
        let core = self.inner.core.clone();
        let sweep_every = core.settings.sweep_interval();
        *task = Some(runtime.spawn(async move {
            let fan_out = core.fan_out.run(|| core.is_closed());
            // Topics with an age limit drop what aged out even when nothing
            // is published to them (memory; a resume checks ages itself).
            let sweep = async {
                let Some(every) = sweep_every else { return };
                loop {
                    tokio::select! {
                        () = core.closed() => return,
                        () = tokio::time::sleep(every) => core.expire(),
                    }
                }
            };
            tokio::join!(fan_out, sweep);
        }));
        Ok(())
    }

    /// Builds `encoding` for every event as it is published (the transports
    /// a layer serves), rather than by its first reader.
    pub(crate) fn encode_eagerly(&self, encoding: &'static Encoding) {
        self.inner.core.encode_eagerly(encoding);
    }

    pub(crate) fn has_backplane(&self) -> bool {
        self.inner.replica.is_some()
    }

    pub(crate) fn backplane_status(&self) -> BackplaneStatus {
        self.inner
            .replica
            .as_ref()
            .map_or(BackplaneStatus::None, |r| r.status())
    }

    pub(crate) fn watch_backplane(&self) -> watch::Receiver<BackplaneStatus> {
        match &self.inner.replica {
            Some(replica) => replica.watch_status(),
            None => watch::channel(BackplaneStatus::None).1,
        }
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.inner.core.subscriber_count()
    }

    pub(crate) fn history_size(&self) -> (usize, usize) {
        self.inner.core.history_size()
    }

    pub(crate) fn watch_subscribers(&self) -> watch::Receiver<usize> {
        self.inner.core.watch_subscribers()
    }

    pub(crate) fn disconnect_all(&self) {
        self.inner.core.disconnect_all();
    }

    pub(crate) fn close(&self) {
        self.inner.core.close();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.core.is_closed()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscriber_count())
            .field("closed", &self.is_closed())
            .field("backplane", &self.backplane_status())
            .finish()
    }
}
