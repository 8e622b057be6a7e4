//! The hub over WebSocket, with an independent client (tokio-tungstenite)
//! over real TCP: live topic changes, resume, and the close codes.

mod common;

use axum::Router;
use common::{closed, next, send, within, ws_open, Server, Ws};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
use tower_sse::{Access, Event, Hub, SseLayer};

async fn server(layer: SseLayer) -> Server {
    let publisher = layer.publisher();
    Server::start(Router::new().layer(layer.websocket("/ws")), publisher).await
}

async fn open(server: &Server, query: &str) -> Ws {
    ws_open(&format!("ws://{}/ws{query}", server.addr), None).await
}

#[tokio::test]
async fn topics_change_live_without_reconnecting() {
    let server = server(SseLayer::new("/events")).await;
    let publisher = &server.publisher;
    let mut ws = open(&server, "?topic=a").await;
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "subscribed");
    assert_eq!(hello["topics"], json!(["a"]));

    publisher
        .publish_to("b", Event::default().data("b1"))
        .unwrap();
    let a1 = publisher
        .publish_to("a", Event::default().event("note").data("a1"))
        .unwrap()
        .id()
        .unwrap();
    let event = next(&mut ws).await;
    assert_eq!(
        event,
        json!({"type": "event", "id": a1.to_string(), "event": "note", "topic": "a", "data": "a1"})
    );

    send(&mut ws, json!({"type": "subscribe", "topics": ["b"]})).await;
    let changed = next(&mut ws).await;
    assert_eq!(changed["type"], "subscribed");
    assert_eq!(changed["topics"], json!(["a", "b"]));
    assert_eq!(changed["after"], a1.to_string());
    publisher
        .publish_to("b", Event::default().data("b2"))
        .unwrap();
    assert_eq!(next(&mut ws).await["data"], "b2");

    send(&mut ws, json!({"type": "unsubscribe", "topics": ["a"]})).await;
    assert_eq!(next(&mut ws).await["topics"], json!(["b"]));
    publisher
        .publish_to("a", Event::default().data("a2"))
        .unwrap();
    publisher
        .publish(Event::default().data("everyone"))
        .unwrap();
    publisher
        .publish_to("b", Event::default().data("b3"))
        .unwrap();
    assert_eq!(next(&mut ws).await["data"], "everyone");
    assert_eq!(next(&mut ws).await["data"], "b3");
}

#[tokio::test]
async fn a_reconnecting_client_resumes_without_loss() {
    let server = server(SseLayer::new("/events")).await;
    let publisher = &server.publisher;
    let mut ws = open(&server, "?topic=a").await;
    next(&mut ws).await;
    for i in 1..=3 {
        publisher
            .publish_to("a", Event::default().data(format!("e{i}")))
            .unwrap();
    }
    let first = next(&mut ws).await;
    assert_eq!(first["data"], "e1");
    drop(ws);
    publisher
        .publish_to("a", Event::default().data("e4"))
        .unwrap();

    let id = first["id"].as_str().unwrap();
    let mut ws = open(&server, &format!("?topic=a&lastEventId={id}")).await;
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    let data: Vec<Value> = [
        next(&mut ws).await,
        next(&mut ws).await,
        next(&mut ws).await,
    ]
    .into_iter()
    .map(|e| e["data"].clone())
    .collect();
    assert_eq!(data, [json!("e2"), json!("e3"), json!("e4")]);

    // A resume point the history no longer covers: reset first.
    let mut ws = open(&server, "?lastEventId=1").await;
    assert_eq!(next(&mut ws).await["type"], "reset");
    assert_eq!(next(&mut ws).await["type"], "subscribed");
}

