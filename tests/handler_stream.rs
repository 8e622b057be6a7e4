//! Streams opened by code: a handler with a route of its own (a path
//! parameter, its own checks) returns an `EventStream` built from the
//! `Subscribe` extractor, under the layer's hook and limits; and the typed
//! `RecordStream`. Over real TCP with independent clients.

mod common;

use axum::{
    extract::Path,
    http::{header::COOKIE, request::Parts, HeaderMap, Response, StatusCode},
    routing::get,
    Router,
};
use common::{client, id, within, Server, Subscriber};
use futures_util::StreamExt;
use tower_sse::{Access, Event, EventStream, Hub, Refusal, SseLayer, Subscribe, RESET_EVENT};

/// `/rooms/{room}/events`: the room's topic; a room named `secret` is
/// refused by the handler itself.
async fn room(Path(room): Path<String>, sub: Subscribe) -> Result<EventStream, Response<String>> {
    if room == "secret" {
        let mut answer = Response::new("not your room\n".to_owned());
        *answer.status_mut() = StatusCode::FORBIDDEN;
        return Err(answer);
    }
    sub.topic(format!("room/{room}"))
        .event_stream()
        .await
        .map_err(Response::from)
}

/// `/feed`: the topics of the user in the cookie, if the hook grants them.
async fn feed(headers: HeaderMap, sub: Subscribe) -> Result<EventStream, Refusal> {
    let wants = headers
        .get("x-topic")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("room/lobby")
        .to_owned();
    sub.topic(wants).event_stream().await
}

fn app(layer: SseLayer) -> Router {
    Router::new()
        .route("/rooms/{room}/events", get(room))
        .route("/feed", get(feed))
        .layer(layer)
}

async fn server(layer: SseLayer) -> Server {
    let publisher = layer.publisher();
    Server::start(app(layer), publisher).await
}

