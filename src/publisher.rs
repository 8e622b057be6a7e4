//! [`Publisher`]: the handle every request handler gets to broadcast events
//! and to open streams of its own.

use std::{fmt, sync::Arc};

use crate::{
    config::{self, Config},
    error::Error,
    event::Event,
    hub::{
        control::{self, Control},
        BackplaneStatus, Hub,
    },
    published::Published,
    recent::{HistoryPage, HistoryQuery},
    record::Message,
    sse::RESET_EVENT,
    subscribe::Subscribe,
    topic,
};

/// Broadcasts events to every connected subscriber, and opens streams.
///
/// [`SseService`](crate::SseService) puts a `Publisher` into the extensions
/// of every request it passes on, so any handler can publish; background
/// tasks get one from [`SseLayer::publisher`](crate::SseLayer::publisher) or
/// [`Hub::publisher`]. Clones are cheap and share one hub.
///
/// Publishing checks the event and hands it to the hub, and returns: it never
/// waits for subscribers, and it costs the same with none or ten thousand of
/// them. The same call works with and without a backplane: the returned
/// [`Published`] may be awaited for the event's id once it is stored (with a
/// backplane, once the engine holds it), or dropped.
///
/// # Example
///
/// ```
/// # async fn run() -> Result<(), tower_sse::Error> {
/// use tower_sse::{Event, SseLayer};
///
/// let layer = SseLayer::new("/events");
/// let publisher = layer.publisher();
/// let id = publisher.publish(Event::default().event("tick").data("1"))?.await?;
/// let next = publisher.publish_to("orders/42", Event::default().data("paid"))?.await?;
/// assert!(next > id);
/// assert_eq!(publisher.subscriber_count(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    hub: Hub,
    /// The settings of streams it opens: its layer's.
    config: Arc<Config>,
}

impl Hub {
    /// A publisher of this hub. Streams it opens with
    /// [`subscribe`](Publisher::subscribe) go through the hub's
    /// authorization like every other ([`HubBuilder::authorize`](crate::HubBuilder::authorize)),
    /// with the default stream settings; the publisher a layer gives has the
    /// layer's settings.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.clone(), config::default())
    }
}

impl Publisher {
    pub(crate) fn new(hub: Hub, config: Arc<Config>) -> Self {
        Publisher { hub, config }
    }

    /// The settings of the streams it opens.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The hub it publishes to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Publishes `event` to every subscriber, whatever topics they follow.
    ///
    /// `Err` when the event is refused: invalid ([`Error::InvalidEventName`],
    /// [`Error::InvalidId`], ...), named `reset` or `tower-sse:…`, which the
    /// stream keeps for its own control events ([`Error::ReservedEventName`]),
    /// larger than
    /// [`HubBuilder::max_event_size`](crate::HubBuilder::max_event_size)
    /// ([`Error::TooLarge`]), the hub is closed ([`Error::Closed`]), or its
    /// backplane is down ([`Error::Backplane`]) or not keeping up
    /// ([`Error::Backlog`]). A refused event reaches no one.
    ///
    /// `Ok` when the hub took it: it reaches every subscriber that keeps up,
    /// and is in the history for those that reconnect. Without a backplane
    /// it is stored already; with one, await the [`Published`] to learn
    /// whether the engine took it (an event the engine then refuses whose
    /// `Published` was dropped is counted and logged as lost).
    pub fn publish(&self, event: Event) -> Result<Published, Error> {
        self.hub.publish(Message::new(None, unreserved(event)?)?)
    }

    /// Publishes `event` to the subscribers of `topic` only.
    ///
    /// A topic is 1 to 128 characters from `A-Z a-z 0-9 - _ . / : @ ~`
    /// (all of which stand unescaped in a URL query); anything else is
    /// [`Error::InvalidTopic`]. Publishing to a topic nobody follows costs
    /// little: the event is kept in the history for those who subscribe
    /// later with a `Last-Event-ID`.
    pub fn publish_to(&self, topic: &str, event: Event) -> Result<Published, Error> {
        self.hub
            .publish(Message::new(Some(topic), unreserved(event)?)?)
    }

    /// Ends every stream of `user` (as the authorization hook named it with
    /// [`Access::user`](crate::Access::user)) now — a logout, a ban — of
    /// every transport, and with a backplane on every instance: returns once
    /// the engine holds the order (each instance acts on it as it reads it,
    /// normally within milliseconds). Browsers reconnect and the hook runs
    /// again, so refuse the user there. WebSocket sessions close with code
    /// `4003`.
    pub async fn disconnect_user(&self, user: &str) -> Result<(), Error> {
        self.control(Control::EndUser(user.to_owned())).await
    }

    /// Ends every stream that follows `topic` now (a room closed), as
    /// [`disconnect_user`](Publisher::disconnect_user) does; WebSocket
    /// sessions close with code `4004`. Streams that reconnect follow it
    /// again unless the hook stops granting it. An invalid topic is
    /// [`Error::InvalidTopic`].
    pub async fn disconnect_topic(&self, topic: &str) -> Result<(), Error> {
        if !topic::is_valid(topic) {
            return Err(Error::InvalidTopic);
        }
        self.control(Control::EndTopic(topic.to_owned())).await
    }

