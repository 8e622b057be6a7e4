//! [`SseBody`], the body type of every response that passes through
//! [`SseService`](crate::SseService): the inner service's body, or one of
//! the layer's own answers.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use crate::{refusal::Refusal, sse::EventStream};

pin_project! {
    /// The response body of [`SseService`](crate::SseService): the inner
    /// service's body, an [`EventStream`], or a short complete body (an
    /// error message, or nothing for `HEAD`).
    pub struct SseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Own { body: OwnBody },
    }
}

/// The bodies of the answers the layer gives itself on the stream path.
#[derive(Debug)]
pub(crate) enum OwnBody {
    // Boxed: a stream is much larger than the layer's other answers.
    Stream(Box<EventStream>),
    Full(Option<Bytes>),
}

impl OwnBody {
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        OwnBody::Full((!data.is_empty()).then_some(data))
    }
}

impl Body for OwnBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            OwnBody::Stream(stream) => Pin::new(&mut **stream).poll_frame(cx),
            OwnBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OwnBody::Stream(stream) => stream.is_end_stream(),
            OwnBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OwnBody::Stream(stream) => stream.size_hint(),
            OwnBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> SseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        SseBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn own(body: OwnBody) -> Self {
        SseBody {
            kind: Kind::Own { body },
        }
    }
}

impl<B> Body for SseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Own { body } => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { body } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for SseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("SseBody::Inner"),
            Kind::Own { body } => f.debug_tuple("SseBody").field(body).finish(),
        }
    }
}

/// The answer that refuses a stream.
pub(crate) fn refused(refusal: Refusal) -> Response<OwnBody> {
    Response::from(refusal).map(OwnBody::full)
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

/// The `405` of a path the layer serves itself, which takes only `GET` and
/// `HEAD` (`what` says which: "the event stream at /events").
pub(crate) fn only_get_and_head(method: &Method, what: &str) -> Response<OwnBody> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed: {what} accepts GET and HEAD\n"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}
