//! The crate's metrics, scraped from the bulletin example's `/metrics`
//! (Prometheus text format, through `metrics-exporter-prometheus`), move as
//! streams open and close, events flow, and streams are refused.

#[path = "../examples/bulletin.rs"]
mod bulletin;
mod common;

use common::{client, within, Server, Subscriber};
use tower_sse::Event;

/// The value of the sample `name` (with its labels, as rendered), if any.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The metrics are the process's: one test at a time moves them.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn scrape(server: &Server) -> String {
    scrape_url(&server.url("/metrics")).await
}

async fn scrape_url(url: &str) -> String {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_move_as_streams_open_events_flow_and_streams_end() {
    let _serial = SERIAL.lock().await;
    let layer = bulletin::layer();
    let publisher = layer.publisher();
    let server = Server::start(bulletin::app(layer), publisher).await;
    let open = r#"tower_sse_streams_open{transport="sse"}"#;
    let closed = r#"tower_sse_streams_closed_total{transport="sse",reason="client_gone"}"#;
    let gone_before = sample(&scrape(&server).await, closed).unwrap_or(0.0);

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
    assert_eq!(
        sample(&scraped, closed),
        Some(gone_before + 1.0),
        "{scraped}"
    );
}

/// A stream that `serve` ends because its client stopped reading counts as
/// `lagged` (its client resumes from its id, as one that fell behind),
/// not `client_gone`: over HTTP/1.1, where the lean path's writer waits
/// for the client, and over HTTP/2, where hyper keeps the stream and the
/// stall watch closes its connection.
#[tokio::test]
async fn a_stream_ended_for_a_stall_counts_as_lagging() {
    let _serial = SERIAL.lock().await;
    let (served, publisher) = common::served::stall_only(bulletin::app).await;
    let lagged = r#"tower_sse_streams_closed_total{transport="sse",reason="lagged"}"#;
    let count_lagged = || async { sample(&scrape_url(&served.url("/metrics")).await, lagged) };
    let before = count_lagged().await.unwrap_or(0.0);
    let mut count = publisher.watch_subscribers();

    let stuck = common::never_reading_client(served.addr, &publisher).await;
    within("the HTTP/1.1 stream to end", count.wait_for(|n| *n == 0))
        .await
        .unwrap();
    assert_eq!(count_lagged().await, Some(before + 1.0));
    drop(stuck);

    let tcp = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let mut send = common::served::h2_with_window(tcp, Some(0)).await;
    let request = http::Request::get(served.url("/events"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = within("the HTTP/2 stream", send.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    publisher
        .publish(Event::default().data("never read"))
        .unwrap();
    within("the HTTP/2 stream to end", count.wait_for(|n| *n == 0))
        .await
        .unwrap();
    assert_eq!(count_lagged().await, Some(before + 2.0));
    drop(response);
    served.shut_down().await;
}
