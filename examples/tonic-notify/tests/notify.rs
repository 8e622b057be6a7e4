//! A tonic client calls the gRPC method; an independent SSE client (reqwest +
//! eventsource-stream, over HTTP/1.1) on the same server receives the event.
//! gRPC clients of the server-streaming `Watch` receive the hub's events too.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use std::{future::Future, net::SocketAddr, time::Duration};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{transport::Channel, Streaming};
use tonic_notify::proto::{
    notifier_client::NotifierClient, Notification, NotifyRequest, WatchRequest,
};
use tower_sse::{Event, Hub, Publisher, SseLayer};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test after [`TIMEOUT`].
async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {TIMEOUT:?}"))
}

/// A server on a free port: its address, its publisher, the sender that
/// shuts it down, and its task.
struct Server {
    addr: SocketAddr,
    publisher: Publisher,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    async fn start() -> Server {
        Server::with(SseLayer::new("/events")).await
    }

    async fn with(layer: SseLayer) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let publisher = layer.publisher();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tonic_notify::serve(listener, layer, async move {
            stopped.await.ok();
        }));
        Server {
            addr,
            publisher,
            stop,
            task,
        }
    }

    async fn client(&self) -> NotifierClient<Channel> {
        guard(
            "connect",
            NotifierClient::connect(format!("http://{}", self.addr)),
        )
        .await
        .unwrap()
    }

    /// Waits until `n` streams are open on the hub.
    async fn subscribed(&self, n: usize) {
        let mut count = self.publisher.watch_subscribers();
        guard("subscribers", count.wait_for(|c| *c == n))
            .await
            .unwrap();
    }

    /// Shuts the server down and waits for it to stop.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        guard("server stop", self.task).await.unwrap().unwrap();
    }
}

