//! The Redis backplane against Redis as managed services run it: a user and
//! password (ACLs) with only the commands the engine needs, TLS with a
//! private CA, and Sentinel with a failover while events are published. Each
//! test starts its own `redis-server` processes on free loopback ports (a
//! sentinel is `redis-server <conf> --sentinel`) and stops them. Needs only
//! the binary: `apt-get install redis-server` (`.ci/run` installs it).
//! Run with `cargo test --features axum,redis-tls --test redis_managed`
//! (`SERVICE_LOG=1` prints what the servers log).

mod common;

use axum::Router;
use common::services::{free_port, Scratch, Service};
use common::{certificates, within, Server, Subscriber};
use std::{
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};
use tower_sse::{Error, Event, EventId, Hub, RedisBackplane, SseLayer, RESET_EVENT};

/// Starts `redis-server` with `args` in `dir` (where a replica keeps what
/// it was sent), without persistence, and waits until it logs `ready`.
fn redis(dir: &Scratch, args: &[&str], ready: &str) -> Service {
    let mut command = Command::new("redis-server");
    command.current_dir(dir.path()).args(args).args([
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    Service::start(command, "apt-get install redis-server", ready)
}

const READY: &str = "Ready to accept connections";

fn key() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "app:{}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One instance of the app on `backplane`.
async fn node(backplane: RedisBackplane) -> Server {
    let layer =
        SseLayer::new("/events").hub(&Hub::builder().history(100).backplane(backplane).build());
    let publisher = layer.publisher();
    Server::start(Router::new().layer(layer), publisher).await
}

async fn send(server: &Server, data: &str) -> Result<EventId, Error> {
    server.publisher.publish(Event::default().data(data))?.await
}

/// Two instances of the app on one backplane pass an event between them with
/// one id.
async fn passes_events(a: RedisBackplane, b: RedisBackplane) {
    let (a, b) = (node(a).await, node(b).await);
    let mut on_b = Subscriber::connect(&b.url("/events")).await;
    let id = send(&a, "through managed Redis").await.unwrap();
    let event = on_b.next().await.unwrap();
    assert_eq!(
        (event.data.as_str(), event.id),
        ("through managed Redis", id.to_string())
    );
}

#[tokio::test]
async fn a_user_with_only_the_commands_the_engine_needs_is_enough() {
    // What a managed Redis gives an app: its own user, its own key prefix,
    // no admin commands, and the default user off.
    let scratch = Scratch::new("redis");
    let port = free_port();
    let _redis = redis(
        &scratch,
        &[
            "--port",
            &port.to_string(),
            "--user",
            "default",
            "off",
            "--user",
            "app",
            "on",
            ">s3cret",
            "~app:*",
            "resetchannels",
            "-@all",
            "+@stream",
            "+@connection",
            "+exists",
            // Each topic's stream beside the log (issue 22): the scripts
            // that append and read it, the first id kept, and the
            // retention the instances agree on.
            "+eval",
            "+get",
            "+set",
            "+del",
            "+time",
            "+hsetnx",
            "+hmget",
        ],
        READY,
    );
    let url = format!("redis://app:s3cret@127.0.0.1:{port}/");
    let connect = || async { RedisBackplane::connect(&url).await.unwrap() };
    let key = key();
    passes_events(connect().await.key(&key), connect().await.key(&key)).await;

    // A wrong password, no user, or a key outside the user's: a clear error
    // when connecting or publishing, never a panic.
    for url in [
        format!("redis://app:wrong@127.0.0.1:{port}/"),
        format!("redis://127.0.0.1:{port}/"),
    ] {
        let err = RedisBackplane::connect(&url).await.unwrap_err();
        assert!(matches!(err, Error::Backplane(_)), "{err:?}");
        assert!(err.to_string().contains("backplane"), "{err}");
    }
    let outside = connect().await.key("elsewhere");
    let server = node(outside).await;
    let err = send(&server, "x").await.unwrap_err();
    assert!(matches!(err, Error::Backplane(_)), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("no permissions"),
        "{err}"
    );
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let scratch = Scratch::new("redis");
    let (ca, cert, key_pem) = certificates();
    let ca_file = scratch.write("ca.pem", &ca);
    let cert_file = scratch.write("redis.pem", &cert);
    let key_file = scratch.write("redis.key", &key_pem);
    let port = free_port();
    let _redis = redis(
        &scratch,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            cert_file.to_str().unwrap(),
            "--tls-key-file",
            key_file.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca_file.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
        READY,
    );
    let url = format!("rediss://127.0.0.1:{port}/");
    let key = key();
    let connect = || async {
        RedisBackplane::connect_tls(&url, ca.as_bytes())
            .await
            .unwrap()
            .key(&key)
    };
    passes_events(connect().await, connect().await).await;

    // Not trusting the CA, or not speaking TLS: a clear error.
    let err = RedisBackplane::connect(&url).await.unwrap_err();
    assert!(matches!(err, Error::Backplane(_)), "{err:?}");
    let plain = format!("redis://127.0.0.1:{port}/");
    let err = within("a plain connection to a TLS port to fail", async {
        RedisBackplane::connect(&plain).await.unwrap_err()
    })
    .await;
    assert!(matches!(err, Error::Backplane(_)), "{err:?}");
}

/// A primary, two replicas and three sentinels watching them as `mymaster`.
struct Sentinels {
    primary: Service,
    replicas: Vec<Service>,
    sentinels: Vec<(Service, u16)>,
    _scratch: Scratch,
}

/// `redis-server` arguments for a data node on `port`: replication starts
/// at once (rather than after 5 s of waiting for more replicas) and each
/// node keeps what it was sent in its own file.
fn data_node(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain(["--dbfilename".to_owned(), format!("{port}.rdb")])
    .collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

impl Sentinels {
    async fn start() -> Sentinels {
        let scratch = Scratch::new("redis");
        let port = free_port();
        let primary = redis(&scratch, &strs(&data_node(port)), READY);
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let mut args = data_node(free_port());
            args.extend([
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                port.to_string(),
            ]);
            let mut replica = redis(&scratch, &strs(&args), READY);
            replica
                .wait_for("MASTER <-> REPLICA sync: Finished with success", 1)
                .await;
            replicas.push(replica);
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let p = free_port();
            let conf = scratch.write(
                &format!("sentinel-{i}.conf"),
                &format!(
                    "port {p}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor mymaster 127.0.0.1 {port} 2\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 3000\n",
                    dir = scratch.path().display()
                ),
            );
            let sentinel = redis(
                &scratch,
                &[conf.to_str().unwrap(), "--sentinel"],
                "+monitor master",
            );
            sentinels.push((sentinel, p));
        }
        // Each sentinel knows both replicas and the two other sentinels
        // before anything fails, so a failover can be agreed on.
        for (sentinel, _) in &mut sentinels {
            sentinel.wait_for("+slave slave", 2).await;
            sentinel.wait_for("+sentinel sentinel", 2).await;
        }
        Sentinels {
            primary,
            replicas,
            sentinels,
            _scratch: scratch,
        }
    }

    fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(_, port)| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    async fn backplane(&self, key: &str) -> RedisBackplane {
        let urls = self.urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        RedisBackplane::connect_sentinel(&urls, "mymaster", None)
            .await
            .unwrap()
            .key(key)
    }
}

#[tokio::test]
async fn a_sentinel_failover_loses_no_acknowledged_event_and_is_no_reset() {
    let mut set = Sentinels::start().await;
    let key = key();
    let (a, b) = (
        node(set.backplane(&key).await).await,
        node(set.backplane(&key).await).await,
    );
    let mut on_b = Subscriber::connect(&b.url("/events")).await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let data = format!("before {i}");
        acked.push((send(&a, &data).await.unwrap(), data));
    }
    let seen_before = on_b.take(20).await;
    let resume_from = seen_before[9].id.clone();

    // The primary dies: publishing is refused until the sentinels promote
    // a replica (one is down after a second, then they agree), then goes
    // on there. Every event acknowledged is kept.
    set.primary.kill();
    let err = send(&a, "while down").await.unwrap_err();
    assert!(matches!(err, Error::Backplane(_)), "{err:?}");
    // Agreeing can take a round more when two sentinels ask at once.
    for (sentinel, _) in &mut set.sentinels {
        sentinel
            .wait_longer_for("+switch-master", 1, Duration::from_secs(40))
            .await;
    }
    // Refused events may still be in the stream (a replica was slow to
    // acknowledge): they may reach browsers, but an acknowledged one must.
    let mut refused = vec!["while down".to_owned()];
    // The new primary acknowledges once a replica follows it again
    // (`WAIT 1`): the sentinels reconfigure the other replica, which then
    // syncs, within their failover timeout; so the same 40 s guard as
    // the switch, not the usual 10 s (.ci/run once took longer than 10 s).
    tokio::time::timeout(Duration::from_secs(40), async {
        let mut i = 0;
        while acked.len() < 40 {
            let data = format!("after {i}");
            i += 1;
            // Refused at once while the hub knows Redis is away (not
            // sent: wait until it reads Redis again); refused after being
            // sent: perhaps in the stream.
            let published = match a.publisher.publish(Event::default().data(&data)) {
                Ok(published) => published,
                Err(Error::Backplane(_)) => {
                    let mut status = a.publisher.watch_backplane();
                    status.wait_for(|s| s.is_up()).await.unwrap();
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            match published.await {
                Ok(id) => acked.push((id, data)),
                Err(Error::Backplane(_)) => refused.push(data),
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("20 events acknowledged by the new primary within 40 s");

    // B's browser got every acknowledged event once, in order, with its
    // id, and no reset: the new primary has the stream the old one had.
    let last = acked.last().unwrap().0.to_string();
    let mut seen = seen_before;
    within("B to get the last event", async {
        while seen.last().unwrap().id != last {
            seen.push(on_b.next().await.unwrap());
        }
    })
    .await;
    assert!(seen.iter().all(|e| e.event != RESET_EVENT));
    let got: Vec<(String, String)> = seen
        .iter()
        .filter(|e| !refused.contains(&e.data))
        .map(|e| (e.id.clone(), e.data.clone()))
        .collect();
    let want: Vec<(String, String)> = acked
        .iter()
        .map(|(id, d)| (id.to_string(), d.clone()))
        .collect();
    assert_eq!(got, want);
    let ids: Vec<u64> = seen.iter().map(|e| e.id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // A browser that read ten before the failover resumes on A exactly.
    let mut resumed = Subscriber::resume(&a.url("/events"), Some(&resume_from)).await;
    let rest: Vec<(String, String)> = resumed
        .take(seen.len() - 10)
        .await
        .iter()
        .map(|e| (e.id.clone(), e.data.clone()))
        .collect();
    let seen: Vec<(String, String)> = seen
        .iter()
        .map(|e| (e.id.clone(), e.data.clone()))
        .collect();
    assert_eq!(rest, seen[10..]);
    drop(set.replicas);
}
