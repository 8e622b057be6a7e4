//! The bulletin board: a plain form app whose page shows every posted message
//! live in every open browser.
//!
//! ```text
//! cargo run --example bulletin --features axum,serve        # TLS=1 and --features axum,serve-tls: HTTPS, HTTP/2
//! ```
//!
//! Then open the printed address in two tabs and post from one.
//!
//! * `GET /` — the page: a form, a room selector, and a list fed by the
//!   layer's client module (`/events.js`): one stream for every tab of the
//!   browser, shared through a `SharedWorker` (or a tab elected to hold it),
//!   or, with `--features axum,serve,ws`, one WebSocket to `/ws` that changes
//!   rooms without reconnecting.
//! * `GET /events.js` — the client module (`SseLayer::client_script`).
//! * `GET /rooms/{room}/events` — the room's event stream, opened by a
//!   handler of its own (the `Subscribe` extractor) under the layer's hook
//!   (for `curl`, or a bare `EventSource`); signed in, with the room's
//!   presence topic.
//! * `POST /publish` — form fields `message`, and optionally `room` (publish to
//!   topic `room/<room>`; without it, to everyone), `to` (a private message to
//!   that user's topic `user/<to>`) and `event` (the event name). Answers
//!   `202 Accepted`, or `303` back to `/` for a browser form without script.
//! * `POST /login` with `name`, `POST /logout`, `GET /me` — a toy session in a
//!   cookie. Signed in, a stream also follows the user's private topic
//!   `user/<name>`; nobody may ask for someone else's (`403`). Signing out
//!   ends every stream of that user at once (in every tab), so none keeps
//!   receiving private messages.
//! * `GET /rooms/{room}/here` — who is in the room: `{"streams": n, "users":
//!   […]}`, from the hub's presence of topic `here/<room>`; the page shows
//!   "N here", refreshed when a signed-in user joins or leaves (the hub's
//!   `join`/`leave` events on that topic). Presence is for signed-in users
//!   only, by the same rule as the streams: the hook grants `here/` topics
//!   to them alone, and this route asks the same function (`403` otherwise),
//!   so an anonymous client neither lists nor hears who is there.
//! * `GET /metrics` — with `--features axum,metrics`, the crate's metrics in
//!   Prometheus's text format.
//! * `GET /events?topic=…` — the layer's own event stream, any topics.

use axum::{
    extract::{Form, Path},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use serde::Deserialize;
use std::time::Duration;
use tower_sse::{
    Access, Event, EventStream, HistoryRule, Hub, Publisher, Refusal, SseLayer, Subscribe,
};

/// Longest message accepted, in characters.
pub const MAX_MESSAGE: usize = 2000;

/// The bulletin app on its own: the router, with the layer already applied.
pub fn app(sse: SseLayer) -> Router {
    #[cfg(feature = "metrics")]
    prometheus();
    let router = Router::new()
        .route("/", get(index))
        .route("/rooms/{room}/events", get(room_events))
        .route("/rooms/{room}/here", get(here))
        .route("/publish", post(publish))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me));
    #[cfg(feature = "metrics")]
    let router = router.route("/metrics", get(metrics));
    router.layer(sse)
}

/// The Prometheus recorder, installed by the first app made with
/// `--features metrics`.
#[cfg(feature = "metrics")]
fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

#[cfg(feature = "metrics")]
async fn metrics() -> String {
    prometheus().render()
}

/// The layer as the example configures it: anyone may follow the rooms; a
/// signed-in user also follows their private topic, and only theirs, and
/// may follow the rooms' presence.
pub fn layer() -> SseLayer {
    // Signed-in users following a room's presence topic (`here/<room>`) are
    // announced there, to the signed-in users who follow it: not in the
    // room's own topic, which anonymous readers follow too. Their history
    // is their own too: the last 50 joins and leaves of a room, for ten
    // minutes, whatever the crowd does to the rooms' messages.
    let hub = Hub::builder()
        .presence_events("here/")
        .history_rule(
            "here/",
            HistoryRule::events(50).ttl(Duration::from_secs(600)),
        )
        .build();
    // The page imports the module that reads the stream for every tab.
    let layer = SseLayer::new("/events")
        .hub(&hub)
        .client_script("/events.js");
    // With `--features axum,ws`, the page can switch to WebSocket.
    #[cfg(feature = "ws")]
    let layer = layer.websocket("/ws");
    layer
        .keep_alive(Duration::from_secs(15))
        .retry(Duration::from_secs(2))
        .authorize(|parts: Parts| async move { Ok(access(&parts.headers)) })
}

