//! [`Access`]: what the authorization hook grants a client.

use http::{request::Parts, Response};
use std::{fmt, future::Future, pin::Pin, sync::Arc};

/// What the hook answers: the client's access, or a response to send
/// instead (e.g. `401` or `403`).
pub(crate) type Decision = Result<Access, Response<String>>;

pub(crate) type DecisionFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// The authorization hook set with [`SseLayer::authorize`](crate::SseLayer::authorize).
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

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorize(..)")
    }
}

/// The topics a client may follow, as granted by the hook given to
/// [`SseLayer::authorize`](crate::SseLayer::authorize).
///
/// A stream that asks (in its query) for a topic it may not follow is
/// refused with `403 Forbidden`. The default topic, which
/// [`Publisher::publish`](crate::Publisher::publish) sends to, is always
/// followed.
///
/// ```
/// use tower_sse::Access;
///
/// // Any public room, plus this user's private topic without asking for it.
/// let access = Access::none().allow_prefix("room/").follow("user/alice");
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
