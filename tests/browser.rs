//! A real browser end to end: Debian's Chromium, driven by playwright-core
//! (tests/browser/bulletin.mjs), against the bulletin example.
//!
//! Needs `chromium` (Debian package; or set `CHROMIUM`), Node.js, and
//! `npm ci --prefix tests/browser`; `.ci/run` installs all three. Without
//! them this test fails and says what is missing: it never passes silently.

#[path = "../examples/bulletin.rs"]
mod bulletin;
mod common;

#[path = "common/node.rs"]
mod node;

use axum::routing::post;
use common::Server;
use std::path::Path;
use tower_sse::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulletin_in_chromium_is_live_and_resumes_after_a_drop() {
    let layer = bulletin::layer();
    let publisher = layer.publisher();
    let hook = publisher.clone();
    // A test hook, not part of the example: drop every stream, then publish
    // while the browsers are away.
    let app = bulletin::app(layer).route(
        "/test/drop",
        post(move || async move {
            hook.disconnect_all();
            for i in 1..=3 {
                hook.publish(Event::default().data(format!("missed {i}")))
                    .unwrap();
            }
        }),
    );
    let server = Server::start(app, publisher).await;

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bulletin.png");
    let args = [server.url("/"), screenshot.display().to_string()];
    node::run("bulletin.mjs", args).await;
    assert!(screenshot.exists());
}
