//! `tower_sse::serve`'s lean path for HTTP/1.x event streams, over real
//! TCP: the response head is the one hyper writes (whatever the app's
//! layers add), HTTP/1.0 clients get a body that ends with the
//! connection, a request pipelined behind a stream is not answered and
//! what a client sends after its request is bounded, clients that go away
//! mid-event free their streams, and ordinary requests on the same
//! connection still go to hyper; a malformed or oversized head on the
//! stream path gets hyper's 400 or 431. (The transport suites run over the lean
//! path too: `tests/common`'s `Server` uses `tower_sse::serve`.)

mod common;

use axum::{http::HeaderValue, middleware, routing::get, Router};
use common::{read_raw, served::Served, within};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower_sse::{Event, Publisher, SseLayer};

/// An app whose outer layer adds a header to every response (as a CORS
/// layer does), served with the lean path on or off.
async fn serve(lean: bool) -> (Served, Publisher) {
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .layer(layer)
        .layer(middleware::map_response(
            |mut response: axum::response::Response| async move {
                response
                    .headers_mut()
                    .insert("access-control-allow-origin", HeaderValue::from_static("*"));
                response
            },
        ));
    let served = Served::start(app, |s| s.lean_streams(lean)).await;
    (served, publisher)
}

/// Sends `request` and reads the response head, its `date` line blanked.
async fn head_of(served: &Served, request: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(served.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let seen = read_raw(&mut tcp, "\r\n\r\n", "the response head").await;
    let head = seen.split("\r\n\r\n").next().unwrap();
    let head = head
        .lines()
        .map(|line| {
            if line.starts_with("date: ") {
                "date: …"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    (tcp, head)
}

#[tokio::test]
async fn the_head_is_the_one_hyper_writes() {
    let (lean, _) = serve(true).await;
    let (hyper, _) = serve(false).await;
    for request in [
        "GET /events?topic=a HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET /events?topic=a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "GET /events?topic=a HTTP/1.0\r\n\r\n",
        // Refused: not a stream, hyper answers on both.
        "GET /events?topic=%ff HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let (_a, from_lean) = head_of(&lean, request).await;
        let (_b, from_hyper) = head_of(&hyper, request).await;
        assert_eq!(from_lean, from_hyper, "for {request:?}");
        assert!(
            from_lean.contains("access-control-allow-origin: *"),
            "{from_lean}"
        );
    }
    lean.shut_down().await;
    hyper.shut_down().await;
}

#[tokio::test]
async fn http10_clients_get_a_body_that_ends_with_the_connection() {
    let (served, publisher) = serve(true).await;
    let mut tcp = TcpStream::connect(served.addr).await.unwrap();
    tcp.write_all(b"GET /events HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let head = read_raw(&mut tcp, "\r\n\r\n", "the head").await;
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    publisher
        .publish(Event::default().data("hello"))
        .unwrap()
        .await
        .unwrap();
    let body = read_raw(&mut tcp, "data: hello\n", "the event").await;
    // Not chunked: no size line (nor any CRLF) in the body.
    assert!(!body.contains("\r\n"), "{body:?}");
    // The shutdown ends the stream: the connection closes.
    let shutdown = tokio::spawn(served.shut_down());
    within("the connection to close", async {
        let mut buf = [0; 256];
        while tcp.read(&mut buf).await.unwrap() > 0 {}
    })
    .await;
    shutdown.await.unwrap();
}

#[tokio::test]
async fn a_pipelined_request_is_not_answered_and_what_follows_is_bounded() {
    let (served, publisher) = serve(true).await;
    let mut tcp = TcpStream::connect(served.addr).await.unwrap();
    // A stream request with an ordinary one behind it, in one write.
    tcp.write_all(
        b"GET /events HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .unwrap();
    read_raw(&mut tcp, "\r\n\r\n", "the head").await;
    publisher
        .publish(Event::default().data("first"))
        .unwrap()
        .await
        .unwrap();
    let seen = read_raw(&mut tcp, "data: first\n", "the event").await;
    assert!(
        !seen.contains("HTTP/1.1 200 OK\r\ncontent-type: text/plain"),
        "{seen}"
    );
    // The stream goes on while the client sends a little more.
    tcp.write_all(&[b'x'; 1000]).await.unwrap();
    publisher
        .publish(Event::default().data("second"))
        .unwrap()
        .await
        .unwrap();
    read_raw(&mut tcp, "data: second\n", "the next event").await;
    // Past 64 KiB, the stream ends cleanly: its last chunk, then the end.
    let flood = tokio::spawn(async move {
        let _ = tcp.write_all(&vec![b'x'; 70 * 1024]).await;
        tcp
    });
    let mut tcp = flood.await.unwrap();
    let mut rest = Vec::new();
    within("the stream to end", async {
        let mut buf = [0; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        rest.ends_with(b"0\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    served.shut_down().await;
}

#[tokio::test]
async fn clients_that_go_mid_event_free_their_streams_and_others_carry_on() {
    let (served, publisher) = serve(true).await;
    let mut leaving = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(served.addr).await.unwrap();
        tcp.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        read_raw(&mut tcp, "\r\n\r\n", "a head").await;
        leaving.push(tcp);
    }
    let mut staying = common::Subscriber::connect(&served.url("/events")).await;
    assert_eq!(publisher.subscriber_count(), 21);
    // Events larger than the socket buffers, so each is mid-write when
    // its readers go.
    let big = "x".repeat(512 * 1024);
    for _ in 0..3 {
        publisher
            .publish(Event::default().data(big.as_str()))
            .unwrap()
            .await
            .unwrap();
    }
    for mut tcp in leaving {
        let mut some = [0; 4096];
        let _ = tcp.read(&mut some).await;
        drop(tcp);
    }
    for _ in 0..3 {
        let event = staying.next().await.unwrap();
        assert_eq!(event.data.len(), big.len());
    }
    within(
        "the leavers' streams to end",
        publisher.watch_subscribers().wait_for(|&n| n == 1),
    )
    .await
    .unwrap();
    served.shut_down().await;
}

#[tokio::test]
async fn ordinary_requests_before_a_stream_on_one_connection_go_to_hyper() {
    let (served, publisher) = serve(true).await;
    let mut tcp = TcpStream::connect(served.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let health = read_raw(&mut tcp, "\r\n\r\nok", "the health answer").await;
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    // The same connection, kept alive, then opens a stream.
    tcp.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_raw(&mut tcp, "text/event-stream", "the stream's head").await;
    publisher
        .publish(Event::default().data("after"))
        .unwrap()
        .await
        .unwrap();
    read_raw(&mut tcp, "data: after\n", "the event").await;
    served.shut_down().await;
}

#[tokio::test]
async fn a_malformed_head_on_the_stream_path_gets_400_and_an_oversized_one_431() {
    let (served, publisher) = serve(true).await;
    // hyper reads every head, on the stream path too: the lean path only
    // takes a stream the layer has admitted.
    let (_, head) = head_of(
        &served,
        "GET /events HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let long = "a".repeat(70 * 1024);
    let (_, head) = head_of(
        &served,
        &format!("GET /events HTTP/1.1\r\nhost: x\r\nx-long: {long}\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert_eq!(publisher.subscriber_count(), 0);
    served.shut_down().await;
}
