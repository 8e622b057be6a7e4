//! The layer's authorization sugar: each sets the policy of the hub the
//! layer serves, which every transport and handle of that hub runs.

use http::{request::Parts, Response};
use std::future::Future;

use super::SseLayer;
use crate::authorize::{Access, Authorize, Policy};

impl SseLayer {
    /// Sets the layer's policy on its hub, which has one policy for every
    /// transport and handle.
    pub(super) fn apply_policy(self) -> Self {
        if let Some(policy) = &self.policy {
            if let Err(set) = self.hub.set_policy(policy.clone()) {
                assert!(
                    set.same(policy),
                    "SseLayer::authorize/open_access on a hub whose authorization is already \
                     decided (by Hub::builder().authorize/open_access, or another layer): a hub has \
                     one policy; set it in one place"
                );
            }
        }
        self
    }

    /// Sets the authorization hook of the hub this layer serves (sugar for
    /// [`HubBuilder::authorize`](crate::HubBuilder::authorize), which says
    /// all about it): the hook decides, for every stream of the hub, which
    /// topics the client may follow, or answers with a response of your own
    /// (`401`, `403`, a redirect...). It runs on this layer's stream path
    /// and WebSocket, in handlers' [`Subscribe`](crate::Subscribe), and for
    /// streams opened through any publisher of the hub, this layer's or
    /// [`Hub::publisher`](crate::Hub::publisher)'s.
    ///
    /// # Panics
    ///
    /// When the hub already has another policy (set on its builder, or by
    /// another layer serving it): a hub has one.
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
    pub fn authorize<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Access, Response<String>>> + Send + 'static,
    {
        self.policy(Policy::Hook(Authorize::new(hook)))
    }

    /// [`authorize`](SseLayer::authorize) with axum's extractors and the
    /// app's state: see
    /// [`HubBuilder::authorize_with_state`](crate::HubBuilder::authorize_with_state).
    ///
    /// # Panics
    ///
    /// As [`authorize`](SseLayer::authorize).
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn authorize_with_state<H, T, S>(self, state: S, hook: H) -> Self
    where
        H: crate::AuthorizeHandler<T, S>,
        S: Clone + Send + Sync + 'static,
        T: 'static,
    {
        let built = crate::Hub::builder().authorize_with_state(state, hook);
        match built.policy {
            Some(policy) => self.policy(policy),
            None => self,
        }
    }

    /// Authorizes every stream of the hub this layer serves with JSON Web
    /// Tokens (feature `jwt`; sugar for
    /// [`HubBuilder::authorize_jwt`](crate::HubBuilder::authorize_jwt)).
    ///
    /// # Panics
    ///
    /// As [`authorize`](SseLayer::authorize).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn authorize_jwt(self, jwt: crate::Jwt) -> Self {
        let built = crate::Hub::builder().authorize_jwt(jwt);
        match built.policy {
            Some(policy) => self.policy(policy),
            None => self,
        }
    }

    /// Says the hub this layer serves is public: every stream may follow
    /// every topic (sugar for
    /// [`HubBuilder::open_access`](crate::HubBuilder::open_access)). Without
    /// a hook that is what happens anyway, with a warning in the log.
    ///
    /// # Panics
    ///
    /// When the hub already has a hook.
    pub fn open_access(self) -> Self {
        self.policy(Policy::Open)
    }

    fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self.apply_policy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hub;

    #[test]
    #[should_panic(expected = "a hub has one policy")]
    fn a_second_policy_on_one_hub_is_refused_when_the_app_is_built() {
        let hub = Hub::builder().open_access().build();
        let _ = SseLayer::new("/events")
            .hub(&hub)
            .authorize(|_: Parts| async { Ok(Access::all()) });
    }

    #[test]
    fn the_layers_hook_is_set_on_every_hub_it_serves() {
        let hub = Hub::new();
        let layer = SseLayer::new("/events")
            .authorize(|_: Parts| async { Ok(Access::all()) })
            .hub(&hub);
        assert!(matches!(hub.policy(), Some(Policy::Hook(_))));
        // Clones of the layer, and layers given the same hook, agree.
        let _ = SseLayer::new("/other").hub(&hub);
        let again = layer.clone().hub(&hub);
        assert!(again.hub.policy().is_some());
    }
}
