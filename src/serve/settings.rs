//! The settings of [`serve`](super::serve) and the builder methods of
//! [`Serve`] that set them: timeouts, caps, buffers, TLS.

#[cfg(feature = "serve-tls")]
use std::sync::Arc;
use std::{future::Future, io, net::SocketAddr, time::Duration};

use super::{cap, Serve, WithGracefulShutdown};

#[derive(Clone)]
pub(super) struct Settings {
    pub(super) header_read_timeout: Duration,
    pub(super) keep_alive: Option<Duration>,
    pub(super) user_timeout: Option<Duration>,
    pub(super) ping: Option<Duration>,
    pub(super) shutdown_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) max_connections_per_address: usize,
    pub(super) http2_max_streams: u32,
    pub(super) write_stall: Option<Duration>,
    pub(super) send_buffer: Option<usize>,
    pub(super) http1_buffer: usize,
    pub(super) lean: bool,
    #[cfg(feature = "serve-tls")]
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header_read_timeout: Duration::from_secs(10),
            keep_alive: Some(Duration::from_secs(60)),
            user_timeout: Some(Duration::from_secs(30)),
            ping: Some(Duration::from_secs(20)),
            shutdown_timeout: Duration::from_secs(10),
            max_connections: cap::default_max(),
            max_connections_per_address: 256,
            http2_max_streams: 100,
            write_stall: Some(Duration::from_secs(10)),
            send_buffer: Some(64 * 1024),
            http1_buffer: 64 * 1024,
            lean: true,
            #[cfg(feature = "serve-tls")]
            tls: None,
        }
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

    /// How many connections may be open at once; one more is answered
    /// `503 Service Unavailable` with `Retry-After: 5` and closed, without
    /// reading its request. Default: 7/8 of the process's descriptor limit
    /// (`RLIMIT_NOFILE`), keeping at least 128 descriptors for the rest of
    /// the process (10,000 where the limit cannot be read), so descriptors
    /// never run out. `usize::MAX` for no limit.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.settings.max_connections = connections.max(1);
        self
    }

    /// How many connections one client address may have open at once;
    /// one more is answered `503` and closed, as past
    /// [`max_connections`](Serve::max_connections). Default 256: the hub's
    /// default of 100 streams per address over HTTP/1.1, and the page loads
    /// of a NAT's users beside them, while one host cannot fill the server.
    /// `usize::MAX` for no limit. Behind a reverse proxy every connection
    /// comes from the proxy: lift it there, and limit each client at the
    /// proxy.
    pub fn max_connections_per_address(mut self, connections: usize) -> Self {
        self.settings.max_connections_per_address = connections.max(1);
        self
    }

    /// How many streams one HTTP/2 connection may have open at once (its
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`). Default 100: what browsers
    /// expect, and what the hub's default per-address limit allows.
    pub fn http2_max_concurrent_streams(mut self, streams: u32) -> Self {
        self.settings.http2_max_streams = streams;
        self
    }

    /// How long an event stream (a `text/event-stream` response) may have
    /// something to send that the client does not take (an HTTP/1.1 socket
    /// that stays full, an HTTP/2 stream whose flow-control window stays
    /// shut) before its connection is closed, or never. The event streams
    /// on it count as having fallen behind: their clients resume from their
    /// ids. Other responses are not watched (a download to a slow client
    /// may wait long between polls while it still reads). Default 10 s.
    pub fn write_stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.write_stall = timeout;
        self
    }

    /// The socket send buffer of each connection (`SO_SNDBUF`; Linux
    /// doubles it), which bounds what a client that does not read holds in
    /// the kernel; or `None` for the kernel's autotuning (up to 4 MiB by
    /// default on Linux), for large downloads over long links. Default
    /// 64 KiB: an event stream's traffic fits many times over.
    pub fn send_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.settings.send_buffer = bytes;
        self
    }

    /// How many bytes hyper buffers per HTTP/1.1 connection, each way: the
    /// longest request head it reads (a longer one is refused), and what it
    /// queues for a client before it stops taking more of the response.
    /// Default 64 KiB (hyper's own is about 400 KiB): with the send buffer,
    /// what a client that never reads holds. At least 8 KiB.
    pub fn http1_max_buf_size(mut self, bytes: usize) -> Self {
        // hyper panics below 8 KiB.
        self.settings.http1_buffer = bytes.max(8 * 1024);
        self
    }

    /// Whether an event stream over plain HTTP/1.x leaves hyper once the
    /// layer has admitted it (default `true`). Its connection then keeps
    /// no read or write buffer: about 1.5 KB of heap per idle stream
    /// instead of about 30 KB (see BENCHMARKS.md). The response head is
    /// written as hyper writes it, with whatever headers the app's layers
    /// added; layers that change the stream's body bytes (compression of
    /// `text/event-stream`, which tower-http does not do) are not applied
    /// to it. What the client sends after a stream request is read and
    /// dropped: a request pipelined behind it is never answered, as under
    /// hyper (it waits behind a response that never ends), and past 64 KiB
    /// (where hyper would stop reading) the stream ends cleanly.
    /// Streams over TLS and HTTP/2, and those a handler returns, stay with
    /// hyper.
    pub fn lean_streams(mut self, lean: bool) -> Self {
        self.settings.lean = lean;
        self
    }

    /// Serves HTTPS with `config` (rustls). Its ALPN protocols, when empty,
    /// become `h2` and `http/1.1`, so browsers speak HTTP/2. See
    /// [`tls_config`](super::tls_config) for a config from PEM files.
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
    /// [`serve`](super::serve)).
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
