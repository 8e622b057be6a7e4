//! The hand-over of an admitted event stream from hyper to the lean
//! writer (see the parent module's docs): the offer a request carries, the
//! response that stands for the stream, the connection hyper gives back,
//! and the response head hyper would have written.

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode, Version};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{ready, Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
};

use crate::sse::EventStream;

/// One connection's hand-over point, shared by its service and its task.
#[derive(Default)]
pub(crate) struct Slot {
    /// The stream the layer opened, until the connection's task takes it.
    stream: Mutex<Option<Box<EventStream>>>,
    /// The response head, once the response came out of the app's layers
    /// still marked [`Handed`].
    head: Mutex<Option<Head>>,
    handed: Notify,
}

/// In a request's extensions: the stream may leave hyper (see the module's
/// docs).
#[derive(Clone)]
pub(crate) struct Offer(Arc<Slot>);

/// In a response's extensions: its stream waits in the request's [`Offer`].
#[derive(Clone, Copy)]
pub(crate) struct Handed;

impl Offer {
    /// Takes `stream`: the response (empty, marked) stands for it.
    pub(crate) fn take(&self, stream: EventStream) -> Handed {
        if let Ok(mut slot) = self.0.stream.lock() {
            *slot = Some(Box::new(stream));
        }
        Handed
    }
}

impl Slot {
    pub(in crate::serve) fn offer(self: &Arc<Self>) -> Offer {
        Offer(self.clone())
    }

    /// Waits until a response was handed over.
    pub(in crate::serve) async fn handed(&self) {
        self.handed.notified().await;
    }

    /// The stream and its head, if a response was handed over.
    pub(in crate::serve) fn take(&self) -> Option<(Head, Box<EventStream>)> {
        let head = self.head.lock().ok()?.take()?;
        let stream = self.stream.lock().ok()?.take()?;
        Some((head, stream))
    }
}

/// What the head of a handed response needs of its request.
#[derive(Clone, Copy)]
pub(in crate::serve) struct Asked {
    version: Version,
    /// `Connection: close` (HTTP/1.1).
    close: bool,
}

impl Asked {
    /// The request may take the lean path: HTTP/1.x `GET`, no body, no
    /// upgrade.
    pub(in crate::serve) fn of<B: http_body::Body>(request: &http::Request<B>) -> Option<Asked> {
        let version = request.version();
        let plain = (version == Version::HTTP_11 || version == Version::HTTP_10)
            && request.method() == http::Method::GET
            && request.body().is_end_stream()
            && !request.headers().contains_key(header::UPGRADE);
        plain.then(|| Asked {
            version,
            close: request
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .any(|v| has_token(v, "close")),
        })
    }
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A handed response's head.
pub(in crate::serve) struct Head {
    status: StatusCode,
    headers: HeaderMap,
    asked: Asked,
}

impl Head {
    /// Whether the body is chunked (HTTP/1.1) or ends with the connection
    /// (HTTP/1.0).
    pub(super) fn chunked(&self) -> bool {
        self.asked.version == Version::HTTP_11
    }

    /// The head's bytes, as hyper writes them: the status line, the
    /// headers in order (a `Connection: close` request gets
    /// `connection: close`), `transfer-encoding: chunked` over HTTP/1.1,
    /// and `date`.
    pub(super) fn encode(mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(256);
        let version = if self.chunked() {
            "HTTP/1.1"
        } else {
            "HTTP/1.0"
        };
        out.extend_from_slice(version.as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(
            self.status
                .canonical_reason()
                .unwrap_or("<none>")
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        // The body's framing is this writer's.
        self.headers.remove(header::CONTENT_LENGTH);
        self.headers.remove(header::TRANSFER_ENCODING);
        if self.asked.close && self.chunked() {
            match self.headers.entry(header::CONNECTION) {
                header::Entry::Occupied(mut entry) => {
                    if !entry.iter().any(|v| has_token(v, "close")) {
                        entry.append(HeaderValue::from_static("close"));
                    }
                }
                header::Entry::Vacant(entry) => {
                    entry.insert(HeaderValue::from_static("close"));
                }
            }
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.chunked() {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !self.headers.contains_key(header::DATE) {
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.freeze()
    }
}

pin_project! {
    /// The future of a response on a connection that offers the lean path:
    /// a response marked [`Handed`] is kept from hyper (this future then
    /// never ends: the connection's task drops hyper's connection).
    pub(in crate::serve) struct Handing<F> {
        #[pin]
        inner: F,
        offer: Option<(Arc<Slot>, Asked)>,
        handed: bool,
    }
}

impl<F> Handing<F> {
    pub(in crate::serve) fn new(inner: F, offer: Option<(Arc<Slot>, Asked)>) -> Self {
        Handing {
            inner,
            offer,
            handed: false,
        }
    }
}

impl<F, B, E> Future for Handing<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.handed {
            return Poll::Pending;
        }
        if this.offer.is_none() {
            return this.inner.poll(cx);
        }
        let response = ready!(this.inner.poll(cx))?;
        let Some((slot, asked)) = this.offer.take() else {
            return Poll::Ready(Ok(response));
        };
        let waiting = slot.stream.lock().is_ok_and(|stream| stream.is_some());
        if waiting && response.extensions().get::<Handed>().is_some() {
            let (parts, _empty) = response.into_parts();
            if let Ok(mut head) = slot.head.lock() {
                *head = Some(Head {
                    status: parts.status,
                    headers: parts.headers,
                    asked,
                });
            }
            slot.handed.notify_one();
            *this.handed = true;
            // The connection's task takes it from here.
            return Poll::Pending;
        }
        // Not handed (the app's layers answered something else): the stream
        // is dropped, the response goes to hyper.
        if let Ok(mut stream) = slot.stream.lock() {
            stream.take();
        }
        Poll::Ready(Ok(response))
    }
}

/// The connection as hyper holds it: given back into `back` when hyper's
/// connection is dropped.
pub(in crate::serve) struct Lent<I> {
    io: Option<I>,
    back: Arc<Mutex<Option<I>>>,
}

impl<I> Lent<I> {
    pub(in crate::serve) fn new(io: I) -> (Self, Arc<Mutex<Option<I>>>) {
        let back = Arc::new(Mutex::new(None));
        (
            Lent {
                io: Some(io),
                back: back.clone(),
            },
            back,
        )
    }

    fn io(&mut self) -> io::Result<&mut I> {
        self.io
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "given back"))
    }
}

impl<I> Drop for Lent<I> {
    fn drop(&mut self) {
        if let Ok(mut back) = self.back.lock() {
            *back = self.io.take();
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Lent<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()?).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Lent<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(I::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()?).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_hypers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let head = Head {
            status: StatusCode::OK,
            headers,
            asked: Asked {
                version: Version::HTTP_11,
                close: true,
            },
        }
        .encode();
        let head = std::str::from_utf8(&head).unwrap();
        assert!(head.starts_with(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\ntransfer-encoding: chunked\r\ndate: "
        ), "{head}");
        assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
    }
}
