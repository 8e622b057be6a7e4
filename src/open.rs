//! Opening a subscription: the one step every transport takes — the
//! authorization hook, the topics checked against what it grants, the wait
//! for an engine to catch up, the hub's own limits — so a rule added here
//! holds for the layer's stream, its WebSocket and streams handlers open.

use http::{header, request::Parts, HeaderValue, Response, StatusCode};
use std::{
    borrow::Cow,
    fmt,
    net::IpAddr,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::Poll,
    time::{Duration, SystemTime},
};
use tokio::time::Instant;

use crate::{
    authorize::Access,
    config::Config,
    hub::{Hub, Owner, Resume, SubscribeError, Subscription},
    observe, topic,
};

/// Why a stream was not opened, and the HTTP answer that says so: `400` for
/// a bad request, `403` for a topic the authorization hook does not grant,
/// `503` with `Retry-After` past a limit or while the hub closes, or the
/// hook's own response.
///
/// A handler that opens a stream returns it as its error (it is an axum
/// `IntoResponse` with the `axum` feature, and converts into an
/// `http::Response<String>`).
#[derive(Debug)]
pub struct Refusal {
    kind: Kind,
    // Boxed: a refusal travels in `Result`s of the open path.
    response: Box<Response<String>>,
}

/// What kind of refusal, for transports that answer other than with HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A malformed request: an invalid topic, say.
    Invalid,
    /// More topics than allowed.
    TooManyTopics,
    /// A topic the hook does not grant.
    Forbidden,
    /// Past a limit, or the hub is closing: try again later.
    Unavailable,
    /// The access granted is already expired.
    Expired,
    /// The hook answered with its own response.
    Hook,
    /// A fault on the server's side.
    Internal,
}

impl Refusal {
    fn new(kind: Kind, status: StatusCode, message: String) -> Refusal {
        observe::refused(status.as_u16());
        let mut response = Response::new(message + "\n");
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Refusal {
            kind,
            response: Box::new(response),
        }
    }

    pub(crate) fn invalid_topic(topic: &str) -> Refusal {
        Refusal::new(
            Kind::Invalid,
            StatusCode::BAD_REQUEST,
            format!(
                "invalid topic {:?}: use 1 to {} characters from {}",
                truncate(topic),
                topic::MAX_LEN,
                topic::ALPHABET
            ),
        )
    }

    /// A stream option the layer does not know (`?with=…`).
    pub(crate) fn unknown_option(param: &str, value: &str, known: &str) -> Refusal {
        Refusal::new(
            Kind::Invalid,
            StatusCode::BAD_REQUEST,
            format!(
                "unknown `{param}` value {:?}: the stream knows {known}",
                truncate(value)
            ),
        )
    }

    pub(crate) fn too_many_topics(max: usize, param: Option<&str>) -> Refusal {
        let message = match param {
            Some(param) => {
                format!("too many topics: at most {max} `{param}` parameters per stream")
            }
            None => format!("too many topics: at most {max}"),
        };
        Refusal::new(Kind::TooManyTopics, StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn forbidden(topic: &str) -> Refusal {
        Refusal::new(
            Kind::Forbidden,
            StatusCode::FORBIDDEN,
            format!("not allowed to follow topic {:?}", truncate(topic)),
        )
    }

    pub(crate) fn internal(message: &str) -> Refusal {
        Refusal::new(
            Kind::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            message.into(),
        )
    }

    fn unavailable(message: &str, retry_after: Duration) -> Refusal {
        Refusal::retry_later(StatusCode::SERVICE_UNAVAILABLE, message, retry_after)
    }

    fn retry_later(status: StatusCode, message: &str, retry_after: Duration) -> Refusal {
        let mut refusal = Refusal::new(Kind::Unavailable, status, message.into());
        refusal
            .response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after.as_secs().into());
        refusal
    }

    /// A refusal that answers with `response` (the authorization hook's).
    pub fn with_response(response: Response<String>) -> Refusal {
        observe::refused(response.status().as_u16());
        Refusal {
            kind: Kind::Hook,
            response: Box::new(response),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Hook => write!(f, "refused by the authorization hook ({})", self.status()),
            _ => f.write_str(self.response.body().trim_end()),
        }
    }
}

impl std::error::Error for Refusal {}

impl From<Refusal> for Response<String> {
    fn from(refusal: Refusal) -> Self {
        *refusal.response
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Refusal {
    fn into_response(self) -> axum_core::response::Response {
        self.response.map(axum_core::body::Body::from)
    }
}

/// Whose the subscription is: the user and expiry `access` grants (an
/// expiry already past is a `401`), and the client's `address`.
pub(crate) fn owner(access: &Access, address: Option<IpAddr>) -> Result<Owner, Refusal> {
    let expires = match access.expiry() {
        None => None,
        Some(at) => match at.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => Some(Instant::now() + left),
            _ => {
                return Err(Refusal::new(
                    Kind::Expired,
                    StatusCode::UNAUTHORIZED,
                    "access expired: sign in again".into(),
                ))
            }
        },
    };
    Ok(Owner {
        user: access.user_id().map(Arc::from),
        address,
        expires,
    })
}

/// Runs the authorization hook on the request head, if the layer has one
/// (otherwise every topic is open). A panicking hook refuses this request
/// only, with `500`.
pub(crate) async fn authorize(config: &Config, parts: Parts) -> Result<Access, Refusal> {
    let Some(hook) = &config.authorize else {
        return Ok(Access::all());
    };
    let decision = std::panic::catch_unwind(AssertUnwindSafe(|| (hook.0)(parts)));
    let decision = match decision {
        Ok(mut future) => {
            std::future::poll_fn(|cx| {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(decision)) => Poll::Ready(Some(decision)),
                    Err(_) => Poll::Ready(None),
                }
            })
            .await
        }
        Err(_) => None,
    };
    match decision {
        Some(Ok(access)) => Ok(access),
        Some(Err(response)) => Err(Refusal::with_response(response)),
        None => {
            tracing::error!("the authorize hook of SseLayer panicked; answering 500");
            Err(Refusal::internal("authorization failed"))
        }
    }
}

