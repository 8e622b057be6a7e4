//! [`SseLayer`]: where the stream is served and how it behaves.

use http::request::Parts;
use std::{sync::Arc, time::Duration};
use tower_layer::Layer;

mod policy;

use crate::{
    authorize::Policy,
    client::{ClientScript, Defaults},
    config::{ClientAddress, Config},
    hub::Hub,
    publisher::Publisher,
    service::{Routes, SseService},
    sse, wire,
};

/// Serves a Server-Sent Events stream on one path of any tower service, and
/// gives every other request a [`Publisher`].
///
/// `GET` on the path opens an event stream; `HEAD` answers its headers;
/// any other method gets `405 Method Not Allowed`. Every other request goes
/// to the wrapped service with a [`Publisher`] in its extensions (which also
/// opens streams under routes of your own: [`Subscribe`](crate::Subscribe)).
///
/// The layer holds configuration and a handle to its [`Hub`]: every service
/// it makes, every clone of it and every publisher taken from it share that
/// hub. [`SseLayer::new`] makes a hub with the default settings; give it
/// one built with [`Hub::builder`] (history, lag bound, limits, backplane)
/// with [`hub`](SseLayer::hub). The builder methods here set how this
/// layer's streams behave, and change no other layer.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "axum")] {
/// use axum::{routing::post, Router};
/// use std::time::Duration;
/// use tower_sse::{Event, Hub, Publisher, SseLayer};
///
/// async fn publish(publisher: Publisher, body: String) {
///     publisher.publish(Event::default().data(body)).ok();
/// }
///
/// # async fn run() {
/// let hub = Hub::builder().history(4096).build();
/// let app = Router::new()
///     .route("/publish", post(publish))
///     .layer(SseLayer::new("/events").hub(&hub).keep_alive(Duration::from_secs(20)));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SseLayer {
    path: Box<str>,
    /// Whether the layer serves the stream at `path` (else the app does).
    serve_stream: bool,
    /// The policy set through this layer, set on every hub it is given.
    policy: Option<Policy>,
    websocket: Option<Box<str>>,
    /// The browser module, made again when a path it names changes.
    client: Option<Arc<ClientScript>>,
    config: Arc<Config>,
    hub: Hub,
}

/// `path` with a leading `/`.
fn absolute(path: String) -> Box<str> {
    if path.starts_with('/') {
        path.into()
    } else {
        format!("/{path}").into()
    }
}

impl SseLayer {
    /// A layer serving the event stream at `path` (e.g. `"/events"`; a
    /// missing leading `/` is added), with a new hub of default settings.
    pub fn new(path: impl Into<String>) -> Self {
        SseLayer {
            path: absolute(path.into()),
            serve_stream: true,
            policy: None,
            websocket: None,
            client: None,
            config: Arc::new(Config::default()),
            hub: Hub::new(),
        }
        .hub_ready()
    }

    /// Serves `hub` instead of the layer's own: layers (and clones) given
    /// the same hub serve the same events. Build one with [`Hub::builder`]
    /// to choose its history, lag bound, limits and backplane.
    ///
    /// # Panics
    ///
    /// When an authorization policy was set on this layer
    /// ([`authorize`](SseLayer::authorize), [`open_access`](SseLayer::open_access))
    /// and `hub` has another one: a hub has one policy.
    pub fn hub(mut self, hub: &Hub) -> Self {
        self.hub = hub.clone();
        self.apply_policy().hub_ready()
    }

    /// Does not serve the event stream at the layer's path: the app serves
    /// it (or streams under routes of its own) with handlers that open a
    /// [`Subscribe`](crate::Subscribe), so no stream opens where the app did
    /// not say. The path still names the stream for the
    /// [`client_script`](SseLayer::client_script), and the layer still
    /// serves its WebSocket and script paths if set, and gives every request
    /// a [`Publisher`].
    ///
    /// ```
    /// # #[cfg(feature = "axum")] {
    /// use axum::{routing::get, Router};
    /// use tower_sse::{EventStream, Refusal, SseLayer, Subscribe};
    ///
    /// async fn events(sub: Subscribe) -> Result<EventStream, Refusal> {
    ///     sub.topics_from_query().event_stream().await
    /// }
    ///
    /// let app: Router = Router::new()
    ///     .route("/events", get(events))
    ///     .layer(SseLayer::new("/events").without_stream_path());
    /// # }
    /// ```
    pub fn without_stream_path(mut self) -> Self {
        self.serve_stream = false;
        self
    }