    async fn control(&self, control: Control) -> Result<(), Error> {
        match self.hub.control(control)? {
            None => Ok(()),
            Some(published) => published.await.map(drop),
        }
    }

    /// Who follows `topic` on this instance: how many streams, and their
    /// users (distinct; the first 100 as they came, and how many in all).
    /// With a backplane this is this instance's share: a cluster-wide count
    /// needs every instance's, summed (e.g. each publishing its own to the
    /// app's store). An invalid topic is [`Error::InvalidTopic`].
    ///
    /// ```
    /// # async fn run(publisher: tower_sse::Publisher) -> Result<(), tower_sse::Error> {
    /// let here = publisher.presence("room/lobby")?;
    /// println!("{} here: {}", here.streams, here.users.join(", "));
    /// # Ok(()) }
    /// ```
    pub fn presence(&self, topic: &str) -> Result<Presence, Error> {
        if !topic::is_valid(topic) {
            return Err(Error::InvalidTopic);
        }
        let (streams, users, user_count) = self.hub.presence(topic, PRESENCE_USERS);
        Ok(Presence {
            streams,
            users,
            user_count,
        })
    }

    /// A receiver of how many streams follow `topic` on this instance,
    /// updated as they come and go, as
    /// [`watch_subscribers`](Publisher::watch_subscribers) does for all.
    pub fn watch_topic(&self, topic: &str) -> Result<tokio::sync::watch::Receiver<usize>, Error> {
        if !topic::is_valid(topic) {
            return Err(Error::InvalidTopic);
        }
        Ok(self.hub.watch_topic(topic))
    }

    /// A stream of this hub to open from code — a handler with a route of
    /// its own, a gRPC method — with the settings of the layer this
    /// publisher came from, admitted by the hub's authorization as every
    /// stream is (give it the caller's request, or an [`Access`](crate::Access)
    /// of your own). See [`Subscribe`].
    pub fn subscribe(&self) -> Subscribe {
        Subscribe::new(self.hub.clone(), self.config.clone())
    }

    /// The recent events of the default topic the history holds: the
    /// newest few, or those after an id. See [`history_of`](Self::history_of).
    pub async fn history(&self, query: HistoryQuery) -> Result<HistoryPage, Error> {
        Ok(self.hub.history(None, query).await)
    }

    /// The recent events of `topic` the history holds, oldest first: the
    /// newest few ([`HistoryQuery::last`]), or those after the id a client
    /// last saw ([`HistoryQuery::since`]) — what a stream resuming there
    /// would replay. For a page's first render, an API or a gRPC method.
    ///
    /// Reads this instance's history; with a backplane, from the engine
    /// when the memory does not cover the query (a freshly started
    /// instance, a quiet topic's events the byte budget dropped). At most
    /// [`MAX_HISTORY_READ`](crate::MAX_HISTORY_READ) events; the page
    /// says when it was cut ([`HistoryPage::clipped`]) and when events after
    /// the id may be gone ([`HistoryPage::reset`]). An invalid topic is
    /// [`Error::InvalidTopic`].
    pub async fn history_of(&self, topic: &str, query: HistoryQuery) -> Result<HistoryPage, Error> {
        if !topic::is_valid(topic) {
            return Err(Error::InvalidTopic);
        }
        Ok(self.hub.history(Some(topic), query).await)
    }

    /// How many events the history holds now, and about how many bytes (as
    /// [`HubBuilder::history_bytes`](crate::HubBuilder::history_bytes)
    /// counts them).
    pub fn history_size(&self) -> (usize, usize) {
        self.hub.history_size()
    }

    /// How many streams (of every transport) are open now.
    pub fn subscriber_count(&self) -> usize {
        self.hub.subscriber_count()
    }

    /// A receiver of the number of open streams, updated as streams open
    /// and close: to show how many are watching, or to start a costly
    /// producer only while someone listens.
    ///
    /// ```
    /// # async fn run(publisher: tower_sse::Publisher) {
    /// let mut count = publisher.watch_subscribers();
    /// // Wait for the first subscriber.
    /// count.wait_for(|n| *n > 0).await.unwrap();
    /// # }
    /// ```
    pub fn watch_subscribers(&self) -> tokio::sync::watch::Receiver<usize> {
        self.hub.watch_subscribers()
    }

    /// The state of the hub's backplane ([`BackplaneStatus::None`] without
    /// one): for a readiness check.
    pub fn backplane_status(&self) -> BackplaneStatus {
        self.hub.backplane_status()
    }

