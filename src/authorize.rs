//! [`Access`]: what the authorization hook grants a client, and the hub's
//! [`Policy`]: who decides it. A leaf (it imports nothing of the crate), so
//! the hub can hold the policy without naming a transport.

use http::{request::Parts, Response};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// What the hook answers: the client's access, or a response to send
/// instead (e.g. `401` or `403`).
pub(crate) type Decision = Result<Access, Response<String>>;

pub(crate) type DecisionFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// The authorization hook of a hub ([`HubBuilder::authorize`](crate::HubBuilder::authorize),
/// or [`SseLayer::authorize`](crate::SseLayer::authorize) on the hub it serves).
#[derive(Clone)]
pub(crate) struct Authorize(pub(crate) Arc<dyn Fn(Parts) -> DecisionFuture + Send + Sync>);

impl Authorize {
    pub(crate) fn new<F, Fut>(hook: F) -> Self
    where
        F: Fn(Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Decision> + Send + 'static,
    {
        Authorize(Arc::new(move |parts| Box::pin(hook(parts))))
    }
}

/// How a hub decides what a stream may follow: set once per hub, so every
/// transport and every handle (a layer's, [`Hub::publisher`](crate::Hub::publisher)'s)
/// runs the same decision.
#[derive(Clone, Debug)]
pub(crate) enum Policy {
    /// The app's hook decides, from the request head.
    Hook(Authorize),
    /// Every topic is open to every client: the app said so.
    Open,
}

impl Policy {
    /// Whether both are the same decision (one hook's clones, or both open).
    pub(crate) fn same(&self, other: &Policy) -> bool {
        match (self, other) {
            (Policy::Hook(a), Policy::Hook(b)) => Arc::ptr_eq(&a.0, &b.0),
            (Policy::Open, Policy::Open) => true,
            _ => false,
        }
    }
}

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorize(..)")
    }
}

/// What a hub's authorization hook ([`HubBuilder::authorize`](crate::HubBuilder::authorize),
/// [`SseLayer::authorize`](crate::SseLayer::authorize)) grants a client: the
/// topics it may follow, who it is, and until when; or what code gives a
/// stream it opens itself ([`Subscribe::access`](crate::Subscribe::access)).
///
/// A stream that asks (in its query) for a topic it may not follow is
/// refused with `403 Forbidden`. The default topic, which
/// [`Publisher::publish`](crate::Publisher::publish) sends to, is always
/// followed.
///
/// A stream of a [`user`](Access::user) counts towards that user's limit
/// and presence, and ends with
/// [`Publisher::disconnect_user`](crate::Publisher::disconnect_user); one
/// with an [expiry](Access::expires_at) ends at that instant (the browser
/// reconnects and the hook runs again), and one already expired is refused
/// with `401`.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::Access;
///
/// // Any public room, plus this user's private topic without asking for it,
/// // for as long as the session is valid.
/// let access = Access::none()
///     .allow_prefix("room/")
///     .follow("user/alice")
///     .user("alice")
///     .expires_in(Duration::from_secs(3600));
/// assert!(access.allows("room/general"));
/// assert!(access.allows("user/alice"));
/// assert!(!access.allows("user/bob"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Access {
    all: bool,
    topics: Vec<String>,
    prefixes: Vec<String>,
    follow: Vec<String>,
    user: Option<String>,
    expires: Option<SystemTime>,
}

impl Access {
    /// Any topic the client asks for.
    pub fn all() -> Self {
        Access {
            all: true,
            ..Access::default()
        }
    }

    /// No topic but the default one (add some with the methods below).
    pub fn none() -> Self {
        Access::default()
    }

    /// Only these topics (exact names).
    pub fn only<I, T>(topics: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Access {
            topics: topics.into_iter().map(Into::into).collect(),
            ..Access::default()
        }
    }

    /// Also every topic that starts with `prefix`.
    pub fn allow_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }

    /// Also follows `topic`, whether or not the client asked for it: the
    /// way to give a user a private topic named after the session.
    pub fn follow(mut self, topic: impl Into<String>) -> Self {
        self.follow.push(topic.into());
        self
    }

    /// The stream belongs to `user` (an id of the app's: a name, a number,
    /// a session's subject): for presence, per-user limits and
    /// [`Publisher::disconnect_user`](crate::Publisher::disconnect_user).
    /// Nothing secret: presence lists it.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The stream ends at `at` (a session's or token's expiry): the client
    /// reconnects and the hook decides again. WebSocket sessions close with
    /// code `4001`. An expiry already past refuses the stream with `401`.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires = Some(at);
        self
    }

    /// The stream ends `after` from now; see [`expires_at`](Access::expires_at).
    pub fn expires_in(self, after: Duration) -> Self {
        self.expires_at(SystemTime::now() + after)
    }

    pub(crate) fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub(crate) fn expiry(&self) -> Option<SystemTime> {
        self.expires
    }

    /// Whether the client may follow `topic`.
    pub fn allows(&self, topic: &str) -> bool {
        self.all
            || self.topics.iter().any(|t| t == topic)
            || self.follow.iter().any(|t| t == topic)
            || self.prefixes.iter().any(|p| topic.starts_with(p.as_str()))
    }

    pub(crate) fn followed(&self) -> &[String] {
        &self.follow
    }
}
