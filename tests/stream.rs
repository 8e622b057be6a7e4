//! The event stream over real TCP, against the `bulletin` example's router.

#[path = "../examples/bulletin.rs"]
mod bulletin;
mod common;

use axum::{routing::post, Router};
use common::{client, read_until, within, Server, Subscriber};
use std::time::Duration;
use tower_sse::{Event, Publisher, SseLayer};

async fn bulletin_server(layer: SseLayer) -> Server {
    let publisher = layer.publisher();
    Server::start(bulletin::app(layer), publisher).await
}

#[tokio::test]
async fn stream_has_event_stream_headers() {
    let server = bulletin_server(bulletin::layer()).await;
    let response = client()
        .get(server.url("/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-length").is_none());
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert_eq!(server.publisher.subscriber_count(), 1);
}

#[tokio::test]
async fn other_methods_on_the_stream_path_get_405_with_allow() {
    let server = bulletin_server(bulletin::layer()).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client()
            .request(method.clone(), server.url("/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "GET, HEAD");
        let text = response.text().await.unwrap();
        assert!(text.contains("accepts GET and HEAD"), "{text}");
    }
    assert_eq!(server.publisher.subscriber_count(), 0);
}

#[tokio::test]
async fn head_answers_the_headers_without_subscribing() {
    let server = bulletin_server(bulletin::layer()).await;
    let response = client().head(server.url("/events")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(server.publisher.subscriber_count(), 0);
}

#[tokio::test]
async fn retry_hint_then_keep_alive_comment_when_idle() {
    let layer = bulletin::layer().keep_alive(Duration::from_millis(50));
    let server = bulletin_server(layer).await;
    let response = client().get(server.url("/events")).send().await.unwrap();
    let mut body = response.bytes_stream();
    let seen = read_until(&mut body, b":keep-alive\n\n", "a keep-alive comment").await;
    // The retry hint, the id the stream starts after, then the comment.
    let seen = String::from_utf8(seen).unwrap();
    let id = seen
        .strip_prefix("retry: 2000\n\nid: ")
        .and_then(|rest| rest.strip_suffix("\n\n:keep-alive\n\n"))
        .unwrap_or_else(|| panic!("unexpected stream start {seen:?}"));
    assert!(id.parse::<u64>().is_ok(), "{id}");
}

async fn post_message(server: &Server, fields: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(server.url("/publish"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn posted_messages_reach_two_subscribers_in_order() {
    let server = bulletin_server(bulletin::layer()).await;
    let mut alice = Subscriber::connect(&server.url("/events")).await;
    let mut bob = Subscriber::connect(&server.url("/events")).await;
    assert_eq!(server.publisher.subscriber_count(), 2);

    let mut ids = Vec::new();
    for i in 0..50usize {
        let message = format!("message {i}\nsecond line");
        let event = if i.is_multiple_of(10) { "special" } else { "" };
        let response = post_message(&server, &[("message", &message), ("event", event)]).await;
        assert_eq!(response.status(), 202);
        let text = response.text().await.unwrap();
        ids.push(text.trim().rsplit(' ').next().unwrap().to_owned());
    }
    for subscriber in [&mut alice, &mut bob] {
        let events = subscriber.take(50).await;
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.data, format!("message {i}\nsecond line"));
            assert_eq!(event.id, ids[i]);
            let name = if i.is_multiple_of(10) {
                "special"
            } else {
                "message"
            };
            assert_eq!(event.event, name);
        }
    }
    let numeric: Vec<u64> = ids.iter().map(|id| id.parse().unwrap()).collect();
    assert!(numeric.windows(2).all(|w| w[0] < w[1]), "ids increase");
}

#[tokio::test]
async fn bad_posts_get_a_clear_4xx() {
    let server = bulletin_server(bulletin::layer()).await;
    let response = post_message(&server, &[("message", "   ")]).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("empty"));

    let long = "x".repeat(bulletin::MAX_MESSAGE + 1);
    let response = post_message(&server, &[("message", &long)]).await;
    assert_eq!(response.status(), 413);

    let response = post_message(&server, &[("message", "hi"), ("event", "a\rb")]).await;
    assert_eq!(response.status(), 400);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("invalid event name"));

    let response = client()
        .post(server.url("/publish"))
        .body("not a form")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
}

#[tokio::test]
async fn a_browser_form_post_is_redirected_back_to_the_page() {
    let server = bulletin_server(bulletin::layer()).await;
    let mut subscriber = Subscriber::connect(&server.url("/events")).await;
    let response = client()
        .post(server.url("/publish"))
        .header("accept", "text/html,application/xhtml+xml")
        .form(&[("message", "from the form")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/");
    assert_eq!(subscriber.next().await.unwrap().data, "from the form");
}

#[tokio::test]
async fn the_page_imports_the_client_module() {
    let server = bulletin_server(bulletin::layer()).await;
    let page = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("import { connect } from \"/events.js\""));
    assert!(html.contains("action=\"/publish\""));
    let module = client().get(server.url("/events.js")).send().await.unwrap();
    assert_eq!(module.status(), 200);
    assert_eq!(
        module.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
}

#[tokio::test]
async fn publisher_extractor_without_the_layer_is_a_500_saying_so() {
    async fn handler(publisher: Publisher) -> String {
        publisher.subscriber_count().to_string()
    }
    let layer = SseLayer::new("/events");
    let publisher = layer.publisher();
    let app = Router::new().route("/publish", post(handler));
    let server = Server::start(app, publisher).await;
    let response = client().post(server.url("/publish")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.text().await.unwrap().contains("SseLayer"));
}

#[tokio::test]
async fn a_disconnect_drops_the_subscriber_count() {
    let server = bulletin_server(bulletin::layer()).await;
    let mut count = server.publisher.watch_subscribers();
    let subscriber = Subscriber::connect(&server.url("/events")).await;
    assert_eq!(server.publisher.subscriber_count(), 1);
    drop(subscriber);
    within(
        "the server to notice the disconnect",
        count.wait_for(|n| *n == 0),
    )
    .await
    .unwrap();
    assert_eq!(server.publisher.subscriber_count(), 0);
}

#[tokio::test]
async fn graceful_shutdown_completes_with_subscribers_connected() {
    let mut server = bulletin_server(bulletin::layer()).await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(Subscriber::connect(&server.url("/events")).await);
    }
    server
        .publisher
        .publish(Event::default().data("last words"))
        .unwrap();
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(1), &mut server.task)
        .await
        .expect("graceful shutdown took more than a second")
        .unwrap()
        .unwrap();
    for subscriber in &mut subscribers {
        // What was published before the close is still delivered, then the end.
        assert_eq!(subscriber.next().await.unwrap().data, "last words");
        assert!(subscriber.next().await.is_none());
    }
    assert!(matches!(
        server.publisher.publish(Event::default().data("too late")),
        Err(tower_sse::Error::Closed)
    ));
}

#[tokio::test]
async fn rooms_and_private_messages_reach_only_their_readers() {
    let server = bulletin_server(bulletin::layer()).await;
    let url = |query: &str| server.url(&format!("/events{query}"));

    // Signing in sets the session cookie the stream's authorization reads.
    let response = client()
        .post(server.url("/login"))
        .form(&[("name", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let alice_cookie = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(alice_cookie, "user=alice");
    let me = client()
        .get(server.url("/me"))
        .header("cookie", &alice_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.text().await.unwrap(), "alice");

    // The page's stream, opened by the app's own route under the same hook.
    let mut alice = Subscriber::connect_with(
        client()
            .get(server.url("/rooms/general/events"))
            .header("cookie", &alice_cookie),
    )
    .await;
    let mut random = Subscriber::connect(&url("?topic=room/random")).await;

    // Who is in a room: for signed-in users only, by the hook's own rule,
    // through the app's route and through the presence topic alike.
    let here = |cookie: Option<&str>| {
        let mut request = client().get(server.url("/rooms/general/here"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    assert_eq!(here(None).await.unwrap().status(), 403);
    let seen = here(Some(&alice_cookie)).await.unwrap();
    assert_eq!(seen.status(), 200);
    assert!(seen.text().await.unwrap().contains("\"alice\""));
    let response = client()
        .get(url("?topic=here/general"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // A room that cannot be is the app's own 404.
    let response = client()
        .get(server.url("/rooms/no%20such/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Nobody may follow someone else's private topic.
    let response = client()
        .get(url("?topic=user/alice"))
        .header("cookie", "user=mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let post = |fields: &'static [(&'static str, &'static str)]| {
        let request = client().post(server.url("/publish")).form(fields);
        async move { assert_eq!(request.send().await.unwrap().status(), 202) }
    };
    post(&[("message", "in random"), ("room", "random")]).await;
    post(&[("message", "psst"), ("to", "alice")]).await;
    post(&[("message", "in general"), ("room", "general")]).await;
    post(&[("message", "to everyone")]).await;

    let got: Vec<(String, String)> = alice
        .take(4)
        .await
        .into_iter()
        .map(|e| (e.event, e.data))
        .collect();
    assert_eq!(
        got,
        [
            // Signed in, the room's presence topic announces who joins (the
            // example's presence events); the anonymous reader of `random`
            // hears no one.
            ("join".to_owned(), "alice".to_owned()),
            ("private".to_owned(), "from someone: psst".to_owned()),
            ("message".to_owned(), "in general".to_owned()),
            ("message".to_owned(), "to everyone".to_owned()),
        ]
    );
    let got: Vec<String> = random.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["in random", "to everyone"]);

    let response = post_message(&server, &[("message", "x"), ("room", "no spaces")]).await;
    assert_eq!(response.status(), 400);
}

/// `coalesce`: events published within the window after a write go out in
/// the next write, together; none is lost, and the order holds.
#[tokio::test]
async fn coalesced_events_go_out_in_one_write_after_the_window() {
    use futures_util::StreamExt;
    let layer = SseLayer::new("/events")
        .without_keep_alive()
        .coalesce(Duration::from_secs(1));
    let publisher = layer.publisher();
    let server = Server::start(Router::new().layer(layer), publisher.clone()).await;
    let response = client().get(server.url("/events")).send().await.unwrap();
    let mut body = response.bytes_stream();
    // The first write: the id the stream starts after. The window opens.
    let first = read_until(&mut body, b"\n\n", "the stream's start").await;
    assert!(first.starts_with(b"id: "));
    let mut ids = Vec::new();
    for i in 0..5 {
        let published = publisher.publish(Event::default().data(format!("e{i}")));
        ids.push(published.unwrap().id().unwrap());
    }
    // All five in the next write, one chunk on the wire.
    let chunk = within("the coalesced write", body.next())
        .await
        .unwrap()
        .unwrap();
    let expected: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!("data: e{i}\nid: {id}\n\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&chunk), expected);
    // A later event still arrives (after its own window at most).
    publish_and_read(&publisher, &mut body, "later", "the later event").await;
}

/// Publishes an event of `data` and reads it as the stream's next.
async fn publish_and_read(
    publisher: &Publisher,
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    data: &str,
    what: &str,
) {
    let event = Event::default().data(data);
    let id = publisher.publish(event).unwrap().id().unwrap();
    let got = read_until(body, b"\n\n", what).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("data: {data}\nid: {id}\n\n")
    );
}

/// `coalesce` holds back only a stream that writes an event or a few at a
/// time: one whose last write carried several (it is behind a burst, and
/// batches by itself) writes the next event without waiting out the
/// window, here a minute long.
#[tokio::test]
async fn a_stream_that_batches_by_itself_does_not_wait_out_the_window() {
    let layer = SseLayer::new("/events")
        .without_keep_alive()
        .coalesce(Duration::from_secs(60));
    let publisher = layer.publisher();
    let server = Server::start(Router::new().layer(layer), publisher.clone()).await;
    let published: Vec<_> = (0..6)
        .map(|i| {
            let event = Event::default().data(format!("e{i}"));
            publisher.publish(event).unwrap().id().unwrap()
        })
        .collect();
    // Resumed after the first: the first write carries the other five.
    let response = client()
        .get(server.url("/events"))
        .header("last-event-id", published[0].to_string())
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let last = format!("id: {}\n\n", published[5]);
    let first = read_until(&mut body, last.as_bytes(), "the five events").await;
    assert!(String::from_utf8_lossy(&first).starts_with("data: e1\n"));
    let what = "the next event, before the window ends";
    publish_and_read(&publisher, &mut body, "next", what).await;
}
