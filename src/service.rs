//! [`SseService`]: routes the stream path to the hub, everything else to the
//! inner service with a [`Publisher`] in the request extensions.

use http::{header, request::Parts, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

use crate::{
    body::{EventStream, SseBody},
    hub::SubscribeError,
    layer::Config,
    subscribe, Publisher,
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

    /// The answer on the stream path: a stream, its headers, or a refusal.
    fn stream_response<B>(&self, parts: &Parts) -> Response<SseBody<B>> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {} not allowed: the event stream at {} accepts GET and HEAD\n",
                    parts.method, self.config.path
                ),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let request =
            match subscribe::parse(parts, &self.config.topic_param, self.config.max_topics) {
                Ok(request) => request,
                Err(rejection) => return text(rejection.status, rejection.message + "\n"),
            };
        if parts.method == Method::HEAD {
            return stream_headers(SseBody::full(Bytes::new()));
        }
        let topics: Vec<&str> = request.topics.iter().map(|t| t.as_ref()).collect();
        match self.publisher.hub().subscribe(&topics, request.resume()) {
            Ok(subscription) => stream_headers(SseBody::stream(EventStream::new(
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

    fn unavailable<B>(&self, message: &str) -> Response<SseBody<B>> {
        let mut response = text(StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n"));
        response.headers_mut().insert(
            header::RETRY_AFTER,
            self.config.retry_after.as_secs().into(),
        );
        response
    }
}

fn text<B>(status: StatusCode, message: String) -> Response<SseBody<B>> {
    let mut response = Response::new(SseBody::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn stream_headers<B>(body: SseBody<B>) -> Response<SseBody<B>> {
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
            kind: Kind::Ready {
                response: Some(self.stream_response(&parts)),
            },
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
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(SseBody::inner))),
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
