//! Odd and hostile requests on the stream path get a clear answer, never a
//! panic or a 500, over real TCP with a raw client.

mod common;

use axum::Router;
use common::{within, Server};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower_sse::{Event, Hub, SseLayer};

async fn server() -> Server {
    let layer = SseLayer::new("/events").max_topics(64);
    let publisher = layer.publisher();
    Server::start(Router::new().layer(layer), publisher).await
}

/// Sends `request` as is and reads until `until` appears (or the end).
async fn raw(server: &Server, request: &[u8], until: &str) -> String {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut seen = Vec::new();
    within("the raw answer", async {
        let mut buf = [0; 4096];
        while !String::from_utf8_lossy(&seen).contains(until) {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn an_http_1_0_client_gets_the_stream_without_chunked_encoding() {
    let server = server().await;
    let publisher = server.publisher.clone();
    let mut count = publisher.watch_subscribers();
    let reading = tokio::spawn({
        let addr = server.addr;
        async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET /events HTTP/1.0\r\n\r\n")
                .await
                .unwrap();
            common::read_raw(&mut tcp, "data: for 1.0\n", "the event").await
        }
    });
    within("the subscriber", count.wait_for(|n| *n == 1))
        .await
        .unwrap();
    publisher.publish(Event::default().data("for 1.0")).unwrap();
    let seen = within("the event", reading).await.unwrap();
    assert!(seen.starts_with("HTTP/1.0 200"), "{seen}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert!(!seen.contains("transfer-encoding"), "{seen}");
}

#[tokio::test]
async fn a_last_event_id_that_is_not_utf8_gets_the_reset_event() {
    let server = server().await;
    let seen = raw(
        &server,
        b"GET /events HTTP/1.1\r\nhost: x\r\nlast-event-id: \xff\xfe\x80\r\n\r\n",
        "event: reset\n",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("event: reset\n"), "{seen}");
}

#[tokio::test]
async fn ten_thousand_topics_get_a_400() {
    // A short parameter name, so the 10,000 fit in a URI hyper accepts.
    let layer = SseLayer::new("/events").topic_param("t");
    let publisher = layer.publisher();
    let server = Server::start(Router::new().layer(layer), publisher).await;
    let query = vec!["t=a"; 10_000].join("&");
    let request = format!("GET /events?{query} HTTP/1.1\r\nhost: x\r\n\r\n");
    let seen = raw(&server, request.as_bytes(), "too many topics").await;
    assert!(seen.starts_with("HTTP/1.1 400"), "{seen}");

    // Longer than hyper takes: hyper answers before the layer sees it,
    // 414 under `axum::serve`, or 431 under `tower_sse::serve`, whose
    // request heads are at most 64 KiB.
    let query = vec!["topic=abcdefgh"; 10_000].join("&");
    let request = format!("GET /events?{query} HTTP/1.1\r\nhost: x\r\n\r\n");
    let seen = raw(&server, request.as_bytes(), "\r\n\r\n").await;
    let expected = if common::lean_path() {
        "HTTP/1.1 431"
    } else {
        "HTTP/1.1 414"
    };
    assert!(seen.starts_with(expected), "{seen}");
}

#[tokio::test]
async fn invalid_percent_encoding_and_control_characters_get_a_400() {
    let server = server().await;
    for query in ["topic=%ff%fe", "topic=a%00b", "topic=a%0d%0ab", "topic=%zz"] {
        let request = format!("GET /events?{query} HTTP/1.1\r\nhost: x\r\n\r\n");
        let seen = raw(&server, request.as_bytes(), "invalid topic").await;
        assert!(seen.starts_with("HTTP/1.1 400"), "{query}: {seen}");
    }
    // And the server still serves.
    let seen = raw(&server, b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n", "id: ").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
}

/// A client that never reads: once its socket is full, hyper stops polling
/// the stream, so no lag check can run. The server's memory for it stays
/// bounded (hyper's write buffer; events live once, in the shared history),
/// and with `TCP_USER_TIMEOUT` set on accepted sockets (axum's `tap_io`) the
/// kernel aborts the connection once nothing is acknowledged for that long
/// — zero-window probes included — and the subscription is dropped.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped_with_tcp_user_timeout() {
    use std::time::Duration;

    let layer =
        SseLayer::new("/events").hub(&Hub::builder().history(10_000).max_lag(10_000).build());
    let publisher = layer.publisher();
    let addr = common::serve_with_user_timeout(
        ([127, 0, 0, 1], 0).into(),
        Duration::from_millis(500),
        Router::new().layer(layer),
    )
    .await;

    let tcp = common::never_reading_client(addr, &publisher).await;
    let mut count = publisher.watch_subscribers();
    // Meanwhile another subscriber is served as usual.
    let url = format!("http://{addr}/events");
    let mut other = common::Subscriber::connect(&url).await;
    publisher
        .publish(Event::default().data("for the reader"))
        .unwrap();
    assert_eq!(other.next().await.unwrap().data, "for the reader");
    drop(other);
    within(
        "the kernel to abort the stuck connection",
        count.wait_for(|n| *n == 0),
    )
    .await
    .unwrap();
    drop(tcp);
}

/// A client that vanishes with a reset (linger 0) instead of a FIN is
/// noticed and its subscription dropped.
#[tokio::test]
async fn a_client_that_vanishes_with_a_reset_is_cleaned_up() {
    use std::time::Duration;

    let layer = SseLayer::new("/events").keep_alive(Duration::from_millis(100));
    let publisher = layer.publisher();
    let server = Server::start(Router::new().layer(layer), publisher).await;
    let mut count = server.publisher.watch_subscribers();
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    within("the subscriber", count.wait_for(|n| *n == 1))
        .await
        .unwrap();
    socket2::SockRef::from(&tcp)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(tcp); // RST, no FIN
    within("the server to drop the stream", count.wait_for(|n| *n == 0))
        .await
        .unwrap();
}

/// Headers trickling in (slowloris): the layer sees nothing until the head is
/// complete, so the slow client holds up no one; when its head is done it
/// gets its stream like anyone else.
#[tokio::test]
async fn a_client_that_sends_its_headers_slowly_holds_up_no_one() {
    let server = server().await;
    let publisher = server.publisher.clone();
    let mut count = publisher.watch_subscribers();
    let head = b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.set_nodelay(true).unwrap();
    for byte in &head[..30] {
        slow.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::task::yield_now().await;
    }

    let mut other = common::Subscriber::connect(&server.url("/events")).await;
    assert_eq!(*count.borrow(), 1, "only the complete request subscribed");
    publisher
        .publish(Event::default().data("meanwhile"))
        .unwrap();
    assert_eq!(other.next().await.unwrap().data, "meanwhile");

    slow.write_all(&head[30..]).await.unwrap();
    within("the slow subscriber", count.wait_for(|n| *n == 2))
        .await
        .unwrap();
    publisher
        .publish(Event::default().data("for both"))
        .unwrap();
    assert_eq!(other.next().await.unwrap().data, "for both");
    let seen = common::read_raw(&mut slow, "data: for both\n", "the slow client's event").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(!seen.contains("meanwhile"), "{seen}");
}

/// The README's recipe against slowloris: hyper's `header_read_timeout`
/// (with a timer) closes a connection whose head never completes, before
/// the layer is involved.
#[tokio::test]
async fn a_header_read_timeout_closes_a_head_that_never_completes() {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::time::Duration;

    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let app = Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_millis(300))
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });

    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nho")
        .await
        .unwrap();
    // A complete request on another connection is served meanwhile.
    let mut other = common::Subscriber::connect(&format!("http://{addr}/events")).await;
    publisher.publish(Event::default().data("served")).unwrap();
    assert_eq!(other.next().await.unwrap().data, "served");

    let mut rest = Vec::new();
    let closed = within("the server to close the stalled head", async {
        stalled.read_to_end(&mut rest).await
    })
    .await;
    // Closed by the server: EOF (possibly after a 408) or a reset.
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        closed.is_err() || rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest}"
    );
    assert_eq!(
        publisher.subscriber_count(),
        1,
        "the stalled head never subscribed"
    );
}

