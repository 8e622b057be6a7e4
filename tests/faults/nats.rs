//! The fault contract (`tests/common/faults.rs`) for NATS JetStream, and
//! instances starting together: an instance reaches NATS through a proxy
//! that injects each fault, another directly.

use super::{nats, NatsHarness};
use crate::common::{
    faults::{self, app},
    proxy::{Fault, Proxy},
    Server,
};
use std::time::Duration;
use tower_sse::{Error, Hub, NatsBackplane, SseLayer};

async fn instance(url: &str) -> Server {
    let backplane = NatsBackplane::connect(url).await.unwrap();
    let layer =
        SseLayer::new("/events").hub(&Hub::builder().history(100).backplane(backplane).build());
    let publisher = layer.publisher();
    Server::start(app(layer), publisher).await
}

async fn fault(what: &str, apply: impl FnOnce(&Proxy), heal: impl FnOnce(&Proxy)) {
    let harness = NatsHarness::new();
    let proxy = Proxy::start(([127, 0, 0, 1], harness.port).into()).await;
    let direct = instance(&harness.url()).await;
    let through = instance(&format!("nats://{}", proxy.addr)).await;
    faults::contract(what, &proxy, &through, &direct, apply, heal).await;
}

faults::fault_cases!("nats");

/// Deploys start replicas together: every one of them connects to a
/// stream none of them found, whichever made it.
#[tokio::test]
async fn instances_starting_together_on_a_new_stream_all_connect() {
    for _ in 0..3 {
        let harness = NatsHarness::new();
        let url = harness.url();
        let starts = (0..8).map(|_| NatsBackplane::connect(&url));
        for started in futures_util::future::join_all(starts).await {
            started.expect("every instance connects");
        }
    }
}

/// An instance set up with another subject prefix for the same stream is
/// refused at start, saying what must agree.
#[tokio::test]
async fn a_stream_of_another_subject_is_refused_clearly() {
    let harness = NatsHarness::new();
    NatsBackplane::connect(&harness.url()).await.unwrap();
    let err = NatsBackplane::builder()
        .servers(harness.url())
        .subject("other.events")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backplane(_)), "{err:?}");
    assert!(err.to_string().contains("same subject prefix"), "{err}");
}

/// NATS back within a second with an empty store: a stream open before
/// ends, resuming it gets the reset, and it goes on live; publishing works
/// again without restarting the app.
#[tokio::test]
async fn nats_back_empty_at_once_is_a_reset_then_live() {
    let harness = NatsHarness::new();
    let a = instance(&harness.url()).await;
    let (mut browser, seen, before) = faults::stream_that_read("nats", &a, 1).await;
    {
        let mut server = harness.server.lock().unwrap();
        server.kill();
        std::fs::remove_dir_all(harness.dir.path()).unwrap();
        std::fs::create_dir_all(harness.dir.path()).unwrap();
        *server = nats(harness.port, harness.dir.path());
    }
    faults::a_loss_is_a_reset_then_live("nats", &a, &mut browser, seen, before).await;
}

/// A server that accepts and never answers: an error at start, in bounded time.
#[tokio::test]
async fn connect_to_a_silent_server_fails_in_bounded_time() {
    let (_listener, port) = faults::silent_server().await;
    let url = format!("nats://127.0.0.1:{port}");
    faults::connect_fails_within("nats", Duration::from_secs(4), NatsBackplane::connect(&url))
        .await;
}
