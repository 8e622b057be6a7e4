//! `cargo run -p tonic-notify`, then in one terminal
//! `curl -N http://127.0.0.1:50051/events`, in another watch the same events
//! over gRPC with `notify.Notifier/Watch`, and call `notify.Notifier/Notify`
//! with any gRPC client (or run `cargo test -p tonic-notify`).

use tower_sse::SseLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "50051".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let addr = listener.local_addr()?;
    println!("gRPC notify.Notifier (Notify, Watch) at http://{addr}, event stream at http://{addr}/events");
    let shutdown = async {
        tokio::signal::ctrl_c().await.ok();
    };
    tonic_notify::serve(listener, SseLayer::new("/events"), shutdown).await?;
    Ok(())
}
