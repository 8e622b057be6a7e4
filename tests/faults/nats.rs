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

/// A flood trims one topic of the stream (its count per subject) while an
/// instance is cut off from NATS. When it is back, that instance finds the
/// hole in the stream, names the flooded topic (its streams resume), and
/// every other topic's stream carries on: the flood costs the quiet topic's
/// live stream nothing, and a resume of it is no reset.
#[tokio::test]
async fn a_flood_while_an_instance_is_away_costs_only_its_topic() {
    use futures_util::StreamExt;
    use tower_sse::{Event, Publisher};

    let harness = NatsHarness::new();
    let proxy = Proxy::start(([127, 0, 0, 1], harness.port).into()).await;
    let hub = |url: String| async move {
        let backplane = NatsBackplane::connect(&url).await.unwrap();
        let hub = Hub::builder().history(5).max_lag(5).backplane(backplane);
        hub.build().publisher()
    };
    let publish = |publisher: &Publisher, topic: &str, data: String| {
        publisher.publish_to(topic, Event::default().data(data))
    };
    let a = hub(harness.url()).await;
    let b = hub(format!("nats://{}", proxy.addr)).await;
    let mut status = b.watch_backplane();
    status
        .wait_for(|s| s.is_up())
        .await
        .expect("B's hub is open");
    let mut quiet = b.subscribe().topic("user/quiet").records().await.unwrap();
    let seen = publish(&a, "user/quiet", "seen".into())
        .unwrap()
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), quiet.next());
    assert_eq!(next.await.unwrap().unwrap().unwrap().id(), seen);

    proxy.set(Fault::Refuse);
    status
        .wait_for(|s| !s.is_up())
        .await
        .expect("B sees NATS go");
    for i in 0..20 {
        publish(&a, "room/busy", i.to_string())
            .unwrap()
            .await
            .unwrap();
    }
    let missed = publish(&a, "user/quiet", "missed".into())
        .unwrap()
        .await
        .unwrap();
    proxy.set(Fault::None);

    let next = tokio::time::timeout(Duration::from_secs(30), quiet.next()).await;
    let record = next.expect("the quiet event after the flood");
    let record = record.expect("B's quiet stream carries on past the other topic's trim");
    assert_eq!(record.unwrap().id(), missed);
    let after = b.subscribe().topic("user/quiet").after(seen.to_string());
    let mut resumed = after.records().await.unwrap();
    assert!(
        !resumed.is_reset(),
        "the flood cost the quiet topic its resume"
    );
    let next = tokio::time::timeout(Duration::from_secs(10), resumed.next());
    assert_eq!(next.await.unwrap().unwrap().unwrap().id(), missed);
    // The flooded topic, resumed from before the flood: what the stream
    // kept of it, or a reset, never a silent hole.
    let busy = b.subscribe().topic("room/busy").after(seen.to_string());
    let busy = busy.records().await.unwrap();
    assert!(busy.is_reset(), "its first events were trimmed");
}
