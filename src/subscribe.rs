//! [`Subscribe`]: a stream opened by code rather than by the layer's path —
//! a handler with its own route, extractors and checks, or a gRPC method.

use http::request::Parts;
use std::{fmt, sync::Arc};

use crate::{
    authorize::Access,
    config::Config,
    hub::{Hub, Resume},
    open::{self, Refusal},
    request,
    sse::{self, EventStream},
    stream::RecordStream,
};

/// A subscription about to open: its topics, its resume point, and the
/// request it answers. Get one from [`Publisher::subscribe`], or (feature
/// `axum`) as an extractor, which also takes the resume point from the
/// request's `Last-Event-ID` header (or `lastEventId` query parameter).
///
/// Opening runs the same step as the layer's own stream path: the layer's
/// authorization hook (when the subscription has a request head, see
/// [`request`](Subscribe::request)), its topic and subscriber limits, and
/// with a backplane the wait for this instance to catch up. The stream
/// always follows the default topic too, as every stream does.
///
/// With axum, a stream of one room under its own route:
///
/// ```
/// # #[cfg(feature = "axum")] {
/// use axum::{extract::Path, routing::get, Router};
/// use tower_sse::{EventStream, Refusal, SseLayer, Subscribe};
///
/// async fn room(Path(room): Path<String>, sub: Subscribe) -> Result<EventStream, Refusal> {
///     sub.topic(format!("room/{room}")).event_stream().await
/// }
///
/// let app: Router = Router::new()
///     .route("/rooms/{room}/events", get(room))
///     .layer(SseLayer::new("/events"));
/// # }
/// ```
///
/// [`Publisher::subscribe`]: crate::Publisher::subscribe
#[must_use]
pub struct Subscribe {
    hub: Hub,
    config: Arc<Config>,
    topics: Vec<String>,
    resume: Resume,
    parts: Option<Parts>,
    access: Option<Access>,
    /// Whether the request asked for each event's topic (`with=topic`), or
    /// the refusal of an unknown option.
    with_topic: Result<bool, Refusal>,
}

impl Subscribe {
    pub(crate) fn new(hub: Hub, config: Arc<Config>) -> Self {
        Subscribe {
            hub,
            config,
            topics: Vec::new(),
            resume: Resume::Live,
            parts: None,
            access: None,
            with_topic: Ok(false),
        }
    }

    /// Also follows `topic` (1 to 128 characters from
    /// `A-Z a-z 0-9 - _ . / : @ ~`; anything else refuses the stream with
    /// `400`).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topics.push(topic.into());
        self
    }

    /// Also follows each of `topics`.
    pub fn topics<I, T>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// Starts after the event with this id (a `Last-Event-ID`): the stream
    /// first replays what followed it, or starts with a reset when the
    /// history no longer covers it. Without it, the stream starts live.
    pub fn after(mut self, last_event_id: impl Into<String>) -> Self {
        self.resume = Resume::After(last_event_id.into());
        self
    }

    /// Answers the request with this head: resumes from its
    /// `Last-Event-ID` header (or `lastEventId` query parameter), sends each
    /// event's `topic:` line if it asks with `with=topic`, and gives
    /// the head to the layer's authorization hook, whose [`Access`] then
    /// decides the topics as on the layer's path (`403` for one it does not
    /// grant). The axum extractor does this.
    pub fn request(mut self, parts: &Parts) -> Self {
        self.resume = request::resume(parts);
        self.with_topic = request::with_topic(parts, &self.config.topic_param);
        self.parts = Some(parts.clone());
        self.access = None;
        self
    }

    /// Opens it with this [`Access`] rather than one from the layer's
    /// authorization hook (which then does not run): the topics it allows,
    /// the user it names (for presence, limits and
    /// [`Publisher::disconnect_user`](crate::Publisher::disconnect_user)),
    /// its expiry. For code that did its own authorization.
    pub fn access(mut self, access: Access) -> Self {
        self.parts = None;
        self.access = Some(access);
        self
    }

    /// Opens the subscription as an event stream (a response body).
    pub async fn event_stream(mut self) -> Result<EventStream, Refusal> {
        self.hub.encode_eagerly(&sse::ENCODING);
        let with_topic = std::mem::replace(&mut self.with_topic, Ok(false))?;
        let config = self.config.clone();
        let subscription = self.open().await?;
        Ok(EventStream::new(subscription, &config, with_topic))
    }

    /// Opens the subscription as a typed stream of records.
    pub async fn records(self) -> Result<RecordStream, Refusal> {
        Ok(RecordStream::new(self.open().await?))
    }

    async fn open(self) -> Result<crate::hub::Subscription, Refusal> {
        let (access, address) = match self.parts {
            Some(parts) => {
                let address = request::address(&self.config, &parts);
                (open::authorize(&self.config, parts).await?, address)
            }
            None => (self.access.unwrap_or_else(Access::all), None),
        };
        let topics = open::topics(
            &self.config,
            &access,
            self.topics.iter().map(String::as_str),
        )?;
        let owner = open::owner(&access, address)?;
        open::subscribe(&self.hub, &self.config, &topics, &self.resume, owner).await
    }
}

impl fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscribe")
            .field("topics", &self.topics)
            .field("resume", &self.resume)
            .field("request", &self.parts.as_ref().map(|p| &p.uri))
            .finish_non_exhaustive()
    }
}
