//! [`SseService`]: routes the stream path to the hub, everything else to the
//! inner service with a [`Publisher`] in the request extensions.

use http::{header, request::Parts, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    panic::{self, AssertUnwindSafe},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

use crate::{
    authorize::DecisionFuture,
    body::{EventStream, OwnBody, SseBody},
    hub::SubscribeError,
    layer::Config,
    subscribe::{self, is_valid_topic, SubscribeRequest},
    Access, Publisher,
};
use bytes::Bytes;

/// The service made by [`SseLayer`](crate::SseLayer): serves the event stream
/// on its path and passes every other request, with a [`Publisher`] in its
/// extensions, to the inner service.
#[derive(Clone, Debug)]
pub struct SseService<S> {
    inner: S,
    config: Arc<Config>,
    publisher: Publisher,
}

impl<S> SseService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>, publisher: Publisher) -> Self {
        SseService {
            inner,
            config,
            publisher,
        }
    }

    /// The publisher of this service's hub.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn method_not_allowed(&self, method: &Method) -> Response<OwnBody> {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} not allowed: the event stream at {} accepts GET and HEAD\n",
                self.config.path
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    }

    /// The answer on the stream path, or the future that finds it when an
    /// authorization hook must run first.
    fn stream_call<F, B>(&self, parts: Parts) -> Kind<F, B> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Kind::ready(self.method_not_allowed(&parts.method));
        }
        let config = &self.config;
        let request = match subscribe::parse(&parts, &config.topic_param, config.max_topics) {
            Ok(request) => request,
            Err(rejection) => return Kind::ready(text(rejection.status, rejection.message + "\n")),
        };
        let open = Open {
            request,
            head: parts.method == Method::HEAD,
            publisher: self.publisher.clone(),
            config: self.config.clone(),
        };
        let Some(authorize) = &self.config.authorize else {
            return Kind::opened(open.open(&Access::all()));
        };
        match panic::catch_unwind(AssertUnwindSafe(|| (authorize.0)(parts))) {
            Ok(future) => Kind::Authorize {
                future,
                open: Some(open),
            },
            Err(_) => Kind::ready(hook_panicked()),
        }
    }
}

/// A stream request that passed the checks, waiting for its access.
struct Open {
    request: SubscribeRequest,
    head: bool,
    publisher: Publisher,
    config: Arc<Config>,
}

/// The answer to a stream request: now, or once this instance caught up.
/// (Returned and taken apart at once, so its size does not matter.)
#[allow(clippy::large_enum_variant)]
enum Opened {
    Now(Response<OwnBody>),
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Later(Pin<Box<dyn Future<Output = Response<OwnBody>> + Send>>),
}

impl Open {
    fn open(self, access: &Access) -> Opened {
        let mut topics: Vec<&str> = Vec::with_capacity(self.request.topics.len());
        for topic in &self.request.topics {
            if !access.allows(topic) {
                return Opened::Now(forbidden(topic));
            }
            topics.push(topic);
        }
        topics.extend(followed(access));
        if self.head {
            return Opened::Now(stream_headers(OwnBody::full(Bytes::new())));
        }
        #[cfg(feature = "redis")]
        if let Some(id) = self.publisher.hub().wait_for(&self.request.resume()) {
            // The backplane's history is not loaded yet, or the browser saw an
            // event on another instance that this one has not read yet: wait
            // (briefly) rather than answer with a reset or replay too much.
            let topics: Vec<String> = topics.into_iter().map(str::to_owned).collect();
            return Opened::Later(Box::pin(async move {
                self.publisher.hub().caught_up(id).await;
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                self.subscribe(&topics)
            }));
        }
        Opened::Now(self.subscribe(&topics))
    }

    fn subscribe(&self, topics: &[&str]) -> Response<OwnBody> {
        match self
            .publisher
            .hub()
            .subscribe(topics, self.request.resume())
        {
            Ok(subscription) => stream_headers(OwnBody::Stream(EventStream::new(
                subscription,
                &self.config.prelude,
                self.config.keep_alive.clone(),
            ))),
            Err(error) => refused(&self.config, error),
        }
    }
}

