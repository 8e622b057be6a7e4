//! The fault contract (`tests/common/faults.rs`) for PostgreSQL: an
//! instance reaches the database through a proxy that injects each fault,
//! another directly; and a table truncated under a running instance.

use super::{raw, Pg};
use crate::common::{
    faults::{self, app},
    proxy::{Fault, Proxy},
    Server,
};
use std::time::Duration;
use tower_sse::{Hub, PostgresBackplane, SseLayer};

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

faults::fault_cases!("postgres");

/// The table truncated under a running instance, its ids restarted (an
/// operator, a restore): the new rows would come under ids already read. A
/// stream open before is never left silent: it ends, resuming it gets the
/// reset, and it goes on live.
async fn truncated_with_its_ids_restarted(rows: usize) {
    let pg = Pg::start();
    let a = instance(&pg.config()).await;
    let (mut browser, seen, before) = faults::stream_that_read("postgres", &a, rows).await;
    raw(&pg)
        .await
        .batch_execute("TRUNCATE tower_sse_events RESTART IDENTITY")
        .await
        .unwrap();
    faults::a_loss_is_a_reset_then_live("postgres", &a, &mut browser, seen, before).await;
}

#[tokio::test]
async fn a_table_truncated_with_its_ids_restarted_is_a_reset_then_live() {
    // The new rows' ids stay below the last one read.
    truncated_with_its_ids_restarted(3).await;
}

#[tokio::test]
async fn a_table_of_one_row_truncated_with_its_ids_restarted_is_a_reset_then_live() {
    // The first new row takes the very id read (told apart by the
    // transaction that inserted it).
    truncated_with_its_ids_restarted(1).await;
}

/// A server that accepts and never answers: an error at start, in bounded time.
#[tokio::test]
async fn connect_to_a_silent_server_fails_in_bounded_time() {
    let (_listener, port) = faults::silent_server().await;
    let config = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    faults::connect_fails_within(
        "postgres",
        Duration::from_secs(10),
        PostgresBackplane::connect(&config),
    )
    .await;
}

/// The table dropped under a running instance (and made again by it): a
/// stream open before ends, resuming it gets the reset, it goes on live, and
/// publishing works again without restarting the app.
#[tokio::test]
async fn a_table_dropped_is_made_again_and_is_a_reset_then_live() {
    let pg = Pg::start();
    let a = instance(&pg.config()).await;
    let (mut browser, seen, before) = faults::stream_that_read("postgres", &a, 1).await;
    raw(&pg)
        .await
        .batch_execute("DROP TABLE tower_sse_events")
        .await
        .unwrap();
    faults::a_loss_is_a_reset_then_live("postgres", &a, &mut browser, seen, before).await;
}
