//! Runs a Node.js script of `tests/browser/` — playwright-core driving
//! Debian's Chromium, or a plain script — and fails the test, saying what is
//! missing, when a prerequisite is: it never passes silently.
#![allow(dead_code)]

use std::{ffi::OsStr, path::Path, process::Stdio, time::Duration};

/// One browser at a time: tests of one file run on parallel threads, and
/// two Chromiums on a small machine make both slow.
pub static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn require(ok: bool, what: &str) {
    assert!(ok, "browser test prerequisite missing: {what}");
}

/// `tests/browser/`, once playwright-core is installed there.
pub fn dir() -> &'static Path {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"));
    require(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core (npm ci --prefix tests/browser)",
    );
    dir
}

/// The Chromium to drive: `CHROMIUM`, else Debian's.
pub fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(
        Path::new(&chromium).exists(),
        "Chromium (apt-get install chromium, or set CHROMIUM=/path/to/chromium)",
    );
    chromium
}

/// Runs `node tests/browser/<script> <args…>` (at most two minutes) and
/// returns what it printed; fails the test if it fails.
pub async fn run<I, S>(script: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let run = tokio::process::Command::new("node")
        .arg(dir().join(script))
        .args(args)
        .env("CHROMIUM", chromium())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("{script} took more than two minutes"))
        .expect("could not run node: install Node.js");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("ok:"), "{stdout}");
    eprintln!("{stdout}");
    stdout
}
