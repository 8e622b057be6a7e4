//! A tonic client calls the gRPC method; an independent SSE client (reqwest +
//! eventsource-stream, over HTTP/1.1) on the same server receives the event.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use std::time::Duration;
use tonic_notify::proto::{notifier_client::NotifierClient, NotifyRequest};
use tower_sse::SseLayer;

const TIMEOUT: Duration = Duration::from_secs(10);

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
