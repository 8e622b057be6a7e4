//! The NATS JetStream backplane against a real `nats-server`: each test
//! starts its own (`-js`, storage in a temporary directory, a free port) and
//! stops it. Needs the binary: `apt-get install nats-server` (`.ci/run`
//! installs it if absent). Run with `cargo test --features axum,nats,testing --test nats`.

mod common;
#[path = "faults/nats.rs"]
mod faults;

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
    let mut browser = Subscriber::connect(&server.url("/events?topic=shop.orders")).await;

    // Another program: a bare NATS client, not this crate. The topic is in
    // the subject, its `.` written `%2E`.
    let client = async_nats::connect(harness.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Tower-Sse-Event", "paid");
    let ack = jetstream
        .publish_with_headers(
            "tower-sse.events.shop%2Eorders",
            headers,
            "order 7\nis paid".into(),
        )
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
async fn the_stream_keeps_each_topics_history_apart() {
    let harness = NatsHarness::new();
    let build = |events: usize, backplane: NatsBackplane| {
        Hub::builder()
            .history(events)
            .max_lag(events)
            .backplane(backplane)
            .build()
            .publisher()
    };
    let publisher = build(5, NatsBackplane::connect(&harness.url()).await.unwrap());
    publisher
        .publish_to("quiet", Event::default().data("kept"))
        .unwrap()
        .await
        .unwrap();
    for i in 0..60 {
        publisher
            .publish_to("busy", Event::default().data(format!("{i}")))
            .unwrap()
            .await
            .unwrap();
    }
    let client = async_nats::connect(harness.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("TOWER_SSE").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 6,
        "each subject keeps the hub's largest count: busy 5, and quiet its one"
    );
    assert_eq!(
        (
            info.config.max_messages_per_subject,
            info.config.max_messages,
            info.config.max_bytes
        ),
        (5, -1, -1),
        "limits per subject, none on the whole stream"
    );
    // Another instance that keeps another count is refused, clearly.
    let other = build(7, NatsBackplane::connect(&harness.url()).await.unwrap());
    let error = common::refusal(&other).await;
    assert!(
        error.contains("keeps 5 events of each topic") && error.contains("keeps 7"),
        "{error}"
    );
}

#[tokio::test]
async fn connect_fails_clearly_when_nats_is_unreachable() {
    let err = NatsBackplane::connect(&format!("nats://127.0.0.1:{}", free_port()))
        .await
        .unwrap_err();
    assert!(matches!(err, tower_sse::Error::Backplane(_)), "{err:?}");
}

#[tokio::test]
async fn a_stream_deleted_and_made_again_is_a_reset_not_a_silent_skip() {
    let harness = NatsHarness::new();
    let node = |backplane: NatsBackplane| async move {
        let layer = SseLayer::new("/events").hub(&Hub::builder().backplane(backplane).build());
        let publisher = layer.publisher();
        Server::start(Router::new().layer(layer), publisher).await
    };
    let a = node(NatsBackplane::connect(&harness.url()).await.unwrap()).await;
    let mut browser = Subscriber::connect(&a.url("/events")).await;
    for i in 0..3 {
        a.publisher
            .publish(Event::default().data(format!("{i}")))
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(browser.take(3).await.len(), 3);
    let seen = browser.last_event_id();

    // An operator deletes the stream; another instance starting makes it
    // again (a new epoch) and publishes into it.
    let client = async_nats::connect(harness.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .delete_stream("TOWER_SSE")
        .await
        .unwrap();
    let b = node(NatsBackplane::connect(&harness.url()).await.unwrap()).await;
    b.publisher
        .publish(Event::default().data("after"))
        .unwrap()
        .await
        .unwrap();

    // A notices (within a second or so): its streams end, and resuming from
    // what the browser had gets the reset, then what is published next.
    assert!(browser.next().await.is_none(), "A's stream ended");
    let mut resumed = Subscriber::resume(&a.url("/events"), seen.as_deref()).await;
    let first = resumed.next().await.unwrap();
    assert_eq!(first.event, tower_sse::RESET_EVENT);
    let id = b
        .publisher
        .publish(Event::default().data("next"))
        .unwrap()
        .await
        .unwrap();
    let next = resumed.next().await.unwrap();
    assert_eq!((next.data.as_str(), next.id), ("next", id.to_string()));
    assert!(
        id.as_u64() > seen.unwrap().parse::<u64>().unwrap(),
        "ids go on above the old stream's"
    );
}

/// Three `nats-server`s in one JetStream cluster, each its own storage.
struct Cluster {
    servers: Vec<(String, u16, Option<Service>)>,
    _dir: Scratch,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = Scratch::new("nats-cluster");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_urls: Vec<String> = routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let mut servers = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (name, port) = (format!("n{i}"), free_port());
            let conf = dir.write(
                &format!("{name}.conf"),
                &format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\n\
                     jetstream {{ store_dir: \"{store}\" }}\n\
                     cluster {{ name: c, listen: \"127.0.0.1:{route}\", routes: [{routes}] }}\n",
                    store = dir.path().join(&name).display(),
                    routes = route_urls.join(", "),
                ),
            );
            let mut command = Command::new("nats-server");
            command.arg("-c").arg(conf);
            let server = Service::start(command, "apt-get install nats-server", "Server is ready");
            servers.push((name, port, Some(server)));
        }
        // JetStream takes streams once the servers elected a metadata leader.
        for (_, _, server) in &mut servers {
            server
                .as_mut()
                .unwrap()
                .wait_for("metadata leader", 1)
                .await;
        }
        Cluster { servers, _dir: dir }
    }

    fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|(_, port, _)| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn kill(&mut self, name: &str) {
        let (_, _, server) = self.servers.iter_mut().find(|(n, _, _)| n == name).unwrap();
        server.take().unwrap().kill();
    }
}

#[tokio::test]
async fn the_stream_leader_dying_mid_publish_loses_and_repeats_nothing_acknowledged() {
    let mut cluster = Cluster::start().await;
    let connect = || async {
        NatsBackplane::builder()
            .servers(cluster.urls())
            .replicas(3)
            .connect()
            .await
            .unwrap()
    };
    let node = |backplane: NatsBackplane| async move {
        let layer = SseLayer::new("/events")
            .hub(&Hub::builder().history(1000).backplane(backplane).build());
        let publisher = layer.publisher();
        Server::start(Router::new().layer(layer), publisher).await
    };
    let (a, b) = (node(connect().await).await, node(connect().await).await);
    let mut on_b = Subscriber::connect(&b.url("/events")).await;

    // Publish on A, one after another, until 60 are acknowledged; the
    // stream's leader is killed after the 20th.
    let client = async_nats::connect(cluster.urls().split(',').next().unwrap())
        .await
        .unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("TOWER_SSE")
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a stream leader");
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let mut i = 0;
    let mut status = a.publisher.watch_backplane();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while acked.len() < 60 {
            if acked.len() == 20 && i == 20 {
                cluster.kill(&leader);
            }
            let data = format!("event {i}");
            i += 1;
            match a.publisher.publish(Event::default().data(&data)) {
                // Refused before it was sent: wait until A reads the log again.
                Err(tower_sse::Error::Backplane(_)) => {
                    status.wait_for(|s| s.is_up()).await.unwrap();
                    continue;
                }
                Err(e) => panic!("{e}"),
                Ok(published) => match published.await {
                    Ok(id) => acked.push((id.to_string(), data)),
                    // Sent but not acknowledged: may or may not be kept.
                    Err(tower_sse::Error::Backplane(_)) => refused.push(data),
                    Err(e) => panic!("{e}"),
                },
            }
        }
    })
    .await
    .expect("60 events acknowledged within a minute of the leader dying");

    // B's browser: every acknowledged event once, in order, with its id; no
    // reset; nothing twice.
    let last = acked.last().unwrap().0.clone();
    let mut seen = Vec::new();
    // The cluster may take seconds more to place B's consumer (it can pick
    // the dead server until it knows it is gone): B retries meanwhile.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while seen.last().map(|(id, _): &(String, String)| id) != Some(&last) {
            let event = on_b.next_unguarded().await.unwrap();
            assert_ne!(event.event, tower_sse::RESET_EVENT);
            seen.push((event.id, event.data));
        }
    })
    .await
    .expect("B to get the last acknowledged event within 30 s");
    let mut datas: Vec<&String> = seen.iter().map(|(_, d)| d).collect();
    datas.sort();
    datas.dedup();
    assert_eq!(datas.len(), seen.len(), "an event twice: {seen:?}");
    let kept: Vec<(String, String)> = seen
        .iter()
        .filter(|(_, d)| !refused.contains(d))
        .cloned()
        .collect();
    assert_eq!(kept, acked);
    let ids: Vec<u64> = seen.iter().map(|(id, _)| id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // A browser that read the first ten resumes on A: the rest, once each.
    // A's own reader may still be placing its consumer anew (as B's was
    // above), so the same 30 s guard.
    let mut resumed = Subscriber::resume(&a.url("/events"), Some(&seen[9].0)).await;
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while rest.len() < seen.len() - 10 {
            let event = resumed.next_unguarded().await.expect("A's stream ended");
            rest.push((event.id, event.data));
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "A to send the rest within 30 s: got {rest:?}, A's backplane {:?}",
            *a.publisher.watch_backplane().borrow()
        )
    });
    assert_eq!(rest, seen[10..]);
}
