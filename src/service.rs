//! [`SseService`]: routes the stream path (and the WebSocket path) to the
//! hub, everything else to the inner service with a [`Publisher`] in the
//! request extensions.

use bytes::Bytes;
use http::{request::Parts, Method, Request, Response, StatusCode};
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
    admission::{self, Admission, Admitted, Credentials},
    body::{only_get_and_head, refused, text, OwnBody, SseBody},
    client::ClientScript,
    observe::Stalled,
    publisher::Publisher,
    refusal::Refusal,
    request::{self, StreamRequest},
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
    /// Where the event stream is served, unless the app serves it itself.
    pub(crate) stream: Option<Box<str>>,
    /// Where the WebSocket endpoint is served, if anywhere.
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) websocket: Option<Box<str>>,
    /// The browser module and where it is served, if anywhere.
    pub(crate) client: Option<Arc<ClientScript>>,
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

/// The layer's own answer on a path it serves, when it has to wait.
type Answer = Pin<Box<dyn Future<Output = Response<OwnBody>> + Send>>;

/// Answers a request on the stream path: admit, then subscribe — at once
/// when nothing needs awaiting (no hook, no backplane: no future to
/// allocate per stream), else through a future.
fn stream<F>(mut parts: Parts, publisher: Publisher, routes: &Routes) -> ResponseFuture<F> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let what = format!(
            "the event stream at {}",
            routes.stream.as_deref().unwrap_or("")
        );
        return ResponseFuture::ready(only_get_and_head(&parts.method, &what));
    }
    let config = publisher.config();
    let request = match request::parse(&parts, &config.topic_param, config.max_topics) {
        Ok(request) => request,
        Err(refusal) => return ResponseFuture::ready(refused(refusal)),
    };
    let head = parts.method == Method::HEAD;
    let offer = lean::offer(&mut parts);
    let stalled = parts.extensions.get::<Stalled>().cloned();
    let hub = publisher.hub();
    let admission = match admission::admit_now(hub, config, Credentials::Request(Box::new(parts))) {
        Ok(admission) => admission,
        Err(refusal) => return ResponseFuture::ready(refused(refusal)),
    };
    if !admission::may_wait(hub) {
        if let Admission::Admitted(admitted) = admission {
            let opened = open_now(&admitted, &request, head);
            return ResponseFuture::ready(respond(opened, offer, stalled));
        }
    }
    ResponseFuture::own(Box::pin(async move {
        let opened = async {
            let admitted = admission.finish().await?;
            // A refused topic (answered by open_now) and HEAD wait for
            // nothing, and take no seat under the limits.
            if let (Ok(topics), false) = (
                admitted.grant(request.topics.iter().map(String::as_str)),
                head,
            ) {
                admitted.caught_up(&topics, &request.resume).await?;
            }
            open_now(&admitted, &request, head)
        };
        respond(opened.await, offer, stalled)
    }))
}

/// The stream of an admitted request (caught up with the engine, if any);
/// `None` for `HEAD`, which passes the same checks and subscribes to nothing.
fn open_now(
    admitted: &Admitted,
    request: &StreamRequest,
    head: bool,
) -> Result<Option<EventStream>, Refusal> {
    let topics = admitted.grant(request.topics.iter().map(String::as_str))?;
    if head {
        return Ok(None);
    }
    let subscription = admitted.subscribe_now(&topics, &request.resume)?;
    Ok(Some(EventStream::new(
        subscription,
        admitted.config(),
        request.with_topic,
    )))
}

/// The answer to a stream request: the stream (handed to the lean path if
/// the server offered one), watched for stalls if the server does that.
fn respond(
    opened: Result<Option<EventStream>, Refusal>,
    offer: lean::Offer,
    stalled: Option<Stalled>,
) -> Response<OwnBody> {
    match opened {
        Ok(stream) => {
            let mut response = Response::new(OwnBody::full(Bytes::new()));
            if let Some(mut stream) = stream {
                if let Some(stalled) = stalled {
                    stream.watched(stalled);
                }
                match lean::hand(offer, stream) {
                    Ok(handed) => {
                        response.extensions_mut().insert(handed);
                    }
                    Err(stream) => *response.body_mut() = OwnBody::Stream(Box::new(stream)),
                }
            }
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
        // Served by `tower_sse::serve`: its graceful shutdown closes this hub.
        #[cfg(feature = "serve")]
        if let Some(hubs) = req.extensions().get::<crate::publisher::ServedHubs>() {
            hubs.add(&self.publisher);
        }
        let path = req.uri().path();
        #[cfg(feature = "ws")]
        if self.routes.websocket.as_deref() == Some(path) {
            let (parts, _body) = req.into_parts();
            let answer = crate::ws::respond(parts, self.publisher.clone());
            return ResponseFuture::own(Box::pin(answer));
        }
        if let Some(client) = &self.routes.client {
            if *client.path == *path {
                let (parts, _body) = req.into_parts();
                return ResponseFuture::ready(client.respond(&parts));
            }
        }
        if self.routes.stream.as_deref() != Some(path) {
            req.extensions_mut().insert(self.publisher.clone());
            return ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(req),
                },
            };
        }
        let (parts, _body) = req.into_parts();
        stream(parts, self.publisher.clone(), &self.routes)
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
        Ready { response: Option<Response<OwnBody>> },
        Own { answer: Answer },
    }
}

impl<F> ResponseFuture<F> {
    fn ready(response: Response<OwnBody>) -> Self {
        ResponseFuture {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

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
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| {
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "tower-sse: response future polled after completion\n".into(),
                    )
                })
                .map(SseBody::own))),
            KindProj::Own { answer } => answer
                .as_mut()
                .poll(cx)
                .map(|response| Ok(response.map(SseBody::own))),
        }
    }
}

/// `tower_sse::serve`'s lean path for HTTP/1.x streams: the stream of a
/// request that carries its offer leaves hyper (see `serve::lean`).
mod lean {
    use http::request::Parts;

    use crate::sse::EventStream;

    #[cfg(feature = "serve")]
    pub(super) type Offer = Option<crate::serve::Offer>;
    #[cfg(not(feature = "serve"))]
    pub(super) type Offer = ();

    #[cfg(feature = "serve")]
    pub(super) type Handed = crate::serve::Handed;
    #[cfg(not(feature = "serve"))]
    #[derive(Clone, Copy)]
    pub(super) enum Handed {}

    /// The request's offer, taken out (a handler further in never sees it).
    pub(super) fn offer(parts: &mut Parts) -> Offer {
        #[cfg(feature = "serve")]
        return parts.extensions.remove::<crate::serve::Offer>();
        #[cfg(not(feature = "serve"))]
        let _ = parts;
    }

    /// Hands `stream` over when offered; gives it back otherwise.
    #[allow(clippy::result_large_err)]
    pub(super) fn hand(offer: Offer, stream: EventStream) -> Result<Handed, EventStream> {
        #[cfg(feature = "serve")]
        return match offer {
            Some(offer) => Ok(offer.take(stream)),
            None => Err(stream),
        };
        #[cfg(not(feature = "serve"))]
        {
            let () = offer;
            Err(stream)
        }
    }
}
