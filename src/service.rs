//! [`SseService`]: routes the stream path (and the WebSocket path) to the
//! hub, everything else to the inner service with a [`Publisher`] in the
//! request extensions.

use bytes::Bytes;
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
    body::{refused, text, OwnBody, SseBody},
    open::{self, Refusal},
    publisher::Publisher,
    request,
    sse::{self, EventStream},
};

/// The service made by [`SseLayer`](crate::SseLayer): serves the event stream
/// on its path and passes every other request, with a [`Publisher`] in its
/// extensions, to the inner service.
#[derive(Clone, Debug)]
pub struct SseService<S> {
    inner: S,
    routes: Arc<Routes>,
    publisher: Publisher,
}

/// The paths a layer serves itself.
#[derive(Debug)]
pub(crate) struct Routes {
    pub(crate) stream: Box<str>,
    /// Where the WebSocket endpoint is served, if anywhere.
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) websocket: Option<Box<str>>,
}

impl<S> SseService<S> {
    pub(crate) fn new(inner: S, routes: Arc<Routes>, publisher: Publisher) -> Self {
        SseService {
            inner,
            routes,
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
}

/// The layer's own answer on a path it serves.
type Answer = Pin<Box<dyn Future<Output = Response<OwnBody>> + Send>>;

/// Answers a request on the stream path.
async fn stream(parts: Parts, publisher: Publisher, path: Arc<Routes>) -> Response<OwnBody> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} not allowed: the event stream at {} accepts GET and HEAD\n",
                parts.method, path.stream
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let head = parts.method == Method::HEAD;
    let (hub, config) = (publisher.hub(), publisher.config());
    let opened = async {
        let request = request::parse(&parts, &config.topic_param, config.max_topics)?;
        let access = open::authorize(config, parts).await?;
        let topics = open::topics(config, &access, request.topics.iter().map(String::as_str))?;
        if head {
            // `HEAD` passes the same checks, and subscribes to nothing.
            return Ok(None);
        }
        let subscription = open::subscribe(hub, config, &topics, &request.resume).await?;
        Ok::<_, Refusal>(Some(EventStream::new(subscription, config)))
    };
    match opened.await {
        Ok(stream) => {
            let mut response = Response::new(match stream {
                Some(stream) => OwnBody::Stream(stream),
                None => OwnBody::full(Bytes::new()),
            });
            sse::headers(&mut response);
            response
        }
        Err(refusal) => refused(refusal),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SseService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<SseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        #[cfg(feature = "ws")]
        if self.routes.websocket.as_deref() == Some(path) {
            let (parts, _body) = req.into_parts();
            let answer = crate::ws::respond(parts, self.publisher.clone());
            return ResponseFuture::own(Box::pin(answer));
        }
        if path != &*self.routes.stream {
            req.extensions_mut().insert(self.publisher.clone());
            return ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(req),
                },
            };
        }
        let (parts, _body) = req.into_parts();
        let answer = stream(parts, self.publisher.clone(), self.routes.clone());
        ResponseFuture::own(Box::pin(answer))
    }
}

pin_project! {
    /// Response future of [`SseService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Own { answer: Answer },
    }
}

impl<F> ResponseFuture<F> {
    fn own(answer: Answer) -> Self {
        ResponseFuture {
            kind: Kind::Own { answer },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(SseBody::inner))),
            KindProj::Own { answer } => answer
                .as_mut()
                .poll(cx)
                .map(|response| Ok(response.map(SseBody::own))),
        }
    }
}
