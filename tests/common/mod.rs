//! Helpers for end-to-end tests: a real server on an ephemeral loopback port
//! and independent clients (reqwest + the `eventsource-stream` parser).
#![allow(dead_code)]

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_sse::Publisher;

/// Guard for every wait: long enough for a loaded CI machine, short enough
/// that a hang fails the test instead of the whole run.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// An axum app served on 127.0.0.1 with graceful shutdown that closes the hub.
pub struct Server {
    pub addr: SocketAddr,
    pub publisher: Publisher,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(app: axum::Router, publisher: Publisher) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let closer = publisher.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    rx.await.ok();
                    closer.close();
                })
                .await
        });
        Server {
            addr,
            publisher,
            shutdown: Some(tx),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Starts graceful shutdown (which closes the hub).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// A subscriber reading the stream through an independent WHATWG parser.
pub struct Subscriber {
    pub response_headers: reqwest::header::HeaderMap,
    events: Events,
}

impl Subscriber {
    /// Opens the stream at `url`; returns once the response headers arrived,
    /// that is once the server has registered the subscription.
    pub async fn connect(url: &str) -> Subscriber {
        Self::connect_with(client().get(url)).await
    }

    pub async fn connect_with(request: reqwest::RequestBuilder) -> Subscriber {
        let response = within(
            "the stream's headers",
            request.header("accept", "text/event-stream").send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200, "the stream was refused");
        Subscriber {
            response_headers: response.headers().clone(),
            events: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Event> {
        within("an event", self.events.next())
            .await
            .map(|e| e.expect("stream error"))
    }

    /// The next `n` events; fails if the stream ends first.
    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match self.next().await {
                Some(e) => events.push(e),
                None => panic!("stream ended after {} of {n} events", events.len()),
            }
        }
        events
    }
}
