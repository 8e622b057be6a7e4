//! The fault contract (`tests/common/faults.rs`) for PostgreSQL: an
//! instance reaches the database through a proxy that injects each fault,
//! another directly; and a table truncated under a running instance.

use super::{raw, Pg};
use crate::common::{
    faults::{self, app},
    proxy::{Fault, Proxy},
    Server, Subscriber,
};
use std::time::Duration;
use tower_sse::{Hub, PostgresBackplane, SseLayer, RESET_EVENT};

async fn instance(config: &str) -> Server {
    let backplane = PostgresBackplane::connect(config).await.unwrap();
    let layer =
        SseLayer::new("/events").hub(&Hub::builder().history(100).backplane(backplane).build());
    let publisher = layer.publisher();
    Server::start(app(layer), publisher).await
}

async fn fault(what: &str, apply: impl FnOnce(&Proxy), heal: impl FnOnce(&Proxy)) {
    let pg = Pg::start();
    let proxy = Proxy::start(([127, 0, 0, 1], pg.port).into()).await;
    let direct = instance(&pg.config()).await;
    let config = pg.config().replace(
        &format!("port={}", pg.port),
        &format!("port={}", proxy.port()),
    );
    let through = instance(&config).await;
    faults::contract(what, &proxy, &through, &direct, apply, heal).await;
}

#[tokio::test]
async fn fault_latency() {
    let latency = Fault::Latency(Duration::from_millis(300));
    fault(
        "postgres: latency",
        |p| p.set(latency),
        |p| p.set(Fault::None),
    )
    .await;
}

#[tokio::test]
async fn fault_stall() {
    fault(
        "postgres: stall",
        |p| p.set(Fault::Stall),
        |p| p.set(Fault::None),
    )
    .await;
}

#[tokio::test]
async fn fault_half_open() {
    fault(
        "postgres: half-open",
        |p| p.set(Fault::HalfOpen),
        |p| p.set(Fault::None),
    )
    .await;
}

#[tokio::test]
async fn fault_connections_dropped() {
    fault(
        "postgres: connections dropped",
        Proxy::drop_connections,
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn fault_connections_reset() {
    fault(
        "postgres: connections reset",
        Proxy::reset_connections,
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn fault_engine_unreachable() {
    fault(
        "postgres: unreachable",
        |p| p.set(Fault::Refuse),
        |p| p.set(Fault::None),
    )
    .await;
}

/// The table truncated under a running instance, its ids restarted (an
/// operator, a restore): the new rows would come under ids already read. A
/// stream open before is never left silent: it ends, resuming it gets the
/// reset, and it goes on live.
#[tokio::test]
async fn a_table_truncated_with_its_ids_restarted_is_a_reset_then_live() {
    let pg = Pg::start();
    let a = instance(&pg.config()).await;
    let mut browser = Subscriber::connect(&a.url("/events")).await;
    // Three rows: the new ones' ids then stay below the last one read
    // (with a single row read, the first new row would take its very id,
    // which the reader cannot tell from the row it read: not covered).
    let mut before = None;
    for i in 0..3 {
        let id = faults::publish_when_up(&a.publisher, &format!("before {i}"), "postgres").await;
        assert_eq!(browser.next().await.unwrap().id, id.to_string());
        before = Some(id);
    }
    let before = before.unwrap();
    let seen = browser.last_event_id();
    raw(&pg)
        .await
        .batch_execute("TRUNCATE tower_sse_events RESTART IDENTITY")
        .await
        .unwrap();
    // Taken, under an id below what was read (lost with the reset), or
    // refused; either way the stream must not stay silent.
    let _ = faults::publish_when_up(&a.publisher, "after", "postgres").await;
    let mut resumed = match browser.next().await {
        None => Subscriber::resume(&a.url("/events"), seen.as_deref()).await,
        Some(event) => panic!("the old stream got {event:?} after the loss"),
    };
    assert_eq!(resumed.next().await.unwrap().event, RESET_EVENT);
    let live = faults::publish_when_up(&a.publisher, "live", "postgres").await;
    assert!(live > before, "ids go on above what was read");
    let next = resumed.next().await.unwrap();
    assert_eq!((next.data.as_str(), next.id), ("live", live.to_string()));
}
