//! The fault contract (`tests/common/faults.rs`) for Redis: an instance
//! reaches Redis through a proxy that injects each fault, another directly.

use super::{key, Redis};
use crate::common::{
    faults::{self, app},
    proxy::{Fault, Proxy},
    services::Scratch,
    Server,
};
use std::time::Duration;
use tower_sse::{Event, Hub, RedisBackplane, SseLayer};

async fn instance(url: &str, key: &str) -> Server {
    let backplane = RedisBackplane::connect(url).await.unwrap().key(key);
    let layer =
        SseLayer::new("/events").hub(&Hub::builder().history(100).backplane(backplane).build());
    let publisher = layer.publisher();
    Server::start(app(layer), publisher).await
}

async fn fault(what: &str, apply: impl FnOnce(&Proxy), heal: impl FnOnce(&Proxy)) {
    let redis = Redis::start();
    let key = key();
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let through = instance(&format!("redis://{}/", proxy.addr), &key).await;
    let direct = instance(&redis.url(), &key).await;
    faults::contract(what, &proxy, &through, &direct, apply, heal).await;
}

faults::fault_cases!("redis");

/// The publishing connection made before Redis restarted is not used after:
/// once the status says Up again, the first publish is taken.
#[tokio::test]
async fn the_first_publish_after_redis_returns_is_taken() {
    let dir = Scratch::new("redis-return");
    let port = crate::common::services::free_port();
    let mut redis = Redis::start_on(port, Some(dir.path()));
    let key = key();
    let a = instance(&redis.url(), &key).await;
    a.publisher
        .publish(Event::default().data("before"))
        .unwrap()
        .await
        .unwrap();
    let mut status = a.publisher.watch_backplane();
    redis.kill();
    crate::common::within("the status Down", status.wait_for(|s| !s.is_up()))
        .await
        .unwrap();
    let _redis = Redis::start_on(port, Some(dir.path()));
    crate::common::within("the status Up", status.wait_for(|s| s.is_up()))
        .await
        .unwrap();
    let first = a.publisher.publish(Event::default().data("first")).unwrap();
    crate::common::within("the first publish", first)
        .await
        .expect("the first publish after Redis returned");
}

/// Redis flushed under running instances (no connection drops, no status
/// change): a stream open before ends at the next event, resuming it gets
/// the reset, and it goes on live.
#[tokio::test]
async fn a_flushed_redis_is_a_reset_then_live() {
    let redis = Redis::start();
    let key = key();
    let a = instance(&redis.url(), &key).await;
    let (mut browser, seen, before) = faults::stream_that_read("redis", &a, 1).await;
    let flushed = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "FLUSHALL"])
        .output()
        .unwrap();
    assert!(flushed.status.success(), "{flushed:?}");
    faults::a_loss_is_a_reset_then_live("redis", &a, &mut browser, seen, before).await;
}

/// Redis restarted empty within a moment, nothing published meanwhile:
/// the same.
#[tokio::test]
async fn redis_back_empty_at_once_is_a_reset_then_live() {
    let mut redis = Redis::start();
    let key = key();
    let a = instance(&redis.url(), &key).await;
    let (mut browser, seen, before) = faults::stream_that_read("redis", &a, 1).await;
    let port = redis.port;
    redis.kill();
    let _redis = Redis::start_on(port, None);
    faults::a_loss_is_a_reset_then_live("redis", &a, &mut browser, seen, before).await;
}

/// A server that accepts and never answers: an error at start, in bounded time.
#[tokio::test]
async fn connect_to_a_silent_server_fails_in_bounded_time() {
    let (_listener, port) = faults::silent_server().await;
    let url = format!("redis://127.0.0.1:{port}/");
    faults::connect_fails_within(
        "redis",
        Duration::from_secs(4),
        RedisBackplane::connect(&url),
    )
    .await;
}