#[tokio::test]
async fn malformed_messages_close_with_a_reason_and_the_server_lives() {
    let server = server(SseLayer::new("/events")).await;
    for (message, code) in [
        (Message::Text("not json".into()), CloseCode::Protocol),
        (
            Message::Text(r#"{"type":"dance"}"#.into()),
            CloseCode::Protocol,
        ),
        (
            Message::Text(r#"{"type":"subscribe","topics":["bad topic"]}"#.into()),
            CloseCode::Protocol,
        ),
        (
            Message::Binary(vec![1, 2, 3].into()),
            CloseCode::Unsupported,
        ),
        (
            Message::Text(format!("\"{}\"", "x".repeat(100 * 1024)).into()),
            CloseCode::Size,
        ),
    ] {
        let mut ws = open(&server, "").await;
        next(&mut ws).await;
        ws.send(message).await.unwrap();
        let (got, reason) = closed(&mut ws).await;
        assert_eq!(got, code, "{reason}");
        assert!(!reason.is_empty());
    }
    let mut ws = open(&server, "").await;
    assert_eq!(next(&mut ws).await["type"], "subscribed");
}

#[tokio::test]
async fn the_authorize_hook_and_limits_apply() {
    let layer = SseLayer::new("/events")
        .hub(&Hub::builder().max_subscribers(1).build())
        .authorize(|_parts| async { Ok(Access::only(["public"]).follow("mine")) });
    let server = server(layer).await;

    // A topic the hook does not grant, asked in the query: 403.
    let url = format!("ws://{}/ws?topic=secret", server.addr);
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");

    let mut ws = open(&server, "?topic=public").await;
    next(&mut ws).await;
    server
        .publisher
        .publish_to("mine", Event::default().data("private"))
        .unwrap();
    assert_eq!(next(&mut ws).await["data"], "private");

    // Past max_subscribers: 503.
    let url = format!("ws://{}/ws", server.addr);
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");

    // Asking for it later: closed with policy violation.
    send(&mut ws, json!({"type": "subscribe", "topics": ["secret"]})).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("secret"), "{reason}");
}

#[tokio::test]
async fn a_plain_get_on_the_websocket_path_gets_a_400_saying_why() {
    let server = server(SseLayer::new("/events")).await;
    let response = common::client()
        .get(server.url("/ws"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("WebSocket"));
}

#[tokio::test]
async fn disconnect_all_and_shutdown_close_with_their_codes() {
    let mut server = server(SseLayer::new("/events")).await;
    let mut ws = open(&server, "").await;
    next(&mut ws).await;
    server.publisher.disconnect_all();
    assert_eq!(closed(&mut ws).await.0, CloseCode::Restart);

    let mut ws = open(&server, "").await;
    next(&mut ws).await;
    server.shutdown();
    assert_eq!(closed(&mut ws).await.0, CloseCode::Away);
}

/// `coalesce` on a WebSocket session: events published within the window
/// after a write wait for the next one; all arrive, in order, and a topic
/// change is answered meanwhile.
#[tokio::test]
async fn coalesced_sessions_deliver_every_event_in_order() {
    let window = std::time::Duration::from_millis(300);
    let server = server(SseLayer::new("/events").coalesce(window)).await;
    let publisher = &server.publisher;
    let mut ws = open(&server, "?topic=a").await;
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    let started = std::time::Instant::now();
    for round in 0..3 {
        // Rounds after the first are published just after a write: inside
        // its window.
        let mut ids = Vec::new();
        for i in 0..5 {
            let data = format!("{round}.{i}");
            let published = publisher.publish_to("a", Event::default().data(&data));
            ids.push((published.unwrap().id().unwrap().to_string(), data));
        }
        if round == 1 {
            send(&mut ws, json!({"type": "subscribe", "topics": ["b"]})).await;
        }
        let mut seen = Vec::new();
        while seen.len() < ids.len() {
            let message = next(&mut ws).await;
            if message["type"] == "event" {
                seen.push((
                    message["id"].as_str().unwrap().to_owned(),
                    message["data"].as_str().unwrap().to_owned(),
                ));
            }
        }
        assert_eq!(seen, ids);
    }
    // Two rounds waited for a window each.
    assert!(started.elapsed() >= window * 2, "{:?}", started.elapsed());
}

/// A reason longer than a control frame holds (an invalid topic of 100
/// two-byte characters, named in it) is cut to 123 bytes at a character
/// boundary: the client gets the code and the reason, not a protocol error.
#[tokio::test]
async fn a_long_close_reason_is_cut_to_the_protocol_limit() {
    let server = server(SseLayer::new("/events")).await;
    let mut ws = open(&server, "").await;
    next(&mut ws).await;
    let topic = "é".repeat(100);
    send(&mut ws, json!({"type": "subscribe", "topics": [topic]})).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Protocol, "{reason}");
    assert!(reason.len() <= 123 && reason.len() >= 120, "{reason:?}");
    assert!(
        reason.starts_with("could not subscribe: invalid topic"),
        "{reason}"
    );
    assert!(reason.ends_with('é'), "{reason}");
}

/// A session whose client takes nothing (it never reads: its socket
/// fills) ends after `write_stall_timeout`, counted as lagging, while
/// another session is served; the stalled one resumes with its id.
#[tokio::test]
async fn a_session_whose_client_never_reads_ends_after_the_stall_timeout() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let hub = Hub::builder().history(10_000).max_lag(10_000).build();
    let layer = SseLayer::new("/events")
        .hub(&hub)
        .keep_alive(std::time::Duration::from_millis(100))
        .write_stall_timeout(std::time::Duration::from_millis(300));
    let server = server(layer).await;
    let publisher = &server.publisher;
    let mut count = publisher.watch_subscribers();

    // A client with a small receive buffer that reads the handshake only.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    let request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    let (stuck, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let mut reader = open(&server, "").await;
    next(&mut reader).await;
    within("both sessions", count.wait_for(|n| *n == 2))
        .await
        .unwrap();

    let big = "x".repeat(64 * 1024);
    for _ in 0..100 {
        publisher.publish(Event::default().data(&big)).unwrap();
    }
    for _ in 0..100 {
        assert_eq!(
            next(&mut reader).await["data"].as_str().unwrap().len(),
            big.len()
        );
    }
    within("the stalled session to end", count.wait_for(|n| *n == 1))
        .await
        .unwrap();
    // The reader is still served, at once.
    let sent = std::time::Instant::now();
    publisher
        .publish(Event::default().data("still here"))
        .unwrap();
    assert_eq!(next(&mut reader).await["data"], "still here");
    assert!(sent.elapsed() < std::time::Duration::from_secs(1));
    drop(stuck);
}