/// Publishes through the gRPC `Notify` method; the id it got.
async fn notify(
    client: &mut NotifierClient<Channel>,
    topic: &str,
    event: &str,
    message: &str,
) -> String {
    guard(
        "notify",
        client.notify(NotifyRequest {
            topic: topic.into(),
            event: event.into(),
            message: message.into(),
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .id
}

/// Opens a `Watch` of `topics`, resuming after `last_event_id` (empty: live).
async fn watch(
    client: &mut NotifierClient<Channel>,
    topics: &[&str],
    last_event_id: &str,
) -> Result<Streaming<Notification>, tonic::Status> {
    guard(
        "watch",
        client.watch(WatchRequest {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            last_event_id: last_event_id.into(),
        }),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// The next notification of a watch.
async fn next(stream: &mut Streaming<Notification>) -> Notification {
    guard("notification", stream.message())
        .await
        .unwrap()
        .expect("the watch ended")
}

#[tokio::test]
async fn a_grpc_call_reaches_a_browser_stream() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tonic_notify::serve(
        listener,
        SseLayer::new("/events"),
        async move {
            stopped.await.ok();
        },
    ));

    let response = reqwest::Client::new()
        .get(format!("http://{addr}/events?topic=orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = response.bytes_stream().eventsource();

    let mut client = NotifierClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let reply = client
        .notify(NotifyRequest {
            topic: "orders".into(),
            event: "paid".into(),
            message: "order 42 is paid".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let event = tokio::time::timeout(TIMEOUT, events.next())
        .await
        .expect("no event within the timeout")
        .unwrap()
        .unwrap();
    assert_eq!(event.event, "paid");
    assert_eq!(event.data, "order 42 is paid");
    assert_eq!(event.id, reply.id);

    // Invalid input is a gRPC error, not a panic.
    let status = client
        .notify(NotifyRequest {
            topic: "not a topic".into(),
            event: String::new(),
            message: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Shutdown closes the hub: the stream ends and the server stops.
    stop.send(()).unwrap();
    let end = tokio::time::timeout(TIMEOUT, events.next()).await.unwrap();
    assert!(end.is_none());
    tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_watch_receives_its_topics_events_with_the_notify_id() {
    let server = Server::start().await;
    let mut client = server.client().await;
    let mut watcher = watch(&mut client, &["orders"], "").await.unwrap();
    server.subscribed(1).await;

    notify(&mut client, "other", "", "not for orders").await;
    let paid = notify(&mut client, "orders", "paid", "order 42 is paid").await;
    notify(&mut client, "other", "", "not for orders either").await;
    let last = notify(&mut client, "orders", "", "order 43").await;

    // Ids are in publishing order: had an "other" event been forwarded,
    // it would have come before one of these.
    let first = next(&mut watcher).await;
    assert_eq!(
        first,
        Notification {
            id: paid,
            topic: "orders".into(),
            event: "paid".into(),
            message: "order 42 is paid".into(),
            reset: false,
        }
    );
    let second = next(&mut watcher).await;
    assert_eq!(
        (second.id, second.event, second.message),
        (last, String::new(), "order 43".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn a_watch_resumes_after_an_id_then_goes_on_live() {
    let server = Server::start().await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(notify(&mut client, "orders", "", &format!("order {n}")).await);
    }

    let mut watcher = watch(&mut client, &["orders"], &ids[0]).await.unwrap();
    for (id, message) in [(&ids[1], "order 2"), (&ids[2], "order 3")] {
        let notification = next(&mut watcher).await;
        assert_eq!(
            (&notification.id, notification.message.as_str()),
            (id, message)
        );
        assert!(!notification.reset);
    }
    // Caught up: the stream goes on with live events.
    let live = notify(&mut client, "orders", "", "order 4").await;
    let notification = next(&mut watcher).await;
    assert_eq!(
        (notification.id, notification.message),
        (live, "order 4".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn a_lost_resume_point_starts_with_a_reset() {
    let server = Server::start().await;
    let mut client = server.client().await;
    let newest = notify(&mut client, "orders", "", "order 1").await;

    // Ids start at the hub's creation time: "1" is older than its history.
    let mut watcher = watch(&mut client, &["orders"], "1").await.unwrap();
    let reset = next(&mut watcher).await;
    assert_eq!(
        reset,
        Notification {
            id: newest,
            reset: true,
            ..Notification::default()
        }
    );
    let live = notify(&mut client, "orders", "", "order 2").await;
    let notification = next(&mut watcher).await;
    assert_eq!((notification.id, notification.reset), (live, false));
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_topic_is_invalid_argument() {
    let server = Server::start().await;
    let mut client = server.client().await;
    let status = watch(&mut client, &["orders", "not a topic"], "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // The server is still up, and nothing stayed subscribed.
    assert_eq!(server.publisher.subscriber_count(), 0);
    notify(&mut client, "orders", "", "still up").await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_a_watch() {
    let server = Server::start().await;
    let mut client = server.client().await;
    let mut watcher = watch(&mut client, &["orders"], "").await.unwrap();
    server.subscribed(1).await;
    let id = notify(&mut client, "orders", "", "before shutdown").await;

    server.stop.send(()).unwrap();
    // What was published before is delivered, then the stream ends with OK.
    assert_eq!(next(&mut watcher).await.id, id);
    let end = guard("end of the watch", watcher.message()).await.unwrap();
    assert!(end.is_none());
    guard("server stop", server.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_watcher_that_falls_behind_is_aborted_and_resumes() {
    let hub = Hub::builder().max_lag(2).build();
    let server = Server::with(SseLayer::new("/events").hub(&hub)).await;
    let mut client = server.client().await;
    let mut watcher = watch(&mut client, &["orders"], "").await.unwrap();
    server.subscribed(1).await;
    let seen = notify(&mut client, "orders", "", "order 0").await;
    assert_eq!(next(&mut watcher).await.id, seen);

    // The test runs on one thread: the server does not forward anything
    // while this loop publishes past the lag bound without yielding.
    for n in 1..=5 {
        drop(
            server
                .publisher
                .publish_to("orders", Event::default().data(format!("order {n}")))
                .unwrap(),
        );
    }
    let status = guard("lag", watcher.message()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(status.message().contains("last_event_id"), "{status:?}");

    // Nothing is lost: resuming from the last id received replays the rest.
    let mut watcher = watch(&mut client, &["orders"], &seen).await.unwrap();
    for n in 1..=5 {
        let notification = next(&mut watcher).await;
        assert_eq!(notification.message, format!("order {n}"));
    }
    server.stop().await;
}

/// A `Watch` with `token` in its metadata.
async fn watch_as(
    client: &mut NotifierClient<Channel>,
    token: Option<&str>,
    topics: &[&str],
) -> Result<Streaming<Notification>, tonic::Status> {
    let mut request = tonic::Request::new(WatchRequest {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        last_event_id: String::new(),
    });
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    guard("watch", client.watch(request))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_watch_is_admitted_by_the_hubs_hook_from_its_metadata() {
    let server = Server::with(SseLayer::new("/events").authorize(tonic_notify::authorize)).await;
    let mut client = server.client().await;

    // No token, or an unknown one: the hook's own message, as UNAUTHENTICATED.
    for token in [None, Some("mallory-token")] {
        let status = watch_as(&mut client, token, &[]).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "unknown token");
    }
    // Another user's orders: PERMISSION_DENIED, naming the topic.
    let status = watch_as(&mut client, Some("alice-token"), &["orders/bob"])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("orders/bob"), "{status:?}");
    assert_eq!(server.publisher.subscriber_count(), 0);

    // Granted: her own orders without asking, and a public topic she asked for.
    let mut alice = watch_as(&mut client, Some("alice-token"), &["public/news"])
        .await
        .unwrap();
    server.subscribed(1).await;
    notify(&mut client, "orders/bob", "", "bob's order").await;
    let hers = notify(&mut client, "orders/alice", "", "alice's order").await;
    let news = notify(&mut client, "public/news", "", "news").await;
    assert_eq!(next(&mut alice).await.id, hers);
    assert_eq!(next(&mut alice).await.id, news);

    // The browsers' stream on the same server runs the same hook.
    let url = format!("http://{}/events", server.addr);
    let anonymous = reqwest::get(&url).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.text().await.unwrap(), "unknown token");
    server.stop().await;
}
