//! Running it in production: who a stream belongs to, ending one user's or
//! one topic's streams, access that expires, per-user and per-address
//! limits, presence. Over real TCP, for SSE and WebSocket alike.

mod common;

use axum::Router;
use common::{client, closed, id, next, within, ws_open, Server, Subscriber};
use futures_util::StreamExt;
use http::{header::COOKIE, request::Parts, Response, StatusCode};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tower_sse::{testing::MemoryBackplane, Access, Error, Event, Hub, SseLayer};

/// The user in the `user=` cookie: any room, their own topic, and an
/// expiry in the `ttl-ms=` cookie if there is one.
async fn hook(parts: Parts) -> Result<Access, Response<String>> {
    let cookie = |name: &str| {
        parts
            .headers
            .get(COOKIE)
            .and_then(|c| c.to_str().ok())
            .and_then(|c| {
                c.split("; ")
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")[..]))
            })
            .map(str::to_owned)
    };
    let mut access = Access::none().allow_prefix("room/");
    if let Some(user) = cookie("user") {
        access = access.user(&user).follow(format!("user/{user}"));
    }
    if let Some(ms) = cookie("ttl-ms").and_then(|ms| ms.parse::<i64>().ok()) {
        access = match u64::try_from(ms) {
            Ok(ms) => access.expires_in(Duration::from_millis(ms)),
            Err(_) => access.expires_at(std::time::SystemTime::now() - Duration::from_secs(1)),
        };
    }
    Ok(access)
}

async fn server(hub: &Hub) -> Server {
    let layer = SseLayer::new("/events")
        .hub(hub)
        .websocket("/ws")
        .authorize(hook)
        .client_address(|parts| parts.headers.get("x-real-ip")?.to_str().ok()?.parse().ok());
    let publisher = layer.publisher();
    Server::start(Router::new().layer(layer), publisher).await
}

async fn sse(server: &Server, query: &str, cookie: &str) -> Subscriber {
    Subscriber::connect_with(
        client()
            .get(server.url(&format!("/events{query}")))
            .header(COOKIE, cookie),
    )
    .await
}

#[tokio::test]
async fn disconnect_user_ends_that_users_streams_of_every_transport_and_no_others() {
    let hub = Hub::new();
    let server = server(&hub).await;
    let mut ann = sse(&server, "?topic=room/a", "user=ann").await;
    let mut ann_ws = ws_open(
        &format!("ws://{}/ws?topic=room/a", server.addr),
        Some("user=ann"),
    )
    .await;
    assert_eq!(next(&mut ann_ws).await["type"], "subscribed");
    let mut bob = sse(&server, "?topic=room/a", "user=bob").await;
    let mut anonymous = sse(&server, "?topic=room/a", "").await;

    server.publisher.disconnect_user("ann").await.unwrap();
    assert!(ann.next().await.is_none(), "ann's stream ended");
    assert_eq!(closed(&mut ann_ws).await.0, CloseCode::Library(4003));
    id(server
        .publisher
        .publish_to("room/a", Event::default().data("still here")));
    assert_eq!(bob.next().await.unwrap().data, "still here");
    assert_eq!(anonymous.next().await.unwrap().data, "still here");
}

#[tokio::test]
async fn disconnect_topic_ends_the_streams_that_follow_it() {
    let hub = Hub::new();
    let server = server(&hub).await;
    let mut in_a = sse(&server, "?topic=room/a", "user=ann").await;
    let mut a_ws = ws_open(&format!("ws://{}/ws?topic=room/a", server.addr), None).await;
    assert_eq!(next(&mut a_ws).await["type"], "subscribed");
    let mut in_b = sse(&server, "?topic=room/b", "user=ann").await;

    server.publisher.disconnect_topic("room/a").await.unwrap();
    assert!(in_a.next().await.is_none());
    assert_eq!(closed(&mut a_ws).await.0, CloseCode::Library(4004));
    id(server
        .publisher
        .publish_to("room/b", Event::default().data("b")));
    assert_eq!(in_b.next().await.unwrap().data, "b");
    assert!(matches!(
        server.publisher.disconnect_topic("not a topic").await,
        Err(Error::InvalidTopic)
    ));
}