#[tokio::test]
async fn a_handler_stream_sends_topics_when_asked() {
    let server = server(SseLayer::new("/events")).await;
    let response = client()
        .get(server.url("/rooms/lobby/events?with=topic"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    common::read_until(&mut body, b"\n\n", "the start").await;
    let id = id(server
        .publisher
        .publish_to("room/lobby", Event::default().data("hi")));
    let expected = format!("topic: room/lobby\ndata: hi\nid: {id}\n\n");
    let got = common::read_until(&mut body, expected.as_bytes(), "the event").await;
    assert_eq!(String::from_utf8(got).unwrap(), expected);
    let refused = client()
        .get(server.url("/rooms/lobby/events?with=everything"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn a_handler_serves_a_room_under_its_own_route() {
    let server = server(SseLayer::new("/events")).await;
    let mut lobby = Subscriber::connect(&server.url("/rooms/lobby/events")).await;
    assert_eq!(lobby.response_headers["content-type"], "text/event-stream");
    assert_eq!(lobby.response_headers["cache-control"], "no-cache");
    let p = &server.publisher;
    p.publish_to("room/other", Event::default().data("not here"))
        .unwrap();
    let said = id(p.publish_to("room/lobby", Event::default().event("said").data("hi")));
    let all = id(p.publish(Event::default().data("to everyone")));
    let events = lobby.take(2).await;
    assert_eq!(
        (events[0].event.as_str(), events[0].data.as_str()),
        ("said", "hi")
    );
    assert_eq!(events[0].id, said.to_string());
    assert_eq!(events[1].id, all.to_string());
    // Like the layer's own stream, it started with the id it starts after.
    let start: u64 = lobby.start_id().expect("a start id").parse().unwrap();
    assert!(start < said.as_u64());

    // The handler's own refusal, and a path parameter that is no topic.
    let secret = client()
        .get(server.url("/rooms/secret/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(secret.status(), 403);
    let bad = client()
        .get(server.url("/rooms/a%20b/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("invalid topic"));
}

#[tokio::test]
async fn a_handler_stream_resumes_from_last_event_id_and_resets_past_the_history() {
    let hub = Hub::builder().history(3).max_lag(3).build();
    let server = server(SseLayer::new("/events").hub(&hub)).await;
    let p = &server.publisher;
    let ids: Vec<_> = (0..3)
        .map(|i| id(p.publish_to("room/a", Event::default().data(format!("e{i}")))))
        .collect();
    let url = server.url("/rooms/a/events");
    let mut resumed = Subscriber::resume(&url, Some(&ids[0].to_string())).await;
    let replay = resumed.take(2).await;
    assert_eq!(
        replay.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["e1", "e2"]
    );
    // The `lastEventId` query parameter works too.
    let mut by_query = Subscriber::connect(&format!("{url}?lastEventId={}", ids[1])).await;
    assert_eq!(by_query.next().await.unwrap().data, "e2");

    for i in 0..5 {
        p.publish(Event::default().data(format!("push {i}")))
            .unwrap();
    }
    let mut reset = Subscriber::resume(&url, Some(&ids[0].to_string())).await;
    assert_eq!(reset.next().await.unwrap().event, RESET_EVENT);
}

#[tokio::test]
async fn the_layers_hook_and_limits_hold_for_handler_streams() {
    let hub = Hub::builder().max_subscribers(1).build();
    let layer = SseLayer::new("/events")
        .hub(&hub)
        .retry_after(std::time::Duration::from_secs(7))
        .authorize(|parts: Parts| async move {
            let user = parts
                .headers
                .get(COOKIE)
                .and_then(|c| c.to_str().ok())
                .and_then(|c| c.strip_prefix("user="))
                .map(str::to_owned);
            match user {
                Some(user) => Ok(Access::none()
                    .allow_prefix("room/")
                    .follow(format!("user/{user}"))),
                None => Err(Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .body("sign in\n".to_owned())
                    .unwrap()),
            }
        });
    let server = server(layer).await;
    let get = |cookie: Option<&str>, topic: &str| {
        let mut request = client().get(server.url("/feed")).header("x-topic", topic);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request
    };

    let anonymous = get(None, "room/lobby").send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the hook's own answer");
    let other = get(Some("user=ann"), "user/bob").send().await.unwrap();
    assert_eq!(other.status(), 403, "a topic the hook does not grant");

    // Granted: the room asked for, and the user's own topic without asking.
    let mut ann = Subscriber::connect_with(get(Some("user=ann"), "room/lobby")).await;
    let p = &server.publisher;
    p.publish_to("user/bob", Event::default().data("for bob"))
        .unwrap();
    p.publish_to("user/ann", Event::default().data("for ann"))
        .unwrap();
    assert_eq!(ann.next().await.unwrap().data, "for ann");

    // One stream at most, whichever route opened it.
    let second = get(Some("user=ann"), "room/lobby").send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "7");
    let on_layer_path = client()
        .get(server.url("/events"))
        .header(COOKIE, "user=ann");
    assert_eq!(on_layer_path.send().await.unwrap().status(), 503);
}

async fn next(
    records: &mut tower_sse::RecordStream,
) -> Result<tower_sse::Record, tower_sse::Lagged> {
    within("a record", records.next())
        .await
        .expect("the stream ended")
}

#[tokio::test]
async fn a_record_stream_follows_topics_in_order_resumes_and_ends_on_lag() {
    let hub = Hub::builder().history(100).max_lag(2).build();
    let publisher = hub.publisher();
    let mut records = publisher
        .subscribe()
        .topics(["a", "b"])
        .records()
        .await
        .unwrap();
    assert!(!records.is_reset());
    let first = id(publisher.publish_to("a", Event::default().event("x").data("1")));
    publisher
        .publish_to("c", Event::default().data("not followed"))
        .unwrap();
    id(publisher.publish_to("b", Event::default().data("2")));
    let record = next(&mut records).await.unwrap();
    assert_eq!(
        (record.id(), record.topic(), record.event(), record.data()),
        (first, Some("a"), Some("x"), "1")
    );
    assert_eq!(next(&mut records).await.unwrap().data(), "2");

    // Resume after the first: the second is replayed.
    let mut resumed = publisher
        .subscribe()
        .topic("b")
        .after(first.to_string())
        .records()
        .await
        .unwrap();
    assert_eq!(resumed.starts_after(), first);
    assert_eq!(next(&mut resumed).await.unwrap().data(), "2");

    // Three unread past a lag bound of two: an error, then the end.
    for i in 0..3 {
        publisher
            .publish_to("a", Event::default().data(format!("{i}")))
            .unwrap();
    }
    assert!(next(&mut records).await.is_err());
    assert!(within("the end", records.next()).await.is_none());

    // An unknown resume point is a reset; a bad topic is a 400 refusal.
    let reset = publisher
        .subscribe()
        .after("not an id")
        .records()
        .await
        .unwrap();
    assert!(reset.is_reset());
    let refusal = publisher
        .subscribe()
        .topic("a b")
        .records()
        .await
        .unwrap_err();
    assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);

    // Closing the hub ends the stream after what was published before.
    let last = id(publisher.publish_to("b", Event::default().data("last")));
    publisher.close();
    let record = next(&mut resumed).await.unwrap();
    assert_eq!(record.id(), last);
    assert!(within("the end", resumed.next()).await.is_none());
}

#[tokio::test]
async fn two_layers_given_one_hub_serve_the_same_events_and_keep_their_own_settings() {
    let hub = Hub::builder().history(10).build();
    let plain = SseLayer::new("/events").hub(&hub);
    let chatty = plain
        .clone()
        .keep_alive(std::time::Duration::from_millis(50))
        .keep_alive_text("tick");
    let publisher = hub.publisher();
    let (a, b) = (
        Server::start(Router::new().layer(plain), publisher.clone()).await,
        Server::start(Router::new().layer(chatty), publisher.clone()).await,
    );
    let mut on_a = Subscriber::connect(&a.url("/events")).await;
    let mut on_b = Subscriber::connect(&b.url("/events")).await;
    let sent = id(publisher.publish(Event::default().data("both")));
    for subscriber in [&mut on_a, &mut on_b] {
        assert_eq!(subscriber.next().await.unwrap().id, sent.to_string());
    }
    assert_eq!(publisher.subscriber_count(), 2);

    // Only the clone set a keep-alive of 50 ms: its stream gets the comment,
    // the original's (15 s) does not.
    let raw = |server: &Server| client().get(server.url("/events")).send();
    let mut fast = raw(&b).await.unwrap().bytes_stream();
    let seen = common::read_until(&mut fast, b":tick\n\n", "the clone's keep-alive").await;
    assert!(seen.ends_with(b":tick\n\n"));
    let mut slow = raw(&a).await.unwrap().bytes_stream();
    let start = within("the start", slow.next()).await.unwrap().unwrap();
    assert!(start.starts_with(b"id: "), "{start:?}");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), slow.next())
            .await
            .is_err(),
        "the original layer's keep-alive is still 15 s"
    );
}

#[tokio::test]
async fn a_handler_returns_the_publish_error_as_its_answer() {
    use axum::routing::post;
    async fn say(
        Path(room): Path<String>,
        publisher: tower_sse::Publisher,
        text: String,
    ) -> Result<String, tower_sse::Error> {
        let event = Event::default().event("said").data(text);
        let id = publisher.publish_to(&room, event)?.await?;
        Ok(format!("{id}\n"))
    }
    let hub = Hub::builder().max_event_size(10).build();
    let layer = SseLayer::new("/events").hub(&hub);
    let publisher = layer.publisher();
    let server = Server::start(
        Router::new().route("/say/{room}", post(say)).layer(layer),
        publisher,
    )
    .await;
    let say = |room: &str, text: &str| {
        client()
            .post(server.url(&format!("/say/{room}")))
            .body(text.to_owned())
            .send()
    };
    let ok = say("lobby", "hi").await.unwrap();
    assert_eq!(ok.status(), 200);
    let bad = say("a%20b", "hi").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("invalid topic"));
    assert_eq!(say("lobby", "far too long").await.unwrap().status(), 413);
    server.publisher.close();
    assert_eq!(say("lobby", "hi").await.unwrap().status(), 503);
}

#[tokio::test]
async fn a_record_stream_yields_each_record_once_across_its_batches() {
    let hub = Hub::builder().history(1000).max_lag(1000).build();
    let publisher = hub.publisher();
    let mut records = publisher.subscribe().records().await.unwrap();
    let sent: Vec<_> = (0..200)
        .map(|i| id(publisher.publish(Event::default().data(format!("{i}")))))
        .collect();
    let mut seen = Vec::new();
    for _ in 0..sent.len() {
        seen.push(next(&mut records).await.unwrap().id());
    }
    assert_eq!(seen, sent, "each once, in order (batches of 64 inside)");
}