/// A publisher cannot forge the stream's own `reset` (nor a `tower-sse:`
/// control order): `publish` refuses it with a typed error naming why, and
/// the genuine reset still opens a stream whose resume point was lost.
#[tokio::test]
async fn a_forged_reset_is_refused_and_the_genuine_one_still_arrives() {
    use tower_sse::Error;

    let server = server().await;
    let publisher = &server.publisher;
    for name in ["reset", "tower-sse:end-user", "tower-sse:anything"] {
        let forged = publisher.publish(Event::default().event(name));
        assert!(matches!(forged, Err(Error::ReservedEventName)), "{name}");
        let forged = publisher.publish_to("room/1", Event::default().event(name).data("x"));
        let error = forged.unwrap_err();
        assert!(error.to_string().contains("reserved"), "{error}");
    }
    // Names that only look like it are an app's own.
    publisher
        .publish(Event::default().event("Reset").data("app's"))
        .unwrap();

    // A resume point the history never held: the genuine reset comes first,
    // with empty data, then live events; nothing forged reached the stream.
    let url = server.url("/events?topic=room/1");
    let mut resumed = common::Subscriber::resume(&url, Some("1")).await;
    let reset = resumed.next().await.unwrap();
    assert_eq!((reset.event.as_str(), reset.data.as_str()), ("reset", ""));
    publisher
        .publish_to("room/1", Event::default().event("said").data("live"))
        .unwrap();
    let live = resumed.next().await.unwrap();
    assert_eq!((live.event.as_str(), live.data.as_str()), ("said", "live"));
}