#[tokio::test]
async fn access_that_expires_ends_the_stream_and_an_expired_one_is_refused() {
    let hub = Hub::new();
    let server = server(&hub).await;
    // Ends by itself at the expiry: the wait is the stream's end, guarded.
    let mut short = sse(&server, "", "user=ann; ttl-ms=200").await;
    assert!(
        short.next().await.is_none(),
        "the stream ended at its expiry"
    );
    let mut short_ws = ws_open(
        &format!("ws://{}/ws", server.addr),
        Some("user=ann; ttl-ms=200"),
    )
    .await;
    assert_eq!(next(&mut short_ws).await["type"], "subscribed");
    assert_eq!(closed(&mut short_ws).await.0, CloseCode::Library(4001));
    let mut count = server.publisher.watch_subscribers();
    within("both to be unsubscribed", count.wait_for(|n| *n == 0))
        .await
        .unwrap();

    let expired = client()
        .get(server.url("/events"))
        .header(COOKIE, "user=ann; ttl-ms=-1")
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(expired.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn per_user_and_per_address_limits_are_429_with_retry_after() {
    let hub = Hub::builder()
        .max_streams_per_user(2)
        .max_streams_per_address(3)
        .build();
    let server = server(&hub).await;
    let get = |cookie: &'static str, ip: &'static str| {
        client()
            .get(server.url("/events"))
            .header(COOKIE, cookie)
            .header("x-real-ip", ip)
    };
    let first = Subscriber::connect_with(get("user=ann", "10.0.0.1")).await;
    let _second = Subscriber::connect_with(get("user=ann", "10.0.0.2")).await;
    let third = get("user=ann", "10.0.0.3").send().await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "5");
    assert!(third.text().await.unwrap().contains("this user"));
    // Over WebSocket the handshake is refused the same way.
    let refused = tokio_tungstenite::connect_async({
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws", server.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert(COOKIE, "user=ann".parse().unwrap());
        request
    })
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("429"), "{refused}");

    // Room for ann again once a stream closes.
    let mut count = server.publisher.watch_subscribers();
    drop(first);
    within("the stream to close", count.wait_for(|n| *n == 1))
        .await
        .unwrap();
    let _again = Subscriber::connect_with(get("user=ann", "10.0.0.1")).await;

    // Per address: anonymous streams from one address.
    let _a = Subscriber::connect_with(get("", "10.0.0.9")).await;
    let _b = Subscriber::connect_with(get("", "10.0.0.9")).await;
    let _c = Subscriber::connect_with(get("", "10.0.0.9")).await;
    let fourth = get("", "10.0.0.9").send().await.unwrap();
    assert_eq!(fourth.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(fourth.text().await.unwrap().contains("this address"));
    let _other = Subscriber::connect_with(get("", "10.0.0.10")).await;
}

#[tokio::test]
async fn presence_counts_streams_and_lists_users_and_can_be_watched() {
    let hub = Hub::new();
    let server = server(&hub).await;
    let p = &server.publisher;
    let mut watched = p.watch_topic("room/a").unwrap();
    assert_eq!(*watched.borrow_and_update(), 0);
    let _ann = sse(&server, "?topic=room/a", "user=ann").await;
    let mut ann_ws = ws_open(
        &format!("ws://{}/ws?topic=room/a", server.addr),
        Some("user=ann"),
    )
    .await;
    assert_eq!(next(&mut ann_ws).await["type"], "subscribed");
    let bob = sse(&server, "?topic=room/a", "user=bob").await;
    let _anonymous = sse(&server, "?topic=room/a", "").await;
    let _elsewhere = sse(&server, "?topic=room/b", "user=carol").await;

    let here = p.presence("room/a").unwrap();
    assert_eq!((here.streams, here.user_count), (4, 2));
    assert_eq!(here.users, ["ann", "bob"]);
    assert_eq!(*watched.borrow_and_update(), 4);
    drop(bob);
    within("bob to leave", watched.wait_for(|n| *n == 3))
        .await
        .unwrap();
    assert_eq!(p.presence("room/a").unwrap().users, ["ann"]);
    assert_eq!(p.presence("room/none").unwrap().streams, 0);
    assert!(matches!(p.presence("a b"), Err(Error::InvalidTopic)));
    assert!(matches!(p.watch_topic(""), Err(Error::InvalidTopic)));
}

#[tokio::test]
async fn with_a_backplane_disconnect_user_and_topic_hold_on_every_instance() {
    let engine = MemoryBackplane::new();
    let (a, b) = (
        Hub::builder().backplane(engine.clone()).build(),
        Hub::builder().backplane(engine.clone()).build(),
    );
    let on_b = |user: &'static str| {
        b.publisher()
            .subscribe()
            .access(Access::all().user(user))
            .records()
    };
    let (mut ann, mut bob) = (on_b("ann").await.unwrap(), on_b("bob").await.unwrap());
    a.publisher().disconnect_user("ann").await.unwrap();
    assert!(within("ann's stream on B to end", ann.next())
        .await
        .is_none());
    let id = a
        .publisher()
        .publish(Event::default().data("for bob"))
        .unwrap()
        .await
        .unwrap();
    let got = within("bob's event", bob.next()).await.unwrap().unwrap();
    assert_eq!(got.id(), id, "the order itself was never delivered");

    // A topic closed on A ends its streams on B too.
    let mut in_room = b
        .publisher()
        .subscribe()
        .topic("room/x")
        .records()
        .await
        .unwrap();
    a.publisher().disconnect_topic("room/x").await.unwrap();
    assert!(within("the room's stream on B to end", in_room.next())
        .await
        .is_none());
    let id = a
        .publisher()
        .publish(Event::default().data("bob stays"))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        within("bob's next", bob.next())
            .await
            .unwrap()
            .unwrap()
            .id(),
        id
    );
}

