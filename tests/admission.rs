//! One admission for every way a stream opens: the hub's hook runs, and a
//! topic it does not grant is refused, on the layer's path, its WebSocket,
//! a handler's `Subscribe`, and a stream a handler opens through a publisher
//! taken from the hub (not the layer). Hooks with axum's State and
//! extractors. Over real TCP with independent clients.

mod common;

use axum::{
    extract::State,
    http::{header::COOKIE, request::Parts, HeaderMap, Response, StatusCode},
    routing::get,
    Router,
};
use common::{client, closed, next, send, ws_open, Server, Subscriber};
use serde_json::json;
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tower_sse::{Access, Event, EventStream, Hub, Publisher, Refusal, SseLayer, Subscribe};

/// The user in a `user=<name>` cookie.
fn user(headers: &HeaderMap) -> Option<String> {
    let cookie = headers.get(COOKIE)?.to_str().ok()?;
    cookie.strip_prefix("user=").map(str::to_owned)
}

/// A hub whose hook grants `public/…` and the user's own topic, refuses
/// requests without a user with `401 unknown user`, and counts its calls.
fn hub() -> (Hub, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let hub = Hub::builder()
        .authorize(move |parts: Parts| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match user(&parts.headers) {
                    Some(user) => Ok(Access::none()
                        .allow_prefix("public/")
                        .follow(format!("user/{user}"))
                        .user(user)),
                    None => Err(Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .body("unknown user\n".to_owned())
                        .unwrap()),
                }
            }
        })
        .build();
    (hub, calls)
}

/// `/feed?topic=…`: a handler's stream, topics from the query.
async fn feed(sub: Subscribe) -> Result<EventStream, Refusal> {
    sub.topics_from_query().event_stream().await
}

/// `/held?topic=…`: a stream opened through a publisher the app keeps in
/// its state, taken from the hub (`Hub::publisher`), with the request head.
async fn held(State(publisher): State<Publisher>, parts: Parts) -> Result<EventStream, Refusal> {
    publisher
        .subscribe()
        .request(&parts)
        .topics_from_query()
        .event_stream()
        .await
}

/// `/headless`: the same publisher, no request head: refused, not opened
/// around the hook.
async fn headless(State(publisher): State<Publisher>) -> Result<EventStream, Refusal> {
    publisher.subscribe().topic("user/bob").event_stream().await
}

async fn server(hub: &Hub) -> Server {
    let layer = SseLayer::new("/events").hub(hub).websocket("/ws");
    let app = Router::new()
        .route("/feed", get(feed))
        .route("/held", get(held))
        .route("/headless", get(headless))
        .with_state(hub.publisher())
        .layer(layer);
    Server::start(app, hub.publisher()).await
}

