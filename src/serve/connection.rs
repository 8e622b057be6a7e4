//! One connection's life in [`serve`](super::serve): its socket options,
//! its TLS handshake, hyper serving it, and an event stream leaving hyper
//! for the lean writer (see `lean`).

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::watch,
};
use tower_service::Service;

use crate::observe::Stalled;

use super::{
    lean::{self, Asked, Handing, Lent, Slot},
    preface::{first_bytes, Rewind},
    settings::Settings,
    stall::{Stalls, Watched, Watching},
    BoxError, Hubs,
};

/// Socket options on an accepted connection; a failure is logged, not
/// fatal (the connection works without them).
pub(super) fn configure(tcp: &TcpStream, settings: &Settings) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "serve: TCP_NODELAY");
    }
    let socket = socket2::SockRef::from(tcp);
    if let Some(bytes) = settings.send_buffer {
        if let Err(e) = socket.set_send_buffer_size(bytes) {
            tracing::debug!(error = %e, "serve: SO_SNDBUF");
        }
    }
    if let Some(idle) = settings.keep_alive {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(Duration::from_secs(10));
        if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
            tracing::debug!(error = %e, "serve: TCP keep-alive");
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Some(timeout) = settings.user_timeout {
        if let Err(e) = socket.set_tcp_user_timeout(Some(timeout)) {
            tracing::debug!(error = %e, "serve: TCP_USER_TIMEOUT");
        }
    }
}

/// Serves one connection (after its TLS handshake, if any) until it ends,
/// shutting it down gracefully once `stopping` turns true. The task holds
/// hyper's part boxed, and once a stream leaves hyper, the lean writer
/// alone: an idle stream's task is the writer and a pointer.
pub(super) fn connection<S, B>(
    tcp: TcpStream,
    service: WithPeer<S>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    settings: Arc<Settings>,
    stopping: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Phase::Hyper(Box::pin(async move {
        #[cfg(feature = "serve-tls")]
        if let Some(acceptor) = &settings.tls {
            tls(tcp, acceptor, service, &builder, &settings, stopping).await;
            // (Never handed: the lean path is for plain TCP.)
            return None;
        }
        let lean = settings.lean;
        drive(tcp, service, &builder, &settings, stopping, lean).await
    }))
}

/// A connection served over TLS.
#[cfg(feature = "serve-tls")]
async fn tls<S, B>(
    tcp: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    service: WithPeer<S>,
    builder: &auto::Builder<TokioExecutor>,
    settings: &Settings,
    mut stopping: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // Boxed: the handshake's state is large, and a connection that
    // outlives it should not carry its room.
    let handshake = Box::pin(tokio::time::timeout(
        settings.header_read_timeout,
        acceptor.accept(tcp),
    ));
    // A shutdown does not wait for a handshake under way.
    let tls = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!(error = %e, "serve: TLS handshake failed"),
            Err(_) => return tracing::debug!("serve: TLS handshake timed out"),
        },
        _ = stopping.wait_for(|stop| *stop) => return,
    };
    drive(tls, service, builder, settings, stopping, false).await;
}

/// A connection's task: hyper's part (boxed, with the lean writer as its
/// result, if a stream leaves hyper), then the writer.
// The writer inline on purpose: it is what an idle stream's task holds
// for the stream's life, and boxing it would add an allocation to each.
#[allow(clippy::large_enum_variant)]
enum Phase<H> {
    Hyper(Pin<Box<H>>),
    Lean(lean::Lean<Rewind<TcpStream>>),
}

impl<H> Future for Phase<H>
where
    H: Future<Output = Option<lean::Lean<Rewind<TcpStream>>>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Phase::Hyper(hyper) => {
                    let Some(writer) = std::task::ready!(hyper.as_mut().poll(cx)) else {
                        return Poll::Ready(());
                    };
                    // hyper's part is freed here.
                    *this = Phase::Lean(writer);
                }
                Phase::Lean(writer) => return Pin::new(writer).poll(cx),
            }
        }
    }
}

/// Serves a connection with hyper; with `lean`, an event stream on it
/// leaves hyper once admitted (see `lean`'s docs): then its writer is
/// returned, to run once hyper's part is freed.
async fn drive<I, S, B>(
    io: I,
    mut service: WithPeer<S>,
    builder: &auto::Builder<TokioExecutor>,
    settings: &Settings,
    mut stopping: watch::Receiver<bool>,
    lean: bool,
) -> Option<lean::Lean<Rewind<I>>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut io = io;
    let first = tokio::select! {
        first = tokio::time::timeout(settings.header_read_timeout, first_bytes(&mut io)) => first,
        _ = stopping.wait_for(|stop| *stop) => return None,
    };
    let first = match first {
        Ok(Ok(first)) => first,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "serve: reading the first bytes failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("serve: the client sent no request in time");
            return None;
        }
    };
    let slot = lean.then(|| Arc::new(Slot::default()));
    service.slot.clone_from(&slot);
    let (io, back) = Lent::new(Rewind { first, io });
    let stalls = service.stalls.clone();
    // Boxed: a stream that leaves hyper frees hyper's connection whole.
    let mut connection = Box::pin(
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service)),
    );
    let handed = async {
        match &slot {
            Some(slot) => slot.handed().await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(Some(ended)),
        () = stalls.stalled(), if settings.write_stall.is_some() => {
            // Dropping the connection ends its streams; their clients
            // resume from their ids.
            tracing::debug!(
                timeout = ?settings.write_stall,
                "serve: a response made no write progress; the connection is closed"
            );
            return None;
        }
        () = handed => None,
        _ = stopping.wait_for(|stop| *stop) => Some(None),
    };
    let Some(ended) = ended else {
        // Handed: hyper's connection gives the socket back.
        drop(connection);
        drop(stalls);
        let io = back.lock().ok().and_then(|mut back| back.take());
        drop(back);
        let stream = slot.as_deref().and_then(Slot::take);
        drop(slot);
        return match (io, stream) {
            (Some(io), Some((head, stream))) => {
                let leftover = io.first.len();
                Some(lean::writer(
                    io,
                    leftover,
                    head,
                    stream,
                    settings.write_stall,
                ))
            }
            _ => None,
        };
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "serve: connection ended with an error");
    }
    None
}

/// The service of one connection: adds the client's address and the
/// server's hubs to each request, and watches each response's body for
/// stalls.
#[derive(Clone)]
pub(super) struct WithPeer<S> {
    pub(super) inner: S,
    pub(super) peer: SocketAddr,
    pub(super) hubs: Hubs,
    pub(super) stalls: Arc<Stalls>,
    /// Where an event stream leaves hyper, on a connection that offers it.
    pub(super) slot: Option<Arc<Slot>>,
}

impl<S, B> Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<Watched<B>>;
    type Error = S::Error;
    type Future = Watching<Handing<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let extensions = request.extensions_mut();
        extensions.insert(self.peer);
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.peer));
        extensions.insert(self.hubs.clone());
        let offer = self
            .slot
            .as_ref()
            .and_then(|slot| Some((slot.clone(), Asked::of(&request)?)));
        if let Some((slot, _)) = &offer {
            request.extensions_mut().insert(slot.offer());
        }
        // The stream's side of the stall watch: set if its stall closes the
        // connection, so the stream counts as lagging.
        let mark = Stalled::default();
        request.extensions_mut().insert(mark.clone());
        // A handed response never reaches the stall watch: its stream
        // leaves hyper, and the lean writer watches its own writes.
        Watching::new(
            Handing::new(self.inner.call(request), offer),
            self.stalls.clone(),
            mark,
        )
    }
}
