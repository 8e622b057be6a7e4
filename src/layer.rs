//! [`SseLayer`]: where the stream is served and how it behaves.

use bytes::{BufMut, Bytes, BytesMut};
use http::{request::Parts, Response};
use std::{future::Future, sync::Arc, time::Duration};
use tower_layer::Layer;

use crate::{
    authorize::Authorize,
    hub::{Hub, Limits},
    Access, Publisher, SseService,
};

/// Serves a Server-Sent Events stream on one path of any tower service, and
/// gives every other request a [`Publisher`].
///
/// `GET` on the path opens an event stream; `HEAD` answers its headers;
/// any other method gets `405 Method Not Allowed`. Every other request goes
/// to the wrapped service with a [`Publisher`] in its extensions.
///
/// The layer owns the hub: every service it makes, every clone of it and
/// every publisher taken from it share that hub. Builder methods may be
/// called in any order, also after [`publisher`](SseLayer::publisher); the
/// hub's settings (`history`, `history_ttl`, `max_lag`, `max_event_size`,
/// `max_subscribers`) apply to the shared hub, the others to this layer and
/// the services it makes from then on.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "axum")] {
/// use axum::{routing::post, Router};
/// use std::time::Duration;
/// use tower_sse::{Event, Publisher, SseLayer};
///
/// async fn publish(publisher: Publisher, body: String) {
///     publisher.publish(Event::default().data(body)).ok();
/// }
///
/// # async fn run() {
/// let app = Router::new()
///     .route("/publish", post(publish))
///     .layer(SseLayer::new("/events").keep_alive(Duration::from_secs(20)));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SseLayer {
    config: Arc<Config>,
    limits: Limits,
    publisher: Publisher,
}

/// What the service needs to answer a stream request.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) path: Box<str>,
    pub(crate) keep_alive: Option<(Duration, Bytes)>,
    /// Sent first on every stream (the `retry:` hint), possibly empty.
    pub(crate) prelude: Bytes,
    pub(crate) topic_param: Box<str>,
    pub(crate) max_topics: usize,
    pub(crate) retry_after: Duration,
    pub(crate) authorize: Option<Authorize>,
    /// Where the WebSocket endpoint is served, if anywhere.
    #[cfg(feature = "ws")]
    pub(crate) websocket: Option<Box<str>>,
}

impl SseLayer {
    /// A layer serving the event stream at `path` (e.g. `"/events"`; a
    /// missing leading `/` is added), with a new hub.
    pub fn new(path: impl Into<String>) -> Self {
        let mut path: String = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let limits = Limits::default();
        SseLayer {
            config: Arc::new(Config {
                path: path.into(),
                keep_alive: Some((Duration::from_secs(15), comment("keep-alive"))),
                prelude: Bytes::new(),
                topic_param: "topic".into(),
                max_topics: 64,
                retry_after: Duration::from_secs(5),
                authorize: None,
                #[cfg(feature = "ws")]
                websocket: None,
            }),
            publisher: Publisher::new(Hub::new(&limits)),
            limits,
        }
    }

