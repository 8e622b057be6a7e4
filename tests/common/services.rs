//! Servers a test starts for itself (Redis, NATS, PostgreSQL): a free
//! port, a scratch directory, and a process whose log the test can wait on.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};
use tokio::sync::mpsc;

use super::TIMEOUT;

/// A loopback port nothing listens on (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory of this test, removed with what it holds when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-sse-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to the file `name` in it; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A server process of this test, killed when dropped. Every line it
/// writes (stdout and stderr) can be waited for; `SERVICE_LOG=1` prints
/// them.
pub struct Service {
    child: Child,
    name: String,
    log: mpsc::UnboundedReceiver<String>,
}

impl Service {
    /// Starts `command` and returns once it wrote a line containing
    /// `ready`; panics saying how to install it (`install`) when it cannot
    /// be run, or with what it wrote when it exits first.
    pub fn start(mut command: Command, install: &str, ready: &str) -> Service {
        let name = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} is needed for this test ({install}): {e}"));
        let (tx, log) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let forward = |output: Box<dyn Read + Send>| {
            let (tx, ready_tx, ready) = (tx.clone(), ready_tx.clone(), ready.to_owned());
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if std::env::var_os("SERVICE_LOG").is_some() {
                        eprintln!("{line}");
                    }
                    if line.contains(&ready) {
                        let _ = ready_tx.send(Ok(()));
                    }
                    // Once nobody listens, the pipe is still drained.
                    let _ = tx.send(line.clone());
                    let _ = ready_tx.send(Err(line));
                }
            });
        };
        forward(Box::new(child.stdout.take().unwrap()));
        forward(Box::new(child.stderr.take().unwrap()));
        drop(ready_tx);
        let mut said = Vec::new();
        loop {
            match ready_rx.recv_timeout(TIMEOUT) {
                Ok(Ok(())) => break,
                Ok(Err(line)) => said.push(line),
                Err(e) => {
                    child.kill().ok();
                    panic!(
                        "{name} was not ready ({e:?}); it said:\n{}",
                        said.join("\n")
                    );
                }
            }
        }
        Service { child, name, log }
    }

    /// Waits until it has written `n` lines containing `text` (counting
    /// from its start).
    pub async fn wait_for(&mut self, text: &str, n: usize) {
        self.wait_longer_for(text, n, TIMEOUT).await
    }

    pub async fn wait_longer_for(&mut self, text: &str, n: usize, timeout: Duration) {
        let name = &self.name;
        let log = &mut self.log;
        let seen = async {
            let mut seen = 0;
            while seen < n {
                let line = log
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("{name} exited before writing {text:?}"));
                if line.contains(text) {
                    seen += 1;
                }
            }
        };
        tokio::time::timeout(timeout, seen)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {name} to write {text:?} ×{n}"));
    }

    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