    /// The hub builds each event's stream bytes as it is published.
    fn hub_ready(self) -> Self {
        self.hub.encode_eagerly(&sse::ENCODING);
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
        self.websocket = Some(absolute(path.into()));
        self.client_ready()
    }

    /// Also serves, at `path` (e.g. `"/events.js"`), a small ES module
    /// that reads this layer's stream in the browser, so one connection
    /// serves every tab of the site: the tabs share it through a
    /// `SharedWorker` (or a tab elected with Web Locks relays it to the
    /// others over `BroadcastChannel`). Many subscriptions in a page share
    /// it too, each getting only its topics' events.
    ///
    /// The module knows this layer's stream path, WebSocket path and topic
    /// parameter, so `connect()` needs no arguments. It reconnects with
    /// `Last-Event-ID` (no loss, no duplicate, also when topics change or
    /// the tab holding the connection closes), reports the `reset` event,
    /// its state (`connecting`, `live`, `down`) and errors, and after a
    /// refusal (`401`, `403`, `429`, `503`) or a network error retries with
    /// exponential backoff and jitter, honouring `Retry-After`. With
    /// [`websocket`](SseLayer::websocket), `connect({ transport:
    /// "websocket" })` gives the same API over WebSocket.
    ///
    /// `GET` and `HEAD` get the module (`text/javascript`) with a strong
    /// `ETag` and `cache-control: no-cache`, so browsers revalidate it and
    /// get `304 Not Modified` while it is unchanged; other methods get
    /// `405`. The path must differ from the stream's and the WebSocket's.
    ///
    /// ```
    /// use tower_sse::SseLayer;
    ///
    /// let layer = SseLayer::new("/events").client_script("/events.js");
    /// ```
    ///
    /// ```js
    /// import { connect } from "/events.js";
    ///
    /// const hub = connect(); // or connect({ transport: "websocket" })
    /// const sub = hub.subscribe(["room/general"], {
    ///   message(e) { console.log(e.topic, e.event, e.data, e.id); },
    ///   reset() { reloadTheRoom(); },        // the history no longer covered the gap
    ///   state(s) { showStatus(s); },         // "connecting", "live" or "down"
    ///   error(err) { console.warn(err.message, err.status, err.retryIn); },
    /// });
    /// sub.close();
    /// ```
    ///
    /// The module asks the stream for each event's topic with `with=topic`
    /// (see the crate docs, "Topics") to route events to subscriptions;
    /// events of the default topic, and of topics the authorization hook
    /// follows without being asked ([`Access::follow`](crate::Access::follow)), go to every
    /// subscription. The subscriptions share one stream, so a topic the
    /// hook refuses (`403`) keeps it from opening for all of them: subscribe
    /// to the topics the user may follow.
    pub fn client_script(mut self, path: impl Into<String>) -> Self {
        let path = absolute(path.into());
        self.client = Some(Arc::new(ClientScript::new(&path, &self.defaults())));
        self
    }

