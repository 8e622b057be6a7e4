//! A server run by `tower_sse::serve` (feature `serve`), for the tests
//! of what it does.

use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use std::{future::IntoFuture, net::SocketAddr};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::within;

/// A server run by `tower_sse::serve`, and the sender that shuts it down.
pub struct Served {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Served {
    pub async fn start(
        app: Router,
        settings: impl FnOnce(tower_sse::Serve<Router>) -> tower_sse::Serve<Router>,
    ) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = settings(tower_sse::serve(listener, app)).with_graceful_shutdown(async {
            stopped.await.ok();
        });
        let task = tokio::spawn(server.into_future());
        Served {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shuts down and waits until the server future completes.
    pub async fn shut_down(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        within("the server to stop", self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// An HTTP/2 client connection over `io` (prior knowledge), driven by a
/// task of its own.
pub async fn h2_over<I>(io: I) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    h2_with_window(io, None).await
}

/// The same with `window` as every stream's initial flow-control window
/// (`Some(0)`: the server may send no data until the client opens it,
/// which this one never does; it still answers pings).
pub async fn h2_with_window<I>(
    io: I,
    window: Option<u32>,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Some(window) = window {
        builder.initial_stream_window_size(window);
    }
    let (send, connection) = builder
        .handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection);
    send
}

/// A server where only a stall ends a stream whose client stops reading:
/// a lag bound such a client never reaches, a 300 ms write-stall timeout
/// and no `TCP_USER_TIMEOUT`. `app` is the app around the layer.
pub async fn stall_only(
    app: impl FnOnce(tower_sse::SseLayer) -> Router,
) -> (Served, tower_sse::Publisher) {
    let hub = tower_sse::Hub::builder()
        .history(10_000)
        .max_lag(10_000)
        .max_streams_per_address(usize::MAX)
        .build();
    let layer = tower_sse::SseLayer::new("/events").hub(&hub);
    let publisher = layer.publisher();
    let served = Served::start(app(layer), |s| {
        s.write_stall_timeout(Some(std::time::Duration::from_millis(300)))
            .tcp_user_timeout(None)
    })
    .await;
    (served, publisher)
}
