//! Admission: the one step every stream goes through, whichever transport
//! serves it (the layer's path, its WebSocket, a handler's [`Subscribe`],
//! a gRPC method) and whichever handle opened it.
//!
//! ```text
//! parse (request.rs, Subscribe, the WebSocket's messages: topics checked valid there, once)
//!   → admit: the hub's policy decides an Access (its hook, or open) → expiry, address → Admitted
//!   → Admitted::grant(topics): each granted, how many, those the access follows
//!   → Admitted::subscribe(topics, resume): the engine's catch-up, the hub's limits → Subscription
//! ```
//!
//! The policy lives on the hub ([`HubBuilder::authorize`]), so a handle
//! taken from anywhere runs the same decision; a stream opens without it
//! only when the app says so ([`Access`] given to [`Subscribe::access`], or
//! [`HubBuilder::open_access`]).
//!
//! [`Subscribe`]: crate::Subscribe
//! [`Subscribe::access`]: crate::Subscribe::access
//! [`HubBuilder::authorize`]: crate::HubBuilder::authorize
//! [`HubBuilder::open_access`]: crate::HubBuilder::open_access

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "jwt")]
mod jwt;
mod policy;

#[cfg(feature = "axum")]
pub use extract::{AuthorizeFuture, AuthorizeHandler};
#[cfg(feature = "jwt")]
pub use jwt::{Jwt, JwtKey, JwtKeyError};

use http::{request::Parts, StatusCode};
use std::{
    net::IpAddr,
    panic::AssertUnwindSafe,
    sync::{atomic::AtomicBool, Arc, OnceLock},
    task::Poll,
    time::SystemTime,
};
use tokio::time::Instant;

use crate::{
    authorize::{Access, Authorize, Policy},
    config::Config,
    hub::{Hub, Owner, Resume, Seat, SubscribeError, Subscription},
    refusal::Refusal,
    request, topic,
};

/// What a stream presents to be admitted.
pub(crate) enum Credentials {
    /// The request head (of the stream, the WebSocket handshake, the
    /// handler's request, or a gRPC call's metadata): the hub's hook reads it.
    Request(Box<Parts>),
    /// An access the app's code decided itself (and the client's address,
    /// if known): the hook does not run.
    Granted(Access, Option<IpAddr>),
    /// Nothing: admitted only where the hub has no hook.
    Nothing,
}

/// Admission that may still have to run the hub's hook.
pub(crate) enum Admission {
    Admitted(Admitted),
    Hook {
        hook: Authorize,
        parts: Box<Parts>,
        admitted: Admitted,
    },
}

impl Admission {
    /// The admitted stream, once the hook (if any) granted its access.
    pub(crate) async fn finish(self) -> Result<Admitted, Refusal> {
        match self {
            Admission::Admitted(admitted) => Ok(admitted),
            Admission::Hook {
                hook,
                parts,
                mut admitted,
            } => {
                let access = run(&hook, *parts).await?;
                admitted.owner = owner(&access, admitted.owner.address)?;
                admitted.access = access;
                Ok(admitted)
            }
        }
    }
}

/// Admits a stream of `hub` with the layer's settings `config`: the hub's
/// policy decides its [`Access`] (the hook, when the hub has one, runs on
/// the request head), then whose it is (user, address, expiry: an access
/// already expired is a `401`). Runs once per request or WebSocket
/// connection; its first subscription takes the stream's seat under the
/// hub's limits, which the stream keeps for its life.
pub(crate) async fn admit(
    hub: &Hub,
    config: &Arc<Config>,
    credentials: Credentials,
) -> Result<Admitted, Refusal> {
    admit_now(hub, config, credentials)?.finish().await
}

