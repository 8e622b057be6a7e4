//! [`serve`]: an HTTP/1.1 and HTTP/2 server (hyper's) with the settings a
//! push server needs, for an axum router or any tower service.

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{
    convert::Infallible,
    fmt,
    future::{Future, IntoFuture},
    io,
    net::SocketAddr,
    pin::{pin, Pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tower_service::Service;

use crate::publisher::ServedHubs as Hubs;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `service` on `listener`: HTTP/1.1 and HTTP/2 (told apart by the
/// client's first bytes, or by ALPN over TLS), WebSocket upgrades included,
/// each request carrying the client's [`SocketAddr`] in its extensions (and
/// axum's `ConnectInfo<SocketAddr>` with feature `axum`), which
/// [`HubBuilder::max_streams_per_address`](crate::HubBuilder::max_streams_per_address)
/// reads. Await it, or add
/// [`with_graceful_shutdown`](Serve::with_graceful_shutdown) first.
///
/// The settings, each changeable on [`Serve`]:
///
/// - A client must send its request head within 10 s of connecting or of
///   its previous request (a slowloris cannot hold connections open); a
///   TLS handshake too.
/// - TCP keep-alive after 60 s idle, and `TCP_USER_TIMEOUT` of 30 s on
///   Linux: a client that vanished without a word (a phone that lost its
///   network) is noticed even when nothing is being sent to it.
/// - HTTP/2 pings every 20 s, and a connection that does not answer one
///   within 20 s is closed.
/// - `TCP_NODELAY`: events go out when published, not after Nagle's delay.
///
/// On graceful shutdown it stops accepting, [closes](crate::Publisher::close)
/// the hub of every [`SseLayer`](crate::SseLayer) that served a request
/// through it (so their streams end: otherwise they never would, and
/// neither would the shutdown), lets the other requests finish, and drops
/// whatever is still open after [`shutdown_timeout`](Serve::shutdown_timeout).
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # async fn run() -> std::io::Result<()> {
/// use axum::Router;
/// use tower_sse::SseLayer;
///
/// let app = Router::new().layer(SseLayer::new("/events"));
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// tower_sse::serve(listener, app)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.ok(); })
///     .await
/// # }
/// ```
///
/// Browsers speak HTTP/2 only over TLS; with feature `serve-tls`,
/// [`Serve::tls`] serves HTTPS, and then every tab of a browser shares one
/// connection instead of taking one of HTTP/1.1's six per origin.
pub fn serve<S, B>(listener: TcpListener, service: S) -> Serve<S>
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
    Serve {
        listener,
        service,
        settings: Settings::default(),
    }
}

/// The future of [`serve`] and its settings. Await it to serve until an
/// error of the listener's own (not a failed connection: those are logged
/// at `debug` and skipped).
#[must_use = "a server does nothing unless awaited"]
pub struct Serve<S> {
    listener: TcpListener,
    service: S,
    settings: Settings,
}

#[derive(Clone)]
struct Settings {
    header_read_timeout: Duration,
    keep_alive: Option<Duration>,
    user_timeout: Option<Duration>,
    ping: Option<Duration>,
    shutdown_timeout: Duration,
    #[cfg(feature = "serve-tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header_read_timeout: Duration::from_secs(10),
            keep_alive: Some(Duration::from_secs(60)),
            user_timeout: Some(Duration::from_secs(30)),
            ping: Some(Duration::from_secs(20)),
            shutdown_timeout: Duration::from_secs(10),
            #[cfg(feature = "serve-tls")]
            tls: None,
        }
    }
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("header_read_timeout", &self.settings.header_read_timeout)
            .field("tcp_keepalive", &self.settings.keep_alive)
            .field("tcp_user_timeout", &self.settings.user_timeout)
            .field("http2_ping", &self.settings.ping)
            .field("shutdown_timeout", &self.settings.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl<S> Serve<S> {
    /// How long a client may take to send a request's head (and, over TLS,
    /// its handshake) after connecting or after its previous request.
    /// Default 10 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.settings.header_read_timeout = timeout;
        self
    }

    /// TCP keep-alive probes after `idle` without traffic, or none. Default
    /// 60 s.
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.settings.keep_alive = idle;
        self
    }

    /// How long sent data may go unacknowledged before the kernel drops
    /// the connection (`TCP_USER_TIMEOUT`, Linux only), or the kernel's
    /// default (about 15 minutes of retransmissions). Default 30 s.
    pub fn tcp_user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.user_timeout = timeout;
        self
    }

    /// HTTP/2 pings every `interval`, and closes a connection that does not
    /// answer within as long; or none. Default 20 s.
    pub fn http2_ping(mut self, interval: Option<Duration>) -> Self {
        self.settings.ping = interval;
        self
    }

    /// How long a graceful shutdown waits for requests to finish before it
    /// drops the connections still open. Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = timeout;
        self
    }

    /// Serves HTTPS with `config` (rustls). Its ALPN protocols, when empty,
    /// become `h2` and `http/1.1`, so browsers speak HTTP/2. See
    /// [`tls_config`] for a config from PEM files.
    #[cfg(feature = "serve-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serve-tls")))]
    pub fn tls(mut self, mut config: rustls::ServerConfig) -> Self {
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        self.settings.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        self
    }

    /// Serves until `signal` completes, then shuts down gracefully (see
    /// [`serve`]).
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// [`Serve`] with a shutdown signal: see [`Serve::with_graceful_shutdown`].
#[must_use = "a server does nothing unless awaited"]
pub struct WithGracefulShutdown<S, F> {
    serve: Serve<S>,
    signal: F,
}