#[tokio::test]
async fn names_the_hub_keeps_are_refused() {
    let publisher = Hub::new().publisher();
    let refused = publisher.publish(Event::default().event("tower-sse:end-user").data("ann"));
    assert!(matches!(refused, Err(Error::ReservedEventName)));
}

#[tokio::test]
async fn a_room_with_presence_events_hears_who_joins_and_leaves() {
    let hub = Hub::builder().presence_events("room/").build();
    let server = server(&hub).await;
    let mut bob = sse(&server, "?topic=room/a", "user=bob").await;
    let own = bob.next().await.unwrap();
    assert_eq!((own.event.as_str(), own.data.as_str()), ("join", "bob"));

    let ann = sse(&server, "?topic=room/a", "user=ann").await;
    let joined = bob.next().await.unwrap();
    assert_eq!(
        (joined.event.as_str(), joined.data.as_str()),
        ("join", "ann")
    );
    // Anonymous streams, and topics outside the prefix, announce nothing.
    let _anonymous = sse(&server, "?topic=room/a", "").await;
    let _elsewhere = sse(&server, "?topic=user/carol", "user=carol").await;
    drop(ann);
    let left = bob.next().await.unwrap();
    assert_eq!((left.event.as_str(), left.data.as_str()), ("leave", "ann"));

    // Only a user's first stream on a topic joins, and its last leaves: a
    // second tab, or one churning its streams, announces nothing more.
    let p = &server.publisher;
    let carol = sse(&server, "?topic=room/a", "user=carol").await;
    assert_eq!(bob.next().await.unwrap().data, "carol");
    for _ in 0..20 {
        drop(sse(&server, "?topic=room/a", "user=carol").await);
    }
    let tab = sse(&server, "?topic=room/a", "user=carol").await;
    drop(carol);
    p.publish_to("room/a", Event::default().data("marker"))
        .unwrap();
    assert_eq!(
        bob.next().await.unwrap().data,
        "marker",
        "no join or leave of carol's tabs"
    );
    drop(tab);
    let left = bob.next().await.unwrap();
    assert_eq!(
        (left.event.as_str(), left.data.as_str()),
        ("leave", "carol")
    );
}

#[tokio::test]
async fn the_byte_budget_keeps_the_resume_guarantee() {
    // Room for about four events of 1,000 bytes.
    let hub = Hub::builder().history_bytes(4 * 2_400).build();
    let server = server(&hub).await;
    let p = &server.publisher;
    let ids: Vec<_> = (0..10)
        .map(|i| id(p.publish(Event::default().data(format!("{i:01000}")))))
        .collect();
    let (events, bytes) = p.history_size();
    assert!(
        events < 10 && bytes <= 4 * 2_400,
        "{events} events, {bytes} bytes"
    );
    // From an id still covered: the rest, in order.
    let kept = ids[10 - events];
    let mut resumed = Subscriber::resume(&server.url("/events"), Some(&kept.to_string())).await;
    let first = resumed.next().await.unwrap();
    assert_eq!(first.id, ids[11 - events].to_string());
    // From an evicted one: the reset, never a hole.
    let mut gone = Subscriber::resume(&server.url("/events"), Some(&ids[0].to_string())).await;
    assert_eq!(gone.next().await.unwrap().event, tower_sse::RESET_EVENT);
}

#[tokio::test]
async fn the_client_address_is_axums_connect_info_by_default() {
    use std::net::SocketAddr;
    let hub = Hub::builder().max_streams_per_address(1).build();
    let layer = SseLayer::new("/events").hub(&hub);
    let app = Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let url = format!("http://{addr}/events");
    let _first = Subscriber::connect(&url).await;
    let second = client().get(&url).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.text().await.unwrap().contains("this address"));
}

/// Everything written through `tracing` while a test runs, as text.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_stream_has_a_span_with_its_transport_topics_user_and_end() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let hub = Hub::new();
    let server = server(&hub).await;
    let mut ann = sse(&server, "?topic=room/a", "user=ann").await;
    server.publisher.disconnect_user("ann").await.unwrap();
    assert!(ann.next().await.is_none());
    let mut count = server.publisher.watch_subscribers();
    within("the stream to go", count.wait_for(|n| *n == 0))
        .await
        .unwrap();
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let ended = text
        .lines()
        .find(|line| line.contains("stream ended"))
        .unwrap_or_else(|| panic!("no stream end in:\n{text}"));
    for field in [
        "event_stream",
        "transport=\"sse\"",
        "room/a",
        "user=\"ann\"",
        "reason=\"revoked\"",
    ] {
        assert!(ended.contains(field), "{field} missing from: {ended}");
    }
}
