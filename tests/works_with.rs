//! The stream over HTTP/2 and behind common tower-http middleware.

mod common;

use axum::{routing::get, Router};
use bytes::Bytes;
use common::{client, read_until, within, Server, Subscriber};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyDataStream, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tower_http::{
    compression::CompressionLayer, cors::CorsLayer, timeout::TimeoutLayer, trace::TraceLayer,
};
use tower_sse::{Event, SseLayer};

/// Publishes one event at a time and checks it arrives before the next is
/// published: the stream is not buffered by anything in between.
async fn flows_event_by_event(server: &Server, subscriber: &mut Subscriber) {
    for i in 0..5 {
        let text = format!("event {i}");
        server
            .publisher
            .publish(Event::default().data(&text))
            .unwrap();
        assert_eq!(subscriber.next().await.unwrap().data, text);
    }
}

const BIG: &str = "a page long enough to be worth compressing, repeated. \
                   a page long enough to be worth compressing, repeated.";

#[tokio::test]
async fn http2_prior_knowledge_carries_several_streams_on_one_connection() {
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let server = Server::start(Router::new().layer(layer), publisher).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);

    let mut streams = Vec::new();
    for topic in ["a", "b", "c"] {
        let request = Request::get(format!("http://{}/events?topic={topic}", server.addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = within("an HTTP/2 stream", sender.clone().send_request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        streams.push(BodyDataStream::new(response.into_body()).eventsource());
    }
    assert_eq!(server.publisher.subscriber_count(), 3);
    for topic in ["a", "b", "c"] {
        server
            .publisher
            .publish_to(topic, Event::default().data(topic))
            .unwrap();
    }
    server
        .publisher
        .publish(Event::default().data("all"))
        .unwrap();
    for (stream, topic) in streams.iter_mut().zip(["a", "b", "c"]) {
        for expected in [topic, "all"] {
            let event = within("an event over HTTP/2", stream.next()).await;
            assert_eq!(event.unwrap().unwrap().data, expected);
        }
    }
}

#[tokio::test]
async fn compression_leaves_the_stream_alone_and_compresses_the_rest() {
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let app = Router::new()
        .route("/page", get(|| async { BIG }))
        .layer(layer)
        .layer(CompressionLayer::new());
    let server = Server::start(app, publisher).await;

    let page = client()
        .get(server.url("/page"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["content-encoding"],
        "gzip",
        "the layer is active"
    );

    let mut subscriber = Subscriber::connect_with(
        client()
            .get(server.url("/events"))
            .header("accept-encoding", "gzip"),
    )
    .await;
    assert!(subscriber
        .response_headers
        .get("content-encoding")
        .is_none());
    flows_event_by_event(&server, &mut subscriber).await;
}

#[tokio::test]
async fn trace_layer_passes_the_stream_through() {
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let app = Router::new().layer(layer).layer(TraceLayer::new_for_http());
    let server = Server::start(app, publisher).await;
    let mut subscriber = Subscriber::connect(&server.url("/events")).await;
    flows_event_by_event(&server, &mut subscriber).await;
}

/// tower-http's `TimeoutLayer` bounds the time to the response head, which
/// the stream gives at once: the stream outlives the timeout.
#[tokio::test]
async fn a_request_timeout_does_not_cut_the_stream() {
    let layer = SseLayer::new("/events").keep_alive(Duration::from_millis(300));
    let publisher = layer.publisher();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .layer(layer)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(100),
        ));
    let server = Server::start(app, publisher).await;

    let slow = client().get(server.url("/slow")).send().await.unwrap();
    assert_eq!(slow.status(), 408, "the timeout is active");

    let response = client().get(server.url("/events")).send().await.unwrap();
    let mut body = response.bytes_stream();
    // The keep-alive comment comes 300 ms in, three times the timeout.
    read_until(
        &mut body,
        b":keep-alive\n\n",
        "a keep-alive after the timeout",
    )
    .await;
    server
        .publisher
        .publish(Event::default().data("still here"))
        .unwrap();
    let next = within("an event", body.next()).await.unwrap().unwrap();
    assert!(next.starts_with(b"data: still here\n"));
}

#[tokio::test]
async fn cors_allows_a_cross_origin_event_source_with_credentials() {
    let origin = "http://app.example";
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let app = Router::new().layer(layer).layer(
        CorsLayer::new()
            .allow_origin(origin.parse::<http::HeaderValue>().unwrap())
            .allow_methods([Method::GET])
            .allow_credentials(true),
    );
    let server = Server::start(app, publisher).await;
    // `new EventSource(url, { withCredentials: true })` sends Origin and cookies.
    let mut subscriber = Subscriber::connect_with(
        client()
            .get(server.url("/events"))
            .header("origin", origin)
            .header("cookie", "session=1"),
    )
    .await;
    let headers = &subscriber.response_headers;
    assert_eq!(headers["access-control-allow-origin"], origin);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    flows_event_by_event(&server, &mut subscriber).await;
}