    /// What the browser module is told of this layer.
    fn defaults(&self) -> Defaults<'_> {
        Defaults {
            stream: &self.path,
            websocket: self.websocket.as_deref(),
            topic_param: &self.config.topic_param,
        }
    }

    /// Makes the browser module again after a path it names changed.
    fn client_ready(mut self) -> Self {
        if let Some(client) = &self.client {
            let client = ClientScript::new(&client.path, &self.defaults());
            self.client = Some(Arc::new(client));
        }
        self
    }

    /// A handle to publish from outside a request, e.g. a background task
    /// (streams it opens have this layer's settings as they are now).
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.hub.clone(), self.config.clone())
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Fewer writes under load: after a stream (or WebSocket session)
    /// writes, it collects what arrives for up to `max_delay` and sends it
    /// in its next write. An event that finds the stream idle longer than
    /// that still goes out at once, and a stream catching up (its previous
    /// write full) or behind a burst (its previous write carried 4 events
    /// or more: it batches by itself) does not wait: there the window
    /// would only add a timer per stream. Each write is a system call and most of a
    /// busy server's CPU (see BENCHMARKS.md): at 100 events/s per stream,
    /// `coalesce(Duration::from_millis(20))` makes about 50 writes a second
    /// instead of 100, for at most 20 ms more latency. Events wait unread
    /// during a window, so keep `max_delay` × the events a stream gets per
    /// second well under the hub's `max_lag`, or busy streams are cut off
    /// for lagging sooner. Default: off (every event is written as soon as
    /// it is published).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::SseLayer;
    ///
    /// let layer = SseLayer::new("/events").coalesce(Duration::from_millis(20));
    /// ```
    pub fn coalesce(mut self, max_delay: Duration) -> Self {
        self.config().coalesce = (!max_delay.is_zero()).then_some(max_delay);
        self
    }

    /// How long a WebSocket session may wait for the client to take what it
    /// writes (an event, a ping) before it ends, counted as having fallen
    /// behind: the client resumes with `last_event_id`. It holds whether or
    /// not the client still answers pings. Event streams served by
    /// `tower_sse::serve` (feature `serve`) have the server's own,
    /// `Serve::write_stall_timeout`. Default: 10 s.
    pub fn write_stall_timeout(mut self, timeout: Duration) -> Self {
        self.config().write_stall = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sends a comment when a stream has sent nothing for `interval`, so
    /// proxies and load balancers do not close it as idle (a WebSocket
    /// session sends a ping instead). Default: 15 s. Real traffic postpones
    /// it; an idle stream costs one timer.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        let text = self.config().keep_alive.take().map(|(_, text)| text);
        self.config().keep_alive = Some((
            interval,
            text.unwrap_or_else(|| wire::comment_block("keep-alive")),
        ));
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
        self.config().keep_alive = Some((interval, wire::comment_block(text)));
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

    /// The query parameter that names a topic to follow
    /// (`/events?topic=a&topic=b`). Default: `topic`.
    pub fn topic_param(mut self, name: &str) -> Self {
        self.config().topic_param = name.into();
        self.client_ready()
    }

    /// How many topics one stream may ask for; more is `400 Bad Request`.
    /// Default: 64.
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.config().max_topics = topics;
        self
    }

    /// Finds the client's address in a request, for
    /// [`HubBuilder::max_streams_per_address`](crate::HubBuilder::max_streams_per_address):
    /// behind a proxy, from the header it sets (and trusts). Default: axum's
    /// `ConnectInfo<SocketAddr>` (feature `axum`), else a `SocketAddr` in the
    /// request's extensions.
    ///
    /// ```
    /// use tower_sse::SseLayer;
    ///
    /// // Behind a proxy that sets `X-Real-IP`.
    /// let layer = SseLayer::new("/events").client_address(|parts| {
    ///     parts.headers.get("x-real-ip")?.to_str().ok()?.parse().ok()
    /// });
    /// ```
    pub fn client_address<F>(mut self, find: F) -> Self
    where
        F: Fn(&Parts) -> Option<std::net::IpAddr> + Send + Sync + 'static,
    {
        self.config().client_address = Some(ClientAddress(Arc::new(find)));
        self
    }

    /// The `Retry-After` of a `503` (past `max_subscribers`, or while the
    /// hub closes) and of a `429` (past a per-user or per-address limit).
    /// Default: 5 s.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.config().retry_after = delay;
        self
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = SseService<S>;

    /// # Panics
    ///
    /// When two of the paths the layer serves are the same (the stream's,
    /// the WebSocket's, the client script's): one would hide the other.
    /// Like a router's conflicting routes, it is found when the app is
    /// built, before it serves anything.
    fn layer(&self, inner: S) -> SseService<S> {
        let client = self.client.as_ref().map(|c| &*c.path);
        let websocket = self.websocket.as_deref();
        let clash = websocket == Some(&*self.path)
            || client == Some(&*self.path)
            || (client.is_some() && client == websocket);
        assert!(
            !clash,
            "SseLayer serves one path twice: the stream at {:?}, WebSocket at {websocket:?}, \
             the client script at {client:?}; give each its own path",
            self.path
        );
        let routes = Routes {
            stream: self.serve_stream.then(|| self.path.clone()),
            websocket: self.websocket.clone(),
            client: self.client.clone(),
        };
        SseService::new(inner, Arc::new(routes), self.publisher())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Inner;

    #[test]
    #[should_panic(expected = "serves one path twice")]
    fn a_client_script_on_the_stream_path_is_refused_when_the_app_is_built() {
        let _ = SseLayer::new("/events")
            .client_script("/events")
            .layer(Inner);
    }

    #[cfg(feature = "ws")]
    #[test]
    #[should_panic(expected = "serves one path twice")]
    fn a_websocket_on_the_stream_path_is_refused_when_the_app_is_built() {
        let _ = SseLayer::new("/events").websocket("/events").layer(Inner);
    }

    #[test]
    fn distinct_paths_are_served() {
        let layer = SseLayer::new("/events").client_script("/events.js");
        #[cfg(feature = "ws")]
        let layer = layer.websocket("/ws");
        let _ = layer.layer(Inner);
    }
}