/// GETs `path` as `who` (no cookie when `None`): the status and body.
async fn answer(server: &Server, path: &str, who: Option<&str>) -> (u16, String) {
    let mut request = client().get(server.url(path));
    if let Some(who) = who {
        request = request.header(COOKIE, format!("user={who}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // A granted stream would not end: only refusals are read to the end.
    let body = if status == 200 {
        String::new()
    } else {
        response.text().await.unwrap()
    };
    (status, body)
}

/// Opens `path` as `who` and checks a granted stream delivers: the user's own
/// topic (followed without asking) and the public topic asked for.
async fn delivers(server: &Server, path: &str, who: &str) {
    let request = client()
        .get(server.url(path))
        .header(COOKIE, format!("user={who}"));
    let mut stream = Subscriber::connect_with(request).await;
    let p = &server.publisher;
    p.publish_to("user/bob", Event::default().data("for bob"))
        .unwrap();
    p.publish_to(&format!("user/{who}"), Event::default().data("yours"))
        .unwrap();
    p.publish_to("public/news", Event::default().data("news"))
        .unwrap();
    assert_eq!(stream.next().await.unwrap().data, "yours");
    assert_eq!(stream.next().await.unwrap().data, "news");
}

/// The checks every HTTP way of opening shares: no user → the hook's `401`
/// with its message; another user's topic → `403`; granted → delivered.
async fn hook_holds(path: &str) {
    let (hub, calls) = hub();
    let server = server(&hub).await;
    let sep = if path.contains('?') { '&' } else { '?' };

    let (status, body) = answer(&server, path, None).await;
    assert_eq!((status, body.as_str()), (401, "unknown user\n"), "{path}");
    let (status, body) = answer(&server, &format!("{path}{sep}topic=user/bob"), Some("ann")).await;
    assert_eq!(status, 403, "{path}: {body}");
    assert!(body.contains("user/bob"), "{body}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "{path}: the hook ran each time"
    );

    delivers(&server, &format!("{path}{sep}topic=public/news"), "ann").await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_layers_path_runs_the_hubs_hook() {
    hook_holds("/events").await;
}

#[tokio::test]
async fn a_handlers_subscribe_runs_the_hubs_hook() {
    hook_holds("/feed").await;
}

#[tokio::test]
async fn a_publisher_taken_from_the_hub_runs_its_hook() {
    hook_holds("/held").await;
    // Without a request head, a hub with a hook opens nothing.
    let (hub, calls) = hub();
    let server = server(&hub).await;
    let (status, body) = answer(&server, "/headless", Some("ann")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Subscribe::access"), "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(hub.publisher().subscriber_count(), 0);
}

#[tokio::test]
async fn code_opens_around_the_hook_only_with_an_access_it_gives() {
    let (hub, calls) = hub();
    let publisher = hub.publisher();
    let refused = publisher.subscribe().topic("user/bob").records().await;
    assert_eq!(refused.unwrap_err().status(), StatusCode::UNAUTHORIZED);
    let granted = publisher
        .subscribe()
        .topic("user/bob")
        .access(Access::only(["user/bob"]))
        .records()
        .await;
    assert!(granted.is_ok());
    let forbidden = publisher
        .subscribe()
        .topic("user/bob")
        .access(Access::only(["user/ann"]))
        .records()
        .await;
    assert_eq!(forbidden.unwrap_err().status(), StatusCode::FORBIDDEN);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_websocket_runs_the_hubs_hook() {
    let (hub, calls) = hub();
    let server = server(&hub).await;
    let url = |query: &str| format!("ws://{}/ws{query}", server.addr);

    let err = tokio_tungstenite::connect_async(url("")).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url(
            "?topic=user/bob",
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", "user=ann".parse().unwrap());
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let mut ws = ws_open(&url("?topic=public/news"), Some("user=ann")).await;
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    server
        .publisher
        .publish_to("user/bob", Event::default().data("for bob"))
        .unwrap();
    server
        .publisher
        .publish_to("user/ann", Event::default().data("yours"))
        .unwrap();
    assert_eq!(next(&mut ws).await["data"], "yours");
    // Admitted once per connection: a change of topics is checked against
    // the same access, without running the hook again.
    send(
        &mut ws,
        json!({"type": "subscribe", "topics": ["user/bob"]}),
    )
    .await;
    assert_eq!(closed(&mut ws).await.0, CloseCode::Policy);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[derive(Clone)]
struct App {
    /// Session token → user.
    sessions: Arc<Vec<(&'static str, &'static str)>>,
}

/// A hook written like a handler: the app's state, a header map, and an
/// error that is anything `IntoResponse`.
async fn by_token(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Access, (StatusCode, &'static str)> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or((StatusCode::UNAUTHORIZED, "no token"))?;
    let (_, user) = app
        .sessions
        .iter()
        .find(|(t, _)| *t == token)
        .ok_or((StatusCode::UNAUTHORIZED, "unknown token"))?;
    Ok(Access::none().follow(format!("orders/{user}")).user(*user))
}

#[tokio::test]
async fn a_hook_takes_the_apps_state_and_extractors() {
    let app = App {
        sessions: Arc::new(vec![("t-alice", "alice")]),
    };
    let layer = SseLayer::new("/events").authorize_with_state(app, by_token);
    let publisher = layer.publisher();
    let server = Server::start(Router::new().layer(layer), publisher).await;
    let with = |token: &str| {
        client()
            .get(server.url("/events"))
            .header("authorization", format!("Bearer {token}"))
    };
    let asking = |topic: &str| {
        client()
            .get(server.url(&format!("/events?topic={topic}")))
            .header("authorization", "Bearer t-alice")
    };

    let none = client().get(server.url("/events")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.text().await.unwrap(), "no token");
    let bogus = with("t-mallory").send().await.unwrap();
    assert_eq!(bogus.status(), 401);
    assert_eq!(bogus.text().await.unwrap(), "unknown token");
    assert_eq!(asking("orders/bob").send().await.unwrap().status(), 403);

    let mut alice = Subscriber::connect_with(with("t-alice")).await;
    let p = &server.publisher;
    p.publish_to("orders/bob", Event::default().data("bob's"))
        .unwrap();
    p.publish_to("orders/alice", Event::default().data("alice's"))
        .unwrap();
    assert_eq!(alice.next().await.unwrap().data, "alice's");
}

#[tokio::test]
async fn the_layers_path_can_be_left_to_the_app() {
    let hub = Hub::builder().open_access().build();
    let layer = SseLayer::new("/events").hub(&hub).without_stream_path();
    let app = Router::new().route("/mine", get(feed)).layer(layer);
    let server = Server::start(app, hub.publisher()).await;
    assert_eq!(answer(&server, "/events?topic=a", None).await.0, 404);
    let mut stream = Subscriber::connect(&server.url("/mine?topic=a")).await;
    server
        .publisher
        .publish_to("a", Event::default().data("via the app's route"))
        .unwrap();
    assert_eq!(stream.next().await.unwrap().data, "via the app's route");
}