/// A message that changes nothing (a topic already followed, one not
/// followed) is answered without re-opening the subscription: it goes on
/// right after the last event sent, nothing replayed or lost.
#[tokio::test]
async fn a_message_that_changes_nothing_keeps_the_subscription() {
    let server = server(SseLayer::new("/events")).await;
    let publisher = &server.publisher;
    let mut ws = open(&server, "?topic=a").await;
    next(&mut ws).await;
    let first = publisher
        .publish_to("a", Event::default().data("1"))
        .unwrap()
        .id()
        .unwrap();
    assert_eq!(next(&mut ws).await["data"], "1");
    for message in [
        json!({"type": "subscribe", "topics": ["a"]}),
        json!({"type": "unsubscribe", "topics": ["b"]}),
    ] {
        send(&mut ws, message).await;
        let answer = next(&mut ws).await;
        assert_eq!(answer["type"], "subscribed");
        assert_eq!(answer["topics"], json!(["a"]));
        assert_eq!(answer["after"], first.to_string());
    }
    publisher
        .publish_to("a", Event::default().data("2"))
        .unwrap();
    assert_eq!(next(&mut ws).await["data"], "2");
}

/// A session at every limit (in all, per user, per address) still changes
/// topics: it took one seat at its handshake, which both its old and its
/// new subscription hold; a second connection of the same user is refused
/// with the limit it passes, and gets in once the first has closed.
#[tokio::test]
async fn a_session_at_the_limits_still_changes_topics() {
    // The client's address is known under tower_sse::serve; axum::serve
    // (without connect info) gives none, and nothing is counted per address.
    for (hub, refused) in [
        (Hub::builder().max_subscribers(1), Some("503")),
        (Hub::builder().max_streams_per_user(1), Some("429")),
        (
            Hub::builder().max_streams_per_address(1),
            common::lean_path().then_some("429"),
        ),
    ] {
        let layer = SseLayer::new("/events")
            .hub(&hub.build())
            .authorize(|_parts| async { Ok(Access::all().user("ann")) });
        let server = server(layer).await;
        let mut ws = open(&server, "?topic=a").await;
        next(&mut ws).await;
        send(&mut ws, json!({"type": "subscribe", "topics": ["b"]})).await;
        let answer = next(&mut ws).await;
        assert_eq!(answer["type"], "subscribed");
        assert_eq!(answer["topics"], json!(["a", "b"]));
        send(&mut ws, json!({"type": "unsubscribe", "topics": ["a"]})).await;
        assert_eq!(next(&mut ws).await["topics"], json!(["b"]));
        server
            .publisher
            .publish_to("b", Event::default().data("on b"))
            .unwrap();
        assert_eq!(next(&mut ws).await["data"], "on b");
        assert_eq!(server.publisher.subscriber_count(), 1);

        if let Some(status) = refused {
            let url = format!("ws://{}/ws", server.addr);
            let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
            let err = err.to_string();
            assert!(err.contains(status), "{err}");
        }
        // Closed: its seat comes back.
        drop(ws);
        let mut count = server.publisher.watch_subscribers();
        within("the session to end", count.wait_for(|n| *n == 0))
            .await
            .unwrap();
        let mut again = open(&server, "?topic=a").await;
        assert_eq!(next(&mut again).await["type"], "subscribed");
    }
}
