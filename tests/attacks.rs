//! The attacks of issue 25 on a server with the defaults, over real TCP to
//! 127.0.0.1 (bounded in count and time): each shows the attack contained,
//! a normal client still served within a stated latency, and the server's
//! memory bounded.

mod common;

use axum::Router;
use bytes::Bytes;
use common::{
    served::{h2_with_window, Served},
    within, Subscriber,
};
use http_body_util::Empty;
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tower_sse::{Event, Hub, Publisher, SseLayer};

/// A normal client's latency while an attack is under way: an event is
/// published, and must arrive within this (it takes about a millisecond).
const LATENCY: Duration = Duration::from_millis(500);

/// What an attack may grow the test process by, at most.
const MEMORY: u64 = 64 << 20;

/// The process's resident memory, in bytes (Linux).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// How much the process grew since `before` (in KiB), which must be under
/// [`MEMORY`].
fn grown_kib(before: u64) -> u64 {
    let grown = resident().saturating_sub(before);
    assert!(grown < MEMORY, "grew by {grown} bytes");
    grown / 1024
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until `needle` (or the end), for at most `limit`.
async fn read_for(tcp: &mut TcpStream, needle: &str, limit: Duration) -> String {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0; 4096];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&seen).into_owned()
}

/// A subscriber from 127.0.0.2 (another host, as far as limits go) gets an
/// event published now within [`LATENCY`].
async fn normal_client_is_served(url: &str, publisher: &Publisher) -> Duration {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut normal = Subscriber::connect_with(client.get(url)).await;
    let sent = Instant::now();
    publisher
        .publish(Event::default().data("for the normal client"))
        .unwrap();
    loop {
        let event = normal.next().await.unwrap();
        if event.data == "for the normal client" {
            break;
        }
    }
    let latency = sent.elapsed();
    assert!(latency < LATENCY, "{latency:?}");
    latency
}

/// Attack 1, descriptors: one host opens streams and connections without
/// end. With the defaults it gets 100 streams (then `429`) and 256
/// connections (then `503` at once); another host is served meanwhile.
#[tokio::test]
async fn one_host_takes_at_most_its_share_of_streams_and_connections() {
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| s).await;
    let before = resident();
    let request = b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut tcp = connect_from([127, 0, 0, 1], served.addr).await;
        tcp.write_all(request).await.unwrap();
        let seen = read_for(&mut tcp, "id: ", common::TIMEOUT).await;
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        held.push(tcp);
    }
    let mut tcp = connect_from([127, 0, 0, 1], served.addr).await;
    tcp.write_all(request).await.unwrap();
    let seen = read_for(&mut tcp, "\r\n\r\n", common::TIMEOUT).await;
    assert!(seen.starts_with("HTTP/1.1 429"), "{seen}");
    held.push(tcp);
    // Connections that send nothing, up to the per-address cap of 256: the
    // next is refused at once, well before any timeout.
    while held.len() < 256 {
        held.push(connect_from([127, 0, 0, 1], served.addr).await);
    }
    let mut refused = connect_from([127, 0, 0, 1], served.addr).await;
    let started = Instant::now();
    let seen = read_for(&mut refused, "\n\n", Duration::from_secs(2)).await;
    assert!(
        seen.starts_with("HTTP/1.1 503") || seen.is_empty(),
        "{seen}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    assert_eq!(publisher.subscriber_count(), 100);

    let latency = normal_client_is_served(&served.url("/events"), &publisher).await;
    let grown = grown_kib(before);
    println!("257 connections of one host: a normal client's event in {latency:?}, +{grown} KiB");
    drop(held);
    served.shut_down().await;
}

