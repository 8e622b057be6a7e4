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
