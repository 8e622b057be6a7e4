//! The hub: where events are numbered, kept as history and fanned out to
//! subscribers. It knows no transport and no engine by name.
//!
//! * [`state`]: ids, topics, appending, the subscriber count;
//! * [`history`]: each topic's ring and the eviction order across topics;
//! * [`registry`]: each topic's wakers and the fan-out task;
//! * [`subscription`]: a subscriber's cursors and the merge read;
//! * [`replica`]: publishing through an engine and reading its log back.

mod builder;
pub(crate) mod control;
mod history;
#[cfg(all(test, loom))]
mod loom_model;
mod outbox;
mod presence;
mod registry;
mod replica;
mod rule;
mod seats;
mod settings;
mod start;
mod state;
mod store;
mod subscription;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, OnceLock},
};
use tokio::{sync::watch, task::JoinHandle};

pub use builder::HubBuilder;
pub use replica::BackplaneStatus;
pub use rule::{BuildError, HistoryRule};
pub(crate) use seats::{Owner, Seat};
pub(crate) use start::{Resume, StartKind, SubscribeError};
pub(crate) use subscription::{Ended, Lagged, Subscription};

use crate::{
    authorize::Policy,
    error::Error,
    observe,
    published::Published,
    recent::{HistoryPage, HistoryQuery, MAX_HISTORY_READ},
    record::Encoding,
    record::Message,
};
use control::Control;
use replica::Replica;
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
    pub(crate) async fn caught_up(&self, topics: &[&str], resume: &Resume) {
        if self.inner.core.refuses().is_some() {
            return;
        }
        if let Some(replica) = &self.inner.replica {
            self.ensure_replica();
            replica.caught_up(&self.inner.core, topics, resume).await;
        }
    }

    /// A seat under the hub's limits (in all, per user, per address) for a
    /// stream of `user` from `address`: taken once per stream (a WebSocket
    /// connection's, for all its subscriptions), before it waits for the
    /// engine.
    pub(crate) fn seat(
        &self,
        user: Option<Arc<str>>,
        address: Option<std::net::IpAddr>,
    ) -> Result<Arc<Seat>, SubscribeError> {
        self.inner.core.seats.take(user, address).map(Arc::new)
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

    /// Reads `topic`'s history (`None`: the default topic) as `query` asks:
    /// from memory, or from the engine when the memory does not cover it
    /// (events after the id may have left it, or it holds fewer than asked
    /// and some left).
    pub(crate) async fn history(&self, topic: Option<&str>, query: HistoryQuery) -> HistoryPage {
        let limit = query.limit.min(MAX_HISTORY_READ);
        let page = self.inner.core.history(
            topic.unwrap_or(state::DEFAULT_TOPIC),
            query.since.as_deref(),
            limit,
        );
        if let (Some(replica), true) = (&self.inner.replica, page.gap || page.partial) {
            self.ensure_replica();
            if let Some(page) = replica
                .history(&self.inner.core, topic, &query, limit)
                .await
            {
                return page;
            }
        }
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
