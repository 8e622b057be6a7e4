//! `tower_sse::serve` over real TCP: HTTP/1.1 streams, a graceful shutdown
//! that ends them, the header read timeout against a slowloris, the client's
//! address for per-address limits, and HTTPS with HTTP/2 multiplexing many
//! streams on one connection.

mod common;

use axum::{routing::get, Router};
use bytes::Bytes;
use common::{
    certificates,
    served::{h2_over, Served},
    within, Subscriber, TIMEOUT,
};
use http_body_util::{BodyExt, Empty};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower_sse::{Event, Hub, SseLayer};

#[tokio::test]
async fn streams_are_served_and_a_graceful_shutdown_ends_them() {
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .layer(layer);
    let served = Served::start(app, |s| s).await;

    let mut browser = Subscriber::connect(&served.url("/events")).await;
    let id = publisher
        .publish(Event::default().data("hello"))
        .unwrap()
        .await
        .unwrap();
    let event = browser.next().await.unwrap();
    assert_eq!((event.data.as_str(), event.id), ("hello", id.to_string()));
    let health = common::client()
        .get(served.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");

    // The hub was never handed to the server: it found it in the requests.
    served.shut_down().await;
    assert!(publisher.is_closed(), "the layer's hub was closed");
    assert!(browser.next().await.is_none(), "the stream ended");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let app = Router::new().layer(SseLayer::new("/events"));
    let served = Served::start(app, |s| s.header_read_timeout(Duration::from_millis(300))).await;
    let mut slow = TcpStream::connect(served.addr).await.unwrap();
    slow.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // hyper answers 408 or just closes; either way the connection ends.
    let mut seen = Vec::new();
    within("the server to drop the slow client", async {
        let mut buf = [0; 1024];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&seen);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // The server still serves others.
    let mut browser = Subscriber::connect(&served.url("/events")).await;
    served.shut_down().await;
    assert!(browser.next().await.is_none());
}

/// Before its first bytes tell HTTP/1.1 from HTTP/2, a connection is under
/// the header read timeout too: a client that sends nothing, or the start
/// of the HTTP/2 preface, is dropped (hyper-util waited for them forever).
#[tokio::test]
async fn a_client_that_sends_nothing_or_part_of_the_preface_is_disconnected() {
    let app = Router::new().layer(SseLayer::new("/events"));
    let served = Served::start(app, |s| s.header_read_timeout(Duration::from_millis(300))).await;
    let silent = TcpStream::connect(served.addr).await.unwrap();
    let mut partial = TcpStream::connect(served.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    for (what, mut client) in [("silent", silent), ("partial preface", partial)] {
        within(&format!("the server to drop the {what} client"), async {
            let mut buf = [0; 64];
            while let Ok(1..) = client.read(&mut buf).await {}
        })
        .await;
    }
    // HTTP/2 without TLS (prior knowledge) still works past the check.
    let mut sender = h2_over(TcpStream::connect(served.addr).await.unwrap()).await;
    let request = http::Request::get(served.url("/events"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("an h2c answer", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    served.shut_down().await;
}

/// `SseLayer::websocket` through `serve`: the HTTP/1.1 upgrade, events,
/// and a graceful shutdown that closes the session (its hub is closed).
#[cfg(feature = "ws")]
#[tokio::test]
async fn websocket_sessions_work_through_serve_and_end_on_shutdown() {
    use futures_util::StreamExt;
    let layer = SseLayer::new("/events").websocket("/ws");
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| s).await;
    let mut ws = common::ws_open(&format!("ws://{}/ws?topic=a", served.addr), None).await;
    assert_eq!(common::next(&mut ws).await["type"], "subscribed");
    publisher
        .publish_to("a", Event::default().data("through serve"))
        .unwrap();
    assert_eq!(common::next(&mut ws).await["data"], "through serve");
    served.shut_down().await;
    within("the session to end", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// WebSocket over HTTP/2 (RFC 8441's extended `CONNECT`, which `serve`
/// enables): a session on a stream of an h2c connection gets its events,
/// beside an event stream on the same connection.
#[cfg(feature = "ws")]
#[tokio::test]
async fn websocket_over_http2_extended_connect_works_through_serve() {
    use tokio_tungstenite::{tungstenite::protocol::Role, WebSocketStream};
    let layer = SseLayer::new("/events").websocket("/ws");
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| {
        s.shutdown_timeout(Duration::from_secs(2))
    })
    .await;
    let mut send = h2_over(TcpStream::connect(served.addr).await.unwrap()).await;

    let mut connect = http::Request::connect(served.url("/ws?topic=a"))
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = within("the CONNECT answer", send.send_request(connect))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.headers());
    let upgraded = within("the stream to open", hyper::upgrade::on(response))
        .await
        .unwrap();
    let mut ws = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    assert_eq!(common::next(&mut ws).await["type"], "subscribed");

    // An event stream on the same connection.
    within("the connection to take a stream", send.ready())
        .await
        .unwrap();
    let events = within(
        "the event stream",
        send.send_request(
            http::Request::get(served.url("/events?topic=a"))
                .body(Empty::new())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(publisher.subscriber_count(), 2);

    publisher
        .publish_to("a", Event::default().data("over h2"))
        .unwrap();
    let message = common::next(&mut ws).await;
    assert_eq!(message["data"], "over h2", "{message}");
    let mut body = events.into_body();
    let mut seen = String::new();
    within("the event on the stream", async {
        while !seen.contains("data: over h2\n") {
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await;
    drop((ws, body));
    served.shut_down().await;
}

/// With `tcp_user_timeout`, the kernel aborts a connection whose data goes
/// unacknowledged (a client that never reads, or vanished), and its
/// stream is dropped (`tests/hostile.rs` shows it stays without).
#[tokio::test]
async fn a_client_that_never_reads_is_dropped_by_the_tcp_user_timeout() {
    let layer =
        SseLayer::new("/events").hub(&Hub::builder().history(10_000).max_lag(10_000).build());
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| {
        s.tcp_user_timeout(Some(Duration::from_millis(500)))
    })
    .await;
    let stuck = common::never_reading_client(served.addr, &publisher).await;
    let mut count = publisher.watch_subscribers();
    within(
        "the kernel to abort the stuck connection",
        count.wait_for(|n| *n == 0),
    )
    .await
    .unwrap();
    drop(stuck);
    served.shut_down().await;
}

#[tokio::test]
async fn the_clients_address_reaches_the_per_address_limit() {
    let hub = Hub::builder().max_streams_per_address(2).build();
    let app = Router::new().layer(SseLayer::new("/events").hub(&hub));
    let served = Served::start(app, |s| s).await;
    let _first = Subscriber::connect(&served.url("/events")).await;
    let _second = Subscriber::connect(&served.url("/events")).await;
    let third = common::client()
        .get(served.url("/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    served.shut_down().await;
}

/// One TLS connection to `addr` that offers only `h2`, trusting `ca`.
async fn h2_connection(
    addr: SocketAddr,
    ca_pem: &str,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2_over(tls).await
}

#[tokio::test]
async fn https_with_http2_carries_many_streams_on_one_connection() {
    let (ca, cert, key) = certificates();
    let config = tower_sse::tls_config(cert.as_bytes(), key.as_bytes()).unwrap();
    let hub = Hub::builder().build();
    let layer = SseLayer::new("/events").hub(&hub);
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| s.tls(config)).await;

    let mut send = h2_connection(served.addr, &ca).await;
    let mut bodies = Vec::new();
    for _ in 0..10 {
        send.ready().await.unwrap();
        let request = http::Request::get(format!("https://{}/events", served.addr))
            .body(Empty::new())
            .unwrap();
        let response = within("a response", send.send_request(request))
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        bodies.push(response.into_body());
    }
    assert_eq!(publisher.subscriber_count(), 10);
    let id = publisher
        .publish(Event::default().data("to all ten"))
        .unwrap()
        .await
        .unwrap();
    let wanted = format!("data: to all ten\nid: {id}\n\n");
    for body in &mut bodies {
        let mut seen = String::new();
        within("the event on every stream", async {
            while !seen.contains(&wanted) {
                let frame = body.frame().await.unwrap().unwrap();
                if let Ok(data) = frame.into_data() {
                    seen.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
        })
        .await;
    }

    // A plain HTTP client gets no answer from the TLS port, and the server
    // goes on serving.
    let plain = common::client()
        .get(served.url("/events"))
        .timeout(TIMEOUT)
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    send.ready().await.unwrap();

    served.shut_down().await;
    for body in &mut bodies {
        let end = within("the stream to end", async {
            loop {
                match body.frame().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                }
            }
        });
        end.await;
    }
}

#[test]
fn tls_config_says_what_is_wrong() {
    let (_, cert, key) = certificates();
    let err = tower_sse::tls_config(b"", key.as_bytes()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("no certificate"), "{err}");
    let err = tower_sse::tls_config(cert.as_bytes(), b"not a key").unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
    let (_, _, other_key) = certificates();
    let err = tower_sse::tls_config(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("certificate and key"), "{err}");
}