    /// Shares the event stream with other instances through Redis: events
    /// sent on any instance reach streams on every instance, ids are global,
    /// and a browser resumes on whichever instance it reconnects to. Publish
    /// with [`Publisher::send`]/[`send_to`](Publisher::send_to) (the
    /// synchronous `publish` returns [`Error::NeedsSend`](crate::Error::NeedsSend)).
    /// The history (its count; [`history_ttl`](SseLayer::history_ttl) is
    /// local only) is kept in the Redis Stream too. A hub keeps the first
    /// backplane it is given. See [`RedisBackplane`](crate::RedisBackplane).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn backplane(self, backplane: crate::RedisBackplane) -> Self {
        if !self.publisher.hub().set_backplane(backplane.into_link()) {
            tracing::warn!(
                "SseLayer::backplane: this layer's hub already has a backplane; keeping it"
            );
        }
        self
    }

    /// Also serves the hub over WebSocket at `path` (e.g. `"/ws"`), for
    /// clients that change topics without reconnecting or cannot use
    /// `EventSource`: same topics, same authorization hook and limits, same
    /// ids and resume guarantees. HTTP/1.1 `Upgrade` and HTTP/2 extended
    /// `CONNECT` (RFC 8441, when the server enables it) are accepted; the
    /// server must be hyper-based (axum, tonic, hyper-util).
    ///
    /// The initial topics and resume point come from the query as for the
    /// stream (`?topic=a&topic=b&lastEventId=42`, or the `Last-Event-ID`
    /// header). Then, in JSON text frames:
    ///
    /// * client → server: `{"type":"subscribe","topics":["a"]}`,
    ///   `{"type":"unsubscribe","topics":["a"]}`; either may carry
    ///   `"last_event_id":"42"` to (re)start after that id. Without it, the
    ///   session goes on right after the last event it sent, so the topics
    ///   kept lose nothing.
    /// * server → client: `{"type":"subscribed","topics":[…],"after":"41"}`
    ///   after each change (`after` is the id the session continues after),
    ///   `{"type":"reset","after":"41"}` before it when the history no longer
    ///   covers the resume point, and each event as
    ///   `{"type":"event","id":"42","event":"message","topic":"a","data":"…"}`
    ///   (the payload is built once per event and shared by all sessions).
    /// * Pings at the keep-alive interval. Close codes: `1002` protocol error
    ///   (malformed message, invalid topic), `1003` binary message, `1008`
    ///   topic not allowed by the hook or too many topics, `1009` message over
    ///   64 KiB, `1013` fell behind the lag bound (reconnect with
    ///   `lastEventId`), `1012` after [`Publisher::disconnect_all`], `1001`
    ///   when the hub closes. A bad handshake gets `400`/`405`/`426`, a hook
    ///   refusal its own response, `403` for a topic in the query it does not
    ///   grant, `503` past `max_subscribers`.
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn websocket(mut self, path: impl Into<String>) -> Self {
        let mut path: String = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        self.config().websocket = Some(path.into());
        self
    }

    /// A handle to publish from outside a request, e.g. a background task.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    fn limits(mut self, change: impl FnOnce(&mut Limits)) -> Self {
        change(&mut self.limits);
        self.publisher.hub().set_limits(&self.limits);
        self
    }

    /// Sends a comment when a stream has sent nothing for `interval`, so
    /// proxies and load balancers do not close it as idle. Default: 15 s.
    /// Real traffic postpones it; an idle stream costs one timer.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        let text = self.config().keep_alive.take().map(|(_, text)| text);
        self.config().keep_alive = Some((interval, text.unwrap_or_else(|| comment("keep-alive"))));
        self
    }

    /// The text of the keep-alive comment. Default: `keep-alive`. Line
    /// breaks make several comment lines.
    pub fn keep_alive_text(mut self, text: &str) -> Self {
        let interval = self
            .config()
            .keep_alive
            .as_ref()
            .map_or(Duration::from_secs(15), |(interval, _)| *interval);
        self.config().keep_alive = Some((interval, comment(text)));
        self
    }

    /// Sends no keep-alive comments.
    pub fn without_keep_alive(mut self) -> Self {
        self.config().keep_alive = None;
        self
    }

    /// Sends `retry: <ms>` first on every stream: how long the browser
    /// waits before reconnecting after the connection drops. Default: none
    /// (browsers wait about 3 s).
    pub fn retry(mut self, delay: Duration) -> Self {
        // Just the field: an event block without data dispatches nothing.
        self.config().prelude = format!("retry: {}\n\n", delay.as_millis()).into();
        self
    }

    /// How many events a subscriber may have unread before its stream is
    /// ended. The browser reconnects with `Last-Event-ID` and is replayed
    /// from history, so nothing is lost while the history covers the gap.
    /// Default: 1024. The hub keeps at least this many events.
    pub fn max_lag(self, events: usize) -> Self {
        self.limits(|l| l.max_lag = events.max(1))
    }

    /// How many recent events (of all topics together) the hub keeps, so a
    /// browser that reconnects with `Last-Event-ID` gets what it missed.
    /// Default: 1024 (the hub keeps at least [`max_lag`](SseLayer::max_lag)).
    pub fn history(self, events: usize) -> Self {
        self.limits(|l| l.history = events)
    }

    /// Also drops events older than `age` from the history. Default: no
    /// age limit.
    pub fn history_ttl(self, age: Duration) -> Self {
        self.limits(|l| l.history_ttl = Some(age))
    }

    /// The largest encoded event `publish` accepts, in bytes; a larger one
    /// is [`Error::TooLarge`](crate::Error::TooLarge). Default: 1 MiB.
    pub fn max_event_size(self, bytes: usize) -> Self {
        self.limits(|l| l.max_event_size = bytes)
    }

    /// How many streams may be open at once; past it, new streams get
    /// `503 Service Unavailable` with `Retry-After`. Default: no limit.
    pub fn max_subscribers(self, streams: usize) -> Self {
        self.limits(|l| l.max_subscribers = streams)
    }

    /// The query parameter that names a topic to follow
    /// (`/events?topic=a&topic=b`). Default: `topic`.
    pub fn topic_param(mut self, name: &str) -> Self {
        self.config().topic_param = name.into();
        self
    }

    /// Decides, for every stream request, which topics the client may
    /// follow, or answers it with a response of your own (`401`, `403`, a
    /// redirect...). Without a hook every topic is open to everyone.
    ///
    /// The hook gets the request head (method, URI, headers with cookies,
    /// extensions) by value and runs before the subscription; `HEAD`
    /// requests go through it too. A stream that asks for a topic the
    /// [`Access`] does not allow is refused with `403`. If the hook panics,
    /// that request gets `500` and the server goes on.
    ///
    /// ```
    /// use http::{header::COOKIE, request::Parts, Response, StatusCode};
    /// use tower_sse::{Access, SseLayer};
    ///
    /// let layer = SseLayer::new("/events").authorize(|parts: Parts| async move {
    ///     // A real app would look the session up; this trusts the cookie.
    ///     let user = parts
    ///         .headers
    ///         .get(COOKIE)
    ///         .and_then(|c| c.to_str().ok())
    ///         .and_then(|c| c.split("; ").find_map(|kv| kv.strip_prefix("user=")))
    ///         .map(str::to_owned);
    ///     match user {
    ///         Some(user) => Ok(Access::none().allow_prefix("room/").follow(format!("user/{user}"))),
    ///         None => Err(Response::builder()
    ///             .status(StatusCode::UNAUTHORIZED)
    ///             .body("sign in first\n".to_owned())
    ///             .unwrap()),
    ///     }
    /// });
    /// ```
    pub fn authorize<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Access, Response<String>>> + Send + 'static,
    {
        self.config().authorize = Some(Authorize(Arc::new(move |parts| Box::pin(hook(parts)))));
        self
    }

    /// How many topics one stream may follow; more is `400 Bad Request`.
    /// Default: 64.
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.config().max_topics = topics;
        self
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = SseService<S>;

    fn layer(&self, inner: S) -> SseService<S> {
        SseService::new(inner, self.config.clone(), self.publisher.clone())
    }
}

/// Encodes `text` as one or more comment lines ending the block.
fn comment(text: &str) -> Bytes {
    let mut buf = BytesMut::new();
    for line in text.split(['\n', '\r']) {
        buf.put_slice(b":");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}