/// [`admit`] as far as it goes without waiting: all of it unless the hub's
/// hook must run (so a stream of a hub without one allocates no future).
pub(crate) fn admit_now(
    hub: &Hub,
    config: &Arc<Config>,
    credentials: Credentials,
) -> Result<Admission, Refusal> {
    let address = match &credentials {
        Credentials::Request(parts) => request::address(config, parts),
        Credentials::Granted(_, address) => *address,
        Credentials::Nothing => None,
    };
    let admitted = |access: Access| -> Result<Admitted, Refusal> {
        Ok(Admitted {
            hub: hub.clone(),
            config: config.clone(),
            owner: owner(&access, address)?,
            access,
            seat: OnceLock::new(),
        })
    };
    match (hub.policy(), credentials) {
        (_, Credentials::Granted(access, _)) => admitted(access).map(Admission::Admitted),
        (Some(Policy::Hook(hook)), Credentials::Request(parts)) => Ok(Admission::Hook {
            hook: hook.clone(),
            parts,
            // Replaced by what the hook grants.
            admitted: Admitted {
                hub: hub.clone(),
                config: config.clone(),
                access: Access::none(),
                owner: Owner {
                    address,
                    ..Owner::default()
                },
                seat: OnceLock::new(),
            },
        }),
        (Some(Policy::Hook(_)), Credentials::Nothing) => Err(Refusal::unauthenticated(
            "this hub authorizes its streams: open this one with the caller's request \
             (Subscribe::request), or with an Access your code decided (Subscribe::access)"
                .into(),
        )),
        (Some(Policy::Open), _) => admitted(Access::all()).map(Admission::Admitted),
        (None, _) => {
            warn_open();
            admitted(Access::all()).map(Admission::Admitted)
        }
    }
}

/// Whether admitting and subscribing may have to wait: for the hub's hook,
/// or for an engine to catch up.
pub(crate) fn may_wait(hub: &Hub) -> bool {
    matches!(hub.policy(), Some(Policy::Hook(_))) || hub.has_backplane()
}

/// A hub that nobody said was open serves every topic to everyone, as
/// before authorization moved to the hub; say so once, loudly.
fn warn_open() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "tower-sse: a hub without an authorization hook serves every topic to every client; \
             set one with Hub::builder().authorize(..) (or SseLayer::authorize), or say the hub \
             is public with Hub::builder().open_access() (or SseLayer::open_access)"
        );
    }
}

/// A stream the hub's policy admitted: what it may follow, and whose it is.
/// It opens subscriptions (one, or one per change of a WebSocket's topics).
#[derive(Debug)]
pub(crate) struct Admitted {
    hub: Hub,
    config: Arc<Config>,
    access: Access,
    owner: Owner,
    /// The stream's place under the hub's limits (in all, per user, per
    /// address), taken by its first subscription (or before it waits for
    /// the engine) and shared by every later one: a WebSocket connection
    /// counts once whatever topics it changes to. A request that subscribes
    /// to nothing (`HEAD`, a refused topic) takes none.
    seat: OnceLock<Arc<Seat>>,
}

impl Admitted {
    /// The topics a subscription follows: those `requested` (each already
    /// checked valid where it was read; each granted, at most `max_topics`),
    /// then those the access makes it follow without asking (an invalid one
    /// the hook granted is logged and left out).
    pub(crate) fn grant<'a>(
        &'a self,
        requested: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<&'a str>, Refusal> {
        let mut topics = Vec::new();
        for topic in requested {
            debug_assert!(topic::is_valid(topic), "{topic:?} was not checked");
            if !self.access.allows(topic) {
                return Err(Refusal::forbidden(topic));
            }
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        let max = self.config.max_topics;
        if topics.len() > max {
            return Err(Refusal::too_many_topics(max, None));
        }
        for topic in self.access.followed() {
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

    /// Subscribes to `topics` (from [`grant`](Admitted::grant)) from
    /// `resume`, once this instance has caught up with the engine (when the
    /// hub has one): the engine's history may not be loaded yet, or the
    /// client saw an event on another instance that this one has not read.
    pub(crate) async fn subscribe(
        &self,
        topics: &[&str],
        resume: &Resume,
    ) -> Result<Subscription, Refusal> {
        self.caught_up(topics, resume).await?;
        self.subscribe_now(topics, resume)
    }

    /// Waits (briefly) until this instance has what a subscription to
    /// `topics` resuming at `resume` needs from the engine (replaying from
    /// it what the memory no longer holds); at once without one. Then
    /// [`subscribe_now`](Admitted::subscribe_now) opens it.
    pub(crate) async fn caught_up(&self, topics: &[&str], resume: &Resume) -> Result<(), Refusal> {
        // Refused at a limit before it waits for anything.
        self.seat()?;
        self.hub.caught_up(topics, resume).await;
        Ok(())
    }

    /// The stream's seat under the hub's limits: taken the first time
    /// (`503` or `429` past a limit), the same one after.
    fn seat(&self) -> Result<Arc<Seat>, Refusal> {
        if let Some(seat) = self.seat.get() {
            return Ok(seat.clone());
        }
        let seat = self
            .hub
            .seat(self.owner.user.clone(), self.owner.address)
            .map_err(|error| refusal(error, self.config.retry_after))?;
        Ok(self.seat.get_or_init(|| seat).clone())
    }

    /// The settings of the layer it was admitted through.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// [`subscribe`](Admitted::subscribe) for a hub without a backplane (or
    /// once [`caught_up`](Admitted::caught_up)).
    pub(crate) fn subscribe_now(
        &self,
        topics: &[&str],
        resume: &Resume,
    ) -> Result<Subscription, Refusal> {
        let owner = Owner {
            seat: Some(self.seat()?),
            ..self.owner.clone()
        };
        self.hub
            .subscribe(topics, resume, owner)
            .map_err(|error| refusal(error, self.config.retry_after))
    }
}

/// The answer to a stream the hub refused.
fn refusal(error: SubscribeError, retry_after: std::time::Duration) -> Refusal {
    match error {
        SubscribeError::Closed => {
            Refusal::unavailable("the event stream is shutting down", retry_after)
        }
        SubscribeError::TooManySubscribers => {
            Refusal::unavailable("too many open event streams; try again later", retry_after)
        }
        SubscribeError::TooManyForUser => Refusal::retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            "too many open event streams for this user; close one or try again later",
            retry_after,
        ),
        SubscribeError::TooManyForAddress => Refusal::retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            "too many open event streams from this address; try again later",
            retry_after,
        ),
        SubscribeError::NoRuntime => {
            Refusal::internal("tower-sse serves event streams only inside a Tokio runtime")
        }
    }
}