/// The topics a subscription follows: those `requested` (each valid, at most
/// `max_topics`, each granted by `access`), then those `access` makes it
/// follow without asking (an invalid one the hook granted is logged and
/// left out).
pub(crate) fn topics<'a>(
    config: &Config,
    access: &'a Access,
    requested: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<&'a str>, Refusal> {
    let mut topics = Vec::new();
    for topic in requested {
        if !topic::is_valid(topic) {
            return Err(Refusal::invalid_topic(topic));
        }
        if !access.allows(topic) {
            return Err(Refusal::forbidden(topic));
        }
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    if topics.len() > config.max_topics {
        return Err(Refusal::too_many_topics(config.max_topics, None));
    }
    for topic in access.followed() {
        if !topic::is_valid(topic) {
            tracing::error!(
                topic,
                "authorize hook granted an invalid topic; not followed"
            );
        } else if !topics.contains(&topic.as_str()) {
            topics.push(topic);
        }
    }
    Ok(topics)
}

/// Subscribes to `topics` from `resume`, once this instance has caught up
/// with the engine (when the hub has one).
pub(crate) async fn subscribe(
    hub: &Hub,
    config: &Config,
    topics: &[&str],
    resume: &Resume,
    owner: Owner,
) -> Result<Subscription, Refusal> {
    // The engine's history is not loaded yet, or the client saw an event on
    // another instance that this one has not read yet: wait (briefly) rather
    // than answer with a reset or replay too much.
    hub.caught_up(resume).await;
    subscribe_now(hub, config, topics, resume, owner)
}

/// Whether opening a subscription may have to wait: for the authorization
/// hook, or for an engine to catch up. When not, [`subscribe_now`] does.
pub(crate) fn may_wait(hub: &Hub, config: &Config) -> bool {
    config.authorize.is_some() || hub.has_backplane()
}

/// [`subscribe`] for a hub without a backplane (or once caught up).
pub(crate) fn subscribe_now(
    hub: &Hub,
    config: &Config,
    topics: &[&str],
    resume: &Resume,
    owner: Owner,
) -> Result<Subscription, Refusal> {
    hub.subscribe(topics, resume, owner)
        .map_err(|error| match error {
            SubscribeError::Closed => {
                Refusal::unavailable("the event stream is shutting down", config.retry_after)
            }
            SubscribeError::TooManySubscribers => Refusal::unavailable(
                "too many open event streams; try again later",
                config.retry_after,
            ),
            SubscribeError::TooManyForUser => Refusal::retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "too many open event streams for this user; close one or try again later",
                config.retry_after,
            ),
            SubscribeError::TooManyForAddress => Refusal::retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "too many open event streams from this address; try again later",
                config.retry_after,
            ),
            SubscribeError::NoRuntime => {
                Refusal::internal("tower-sse serves event streams only inside a Tokio runtime")
            }
        })
}

/// At most 64 characters of client input, for an error message.
fn truncate(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(64) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_topics_are_checked_then_followed_ones_added() {
        let config = Config {
            max_topics: 2,
            ..Config::default()
        };
        let access = Access::none()
            .allow_prefix("room/")
            .follow("user/ann")
            .follow("not valid");
        let granted = topics(&config, &access, ["room/a", "room/a", "user/ann"]);
        assert_eq!(granted.unwrap(), ["room/a", "user/ann"]);
        let err = topics(&config, &access, ["user/bob"]).unwrap_err();
        assert_eq!(
            (err.kind(), err.status()),
            (Kind::Forbidden, StatusCode::FORBIDDEN)
        );
        let err = topics(&config, &access, ["room/ a"]).unwrap_err();
        assert_eq!(err.kind(), Kind::Invalid);
        let err = topics(&config, &access, ["room/a", "room/b", "room/c"]).unwrap_err();
        assert_eq!(err.kind(), Kind::TooManyTopics);
    }

    #[tokio::test]
    async fn a_panicking_hook_refuses_with_500() {
        let config = Config {
            authorize: Some(crate::authorize::Authorize::new(|_: Parts| async {
                panic!("hook bug")
            })),
            ..Config::default()
        };
        let parts = http::Request::get("/").body(()).unwrap().into_parts().0;
        let err = authorize(&config, parts).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