    /// The state of the hub's backplane as it changes: to wait until the
    /// hub reads the engine's log (before a readiness check says yes, or
    /// before publishing again after [`Error::Backplane`]).
    ///
    /// ```
    /// # async fn run(publisher: tower_sse::Publisher) {
    /// let mut status = publisher.watch_backplane();
    /// status.wait_for(|s| s.is_up()).await.ok();
    /// # }
    /// ```
    pub fn watch_backplane(&self) -> tokio::sync::watch::Receiver<BackplaneStatus> {
        self.hub.watch_backplane()
    }

    /// Ends every open stream but keeps the hub open: browsers reconnect by
    /// themselves (after their `retry` delay) and resume from their last
    /// event id, losing nothing the history still holds. Useful to move
    /// connections to other instances before a deploy, or to test a
    /// client's reconnection.
    pub fn disconnect_all(&self) {
        self.hub.disconnect_all();
    }

    /// Closes the hub: every open stream ends once it has sent what was
    /// already published, new streams are refused with `503`, and `publish`
    /// returns [`Error::Closed`].
    ///
    /// Call it when the server shuts down, so graceful shutdown does not
    /// wait forever for streams that never end:
    ///
    /// ```no_run
    /// # #[cfg(feature = "axum")]
    /// # async fn run(listener: tokio::net::TcpListener, app: axum::Router, layer: tower_sse::SseLayer) {
    /// let publisher = layer.publisher();
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async move {
    ///         tokio::signal::ctrl_c().await.ok();
    ///         publisher.close();
    ///     })
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    pub fn close(&self) {
        self.hub.close();
    }

    /// Whether both publish to the same hub.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn same_hub(&self, other: &Publisher) -> bool {
        self.hub.same(&other.hub)
    }

    /// Whether [`close`](Publisher::close) was called (or every handle dropped).
    pub fn is_closed(&self) -> bool {
        self.hub.is_closed()
    }
}

/// How many users [`Publisher::presence`] lists at most.
const PRESENCE_USERS: usize = 100;

/// Who follows a topic, as [`Publisher::presence`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Presence {
    /// Streams that follow the topic (of every transport; anonymous ones too).
    pub streams: usize,
    /// Their users, distinct, the first 100 in the order they came.
    pub users: Vec<String>,
    /// How many distinct users there are in all.
    pub user_count: usize,
}

/// `event`, unless its name is one the hub keeps for itself: the
/// [`RESET_EVENT`] a stream starts with (a forged one would make every
/// browser reload its state) and the `tower-sse:` control orders.
fn unreserved(event: Event) -> Result<Event, Error> {
    match &event.name {
        Some(name) if &**name == RESET_EVENT || name.starts_with(control::RESERVED) => {
            Err(Error::ReservedEventName)
        }
        _ => Ok(event),
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("subscribers", &self.subscriber_count())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(feature = "axum")]
mod axum_impl {
    use super::Publisher;
    use crate::subscribe::Subscribe;
    use axum_core::{
        extract::FromRequestParts,
        response::{IntoResponse, Response},
    };
    use http::{request::Parts, StatusCode};
    use std::fmt;

    /// Rejection of the [`Publisher`] and [`Subscribe`] extractors: the
    /// request did not pass through an [`SseLayer`](crate::SseLayer).
    /// Answers `500` with a message that says so.
    #[derive(Debug)]
    #[non_exhaustive]
    pub struct MissingPublisher;

    impl fmt::Display for MissingPublisher {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "no tower_sse::Publisher in the request extensions: \
                 add `.layer(SseLayer::new(\"/events\"))` to the router \
                 (after the routes that extract `Publisher` or `Subscribe`)",
            )
        }
    }

    impl std::error::Error for MissingPublisher {}

    impl IntoResponse for MissingPublisher {
        fn into_response(self) -> Response {
            (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for Publisher {
        type Rejection = MissingPublisher;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<Publisher>()
                .cloned()
                .ok_or(MissingPublisher)
        }
    }

    /// The layer's publisher, with the request's resume point and head (for
    /// the hub's authorization hook).
    impl<S: Send + Sync> FromRequestParts<S> for Subscribe {
        type Rejection = MissingPublisher;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            let publisher = parts
                .extensions
                .get::<Publisher>()
                .ok_or(MissingPublisher)?;
            Ok(publisher.subscribe().request(parts))
        }
    }
}

#[cfg(feature = "axum")]
pub use axum_impl::MissingPublisher;

/// The hubs of the layers a server ([`serve`](crate::serve)) served
/// requests through, to close on its graceful shutdown: each layer finds
/// this in its requests' extensions and adds its publisher once. Here, below
/// both the layer's service and the server, so neither imports the other.
#[cfg(feature = "serve")]
#[derive(Clone, Default)]
pub(crate) struct ServedHubs(Arc<std::sync::Mutex<Vec<Publisher>>>);

#[cfg(feature = "serve")]
impl ServedHubs {
    pub(crate) fn add(&self, publisher: &Publisher) {
        let mut hubs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !hubs.iter().any(|p| p.same_hub(publisher)) {
            hubs.push(publisher.clone());
        }
    }

    pub(crate) fn close(&self) {
        for publisher in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            publisher.close();
        }
    }
}
