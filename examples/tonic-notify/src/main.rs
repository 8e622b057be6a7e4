//! `cargo run -p tonic-notify`, then in one terminal
//! `curl -N -H 'authorization: Bearer alice-token' http://127.0.0.1:50051/events`,
//! in another watch the same events over gRPC with `notify.Notifier/Watch`
//! (metadata `authorization: Bearer alice-token`), and call
//! `notify.Notifier/Notify` with any gRPC client (or run
//! `cargo test -p tonic-notify`). Alice follows `orders/alice` and may ask
//! for `public/…` topics; without a known token both answer "unknown token".

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
    let layer = SseLayer::new("/events").authorize(tonic_notify::authorize);
    tonic_notify::serve(listener, layer, shutdown).await?;
    Ok(())
}
