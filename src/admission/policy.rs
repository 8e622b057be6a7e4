//! Setting a hub's policy: the hook every stream of the hub goes through,
//! or the explicit choice of none.

use http::{request::Parts, Response};
use std::future::Future;

use crate::{
    authorize::{Access, Authorize, Policy},
    hub::HubBuilder,
};

impl HubBuilder {
    /// Decides, for every stream of this hub, which topics the client may
    /// follow, or answers it with a response of your own (`401`, `403`, a
    /// redirect...). It runs for every way a stream opens: a layer's stream
    /// path and WebSocket, a handler's [`Subscribe`](crate::Subscribe) (with
    /// the request head it was given), and a gRPC method's (with the call's
    /// metadata); whichever handle opens it ([`SseLayer::publisher`](crate::SseLayer::publisher),
    /// [`Hub::publisher`](crate::Hub::publisher), the extractor).
    ///
    /// The hook gets the request head (method, URI, headers with cookies,
    /// extensions) by value; `HEAD` requests go through it too. A stream
    /// that asks for a topic the [`Access`] does not allow is refused with
    /// `403`; a [`Subscribe`](crate::Subscribe) given no request head is
    /// refused with `401` (unless your code gives it an [`Access`] itself).
    /// If the hook panics, that request gets `500` and the server goes on.
    ///
    /// Without a hook (and without [`open_access`](HubBuilder::open_access))
    /// every topic is open to everyone, and the first stream logs a warning
    /// that says so. With axum, a hook can take the app's state and
    /// extractors: `authorize_with_state` (feature `axum`).
    ///
    /// ```
    /// use http::{request::Parts, Response, StatusCode};
    /// use tower_sse::{Access, Hub, SseLayer};
    ///
    /// let hub = Hub::builder()
    ///     .authorize(|parts: Parts| async move {
    ///         match parts.headers.get("x-user").and_then(|v| v.to_str().ok()) {
    ///             Some(user) => Ok(Access::none().allow_prefix("room/").user(user)),
    ///             None => Err(Response::builder()
    ///                 .status(StatusCode::UNAUTHORIZED)
    ///                 .body("sign in first\n".to_owned())
    ///                 .unwrap()),
    ///         }
    ///     })
    ///     .build();
    /// // Every handle of the hub runs it: the layer's path, its publisher's streams.
    /// let layer = SseLayer::new("/events").hub(&hub);
    /// # let _ = layer;
    /// ```
    pub fn authorize<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Access, Response<String>>> + Send + 'static,
    {
        self.policy = Some(Policy::Hook(Authorize::new(hook)));
        self
    }

    /// Every stream of this hub may follow every topic: the explicit choice
    /// of a public hub (a status page, a demo). Replaces a hook set before.
    ///
    /// ```
    /// let hub = tower_sse::Hub::builder().open_access().build();
    /// # let _ = hub;
    /// ```
    pub fn open_access(mut self) -> Self {
        self.policy = Some(Policy::Open);
        self
    }

    /// Authorizes every stream of this hub with JSON Web Tokens (feature
    /// `jwt`): see [`Jwt`](crate::Jwt) for where the token comes from and
    /// what its claims grant. Keep a clone of `jwt` to rotate its keys.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_sse::JwtKeyError> {
    /// use tower_sse::{Hub, Jwt, JwtKey};
    ///
    /// let key = JwtKey::hmac(b"a secret of at least 32 bytes, really")?;
    /// let hub = Hub::builder().authorize_jwt(Jwt::new().key(key)).build();
    /// # let _ = hub;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn authorize_jwt(self, jwt: crate::Jwt) -> Self {
        self.authorize(move |parts: Parts| std::future::ready(jwt.access(&parts)))
    }

    /// [`authorize`](HubBuilder::authorize) with axum's extractors and the
    /// app's state, as [`axum::middleware::from_fn_with_state`] runs a
    /// middleware: `hook` is an async function whose arguments are
    /// extractors of the request head (`State<S>`, `HeaderMap`, `Query<T>`,
    /// a typed header, your own `FromRequestParts<S>`...) and which returns
    /// `Result<Access, E>` for any `E: IntoResponse`. An extractor's
    /// rejection refuses the stream with its response; so does `E`. (The
    /// body of a refusal is read as text, up to 64 KiB.)
    ///
    /// ```
    /// use axum::{extract::State, http::{HeaderMap, StatusCode}};
    /// use std::{collections::HashMap, sync::Arc};
    /// use tower_sse::{Access, Hub};
    ///
    /// #[derive(Clone)]
    /// struct App {
    ///     sessions: Arc<HashMap<String, String>>, // token → user
    /// }
    ///
    /// async fn authorize(
    ///     State(app): State<App>,
    ///     headers: HeaderMap,
    /// ) -> Result<Access, (StatusCode, &'static str)> {
    ///     let token = headers
    ///         .get("authorization")
    ///         .and_then(|v| v.to_str().ok())
    ///         .and_then(|v| v.strip_prefix("Bearer "))
    ///         .ok_or((StatusCode::UNAUTHORIZED, "no token"))?;
    ///     let user = app.sessions.get(token).ok_or((StatusCode::UNAUTHORIZED, "unknown token"))?;
    ///     Ok(Access::none().follow(format!("orders/{user}")).user(user.as_str()))
    /// }
    ///
    /// let app = App { sessions: Arc::new(HashMap::from([("t1".into(), "alice".into())])) };
    /// let hub = Hub::builder().authorize_with_state(app, authorize).build();
    /// # let _ = hub;
    /// ```
    ///
    /// [`axum::middleware::from_fn_with_state`]: https://docs.rs/axum/latest/axum/middleware/fn.from_fn_with_state.html
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn authorize_with_state<H, T, S>(mut self, state: S, hook: H) -> Self
    where
        H: super::AuthorizeHandler<T, S>,
        S: Clone + Send + Sync + 'static,
        T: 'static,
    {
        self.policy = Some(Policy::Hook(super::extract::erase(state, hook)));
        self
    }
}