/// What a request may follow: anyone the rooms (`room/…`); signed in, also
/// the rooms' presence (`here/…`) and, without asking, the user's private
/// topic. The layer's hook and the `here` route both decide by it.
fn access(headers: &HeaderMap) -> Access {
    let access = Access::none().allow_prefix("room/");
    match user(headers) {
        Some(name) => access
            .allow_prefix("here/")
            .follow(format!("user/{name}"))
            .user(name),
        None => access,
    }
}

/// The signed-in user's name, from the `user` cookie. A toy: a real app
/// would keep a session id there and look the user up.
fn user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("user="))
        .filter(|name| valid_name(name))
        .map(str::to_owned)
}

/// Names and rooms become topic names: keep them to a safe alphabet.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn index() -> Html<&'static str> {
    Html(PAGE)
}

/// Who is in a room now (on this instance): for those who may follow the
/// room's presence topic, as its stream would decide.
async fn here(Path(room): Path<String>, headers: HeaderMap, publisher: Publisher) -> Response {
    let topic = format!("here/{room}");
    if !access(&headers).allows(&topic) {
        return reject(StatusCode::FORBIDDEN, "sign in to see who is here");
    }
    match publisher.presence(&topic) {
        Ok(here) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"streams": here.streams, "users": here.users}).to_string(),
        )
            .into_response(),
        Err(e) => reject(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// One room's stream (and, signed in, the user's private topic, which the
/// layer's hook adds): the same stream as the layer's path, under a route
/// of the app's own.
async fn room_events(
    Path(room): Path<String>,
    headers: HeaderMap,
    sub: Subscribe,
) -> Result<EventStream, Response> {
    if !valid_name(&room) {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "no such room: a room is 1 to 32 letters, digits, `-` or `_`",
        ));
    }
    let mut sub = sub.topic(format!("room/{room}"));
    // Signed in: who comes and goes too, the room's presence topic.
    let here = format!("here/{room}");
    if access(&headers).allows(&here) {
        sub = sub.topic(here);
    }
    sub.event_stream().await.map_err(Refusal::into_response)
}

#[derive(Deserialize)]
struct Post {
    message: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    room: String,
    #[serde(default)]
    to: String,
}

fn reject(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into() + "\n").into_response()
}

async fn publish(publisher: Publisher, headers: HeaderMap, Form(post): Form<Post>) -> Response {
    let message = post.message.trim();
    if message.is_empty() {
        return reject(
            StatusCode::BAD_REQUEST,
            "the message is empty: write something",
        );
    }
    if message.chars().count() > MAX_MESSAGE {
        return reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the message is longer than {MAX_MESSAGE} characters"),
        );
    }
    let (room, to) = (post.room.trim(), post.to.trim());
    for (field, value) in [("room", room), ("to", to)] {
        if !value.is_empty() && !valid_name(value) {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("`{field}` must be 1 to 32 letters, digits, `-` or `_`"),
            );
        }
    }
    let published = if !to.is_empty() {
        let from = user(&headers).unwrap_or_else(|| "someone".into());
        let event = Event::default()
            .event("private")
            .data(format!("from {from}: {message}"));
        publisher.publish_to(&format!("user/{to}"), event)
    } else {
        let mut event = Event::default().data(message);
        if !post.event.is_empty() {
            event = event.event(post.event.trim());
        }
        publish_public(&publisher, room, event)
    };
    // Stored once awaited (with a backplane: once the engine holds it).
    let stored = match published {
        Ok(published) => published.await,
        Err(e) => Err(e),
    };
    match stored {
        // A browser posting the form without script gets the page back.
        Ok(_) if wants_html(&headers) => Redirect::to("/").into_response(),
        Ok(id) => (StatusCode::ACCEPTED, format!("published as event {id}\n")).into_response(),
        Err(tower_sse::Error::Closed) => reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ),
        Err(e @ tower_sse::Error::Backplane(_)) => {
            reject(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e) => reject(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// To the room, or to everyone without one.
fn publish_public(
    publisher: &Publisher,
    room: &str,
    event: Event,
) -> Result<tower_sse::Published, tower_sse::Error> {
    if room.is_empty() {
        publisher.publish(event)
    } else {
        publisher.publish_to(&format!("room/{room}"), event)
    }
}

#[derive(Deserialize)]
struct Login {
    name: String,
}

async fn login(Form(login): Form<Login>) -> Response {
    let name = login.name.trim();
    if !valid_name(name) {
        return reject(
            StatusCode::BAD_REQUEST,
            "a name is 1 to 32 letters, digits, `-` or `_`",
        );
    }
    let cookie = format!("user={name}; Path=/; HttpOnly; SameSite=Lax");
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, "/".into())],
    )
        .into_response()
}