/// The total cap: past `max_connections` a connection is answered `503`
/// and closed at once; when connections end, new ones are served again.
#[tokio::test]
async fn past_the_connection_cap_a_connection_is_refused_at_once() {
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| s.max_connections(20)).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from([127, 0, 0, 1], served.addr).await);
    }
    let mut refused = connect_from([127, 0, 0, 3], served.addr).await;
    let started = Instant::now();
    refused
        .write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok();
    let seen = read_for(&mut refused, "retry later\n", Duration::from_secs(2)).await;
    assert!(
        seen.is_empty() || seen.starts_with("HTTP/1.1 503"),
        "{seen}"
    );
    assert!(seen.is_empty() || seen.contains("retry-after: 5"), "{seen}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    drop(held);
    // Served again once the idle connections are gone (the server notices
    // their end as it accepts the next).
    within("a connection under the cap", async {
        loop {
            let client = common::client();
            let response = client.get(served.url("/events")).send().await;
            if response.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    normal_client_is_served(&served.url("/events"), &publisher).await;
    served.shut_down().await;
}

/// Attack 2, stalled HTTP/2 streams: connections whose streams never open
/// their flow-control window (the client answers pings all along) are
/// closed after the write-stall timeout, and their streams released;
/// another client is served meanwhile.
#[tokio::test]
async fn http2_streams_that_never_open_their_window_are_ended() {
    let hub = Hub::builder().max_streams_per_address(usize::MAX).build();
    let layer = SseLayer::new("/events").hub(&hub);
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| {
        // Long enough to open all 100 streams first (each waits from when
        // it opens): a stall is counted from then.
        s.write_stall_timeout(Some(Duration::from_secs(2)))
            // Pings the client answers all along (a slow answer under load
            // must not be what closes the connection).
            .http2_ping(Some(Duration::from_millis(500)))
    })
    .await;
    let before = resident();
    let mut count = publisher.watch_subscribers();
    let mut streams = Vec::new();
    for _ in 0..5 {
        let tcp = TcpStream::connect(served.addr).await.unwrap();
        let mut send = h2_with_window(tcp, Some(0)).await;
        for _ in 0..20 {
            send.ready().await.unwrap();
            let request = http::Request::get(served.url("/events"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            streams.push(send.send_request(request));
        }
    }
    // The streams open: their headers are not flow-controlled, their
    // bodies are (and never get a byte of window).
    let mut responses = Vec::new();
    for stream in streams {
        let response = within("a stalled stream's headers", stream).await.unwrap();
        assert_eq!(response.status(), 200);
        responses.push(response);
    }
    let opened = Instant::now();
    publisher
        .publish(Event::default().data("never sent"))
        .unwrap();
    // ... and are ended: their connections closed, the hub's count back.
    within("the stalled streams to end", count.wait_for(|n| *n == 0))
        .await
        .unwrap();
    let ended = opened.elapsed();
    let latency = normal_client_is_served(&served.url("/events"), &publisher).await;
    let grown = grown_kib(before);
    println!(
        "100 zero-window HTTP/2 streams ended in {ended:?}; normal client {latency:?}; +{grown} KiB"
    );
    drop(responses);
    served.shut_down().await;
}

/// Attack 6, HTTP/1.1 clients that never read: each holds at most the
/// socket buffers (64 KiB send buffer) and is ended after the write-stall
/// timeout, long before `TCP_USER_TIMEOUT` (off here).
#[tokio::test]
async fn http1_clients_that_never_read_are_ended_after_the_stall_timeout() {
    let (served, publisher) = common::served::stall_only(|layer| Router::new().layer(layer)).await;
    let before = resident();
    let stuck = common::never_reading_client(served.addr, &publisher).await;
    let filled = Instant::now();
    let mut count = publisher.watch_subscribers();
    within("the stuck client to be ended", count.wait_for(|n| *n == 0))
        .await
        .unwrap();
    let ended = filled.elapsed();
    let latency = normal_client_is_served(&served.url("/events"), &publisher).await;
    let grown = grown_kib(before);
    println!("a never-reading client ended in {ended:?}; normal client {latency:?}; +{grown} KiB");
    assert!(ended < Duration::from_secs(5), "{ended:?}");
    drop(stuck);
    served.shut_down().await;
}

/// Attack 3, presence churn: a signed-in WebSocket client sends subscribe
/// and unsubscribe 600 times as fast as it can. The session takes 20 at
/// once (then 5 a second) and closes with `4029`; the room's followers get
/// a few dozen join/leave events, not 1,200; the shared history still
/// covers a follower's resume point; a normal follower is served within
/// [`LATENCY`].
#[tokio::test]
async fn a_client_churning_topics_is_closed_before_it_floods_presence() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
    use tower_sse::Access;

    let hub = Hub::builder().presence_events("room/").build();
    let layer = SseLayer::new("/events")
        .hub(&hub)
        .websocket("/ws")
        .authorize(|parts: http::request::Parts| async move {
            let access = Access::none().allow_prefix("room/");
            Ok::<_, http::Response<String>>(match parts.headers.get("cookie") {
                Some(_) => access.user("mallory"),
                None => access,
            })
        });
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| s).await;
    let before_attack = publisher
        .publish_to(
            "room/general",
            Event::default().event("said").data("before"),
        )
        .unwrap()
        .id()
        .unwrap()
        .to_string();
    let url = served.url("/events?topic=room/general");
    let mut follower = Subscriber::connect(&url).await;
    let resident_before = resident();

    let mut ws = common::ws_open(&format!("ws://{}/ws", served.addr), Some("session=1")).await;
    common::next(&mut ws).await;
    let mut sent = 0;
    for i in 0..600 {
        let kind = if i % 2 == 0 {
            "subscribe"
        } else {
            "unsubscribe"
        };
        let message = serde_json::json!({"type": kind, "topics": ["room/general"]});
        if ws
            .send(Message::Text(message.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    let (code, reason) = common::closed(&mut ws).await;
    assert_eq!(code, CloseCode::Library(4029), "{reason}");
    assert!(reason.contains("too many messages"), "{reason}");

    // Everything the churn announced comes before this.
    let sent_at = Instant::now();
    publisher
        .publish_to("room/general", Event::default().event("said").data("after"))
        .unwrap();
    let mut presence = 0;
    loop {
        let event = follower.next().await.unwrap();
        if event.data == "after" {
            break;
        }
        assert!(
            ["join", "leave"].contains(&event.event.as_str()),
            "{event:?}"
        );
        presence += 1;
    }
    let latency = sent_at.elapsed();
    assert!(latency < LATENCY, "{latency:?}");
    assert!(presence <= 42, "{presence} presence events");

    // The history still covers a resume point from before the churn.
    let mut resumed = Subscriber::resume(&url, Some(&before_attack)).await;
    let first = resumed.next().await.unwrap();
    assert_ne!(first.event, "reset");
    let grown = grown_kib(resident_before);
    println!(
        "{sent} churn messages sent: {presence} presence events; follower's next event in {latency:?}; +{grown} KiB"
    );
    served.shut_down().await;
}

/// Presence has a budget of its own: announced in topics of their own
/// (`here/…`), joins and leaves count against those topics' history only,
/// and past the hub's byte budget the topic that holds the most gives first.
/// 400 users coming and going (800 presence events, about 4× the budget)
/// cost a quiet room neither its events nor a client's resume.
#[tokio::test]
async fn a_presence_flood_costs_other_topics_nothing() {
    use tower_sse::{Access, HistoryQuery};

    let hub = Hub::builder()
        .presence_events("here/")
        .history_bytes(16 << 10)
        .build();
    let layer =
        SseLayer::new("/events")
            .hub(&hub)
            .authorize(|parts: http::request::Parts| async move {
                let user = (parts.uri.query().unwrap_or_default())
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("user="))
                    .unwrap_or("anonymous")
                    .to_owned();
                let access = Access::none().allow_prefix("room/").allow_prefix("here/");
                Ok::<_, http::Response<String>>(access.user(user))
            });
    let publisher = layer.publisher();
    let served = Served::start(Router::new().layer(layer), |s| s).await;
    let said = |text: &str| {
        publisher
            .publish_to("room/quiet", Event::default().event("said").data(text))
            .unwrap()
            .id()
            .unwrap()
            .to_string()
    };
    let first = said("first");
    said("second");

    let mut count = publisher.watch_subscribers();
    for user in 0..400 {
        let url = served.url(&format!("/events?topic=here/general&user=u{user}"));
        drop(Subscriber::connect(&url).await);
        within("the stream to close", count.wait_for(|n| *n == 0))
            .await
            .unwrap();
    }

    // The flood pressed the budget: its own topic gave.
    let (_, bytes) = publisher.history_size();
    assert!(bytes <= 16 << 10, "{bytes} bytes kept");
    let here = publisher
        .history_of("here/general", HistoryQuery::last(1_000))
        .await
        .unwrap();
    assert!(here.events.len() < 800, "{} kept", here.events.len());
    assert!(!here.events.is_empty());
    // The room kept both events, and a client resumes there without a reset.
    let url = served.url("/events?topic=room/quiet&user=ann");
    let mut resumed = Subscriber::resume(&url, Some(&first)).await;
    let next = resumed.next().await.unwrap();
    assert_eq!(
        (next.event.as_str(), next.data.as_str()),
        ("said", "second")
    );
    println!(
        "800 presence events: {} kept of here/general, {bytes} bytes in all; the room's resume replayed",
        here.events.len()
    );
    served.shut_down().await;
}
