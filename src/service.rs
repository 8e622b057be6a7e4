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
            return Kind::ready(open.open(&Access::all()));
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

impl Open {
    fn open(self, access: &Access) -> Response<OwnBody> {
        let mut topics: Vec<&str> = Vec::with_capacity(self.request.topics.len());
        for topic in &self.request.topics {
            if !access.allows(topic) {
                return text(
                    StatusCode::FORBIDDEN,
                    format!("not allowed to follow topic {topic:?}\n"),
                );
            }
            topics.push(topic);
        }
        for topic in access.followed() {
            if is_valid_topic(topic) {
                topics.push(topic);
            } else {
                tracing::error!(
                    topic,
                    "authorize hook granted an invalid topic; not followed"
                );
            }
        }
        if self.head {
            return stream_headers(OwnBody::full(Bytes::new()));
        }
        match self
            .publisher
            .hub()
            .subscribe(&topics, self.request.resume())
        {
            Ok(subscription) => stream_headers(OwnBody::Stream(EventStream::new(
                subscription,
                &self.config.prelude,
                self.config.keep_alive.clone(),
            ))),
            Err(SubscribeError::Closed) => self.unavailable("the event stream is shutting down"),
            Err(SubscribeError::TooManySubscribers) => {
                self.unavailable("too many open event streams; try again later")
            }
            Err(SubscribeError::NoRuntime) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "tower-sse serves event streams only inside a Tokio runtime\n".into(),
            ),
        }
    }

    fn unavailable(&self, message: &str) -> Response<OwnBody> {
        let mut response = text(StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n"));
        response.headers_mut().insert(
            header::RETRY_AFTER,
            self.config.retry_after.as_secs().into(),
        );
        response
    }
}

fn hook_panicked() -> Response<OwnBody> {
    tracing::error!("the authorize hook of SseLayer panicked; answering 500");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "authorization failed\n".into(),
    )
}

fn text(status: StatusCode, message: String) -> Response<OwnBody> {
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
    }
}

impl<F, B> Kind<F, B> {
    fn ready(response: Response<OwnBody>) -> Self {
        Kind::Ready {
            response: Some(response.map(SseBody::own)),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.project().kind.project() {
            KindProj::Inner { future } => {
                return future
                    .poll(cx)
                    .map(|result| result.map(|response| response.map(SseBody::inner)))
            }
            KindProj::Ready { response } => response.take(),
            KindProj::Authorize { future, open } => {
                // A panicking hook fails this request only.
                let decision =
                    match panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(decision)) => Some(decision),
                        Err(_) => None,
                    };
                open.take().map(|open| {
                    let response = match decision {
                        Some(Ok(access)) => open.open(&access),
                        Some(Err(refusal)) => refusal.map(OwnBody::full),
                        None => hook_panicked(),
                    };
                    response.map(SseBody::own)
                })
            }
        };
        Poll::Ready(Ok(response.expect("ResponseFuture polled after completion")))
    }
}
