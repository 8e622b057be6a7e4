//! The lean path for event streams over HTTP/1.x: once hyper has read a
//! stream request's head and the layer has admitted it, the connection
//! leaves hyper. Its task then holds the socket, the stream and a few words
//! of state: no read buffer (a read of a few bytes on the stack notices
//! that the client has gone), no write buffer (each event's encoded bytes,
//! shared by every stream, go out as they are, several per vectored write,
//! inside one chunk whose size line is kept inline).
//!
//! The hand-over: `serve` offers it to each HTTP/1.x `GET` without a body
//! on a plain TCP connection ([`Offer`] in the request's extensions). The
//! layer, when it admits the request and opens its stream, puts the stream
//! in the offer and answers with an empty body marked [`Handed`]. When that
//! response comes back out of the app's layers (which may have added
//! headers: CORS, say) still marked, the connection's service keeps it from
//! hyper and tells the connection's task, which drops hyper's connection
//! (taking back the socket), writes the response head as hyper would have,
//! and runs the stream. A response the app's layers replaced goes to hyper
//! as usual, and the stream is dropped.

use bytes::{Buf, Bytes};
use std::{
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use crate::sse::EventStream;

mod handoff;

use handoff::Head;
pub(super) use handoff::{Asked, Handing, Lent, Slot};
pub(crate) use handoff::{Handed, Offer};

/// At most this many buffers per vectored write (Linux's `IOV_MAX` is 1024).
const MAX_SLICES: usize = 64;

/// What a client may send after a stream request (read and dropped: a
/// pipelined request behind a response that never ends is never answered,
/// as under hyper) before its stream is ended: as much as hyper would have
/// buffered before it stopped reading.
const MAX_DISCARDED: usize = 64 * 1024;

/// The writer of a handed stream on `io`: a future that runs until the
/// stream ends, the client goes, the client stops reading for `stall`, or
/// sends more than [`MAX_DISCARDED`] bytes after its request (`leftover` of
/// them already, which hyper had not read). It is all the state a lean
/// stream keeps (its connection task holds it inline).
pub(super) fn writer<I>(
    io: I,
    leftover: usize,
    head: Head,
    stream: Box<EventStream>,
    stall: Option<Duration>,
) -> Lean<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let chunked = head.chunked();
    Lean {
        io,
        stream,
        out: Out {
            raw: head.encode(),
            size: [0; 18],
            size_at: 0,
            size_len: 0,
            pieces: Vec::new(),
            next: 0,
            tail: b"",
        },
        chunked,
        ending: false,
        discarded: leftover,
        stall,
        stalled: None,
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Future for Lean<I> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().run(cx).map(|ended| {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "serve: event stream connection ended");
            }
        })
    }
}

pub(super) struct Lean<I> {
    io: I,
    stream: Box<EventStream>,
    out: Out,
    chunked: bool,
    /// The stream has ended (or the client said too much): what is
    /// pending, then the last chunk, then the connection closes.
    ending: bool,
    /// Bytes the client sent after its request.
    discarded: usize,
    stall: Option<Duration>,
    /// Armed while a write waits for the client to read.
    stalled: Option<Pin<Box<Sleep>>>,
}

/// What is to be written: `raw` (the response head), then one chunk of
/// `pieces` (its size line inline), then `tail`.
struct Out {
    raw: Bytes,
    size: [u8; 18],
    size_at: u8,
    size_len: u8,
    pieces: Vec<Bytes>,
    /// The first piece not yet written in full.
    next: usize,
    tail: &'static [u8],
}

impl Out {
    fn is_empty(&self) -> bool {
        self.raw.is_empty()
            && self.size_at == self.size_len
            && self.next == self.pieces.len()
            && self.tail.is_empty()
    }

    /// Queues `pieces` as one chunk (or as they are, unchunked).
    fn load(&mut self, pieces: Vec<Bytes>, chunked: bool) {
        let len: usize = pieces.iter().map(Bytes::len).sum();
        self.pieces = pieces;
        self.next = 0;
        if chunked && len > 0 {
            self.size_len = size_line(len, &mut self.size);
            self.size_at = 0;
            self.tail = b"\r\n";
        }
    }

    fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut n = 0;
        let mut push = |bytes: &'a [u8]| {
            if !bytes.is_empty() && n < MAX_SLICES {
                slices[n] = IoSlice::new(bytes);
                n += 1;
            }
        };
        push(&self.raw);
        push(&self.size[usize::from(self.size_at)..usize::from(self.size_len)]);
        for piece in &self.pieces[self.next..] {
            push(piece);
        }
        push(self.tail);
        n
    }

    /// `n` bytes went out.
    fn advance(&mut self, mut n: usize) {
        let raw = n.min(self.raw.len());
        self.raw.advance(raw);
        n -= raw;
        let size = n.min(usize::from(self.size_len - self.size_at));
        self.size_at += size as u8;
        n -= size;
        while n > 0 && self.next < self.pieces.len() {
            let piece = &mut self.pieces[self.next];
            let taken = n.min(piece.len());
            piece.advance(taken);
            n -= taken;
            if piece.is_empty() {
                self.next += 1;
            }
        }
        while self.next < self.pieces.len() && self.pieces[self.next].is_empty() {
            self.next += 1;
        }
        if self.next == self.pieces.len() && !self.pieces.is_empty() {
            // Written: the pieces' shares of the events go, and so does the
            // list (an idle stream keeps none).
            self.pieces = Vec::new();
            self.next = 0;
        }
        let tail = n.min(self.tail.len());
        self.tail = &self.tail[tail..];
    }
}

/// Writes a chunk's size line (hex digits, CRLF) into `line`; its length.
fn size_line(len: usize, line: &mut [u8; 18]) -> u8 {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, byte) in line[..digits].iter_mut().enumerate() {
        *byte = HEX[(len >> (4 * (digits - 1 - i))) & 0xF];
    }
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    (digits + 2) as u8
}

impl<I: AsyncRead + AsyncWrite + Unpin> Lean<I> {
    /// The stream ends: the last chunk (or, unchunked, nothing) follows
    /// what is pending.
    fn end(&mut self) {
        if self.ending {
            return;
        }
        self.ending = true;
        if self.chunked {
            // After what is left of the pending chunk's CRLF.
            self.out.tail = match self.out.tail {
                b"\r\n" => b"\r\n0\r\n\r\n",
                b"\n" => b"\n0\r\n\r\n",
                _ => b"0\r\n\r\n",
            };
        }
    }

    fn run(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.read_client(cx)?;
            if !self.ending && self.discarded > MAX_DISCARDED {
                tracing::debug!(
                    bytes = self.discarded,
                    "serve: a client sent too much after its stream request; the stream ends"
                );
                self.end();
            }
            if !self.out.is_empty() {
                match self.write(cx)? {
                    Poll::Ready(()) => continue,
                    Poll::Pending => return self.wait_for_client(cx),
                }
            }
            self.stalled = None;
            if self.ending {
                return Pin::new(&mut self.io).poll_shutdown(cx);
            }
            let mut pieces = Vec::new();
            match self.stream.poll_pieces(cx, &mut pieces) {
                Poll::Ready(Some(())) => self.out.load(pieces, self.chunked),
                Poll::Ready(None) => {
                    self.out.load(pieces, self.chunked);
                    self.end();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads (and drops) what the client sent, counting it, until there is
    /// nothing more for now (then registered to be woken by what comes
    /// next, the end included); `Err` when it has gone.
    fn read_client(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let mut bytes = [0; 512];
        while self.discarded <= MAX_DISCARDED {
            let mut buf = ReadBuf::new(&mut bytes);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection",
                    ))
                }
                Poll::Ready(Ok(())) => self.discarded += buf.filled().len(),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Writes what is pending, as far as the socket takes it.
    fn write(&mut self, cx: &mut Context<'_>) -> io::Result<Poll<()>> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = self.out.slices(&mut slices);
            let n = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(n) => n?,
                Poll::Pending => return Ok(Poll::Pending),
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.out.advance(n);
            // Progress: the stall clock starts again.
            self.stalled = None;
        }
        Ok(Poll::Ready(()))
    }

    /// A write waits for the client: for at most the stall timeout.
    fn wait_for_client(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(timeout) = self.stall else {
            return Poll::Pending;
        };
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // Counted as lagging: the client resumes from its id.
                self.stream.stalled();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client read nothing for the write stall timeout",
                ))
                .into()
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_written_across_partial_writes() {
        let mut out = Out {
            raw: Bytes::from_static(b"HEAD"),
            size: [0; 18],
            size_at: 0,
            size_len: 0,
            pieces: Vec::new(),
            next: 0,
            tail: b"",
        };
        out.load(
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")],
            true,
        );
        let mut written = Vec::new();
        // One byte at a time, as a full socket would take them.
        while !out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = out.slices(&mut slices);
            written.push(slices[..n][0][0]);
            out.advance(1);
        }
        assert_eq!(written, b"HEAD5\r\nabcde\r\n");
        assert!(out.pieces.capacity() == 0, "an idle stream keeps no list");
    }

    #[test]
    fn size_lines_are_hex() {
        for (len, line) in [
            (1, "1\r\n"),
            (15, "F\r\n"),
            (16, "10\r\n"),
            (65536, "10000\r\n"),
            (0, "0\r\n"),
        ] {
            let mut buf = [0; 18];
            let n = size_line(len, &mut buf);
            assert_eq!(&buf[..usize::from(n)], line.as_bytes());
        }
        let mut buf = [0; 18];
        assert_eq!(size_line(usize::MAX, &mut buf), 18);
    }
}