/// Whose the stream is: the user and expiry `access` grants (an expiry
/// already past is a `401`), and the client's `address`.
fn owner(access: &Access, address: Option<IpAddr>) -> Result<Owner, Refusal> {
    let expires = match access.expiry() {
        None => None,
        Some(at) => match at.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => Some(Instant::now() + left),
            _ => {
                return Err(Refusal::unauthenticated(
                    "access expired: sign in again".into(),
                ))
            }
        },
    };
    Ok(Owner {
        user: access.user_id().map(Arc::from),
        address,
        expires,
        seat: None,
    })
}

/// Runs the hub's hook on the request head. A panicking hook refuses this
/// request only, with `500`.
async fn run(hook: &Authorize, parts: Parts) -> Result<Access, Refusal> {
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
            tracing::error!("the authorization hook panicked; answering 500");
            Err(Refusal::internal("authorization failed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Kind;

    fn admitted(config: Config, access: Access) -> Admitted {
        Admitted {
            hub: Hub::new(),
            config: Arc::new(config),
            access,
            owner: Owner::default(),
            seat: OnceLock::new(),
        }
    }

    #[test]
    fn requested_topics_are_granted_then_followed_ones_added() {
        let config = Config {
            max_topics: 2,
            ..Config::default()
        };
        let access = Access::none()
            .allow_prefix("room/")
            .follow("user/ann")
            .follow("not valid");
        let admitted = admitted(config, access);
        let granted = admitted.grant(["room/a", "room/a", "user/ann"]);
        assert_eq!(granted.unwrap(), ["room/a", "user/ann"]);
        let err = admitted.grant(["user/bob"]).unwrap_err();
        assert_eq!(
            (err.kind(), err.status()),
            (Kind::Forbidden, StatusCode::FORBIDDEN)
        );
        let err = admitted.grant(["room/a", "room/b", "room/c"]).unwrap_err();
        assert_eq!(err.kind(), Kind::TooManyTopics);
    }

    fn parts() -> Box<Parts> {
        Box::new(http::Request::get("/").body(()).unwrap().into_parts().0)
    }

    #[tokio::test]
    async fn a_panicking_hook_refuses_with_500() {
        let hub = Hub::builder()
            .authorize(|_: Parts| async { panic!("hook bug") })
            .build();
        let config = crate::config::default();
        let err = admit(&hub, &config, Credentials::Request(parts()))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn a_hub_with_a_hook_admits_nothing_without_credentials() {
        let hub = Hub::builder()
            .authorize(|_: Parts| async { Ok(Access::all()) })
            .build();
        let config = crate::config::default();
        let err = admit(&hub, &config, Credentials::Nothing)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        let granted = Credentials::Granted(Access::only(["a"]), None);
        let admitted = admit(&hub, &config, granted).await.unwrap();
        assert!(admitted.grant(["b"]).is_err());
        let open = Hub::builder().open_access().build();
        assert!(admit(&open, &config, Credentials::Nothing).await.is_ok());
    }
}
