//! [`serve`]: an HTTP/1.1 and HTTP/2 server (hyper's) with the settings a
//! push server needs, for an axum router or any tower service.

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use std::{
    convert::Infallible,
    fmt,
    future::{Future, IntoFuture},
    io,
    pin::{pin, Pin},
    sync::Arc,
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch};
use tower_service::Service;

use crate::publisher::ServedHubs as Hubs;

mod cap;
mod connection;
mod lean;
mod preface;
mod settings;
mod stall;

use settings::Settings;

use cap::Connections;
use connection::{configure, connection, WithPeer};
pub(crate) use lean::{Handed, Offer};
use stall::Stalls;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `service` on `listener`: HTTP/1.1 and HTTP/2 (told apart by the
/// client's first bytes, or by ALPN over TLS), WebSocket upgrades included,
/// each request carrying the client's [`SocketAddr`](std::net::SocketAddr) in its extensions (and
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
/// - At most [`max_connections`](Serve::max_connections) connections: by
///   default 7/8 of the process's descriptor limit (`RLIMIT_NOFILE`; at
///   least 128 kept for the rest), so a flood of connections cannot take
///   the descriptors the app, its database and its engine need; and 256
///   per client address, so one host cannot take them all. One past either
///   is answered `503` with `Retry-After` and closed at once.
/// - HTTP/2: at most 100 streams per connection (as browsers expect).
/// - An event stream (a `text/event-stream` response) that makes no write
///   progress for 10 s (the client does not read: its socket stays full, or
///   it never opens the stream's HTTP/2 flow-control window, pings answered
///   or not) closes its connection; the streams on it resume from their
///   ids, as after falling behind.
/// - A 64 KiB socket send buffer and 64 KiB of hyper's buffer per HTTP/1.1
///   connection: what a client that never reads holds is bounded (about
///   200 KiB with the kernel's accounting); request heads up to 64 KiB.
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

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("header_read_timeout", &self.settings.header_read_timeout)
            .field("tcp_keepalive", &self.settings.keep_alive)
            .field("tcp_user_timeout", &self.settings.user_timeout)
            .field("http2_ping", &self.settings.ping)
            .field("shutdown_timeout", &self.settings.shutdown_timeout)
            .field("max_connections", &self.settings.max_connections)
            .field(
                "max_connections_per_address",
                &self.settings.max_connections_per_address,
            )
            .field(
                "http2_max_concurrent_streams",
                &self.settings.http2_max_streams,
            )
            .field("write_stall_timeout", &self.settings.write_stall)
            .field("send_buffer_size", &self.settings.send_buffer)
            .field("http1_max_buf_size", &self.settings.http1_buffer)
            .finish_non_exhaustive()
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
    let settings = Arc::new(settings);
    let hubs = Hubs::default();
    let (stop, stopping) = watch::channel(false);
    let mut connections = Connections::new(
        settings.max_connections,
        settings.max_connections_per_address,
    );
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
        let Some(tcp) = connections.admit(tcp, peer) else {
            continue;
        };
        configure(&tcp, &settings);
        let service = WithPeer {
            inner: service.clone(),
            peer,
            hubs: hubs.clone(),
            stalls: Stalls::new(settings.write_stall.unwrap_or(Duration::MAX)),
            slot: None,
        };
        connections.spawn(
            peer,
            connection(
                tcp,
                service,
                builder.clone(),
                settings.clone(),
                stopping.clone(),
            ),
        );
    }
    drop(listener);
    hubs.close();
    let _ = stop.send(true);
    let drained = tokio::time::timeout(settings.shutdown_timeout, async {
        while connections.tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.tasks.len(),
            "serve: dropping connections still open after the shutdown timeout"
        );
        connections.tasks.shutdown().await;
    }
    Ok(())
}

fn builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.http1_buffer);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.ping)
        .keep_alive_timeout(settings.ping.unwrap_or(Duration::from_secs(20)))
        .max_concurrent_streams(settings.http2_max_streams)
        // WebSocket over HTTP/2 (RFC 8441), which `SseLayer::websocket` accepts.
        .enable_connect_protocol();
    builder
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
