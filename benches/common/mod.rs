//! What the benches' child servers share (included by `#[path]`: each
//! bench is its own crate).

/// Resolves when the parent closes this process's stdin: a child server's
/// cue to stop (the parent may also send SIGTERM).
pub async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await;
}

/// A runtime of `workers` threads (the benches' servers take 2: one per
/// core of the machines they were written on).
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a child server (`command`, its stdin and stdout piped); returns
/// once it printed its port (its first line), with the port. Closing its
/// stdin is its cue to stop.
pub fn start_server(command: &mut std::process::Command) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    (child, port)
}
