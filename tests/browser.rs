//! A real browser end to end: Debian's Chromium, driven by playwright-core
//! (tests/browser/bulletin.mjs), against the bulletin example.
//!
//! Needs `chromium` (Debian package; or set `CHROMIUM`), Node.js, and
//! `npm ci --prefix tests/browser`; `.ci/run` installs all three. Without
//! them this test fails and says what is missing: it never passes silently.

#[path = "../examples/bulletin.rs"]
mod bulletin;
mod common;

use axum::routing::post;
use common::Server;
use std::{path::Path, process::Stdio, time::Duration};
use tower_sse::Event;

fn require(ok: bool, what: &str) {
    assert!(ok, "browser test prerequisite missing: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulletin_in_chromium_is_live_and_resumes_after_a_drop() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(
        Path::new(&chromium).exists(),
        "Chromium (apt-get install chromium, or set CHROMIUM=/path/to/chromium)",
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    require(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core (npm ci --prefix tests/browser)",
    );

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
    let run = tokio::process::Command::new("node")
        .arg(dir.join("bulletin.mjs"))
        .arg(server.url("/"))
        .arg(&screenshot)
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
    assert!(stdout.starts_with("ok:"), "{stdout}");
    assert!(screenshot.exists());
    eprintln!("{stdout}");
}