impl<S, F> fmt::Debug for WithGracefulShutdown<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

impl<S, B> IntoFuture for Serve<S>
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
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self, std::future::pending()))
    }
}

impl<S, B, F> IntoFuture for WithGracefulShutdown<S, F>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self.serve, self.signal))
    }
}

async fn run<S, B, F>(serve: Serve<S>, signal: F) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    let Serve {
        listener,
        service,
        settings,
    } = serve;
    let builder = Arc::new(builder(&settings));
    let hubs = Hubs::default();
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut signal = pin!(signal);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, say: wait, as the connections
                    // that hold them may end, rather than spin.
                    // A shutdown meanwhile is not kept waiting.
                    tracing::error!(error = %e, "serve: accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut signal => break,
                    }
                }
            },
            () = &mut signal => break,
        };
        while connections.try_join_next().is_some() {}
        configure(&tcp, &settings);
        let service = WithPeer {
            inner: service.clone(),
            peer,
            hubs: hubs.clone(),
        };
        connections.spawn(connection(
            tcp,
            service,
            builder.clone(),
            settings.clone(),
            stopping.clone(),
        ));
    }
    drop(listener);
    hubs.close();
    let _ = stop.send(true);
    let drained = tokio::time::timeout(settings.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "serve: dropping connections still open after the shutdown timeout"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.ping)
        .keep_alive_timeout(settings.ping.unwrap_or(Duration::from_secs(20)))
        // WebSocket over HTTP/2 (RFC 8441), which `SseLayer::websocket` accepts.
        .enable_connect_protocol();
    builder
}

/// Socket options on an accepted connection; a failure is logged, not
/// fatal (the connection works without them).
fn configure(tcp: &TcpStream, settings: &Settings) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "serve: TCP_NODELAY");
    }
    let socket = socket2::SockRef::from(tcp);
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
/// shutting it down gracefully once `stopping` turns true.
async fn connection<S, B>(
    tcp: TcpStream,
    service: WithPeer<S>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    settings: Settings,
    stopping: watch::Receiver<bool>,
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
    #[cfg(feature = "serve-tls")]
    if let Some(acceptor) = &settings.tls {
        let handshake = tokio::time::timeout(settings.header_read_timeout, acceptor.accept(tcp));
        // A shutdown does not wait for a handshake under way.
        let mut stopping = stopping;
        let tls = tokio::select! {
            handshake = handshake => match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(error = %e, "serve: TLS handshake failed"),
                Err(_) => return tracing::debug!("serve: TLS handshake timed out"),
            },
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        return drive(tls, service, &builder, &settings, stopping).await;
    }
    drive(tcp, service, &builder, &settings, stopping).await;
}

/// The HTTP/2 connection preface, by which hyper-util's auto builder tells
/// HTTP/2 from HTTP/1.1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the client's first bytes until they tell HTTP/1.1 from HTTP/2
/// (the whole preface, a byte that differs from it, or the end), as the
/// auto builder would, which waits for them without a timeout: a client
/// that connected and sent nothing (or part of the preface) would hold its
/// connection forever, hyper's header read timeout starting only after.
async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Bytes> {
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

async fn drive<I, S, B>(
    io: I,
    service: WithPeer<S>,
    builder: &auto::Builder<TokioExecutor>,
    settings: &Settings,
    mut stopping: watch::Receiver<bool>,
) where
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
        _ = stopping.wait_for(|stop| *stop) => return,
    };
    let first = match first {
        Ok(Ok(first)) => first,
        Ok(Err(e)) => return tracing::debug!(error = %e, "serve: reading the first bytes failed"),
        Err(_) => return tracing::debug!("serve: the client sent no request in time"),
    };
    let io = Rewind { first, io };
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    let mut connection = pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        _ = stopping.wait_for(|stop| *stop) => None,
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
}

/// A connection whose first bytes, read by [`first_bytes`], are read again.
struct Rewind<I> {
    first: Bytes,
    io: I,
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

/// Errors of one connection that `accept` reports (it was reset before it
/// was accepted): skipped.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The service of one connection: adds the client's address and the
/// server's hubs to each request.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
    hubs: Hubs,
}

impl<S, B> Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let extensions = request.extensions_mut();
        extensions.insert(self.peer);
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.peer));
        extensions.insert(self.hubs.clone());
        self.inner.call(request)
    }
}

/// A rustls server config from PEM: the certificate chain (the server's
/// first) and its private key (PKCS#8, PKCS#1 or SEC1), for
/// [`Serve::tls`]. Errors (`InvalidInput`) say what is missing or wrong.
#[cfg(feature = "serve-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve-tls")))]
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<rustls::ServerConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("the certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("the certificate PEM holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid(format!("the private key PEM: {e}")))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| invalid(format!("the certificate and key: {e}")))
}
