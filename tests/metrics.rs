//! The crate's metrics, scraped from the bulletin example's `/metrics`
//! (Prometheus text format, through `metrics-exporter-prometheus`), move as
//! streams open and close, events flow, and streams are refused.

#[path = "../examples/bulletin.rs"]
mod bulletin;
mod common;

use common::{client, within, Server, Subscriber};

/// The value of the sample `name` (with its labels, as rendered), if any.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(server: &Server) -> String {
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_move_as_streams_open_events_flow_and_streams_end() {
    let layer = bulletin::layer();
    let publisher = layer.publisher();
    let server = Server::start(bulletin::app(layer), publisher).await;
    let open = r#"tower_sse_streams_open{transport="sse"}"#;

    let mut reader = Subscriber::connect(&server.url("/rooms/general/events")).await;
    let scraped = scrape(&server).await;
    assert_eq!(sample(&scraped, open), Some(1.0), "{scraped}");

    for i in 0..3 {
        let post = client()
            .post(server.url("/publish"))
            .form(&[("message", format!("m{i}")), ("room", "general".into())])
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 202);
    }
    assert_eq!(reader.take(3).await.len(), 3);
    let scraped = scrape(&server).await;
    let published = sample(&scraped, "tower_sse_events_published_total").unwrap();
    assert!(published >= 3.0, "{scraped}");
    let delivered = sample(&scraped, r#"tower_sse_deliveries_total{transport="sse"}"#).unwrap();
    assert!(delivered >= 3.0, "{scraped}");
    assert!(sample(&scraped, "tower_sse_history_events").unwrap() >= 3.0);
    assert!(sample(&scraped, "tower_sse_history_bytes").unwrap() > 0.0);

    // A refusal is counted by its status.
    let bad = client()
        .get(server.url("/events?topic=no%20spaces"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let scraped = scrape(&server).await;
    assert!(sample(&scraped, r#"tower_sse_refusals_total{status="400"}"#).unwrap() >= 1.0);

    // The stream ends: the gauge goes back and the end is counted by reason.
    drop(reader);
    let mut count = server.publisher.watch_subscribers();
    within("the stream to close", count.wait_for(|n| *n == 0))
        .await
        .unwrap();
    let scraped = scrape(&server).await;
    assert_eq!(sample(&scraped, open), Some(0.0), "{scraped}");
    let closed = r#"tower_sse_streams_closed_total{transport="sse",reason="client_gone"}"#;
    assert_eq!(sample(&scraped, closed), Some(1.0), "{scraped}");
}