/// The topics `access` makes a stream follow without asking for them; an
/// invalid one granted by the hook is logged and left out.
pub(crate) fn followed(access: &Access) -> impl Iterator<Item = &str> {
    access
        .followed()
        .iter()
        .map(String::as_str)
        .filter(|topic| {
            let valid = is_valid_topic(topic);
            if !valid {
                tracing::error!(
                    topic,
                    "authorize hook granted an invalid topic; not followed"
                );
            }
            valid
        })
}

/// The answer to a stream asking for a topic its access does not grant.
pub(crate) fn forbidden(topic: &str) -> Response<OwnBody> {
    text(
        StatusCode::FORBIDDEN,
        format!("not allowed to follow topic {topic:?}\n"),
    )
}

/// The answer when the hub refuses a subscription.
pub(crate) fn refused(config: &Config, error: SubscribeError) -> Response<OwnBody> {
    let message = match error {
        SubscribeError::Closed => "the event stream is shutting down",
        SubscribeError::TooManySubscribers => "too many open event streams; try again later",
        SubscribeError::NoRuntime => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "tower-sse serves event streams only inside a Tokio runtime\n".into(),
            )
        }
    };
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n"));
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, config.retry_after.as_secs().into());
    response
}

/// Polled again after it answered: a 500 rather than a panic.
fn gone<B>() -> Response<SseBody<B>> {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "tower-sse: response future polled after completion\n".into(),
    )
    .map(SseBody::own)
}

/// Asks to be polled again at once (the state just changed).
fn self_poll_again<T>(cx: &mut Context<'_>) -> Poll<T> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

pub(crate) fn hook_panicked() -> Response<OwnBody> {
    tracing::error!("the authorize hook of SseLayer panicked; answering 500");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "authorization failed\n".into(),
    )
}

/// A plain-text answer; `message` ends with a line break.
pub(crate) fn text(status: StatusCode, message: String) -> Response<OwnBody> {
    let mut response = Response::new(OwnBody::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn stream_headers(body: OwnBody) -> Response<OwnBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Stops nginx (and proxies that follow it) from buffering the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SseService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<SseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        #[cfg(feature = "ws")]
        if self.config.websocket.as_deref() == Some(req.uri().path()) {
            let (parts, _body) = req.into_parts();
            let future = crate::ws::respond(parts, self.publisher.clone(), self.config.clone());
            return ResponseFuture {
                kind: Kind::Waiting {
                    future: Box::pin(future),
                },
            };
        }
        if req.uri().path() != &*self.config.path {
            req.extensions_mut().insert(self.publisher.clone());
            return ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(req),
                },
            };
        }
        let (parts, _body) = req.into_parts();
        ResponseFuture {
            kind: self.stream_call(parts),
        }
    }
}

pin_project! {
    /// Response future of [`SseService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Ready { response: Option<Response<SseBody<B>>> },
        Authorize { future: DecisionFuture, open: Option<Open> },
        Waiting { future: Pin<Box<dyn Future<Output = Response<OwnBody>> + Send>> },
    }
}

impl<F, B> Kind<F, B> {
    fn ready(response: Response<OwnBody>) -> Self {
        Kind::Ready {
            response: Some(response.map(SseBody::own)),
        }
    }

    fn opened(opened: Opened) -> Self {
        match opened {
            Opened::Now(response) => Kind::ready(response),
            Opened::Later(future) => Kind::Waiting { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        let response = match kind.as_mut().project() {
            KindProj::Inner { future } => {
                return future
                    .poll(cx)
                    .map(|result| result.map(|response| response.map(SseBody::inner)))
            }
            KindProj::Ready { response } => response.take(),
            KindProj::Waiting { future } => match future.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(response) => Some(response.map(SseBody::own)),
            },
            KindProj::Authorize { future, open } => {
                // A panicking hook fails this request only.
                let decision =
                    match panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(decision)) => Some(decision),
                        Err(_) => None,
                    };
                let Some(open) = open.take() else {
                    return Poll::Ready(Ok(gone()));
                };
                let opened = match decision {
                    Some(Ok(access)) => open.open(&access),
                    Some(Err(refusal)) => Opened::Now(refusal.map(OwnBody::full)),
                    None => Opened::Now(hook_panicked()),
                };
                match opened {
                    Opened::Now(response) => Some(response.map(SseBody::own)),
                    Opened::Later(future) => {
                        kind.set(Kind::Waiting { future });
                        return self_poll_again(cx);
                    }
                }
            }
        };
        Poll::Ready(Ok(response.unwrap_or_else(gone)))
    }
}
