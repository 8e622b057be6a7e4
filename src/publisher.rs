//! [`Publisher`]: the handle every request handler gets to broadcast events.

use std::{fmt, sync::Arc};

use crate::{
    event::Event,
    hub::{Hub, DEFAULT_TOPIC},
    subscribe::is_valid_topic,
    Error, EventId,
};

/// Broadcasts events to every connected subscriber.
///
/// [`SseService`](crate::SseService) puts a `Publisher` into the extensions
/// of every request it passes on, so any handler can publish; background
/// tasks get one from [`SseLayer::publisher`](crate::SseLayer::publisher).
/// Clones are cheap and share one hub.
///
/// Publishing encodes the event once, appends it to the hub's history and
/// returns: it never waits for subscribers, and it costs the same with none
/// or ten thousand of them. Subscribers are woken by a task of the hub.
///
/// When the last `Publisher` (including the ones inside layers and services)
/// is dropped, the hub is closed as by [`close`](Publisher::close).
///
/// # Example
///
/// ```
/// use tower_sse::{Event, SseLayer};
///
/// let layer = SseLayer::new("/events");
/// let publisher = layer.publisher();
/// let id = publisher.publish(Event::default().event("tick").data("1")).unwrap();
/// let next = publisher.publish_to("orders/42", Event::default().data("paid")).unwrap();
/// assert!(next > id);
/// assert_eq!(publisher.subscriber_count(), 0);
/// ```
#[derive(Clone)]
pub struct Publisher {
    handle: Arc<Handle>,
}

/// Closes the hub when the last publisher goes away.
struct Handle {
    hub: Arc<Hub>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.hub.close();
    }
}

impl Publisher {
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        Publisher {
            handle: Arc::new(Handle { hub }),
        }
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.handle.hub
    }

    /// Publishes `event` to every subscriber, whatever topics they follow.
    ///
    /// Returns the id the event got (or, if the event set its own with
    /// [`Event::id`], the hub's id that orders it). Errors: the event is
    /// invalid ([`Error::InvalidEventName`], [`Error::InvalidId`], ...),
    /// larger than [`SseLayer::max_event_size`](crate::SseLayer::max_event_size)
    /// ([`Error::TooLarge`]), or the hub is closed ([`Error::Closed`]).
    /// An event that was refused reaches no one; one that was accepted
    /// reaches every subscriber that keeps up, or is in the history for
    /// those that reconnect.
    pub fn publish(&self, event: Event) -> Result<EventId, Error> {
        self.hub().publish(DEFAULT_TOPIC, event)
    }

    /// Publishes `event` to the subscribers of `topic` only.
    ///
    /// A topic is 1 to 128 characters from `A-Z a-z 0-9 - _ . / : @ ~`
    /// (all of which stand unescaped in a URL query); anything else is
    /// [`Error::InvalidTopic`]. Publishing to a topic nobody follows costs
    /// little: the event is kept in the history for those who subscribe
    /// later with a `Last-Event-ID`.
    pub fn publish_to(&self, topic: &str, event: Event) -> Result<EventId, Error> {
        if !is_valid_topic(topic) {
            return Err(Error::InvalidTopic);
        }
        self.hub().publish(topic, event)
    }

    /// Publishes `event` to every subscriber and waits until it is accepted:
    /// through the backplane when the layer has one (the id comes from it,
    /// and an `Err` means no instance got the event), else as
    /// [`publish`](Publisher::publish) does.
    pub async fn send(&self, event: Event) -> Result<EventId, Error> {
        self.send_to_topic(DEFAULT_TOPIC, event).await
    }

    /// Publishes `event` to the subscribers of `topic` and waits until it is
    /// accepted; see [`send`](Publisher::send).
    pub async fn send_to(&self, topic: &str, event: Event) -> Result<EventId, Error> {
        if !is_valid_topic(topic) {
            return Err(Error::InvalidTopic);
        }
        self.send_to_topic(topic, event).await
    }

    async fn send_to_topic(&self, topic: &str, event: Event) -> Result<EventId, Error> {
        #[cfg(feature = "redis")]
        if let Some(link) = self.hub().backplane() {
            return link.publish(self.hub(), topic, event).await;
        }
        self.hub().publish(topic, event)
    }

    /// How many event streams are open now.
    pub fn subscriber_count(&self) -> usize {
        self.hub().subscriber_count()
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
        self.hub().watch_subscribers()
    }

    /// Ends every open stream but keeps the hub open: browsers reconnect by
    /// themselves (after their `retry` delay) and resume from their last
    /// event id, losing nothing the history still holds. Useful to move
    /// connections to other instances before a deploy, or to test a
    /// client's reconnection.
    pub fn disconnect_all(&self) {
        self.hub().disconnect_all();
    }

    /// Closes the hub: every open stream ends once it has sent what was
    /// already published, new streams are refused with `503`, and `publish`
    /// returns [`Error::Closed`].
    ///
    /// Call it when the server shuts down, so graceful shutdown does not
    /// wait forever for streams that never end:
    ///
    /// ```no_run
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
        self.hub().close();
    }

    /// Whether [`close`](Publisher::close) was called (or every handle dropped).
    pub fn is_closed(&self) -> bool {
        self.hub().is_closed()
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
    use axum_core::{
        extract::FromRequestParts,
        response::{IntoResponse, Response},
    };
    use http::{request::Parts, StatusCode};
    use std::fmt;

    /// Rejection of the [`Publisher`] extractor: the request did not pass
    /// through an [`SseLayer`](crate::SseLayer). Answers `500` with a message
    /// that says so.
    #[derive(Debug)]
    #[non_exhaustive]
    pub struct MissingPublisher;

    impl fmt::Display for MissingPublisher {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "no tower_sse::Publisher in the request extensions: \
                 add `.layer(SseLayer::new(\"/events\"))` to the router \
                 (after the routes that extract `Publisher`)",
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
}

#[cfg(feature = "axum")]
pub use axum_impl::MissingPublisher;
