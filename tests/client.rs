//! The client module (`SseLayer::client_script`) as browsers get it: served
//! over HTTP (ETag, 304), its parser against the WHATWG rules (Node.js), and
//! in Debian's Chromium, driven by playwright-core (tests/browser/client.mjs),
//! on the bulletin example, whose page uses it: ten tabs on one stream, the
//! tab holding it closing while events are published (with a SharedWorker,
//! and with an elected tab), topics changing under a flow of events (SSE and
//! WebSocket), a 503 with Retry-After, a server restart, the app's own
//! ids (not above the hub's), a stream that ends at once (backs off), and
//! a fresh token at each expiry against a hub that admits by JWT (through
//! the SharedWorker, an elected tab, and over WebSocket). Its parser runs
//! the npm package's tests (client/test/parser.test.mjs) on the served bytes.
//!
//! Needs `chromium` (or `CHROMIUM`), Node.js and `npm ci --prefix
//! tests/browser`, as tests/browser.rs; `.ci/run` installs them.

#[path = "../examples/bulletin.rs"]
mod bulletin;
mod common;
#[path = "common/node.rs"]
mod node;

use axum::{
    extract::{Path, Query, Request, State},
    http::{header, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use common::{client, Server, TIMEOUT};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tower_sse::{Event, Publisher, SseLayer};

/// The stream requests the server got (when, and their `Last-Event-ID`),
/// and how many of the first it refuses with `503` and `Retry-After: 1`.
#[derive(Clone, Default)]
struct Streams {
    opened: Arc<Mutex<Opened>>,
    refuse: usize,
}

type Opened = Vec<(Instant, Option<String>)>;

impl Streams {
    fn opened(&self) -> Opened {
        self.opened.lock().unwrap().clone()
    }
}

/// In front of the app: counts `GET /events`, refusing the first ones.
async fn count(State(streams): State<Streams>, request: Request, next: Next) -> Response {
    if request.method() == Method::GET && request.uri().path() == "/events" {
        let resume = request.headers().get("last-event-id");
        let resume = resume.map(|id| id.to_str().unwrap().to_owned());
        let n = {
            let mut opened = streams.opened.lock().unwrap();
            opened.push((Instant::now(), resume));
            opened.len()
        };
        if n <= streams.refuse {
            let busy = "busy (the test refuses the first streams)\n";
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                busy,
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The bulletin app, counted, with `GET /test/streams/{n}`: waits (10 s at
/// most) until `n` streams are open, then answers how many are open and how
/// many were opened in all; and `GET /test/following/{room}`: waits until a
/// stream follows the room.
fn counted_app(streams: &Streams) -> (Router, Publisher) {
    let layer = bulletin::layer();
    let publisher = layer.publisher();
    let hub = publisher.clone();
    let following = move |Path(room): Path<String>| {
        let mut streams = hub.watch_topic(&format!("room/{room}")).unwrap();
        async move {
            match tokio::time::timeout(TIMEOUT, streams.wait_for(|n| *n > 0)).await {
                Ok(Ok(_)) => StatusCode::OK,
                _ => StatusCode::GATEWAY_TIMEOUT,
            }
        }
    };
    let (hub, counted) = (publisher.clone(), streams.clone());
    let open = move |Path(n): Path<usize>| {
        let (hub, counted) = (hub.clone(), counted.clone());
        async move {
            let mut open = hub.watch_subscribers();
            let reached = tokio::time::timeout(TIMEOUT, open.wait_for(|c| *c == n)).await;
            let status = match reached {
                Ok(Ok(_)) => StatusCode::OK,
                _ => StatusCode::GATEWAY_TIMEOUT,
            };
            let counts = serde_json::json!({
                "open": hub.subscriber_count(),
                "opened": counted.opened().len(),
            });
            (status, counts.to_string())
        }
    };
    let app = bulletin::app(layer)
        .route("/test/streams/{n}", get(open))
        .route("/test/following/{room}", get(following))
        .layer(middleware::from_fn_with_state(streams.clone(), count));
    (app, publisher)
}

async fn tabs(mode: &str) {
    let _browser = node::BROWSER.lock().await;
    let streams = Streams::default();
    let (app, publisher) = counted_app(&streams);
    let server = Server::start(app, publisher).await;
    node::run("client.mjs", ["tabs", mode, &server.url("/")]).await;
    // The script checked the counts; the next leader (a tab closing the
    // context makes more) resumed from the last event it had seen.
    let resumed: Vec<_> = streams.opened().into_iter().map(|(_, id)| id).collect();
    assert!(resumed[0].is_none(), "{resumed:?}");
    if mode == "leader" {
        assert!(resumed[1].is_some(), "{resumed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tabs_share_one_stream_through_a_shared_worker() {
    tabs("worker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_shared_worker_an_elected_tab_holds_the_stream() {
    tabs("leader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_topics_loses_and_repeats_nothing() {
    let _browser = node::BROWSER.lock().await;
    let streams = Streams::default();
    let (app, publisher) = counted_app(&streams);
    let server = Server::start(app, publisher).await;
    node::run("client.mjs", ["topics", "-", &server.url("/")]).await;
    // The page's stream, then one more per change over SSE (each waited
    // for an event of its new topic), each resuming.
    let opened = streams.opened();
    assert!(opened.len() >= 11, "{} streams", opened.len());
    assert!(opened[1..].iter().all(|(_, id)| id.is_some()), "{opened:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_503_with_retry_after_the_module_waits_then_goes_live() {
    let _browser = node::BROWSER.lock().await;
    let streams = Streams {
        refuse: 2,
        ..Streams::default()
    };
    let (app, publisher) = counted_app(&streams);
    let server = Server::start(app, publisher).await;
    node::run("client.mjs", ["retry", "-", &server.url("/")]).await;
    let opened = streams.opened();
    assert_eq!(opened.len(), 3, "two refused, then one stream");
    for pair in opened.windows(2) {
        let waited = pair[1].0 - pair[0].0;
        assert!(
            waited >= Duration::from_secs(1),
            "retried after {waited:?}, before the Retry-After of 1 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_the_module_resets_then_goes_live() {
    let _browser = node::BROWSER.lock().await;
    let (restart, mut restarting) = tokio::sync::mpsc::channel::<()>(1);
    let (app, publisher) = counted_app(&Streams::default());
    let app = app.route(
        "/test/restart",
        post(move || {
            restart.try_send(()).ok();
            async {}
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut first = Server::start_on(listener, app, publisher);
    let base = first.url("/");
    let page = tokio::spawn(node::run(
        "client.mjs",
        ["restart".into(), "-".into(), base],
    ));
    tokio::time::timeout(Duration::from_secs(60), restarting.recv())
        .await
        .expect("the page never asked for the restart");
    // Down: the hub closes and its streams end; then a new hub (whose ids
    // the page's last id is not one of) on the same address.
    first.shutdown();
    common::within("the server to stop", &mut first.task)
        .await
        .unwrap()
        .unwrap();
    let streams = Streams::default();
    let (app, publisher) = counted_app(&streams);
    let listener = tokio::net::TcpListener::bind(first.addr).await.unwrap();
    let _second = Server::start_on(listener, app, publisher);
    page.await.unwrap();
    // It came back with the last id it had, which the new hub does not know.
    let resumed = streams.opened().into_iter().map(|(_, id)| id).next();
    assert!(matches!(resumed, Some(Some(_))), "{resumed:?}");
}

#[tokio::test]
async fn the_served_module_revalidates_and_parses_as_the_standard_says() {
    let layer = SseLayer::new("/events").client_script("/events.js");
    let publisher = layer.publisher();
    let server = Server::start(Router::new().layer(layer), publisher).await;
    let response = client().get(server.url("/events.js")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    let module = response.bytes().await.unwrap();
    assert!(module.starts_with(b"// Served by tower-sse at /events.js"));
    let again = client()
        .get(server.url("/events.js"))
        .header(header::IF_NONE_MATCH, &headers[header::ETAG])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    // The parser of the bytes a browser gets: the npm package's parser
    // tests (client/test/parser.test.mjs) on the served module.
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tower-sse.mjs");
    std::fs::write(&file, &module).unwrap();
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/client/test/parser.test.mjs");
    let run = tokio::process::Command::new("node")
        .args(["--test", tests])
        .env("TOWER_SSE_MODULE", &file)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the parser tests took over a minute")
        .expect("could not run node: install Node.js");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && out.contains("# fail 0"), "{out}");
}

/// `POST /test/publish?topic=…&data=…[&id=…]`: an event with the app's own
/// id (`Event::id`) when one is given.
fn with_app_ids(app: Router, publisher: &Publisher) -> Router {
    let publisher = publisher.clone();
    let publish = move |Query(q): Query<std::collections::HashMap<String, String>>| {
        let mut event = Event::default().data(&q["data"]);
        if let Some(id) = q.get("id") {
            event = event.id(id);
        }
        let published = publisher.publish_to(&q["topic"], event);
        async move { published.map_or(StatusCode::BAD_REQUEST, |_| StatusCode::ACCEPTED) }
    };
    app.route("/test/publish", post(publish))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_the_apps_own_ids_all_arrive() {
    let _browser = node::BROWSER.lock().await;
    let (app, publisher) = counted_app(&Streams::default());
    let app = with_app_ids(app, &publisher);
    let server = Server::start(app, publisher).await;
    node::run("client.mjs", ["ids", "-", &server.url("/")]).await;
}

/// A stream path that answers `200` with `retry: 0` and an id, then ends:
/// the module must back off, not reconnect at once again and again.
/// `GET /test/ended/{n}` waits until it was asked `n` times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_at_once_is_asked_again_later_and_later() {
    let _browser = node::BROWSER.lock().await;
    let (asked, watch) = tokio::sync::watch::channel(Vec::<Instant>::new());
    let ends = move || {
        asked.send_modify(|asked| asked.push(Instant::now()));
        async {
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                "retry: 0\nid: 1\n\n",
            )
        }
    };
    let ended = {
        let watch = watch.clone();
        move |Path(n): Path<usize>| {
            let mut watch = watch.clone();
            async move {
                match tokio::time::timeout(
                    Duration::from_secs(30),
                    watch.wait_for(|a| a.len() >= n),
                )
                .await
                {
                    Ok(Ok(_)) => StatusCode::OK,
                    _ => StatusCode::GATEWAY_TIMEOUT,
                }
            }
        }
    };
    let (app, publisher) = counted_app(&Streams::default());
    let app = app
        .route("/test/ends", get(ends))
        .route("/test/ended/{n}", get(ended));
    let server = Server::start(app, publisher).await;
    node::run("client.mjs", ["ends", "-", &server.url("/")]).await;
    // Each attempt after one that ended at once waits longer: by the fifth,
    // over half a second (retry: 0 made it no wait at all).
    let asked = watch.borrow().clone();
    assert!(asked.len() >= 5, "{} requests", asked.len());
    let waits: Vec<_> = asked.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        waits[3] >= Duration::from_millis(500),
        "waited {waits:?} between attempts"
    );
}

/// A stream request of the token test: its answer, where its token came,
/// and where it resumed from.
#[derive(Debug)]
struct Asked {
    status: u16,
    bearer: bool,
    query_token: bool,
    resume: Option<String>,
}

/// In front of the token test's app: records each request of the stream
/// path or the WebSocket's.
async fn record(
    State(asked): State<Arc<Mutex<Vec<Asked>>>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path != "/events" && path != "/ws" {
        return next.run(request).await;
    }
    let query =
        Query::<Vec<(String, String)>>::try_from_uri(request.uri()).map_or(Vec::new(), |q| q.0);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let header = request.headers().get("last-event-id");
    let resume = header
        .map(|id| id.to_str().unwrap().to_owned())
        .or_else(|| param("lastEventId"));
    let bearer = request.headers().contains_key(header::AUTHORIZATION);
    let query_token = param("token").is_some();
    let response = next.run(request).await;
    asked.lock().unwrap().push(Asked {
        status: response.status().as_u16(),
        bearer,
        query_token,
        resume,
    });
    response
}

/// The JS client with `getToken`, against a hub that admits by JSON Web
/// Token (feature `jwt`): the page's first token is already expired (`401`,
/// then a fresh one at once), the next ones live two seconds, so the server
/// ends the stream at each expiry while events flow; the page gets each
/// event once, in order, each new stream resuming after the last id.
async fn tokens(mode: &str) {
    use jsonwebtoken::{EncodingKey, Header};
    use std::time::{SystemTime, UNIX_EPOCH};
    use tower_sse::{Hub, Jwt, JwtKey};

    const SECRET: &[u8] = b"the browser test's secret, 32 bytes+";
    let _browser = node::BROWSER.lock().await;
    let jwt = Jwt::new().key(JwtKey::hmac(SECRET).unwrap());
    let hub = Hub::builder().authorize_jwt(jwt).build();
    let layer = SseLayer::new("/events")
        .hub(&hub)
        .websocket("/ws")
        .client_script("/events.js");
    // `GET /token?ttl=s`: Alice's token, for the `public/` topics.
    let issued = Arc::new(Mutex::new(0));
    let counted = issued.clone();
    let token = move |Query(q): Query<std::collections::HashMap<String, String>>| {
        *counted.lock().unwrap() += 1;
        let ttl: i64 = q.get("ttl").and_then(|t| t.parse().ok()).unwrap_or(2);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "sub": "alice",
            "exp": now as i64 + ttl,
            "sse": {"prefixes": ["public/"]},
        });
        let key = EncodingKey::from_secret(SECRET).unwrap();
        async move { jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap() }
    };
    let asked = Arc::new(Mutex::new(Vec::new()));
    let page = "<!doctype html><meta charset=utf-8><title>tokens</title>";
    let app = Router::new()
        .route("/", get(move || async move { axum::response::Html(page) }))
        .route("/token", get(token));
    let app = with_app_ids(app, &hub.publisher())
        .layer(layer)
        .layer(middleware::from_fn_with_state(asked.clone(), record));
    let server = Server::start(app, hub.publisher()).await;
    node::run("client.mjs", ["tokens", mode, &server.url("/")]).await;

    let asked = std::mem::take(&mut *asked.lock().unwrap());
    let issued = *issued.lock().unwrap();
    // The expired token refused, then one stream per token, each resuming.
    let ok = if mode == "websocket" { 101 } else { 200 };
    assert_eq!(asked[0].status, 401, "{asked:?}");
    assert!(asked[1..].iter().all(|a| a.status == ok), "{asked:?}");
    assert!(asked.len() >= 4, "{} streams: {asked:?}", asked.len());
    assert!(asked[2..].iter().all(|a| a.resume.is_some()), "{asked:?}");
    let (header, query) = (mode != "websocket", mode == "websocket");
    assert!(
        asked
            .iter()
            .all(|a| a.bearer == header && a.query_token == query),
        "{asked:?}"
    );
    assert_eq!(issued, asked.len(), "one token per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_at_each_expiry_through_the_shared_worker() {
    tokens("worker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_at_each_expiry_in_the_elected_tab() {
    tokens("leader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_at_each_expiry_over_websocket() {
    tokens("websocket").await;
}
