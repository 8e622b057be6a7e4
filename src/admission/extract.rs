//! Authorization hooks written like axum handlers (feature `axum`): their
//! arguments are extractors of the request head, their error anything
//! `IntoResponse`.

use axum_core::{
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::request::Parts;
use std::{future::Future, pin::Pin};

use crate::authorize::{Access, Authorize};

/// The largest refusal body kept from a hook's response.
const MAX_BODY: usize = 64 * 1024;

/// A future of a hook's decision.
pub type AuthorizeFuture = Pin<Box<dyn Future<Output = Result<Access, Response>> + Send>>;

/// An async function that decides a stream's [`Access`] from axum
/// extractors (up to 12, each `FromRequestParts<S>`), for
/// [`HubBuilder::authorize_with_state`](crate::HubBuilder::authorize_with_state):
/// `async fn(State<App>, HeaderMap, ...) -> Result<Access, E>` with
/// `E: IntoResponse`. Implemented for every such function; `T` is the
/// tuple of its extractors, as in axum's `Handler<T, S>`.
pub trait AuthorizeHandler<T, S>: Clone + Send + Sync + 'static {
    /// Runs the extractors on `parts` with `state`, then the function.
    fn call(&self, parts: Parts, state: S) -> AuthorizeFuture;
}

macro_rules! authorize_handler {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, Fut, E, S, $($ty,)*> AuthorizeHandler<($($ty,)*), S> for F
        where
            F: Fn($($ty,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<Access, E>> + Send + 'static,
            E: IntoResponse + 'static,
            S: Send + Sync + 'static,
            $($ty: FromRequestParts<S> + Send + 'static,)*
        {
            fn call(&self, mut parts: Parts, state: S) -> AuthorizeFuture {
                let hook = self.clone();
                Box::pin(async move {
                    $(
                        let $ty = match $ty::from_request_parts(&mut parts, &state).await {
                            Ok(value) => value,
                            Err(rejection) => return Err(rejection.into_response()),
                        };
                    )*
                    hook($($ty,)*).await.map_err(IntoResponse::into_response)
                })
            }
        }
    };
}

authorize_handler!();
authorize_handler!(T1);
authorize_handler!(T1, T2);
authorize_handler!(T1, T2, T3);
authorize_handler!(T1, T2, T3, T4);
authorize_handler!(T1, T2, T3, T4, T5);
authorize_handler!(T1, T2, T3, T4, T5, T6);
authorize_handler!(T1, T2, T3, T4, T5, T6, T7);
authorize_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
authorize_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
authorize_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
authorize_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
authorize_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);

/// The hook as the hub holds every hook: a function of the request head.
pub(super) fn erase<H, T, S>(state: S, hook: H) -> Authorize
where
    H: AuthorizeHandler<T, S>,
    S: Clone + Send + Sync + 'static,
    T: 'static,
{
    Authorize::new(move |parts: Parts| {
        let decision = hook.call(parts, state.clone());
        async move {
            match decision.await {
                Ok(access) => Ok(access),
                Err(response) => Err(text(response).await),
            }
        }
    })
}

/// A response with its body read as text (at most [`MAX_BODY`] bytes; a
/// body that fails midway keeps what came).
async fn text(response: Response) -> http::Response<String> {
    let (mut parts, body) = response.into_parts();
    let mut body = body;
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        let Ok(data) = frame.map(|frame| frame.into_data().unwrap_or_else(|_| Bytes::new())) else {
            break;
        };
        let room = MAX_BODY.saturating_sub(bytes.len());
        bytes.extend_from_slice(&data[..data.len().min(room)]);
        if room <= data.len() {
            break;
        }
    }
    // The text may differ in length from what the header said.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    http::Response::from_parts(parts, String::from_utf8_lossy(&bytes).into_owned())
}