async fn logout(publisher: Publisher, headers: HeaderMap) -> Response {
    // Every stream of the user ends now, in every tab: they reconnect
    // without the session, so no private message reaches a signed-out tab.
    if let Some(name) = user(&headers) {
        if let Err(e) = publisher.disconnect_user(&name).await {
            return reject(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
    }
    let cookie = "user=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0";
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, "/")],
    )
        .into_response()
}

async fn me(headers: HeaderMap) -> Response {
    match user(&headers) {
        Some(name) => name.into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

#[allow(dead_code)] // The tests include this file for `app` and `layer` only.
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "PORT must be a port number",
            )
        })?,
        Err(_) => 3000,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    // tower_sse::serve: HTTP/1.1 and HTTP/2, the timeouts a push server
    // needs, and a graceful shutdown that ends the event streams.
    let server = tower_sse::serve(listener, app(layer()));
    let server = if std::env::var_os("TLS").is_some() {
        let server = tls(server, &addr)?;
        println!("bulletin board: open https://{addr}/ in two tabs (HTTP/2; the certificate is self-signed: accept it once)");
        server
    } else {
        println!("bulletin board: open http://{addr}/ in two tabs");
        server
    };
    server
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await
}

/// HTTPS with a certificate made now for 127.0.0.1 and localhost
/// (`TLS=1`): browsers speak HTTP/2 only over TLS, and then every tab
/// shares one connection.
#[cfg(feature = "serve-tls")]
fn tls<S>(
    server: tower_sse::Serve<S>,
    addr: &std::net::SocketAddr,
) -> std::io::Result<tower_sse::Serve<S>> {
    let names = vec![addr.ip().to_string(), "localhost".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(std::io::Error::other)?;
    let config = tower_sse::tls_config(
        certified.cert.pem().as_bytes(),
        certified.signing_key.serialize_pem().as_bytes(),
    )?;
    Ok(server.tls(config))
}

#[cfg(not(feature = "serve-tls"))]
fn tls<S>(
    _: tower_sse::Serve<S>,
    _: &std::net::SocketAddr,
) -> std::io::Result<tower_sse::Serve<S>> {
    Err(std::io::Error::other(
        "TLS=1 needs the feature serve-tls: cargo run --example bulletin --features axum,serve-tls",
    ))
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bulletin board</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2330; background: #f5f6f8; }
  main { max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  header { display: flex; align-items: baseline; justify-content: space-between; gap: 1rem; flex-wrap: wrap; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
  #status { font-size: .85rem; color: #6b7280; margin: 0 0 1rem; }
  #status.live::before { content: "● "; color: #16a34a; }
  #status.down::before { content: "● "; color: #dc2626; }
  #here { font-size: .85rem; color: #6b7280; margin: -.75rem 0 1rem; }
  form { display: flex; gap: .5rem; margin-bottom: 1rem; flex-wrap: wrap; }
  input[name=message] { flex: 1; min-width: 12rem; }
  input[name=to] { width: 7rem; }
  input, button, select { font: inherit; padding: .45rem .6rem; border: 1px solid #cbd0d8; border-radius: .4rem; background: white; }
  button { background: #1d4ed8; color: white; border-color: #1d4ed8; cursor: pointer; }
  button.quiet { background: white; color: #1d4ed8; }
  .who { font-size: .9rem; display: flex; gap: .5rem; align-items: center; }
  .who form { margin: 0; }
  #error { color: #b91c1c; min-height: 1.2em; margin: -.5rem 0 .5rem; font-size: .9rem; }
  ol { list-style: none; padding: 0; margin: 0; }
  li { background: white; border: 1px solid #e3e6eb; border-radius: .5rem; padding: .6rem .8rem; margin-bottom: .5rem; }
  li .meta { font-size: .75rem; color: #6b7280; }
  li.private { background: #eef2ff; border-color: #c7d2fe; }
  li.notice { background: #fff7ed; border-color: #fed7aa; }
  .transport { font-size: .85rem; color: #6b7280; margin: -.5rem 0 1rem; }
  .transport select { padding: .1rem .3rem; }
</style>
</head>
<body>
<main>
  <header>
    <h1>Bulletin board</h1>
    <div class="who" id="who">
      <form method="post" action="/login"><input name="name" placeholder="your name" size="10" required><button class="quiet">Sign in</button></form>
    </div>
  </header>
  <p id="status">connecting…</p> <p id="here"></p>
  <form id="post" method="post" action="/publish">
    <select name="room" id="room" title="room">
      <option value="general">#general</option>
      <option value="random">#random</option>
    </select>
    <input name="message" placeholder="Say something to the room" autocomplete="off" required>
    <input name="to" placeholder="to (private)" autocomplete="off" title="send privately to this user">
    <button>Post</button>
  </form>
  <p class="transport"><label>via <select id="transport" title="how this page receives messages">
    <option value="sse">EventSource (SSE)</option>
    <option value="ws">WebSocket</option>
  </select></label></p>
  <p id="error"></p>
  <ol id="messages"></ol>
</main>
<script type="module">
  import { connect } from "/events.js";

  const $ = (id) => document.getElementById(id);
  const [list, status, error, room, transport, hereLine, who] =
    ["messages", "status", "error", "room", "transport", "here", "who"].map($);

  // "N here": the room's presence, refreshed when someone joins or leaves;
  // only signed-in users may see it (and follow its topic, here/<room>).
  let signedIn = false;
  async function refreshHere() {
    if (!signedIn) return (hereLine.textContent = "sign in to see who is here");
    const r = await fetch("/rooms/" + encodeURIComponent(room.value) + "/here");
    if (!r.ok) return;
    const here = await r.json();
    hereLine.textContent = here.streams + " here" + (here.users.length ? ": " + here.users.join(", ") : "");
  }
  setInterval(refreshHere, 15000);

  function show(text, meta, kind) {
    const item = document.createElement("li");
    if (kind) item.className = kind;
    const body = document.createElement("div");
    body.textContent = text;
    const small = document.createElement("div");
    small.className = "meta";
    small.textContent = meta;
    item.append(body, small);
    list.prepend(item);
  }
  const when = (e) => `#${e.id} · ${new Date().toLocaleTimeString()}`;

  // One connection for every tab (the module shares it and resumes it):
  // this page follows the room; signed in, the server adds the private topic.
  let hub, sub;
  function follow(keep) {
    sub?.close();
    if (!keep) list.replaceChildren();
    const name = room.value, via = hub.transport === "websocket" ? " (WebSocket)" : "";
    // A topic the hook refuses would keep the shared stream from opening:
    // the presence topic only when signed in.
    const topics = signedIn ? ["room/" + name, "here/" + name] : ["room/" + name];
    sub = hub.subscribe(topics, {
      message(e) {
        if (e.event === "join" || e.event === "leave") refreshHere();
        else if (e.event === "private") show(e.data, "private · " + when(e), "private");
        else show(e.data, when(e));
      },
      reset: () => show("Some messages were missed while disconnected.", "reload the page to see the board as it is", "notice"),
      state(state) {
        status.className = state;
        status.dataset.role = hub.role;
        status.textContent = { live: `live in #${name}${via}`, down: "reconnecting…" }[state] ?? "connecting…";
        if (state === "live") refreshHere();
      },
      error(e) {
        status.textContent = `reconnecting in ${(e.retryIn / 1000).toFixed(1)} s: ${e.message}`;
        // Signed out in another tab: the presence topic is refused now.
        if (e.status === 403 && signedIn) showWho();
      },
    });
  }
  function start() {
    hub?.close();
    try {
      hub = connect({ transport: transport.value === "ws" ? "websocket" : "sse" });
    } catch {
      status.className = "down";
      status.textContent = "no WebSocket here: run the example with --features axum,serve,ws";
      return;
    }
    follow();
  }
  room.addEventListener("change", () => follow());
  transport.addEventListener("change", start);
  start();

  const signedOut = who.innerHTML;
  async function showWho() {
    const r = await fetch("/me");
    const was = signedIn;
    signedIn = r.status === 200;
    if (hub && signedIn !== was) follow(true); // with or without the presence topic
    if (!signedIn) return (who.innerHTML = signedOut);
    who.innerHTML = '<span></span><form method="post" action="/logout"><button class="quiet">Sign out</button></form>';
    who.querySelector("span").textContent = "signed in as " + (await r.text());
  }
  showWho();
  // Signing in changes whose the shared stream is: connect it again (signing
  // out, the server ends the user's streams, in every tab, by itself).
  who.addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = e.target;
    const r = await fetch(form.action, { method: "POST", body: new URLSearchParams(new FormData(form)) });
    error.textContent = r.ok ? "" : await r.text();
    if (form.action.endsWith("/login") && r.ok) hub?.reconnect();
    showWho();
  });

  // With script, post without leaving the page; without it, the form still works.
  $("post").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = e.target;
    const response = await fetch("/publish", { method: "POST", body: new URLSearchParams(new FormData(form)) });
    error.textContent = response.ok ? "" : await response.text();
    if (response.ok) { form.message.value = ""; form.to.value = ""; }
  });
</script>
</body>
</html>
"##;
