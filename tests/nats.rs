//! The NATS JetStream backplane against a real `nats-server`: each test
//! starts its own (`-js`, storage in a temporary directory, a free port) and
//! stops it. Needs the binary: `apt-get install nats-server` (`.ci/run`
//! installs it if absent). Run with `cargo test --features axum,nats,testing --test nats`.

mod common;

use axum::Router;
use common::{
    services::{free_port, Scratch, Service},
    Server, Subscriber,
};
use std::{path::Path, process::Command, sync::Mutex};
use tower_sse::{testing::Harness, Event, Hub, NatsBackplane, SseLayer};

/// A `nats-server` with JetStream on `port`, its storage in `dir`; killed
/// when dropped.
fn nats(port: u16, dir: &Path) -> Service {
    let mut command = Command::new("nats-server");
    command
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir);
    Service::start(command, "apt-get install nats-server", "Server is ready")
}

struct NatsHarness {
    server: Mutex<Service>,
    port: u16,
    dir: Scratch,
}

impl NatsHarness {
    fn new() -> NatsHarness {
        let (port, dir) = (free_port(), Scratch::new("nats"));
        NatsHarness {
            server: Mutex::new(nats(port, dir.path())),
            port,
            dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Harness for NatsHarness {
    type Backplane = NatsBackplane;

    async fn connect(&self) -> NatsBackplane {
        NatsBackplane::connect(&self.url()).await.unwrap()
    }

    async fn stop(&self) {
        self.server.lock().unwrap().kill();
    }

    async fn start(&self, keep_data: bool) {
        if !keep_data {
            std::fs::remove_dir_all(self.dir.path()).unwrap();
            std::fs::create_dir_all(self.dir.path()).unwrap();
        }
        *self.server.lock().unwrap() = nats(self.port, self.dir.path());
    }
}

async fn nats_harness() -> NatsHarness {
    NatsHarness::new()
}

tower_sse::backplane_conformance!(nats_harness);

#[tokio::test]
async fn a_plain_nats_publish_reaches_a_browser_with_its_id() {
    let harness = NatsHarness::new();
    let hub = Hub::builder()
        .backplane(NatsBackplane::connect(&harness.url()).await.unwrap())
        .build();
    let layer = SseLayer::new("/events").hub(&hub);
    let server = Server::start(Router::new().layer(layer), hub.publisher()).await;
    let mut browser = Subscriber::connect(&server.url("/events?topic=orders")).await;

    // Another program: a bare NATS client, not this crate.
    let client = async_nats::connect(harness.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Tower-Sse-Topic", "orders");
    headers.insert("Tower-Sse-Event", "paid");
    let ack = jetstream
        .publish_with_headers("tower-sse.events", headers, "order 7\nis paid".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Its id: the stream's epoch (in its description) plus its sequence.
    let mut stream = jetstream.get_stream("TOWER_SSE").await.unwrap();
    let description = stream.info().await.unwrap().config.description.clone();
    let epoch: u64 = description
        .as_deref()
        .and_then(|d| d.strip_prefix("tower-sse epoch "))
        .and_then(|e| e.parse().ok())
        .expect("the engine's stream names its epoch");
    let event = browser.next().await.unwrap();
    let expected = (epoch + ack.sequence).to_string();
    assert_eq!(
        (event.event.as_str(), event.data.as_str(), event.id.as_str()),
        ("paid", "order 7\nis paid", expected.as_str())
    );
}

#[tokio::test]
async fn the_stream_keeps_the_hubs_history() {
    let harness = NatsHarness::new();
    let hub = Hub::builder()
        .history(5)
        .max_lag(5)
        .backplane(NatsBackplane::connect(&harness.url()).await.unwrap())
        .build();
    let publisher = hub.publisher();
    for i in 0..20 {
        publisher
            .publish(Event::default().data(format!("{i}")))
            .unwrap()
            .await
            .unwrap();
    }
    let client = async_nats::connect(harness.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("TOWER_SSE").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 5, "max_messages is the hub's history");
}

#[tokio::test]
async fn connect_fails_clearly_when_nats_is_unreachable() {
    let err = NatsBackplane::connect(&format!("nats://127.0.0.1:{}", free_port()))
        .await
        .unwrap_err();
    assert!(matches!(err, tower_sse::Error::Backplane(_)), "{err:?}");
}
