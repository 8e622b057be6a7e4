//! The bytes of a connection before hyper reads them: telling HTTP/1.1
//! from HTTP/2 with a timeout, then giving hyper those bytes again.

use bytes::Bytes;
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface, by which hyper-util's auto builder tells
/// HTTP/2 from HTTP/1.1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the client's first bytes until they tell HTTP/1.1 from HTTP/2
/// (the whole preface, a byte that differs from it, or the end), as the
/// auto builder would, which waits for them without a timeout: a client
/// that connected and sent nothing (or part of the preface) would hold its
/// connection forever, hyper's header read timeout starting only after.
pub(super) async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Bytes> {
    let mut buf = [0; H2_PREFACE.len()];
    let mut filled = 0;
    loop {
        let n = io.read(&mut buf[filled..]).await?;
        filled += n;
        if n == 0 || filled == buf.len() || buf[..filled] != H2_PREFACE[..filled] {
            return Ok(Bytes::copy_from_slice(&buf[..filled]));
        }
    }
}

/// A connection whose first bytes, read by [`first_bytes`], are read again.
pub(super) struct Rewind<I> {
    pub(super) first: Bytes,
    pub(super) io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
