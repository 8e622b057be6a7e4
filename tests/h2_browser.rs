//! A real browser over HTTPS and HTTP/2 served by `tower_sse::serve`: ten
//! tabs, each with its own `EventSource`, share one TCP connection (over
//! HTTP/1.1 the seventh would not even load), and all are live.
//!
//! Needs `chromium` (or `CHROMIUM`), Node.js and `npm ci --prefix
//! tests/browser`, as `tests/browser.rs`; `.ci/run` installs them.

mod common;

use axum::{
    response::Html,
    routing::{get, post},
    Router,
};
use http::request::Parts;
use std::{
    collections::BTreeSet,
    future::IntoFuture,
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};
use tower_sse::{Access, Event, Publisher, SseLayer};

const PAGE: &str = r#"<!doctype html>
<html><body data-state="connecting"><script>
const events = new EventSource("/events");
events.onopen = () => { document.body.dataset.state = "live"; };
events.onmessage = (e) => { document.body.dataset.last = e.data; };
</script></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tabs_share_one_http2_connection_over_tls() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "browser test prerequisite missing: Chromium (apt-get install chromium, or set CHROMIUM)"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "browser test prerequisite missing: playwright-core (npm ci --prefix tests/browser)"
    );

    // The address of every stream's connection, as the server saw it.
    let peers = Arc::new(Mutex::new(Vec::<SocketAddr>::new()));
    let seen = peers.clone();
    let layer = SseLayer::new("/events").authorize(move |parts: Parts| {
        let seen = seen.clone();
        async move {
            if let Some(peer) = parts.extensions.get::<SocketAddr>() {
                seen.lock().unwrap().push(*peer);
            }
            Ok::<_, http::Response<String>>(Access::all())
        }
    });
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/publish",
            post(|publisher: Publisher| async move {
                publisher
                    .publish(Event::default().data("to every tab"))
                    .unwrap();
            }),
        )
        .layer(layer);

    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let tls = tower_sse::tls_config(
        certified.cert.pem().as_bytes(),
        certified.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tower_sse::serve(listener, app).tls(tls).into_future());

    let run = tokio::process::Command::new("node")
        .arg(dir.join("h2.mjs"))
        .arg(format!("https://{addr}/"))
        .arg(format!("https://{addr}/publish"))
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test took more than two minutes")
        .expect("could not run node: install Node.js");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("ok: 10 tabs live over h2"), "{stdout}");

    // The server side: ten streams, all on one connection.
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 10, "{peers:?}");
    let connections: BTreeSet<SocketAddr> = peers.into_iter().collect();
    assert_eq!(connections.len(), 1, "streams over {connections:?}");
    eprintln!("{stdout}");
}
