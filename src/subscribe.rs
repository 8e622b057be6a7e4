//! [`Subscribe`]: a stream opened by code rather than by the layer's path —
//! a handler with its own route, extractors and checks, or a gRPC method.

use http::request::Parts;
use std::{fmt, sync::Arc};

use crate::{
    admission::{self, Credentials},
    authorize::Access,
    config::Config,
    hub::{Hub, Resume},
    observe::Stalled,
    refusal::Refusal,
    request,
    sse::{self, EventStream},
    stream::RecordStream,
    topic,
};

/// A subscription about to open: its topics, its resume point, and who
/// asks. Get one from [`Publisher::subscribe`], or (feature `axum`) as an
/// extractor, which also gives it the request's head (see
/// [`request`](Subscribe::request)).
///
/// Opening runs the same admission as the layer's own stream path: the
/// hub's authorization hook ([`HubBuilder::authorize`]) on the request head
/// it was given, the topics checked against what it grants, the layer's
/// topic limit, the hub's subscriber limits, and with a backplane the wait
/// for this instance to catch up. On a hub with a hook, a `Subscribe` with
/// neither a request head nor an [`access`](Subscribe::access) is refused
/// with `401`: no handle opens a stream around the hook by accident. The
/// stream always follows the default topic too, as every stream does.
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
/// [`HubBuilder::authorize`]: crate::HubBuilder::authorize
#[must_use]
pub struct Subscribe {
    hub: Hub,
    config: Arc<Config>,
    topics: Vec<String>,
    resume: Resume,
    parts: Option<Parts>,
    access: Option<Access>,
    /// Whether to add the topics of the request's query.
    query_topics: bool,
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
            query_topics: false,
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

    /// Also follows the topics named in the query of the request given with
    /// [`request`](Subscribe::request) (the extractor gives it), as the
    /// layer's own path does: `?topic=a&topic=b`, with the layer's
    /// [`topic_param`](crate::SseLayer::topic_param) and
    /// [`max_topics`](crate::SseLayer::max_topics). Off unless asked for: a
    /// handler usually decides its topics itself (from its route), and a
    /// client should not add to them unnoticed. Each still has to be granted
    /// by the hub's hook (`403` otherwise). Without a request, nothing is
    /// added.
    ///
    /// ```
    /// # #[cfg(feature = "axum")] {
    /// use tower_sse::{EventStream, Refusal, Subscribe};
    ///
    /// // GET /feed?topic=news&topic=sport
    /// async fn feed(sub: Subscribe) -> Result<EventStream, Refusal> {
    ///     sub.topics_from_query().event_stream().await
    /// }
    /// # }
    /// ```
    pub fn topics_from_query(mut self) -> Self {
        self.query_topics = true;
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
    /// event's `topic:` line if it asks with `with=topic`, and gives the
    /// head to the hub's authorization hook, whose [`Access`] then decides
    /// the topics as on the layer's path (`403` for one it does not grant).
    /// The axum extractor does this.
    pub fn request(mut self, parts: &Parts) -> Self {
        self.resume = request::resume(parts);
        self.with_topic = request::with_topic(parts, &self.config.topic_param);
        self.parts = Some(parts.clone());
        self.access = None;
        self
    }

    /// Answers this gRPC call (feature `tonic`): gives the hub's
    /// authorization hook a request head made of the call's metadata (as
    /// headers: `authorization`, cookies, your own keys), its extensions
    /// (TLS peer certificates, what interceptors put there), the
    /// caller's address (for
    /// [`max_streams_per_address`](crate::HubBuilder::max_streams_per_address));
    /// its method is `POST` and its URI `/` (tonic does not pass the path to
    /// the method). The resume point stays as [`after`](Subscribe::after)
    /// sets it. The hook's
    /// refusal converts into a `tonic::Status` with the hook's message
    /// (`?` does it).
    ///
    /// ```
    /// # async fn watch(publisher: tower_sse::Publisher, request: tonic::Request<()>) -> Result<(), tonic::Status> {
    /// let records = publisher.subscribe().grpc(&request).topic("orders").records().await?;
    /// # let _ = records; Ok(()) }
    /// ```
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn grpc<T>(mut self, request: &tonic::Request<T>) -> Self {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = http::Method::POST;
        parts.headers = request.metadata().as_ref().clone();
        parts.extensions = request.extensions().clone();
        if let Some(address) = request.remote_addr() {
            parts.extensions.insert(address);
        }
        self.parts = Some(parts);
        self.access = None;
        self
    }

    /// Opens it with this [`Access`] rather than one from the hub's
    /// authorization hook (which then does not run): the topics it allows,
    /// the user it names (for presence, limits and
    /// [`Publisher::disconnect_user`](crate::Publisher::disconnect_user)),
    /// its expiry. For code that did its own authorization, and the explicit
    /// way to open a stream of a hub with a hook without one:
    /// `access(Access::all())`.
    pub fn access(mut self, access: Access) -> Self {
        self.access = Some(access);
        self
    }

    /// Opens the subscription as an event stream (a response body).
    pub async fn event_stream(mut self) -> Result<EventStream, Refusal> {
        self.hub.encode_eagerly(&sse::ENCODING);
        let with_topic = std::mem::replace(&mut self.with_topic, Ok(false))?;
        let config = self.config.clone();
        // Set by `serve` if it closes the connection for a stall.
        let stalled = (self.parts.as_ref()).and_then(|p| p.extensions.get::<Stalled>().cloned());
        let subscription = self.open().await?;
        let mut stream = EventStream::new(subscription, &config, with_topic);
        if let Some(stalled) = stalled {
            stream.watched(stalled);
        }
        Ok(stream)
    }

    /// Opens the subscription as a typed stream of records.
    pub async fn records(self) -> Result<RecordStream, Refusal> {
        Ok(RecordStream::new(self.open().await?))
    }

    /// Parse, validate, admit, subscribe: the order of every transport.
    async fn open(mut self) -> Result<crate::hub::Subscription, Refusal> {
        if let (true, Some(parts)) = (self.query_topics, &self.parts) {
            let asked = request::parse(parts, &self.config.topic_param, self.config.max_topics)?;
            self.topics.extend(asked.topics);
        }
        if let Some(bad) = self.topics.iter().find(|t| !topic::is_valid(t)) {
            return Err(Refusal::invalid_topic(bad));
        }
        let credentials = match (self.access, self.parts) {
            (Some(access), parts) => {
                let address = parts.and_then(|parts| request::address(&self.config, &parts));
                Credentials::Granted(access, address)
            }
            (None, Some(parts)) => Credentials::Request(Box::new(parts)),
            (None, None) => Credentials::Nothing,
        };
        let admitted = admission::admit(&self.hub, &self.config, credentials).await?;
        let topics = admitted.grant(self.topics.iter().map(String::as_str))?;
        admitted.subscribe(&topics, &self.resume).await
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
