//! The bulletin board: a plain form app whose page shows every posted message
//! live in every open browser.
//!
//! ```text
//! cargo run --example bulletin --features axum
//! ```
//!
//! Then open the printed address in two tabs and post from one.
//!
//! * `GET /` — the page: a form, and a list fed by `EventSource('/events')`.
//! * `POST /publish` — form fields `message` and optional `event`; answers
//!   `202 Accepted`, or `303` back to `/` for a browser form without script.
//! * `GET /events` — the event stream, served by `SseLayer`.

use axum::{
    extract::Form,
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use serde::Deserialize;
use std::time::Duration;
use tower_sse::{Event, Publisher, SseLayer};

/// Longest message accepted, in characters.
pub const MAX_MESSAGE: usize = 2000;

/// The bulletin app on its own: the router, with the layer already applied.
pub fn app(sse: SseLayer) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/publish", post(publish))
        .layer(sse)
}

/// The layer as the example configures it.
pub fn layer() -> SseLayer {
    SseLayer::new("/events")
        .keep_alive(Duration::from_secs(15))
        .retry(Duration::from_secs(2))
}

async fn index() -> Html<&'static str> {
    Html(PAGE)
}

#[derive(Deserialize)]
struct Post {
    message: String,
    #[serde(default)]
    event: String,
}

async fn publish(publisher: Publisher, headers: HeaderMap, Form(post): Form<Post>) -> Response {
    let message = post.message.trim();
    if message.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "the message is empty: write something\n",
        )
            .into_response();
    }
    if message.chars().count() > MAX_MESSAGE {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the message is longer than {MAX_MESSAGE} characters\n"),
        )
            .into_response();
    }
    let mut event = Event::default().data(message);
    if !post.event.is_empty() {
        event = event.event(post.event.trim());
    }
    match publisher.publish(event) {
        // A browser posting the form without script gets the page back.
        Ok(_) if wants_html(&headers) => Redirect::to("/").into_response(),
        Ok(id) => (StatusCode::ACCEPTED, format!("published as event {id}\n")).into_response(),
        Err(tower_sse::Error::Closed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down\n",
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
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
    let sse = layer();
    let publisher = sse.publisher();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "bulletin board: open http://{}/ in two tabs",
        listener.local_addr()?
    );
    axum::serve(listener, app(sse))
        .with_graceful_shutdown(async move {
            tokio::signal::ctrl_c().await.ok();
            // Ends every event stream, so the server can stop.
            publisher.close();
        })
        .await
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
  h1 { font-size: 1.4rem; margin-bottom: .25rem; }
  #status { font-size: .85rem; color: #6b7280; margin: 0 0 1rem; }
  #status.live::before { content: "● "; color: #16a34a; }
  #status.down::before { content: "● "; color: #dc2626; }
  form { display: flex; gap: .5rem; margin-bottom: 1.5rem; }
  input[name=message] { flex: 1; }
  input, button { font: inherit; padding: .5rem .7rem; border: 1px solid #cbd0d8; border-radius: .4rem; }
  button { background: #1d4ed8; color: white; border-color: #1d4ed8; cursor: pointer; }
  #error { color: #b91c1c; min-height: 1.2em; margin: -1rem 0 1rem; font-size: .9rem; }
  ol { list-style: none; padding: 0; margin: 0; }
  li { background: white; border: 1px solid #e3e6eb; border-radius: .5rem; padding: .6rem .8rem; margin-bottom: .5rem; }
  li .meta { font-size: .75rem; color: #6b7280; }
  li.notice { background: #fff7ed; border-color: #fed7aa; }
</style>
</head>
<body>
<main>
  <h1>Bulletin board</h1>
  <p id="status">connecting…</p>
  <form id="post" method="post" action="/publish">
    <input name="message" placeholder="Say something to every open page" autocomplete="off" required>
    <button>Post</button>
  </form>
  <p id="error"></p>
  <ol id="messages"></ol>
</main>
<script>
  const list = document.getElementById("messages");
  const status = document.getElementById("status");
  const error = document.getElementById("error");

  function show(text, meta, notice) {
    const item = document.createElement("li");
    if (notice) item.className = "notice";
    const body = document.createElement("div");
    body.textContent = text;
    const small = document.createElement("div");
    small.className = "meta";
    small.textContent = meta;
    item.append(body, small);
    list.prepend(item);
  }

  const events = new EventSource("/events");
  events.onopen = () => { status.textContent = "live"; status.className = "live"; };
  events.onerror = () => { status.textContent = "reconnecting…"; status.className = "down"; };
  events.onmessage = (e) => show(e.data, `#${e.lastEventId} · ${new Date().toLocaleTimeString()}`);
  events.addEventListener("reset", () =>
    show("Some messages were missed while disconnected.", "reload the page to see the board as it is", true));

  // With script, post without leaving the page; without it, the form still works.
  document.getElementById("post").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = e.target;
    const response = await fetch("/publish", { method: "POST", body: new URLSearchParams(new FormData(form)) });
    error.textContent = response.ok ? "" : await response.text();
    if (response.ok) form.reset();
  });
</script>
</body>
</html>
"##;
