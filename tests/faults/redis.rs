//! The fault contract (`tests/common/faults.rs`) for Redis: an instance
//! reaches Redis through a proxy that injects each fault, another directly.

use super::{key, Redis};
use crate::common::{
    faults::{self, app},
    proxy::{Fault, Proxy},
    services::Scratch,
    Server, Subscriber,
};
use std::time::Duration;
use tower_sse::{Event, Hub, RedisBackplane, SseLayer, RESET_EVENT};

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

#[tokio::test]
async fn fault_latency() {
    let latency = Fault::Latency(Duration::from_millis(300));
    fault("redis: latency", |p| p.set(latency), |p| p.set(Fault::None)).await;
}

#[tokio::test]
async fn fault_stall() {
    fault(
        "redis: stall",
        |p| p.set(Fault::Stall),
        |p| p.set(Fault::None),
    )
    .await;
}

#[tokio::test]
async fn fault_half_open() {
    fault(
        "redis: half-open",
        |p| p.set(Fault::HalfOpen),
        |p| p.set(Fault::None),
    )
    .await;
}

#[tokio::test]
async fn fault_connections_dropped() {
    fault(
        "redis: connections dropped",
        Proxy::drop_connections,
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn fault_connections_reset() {
    fault("redis: connections reset", Proxy::reset_connections, |_| {}).await;
}

#[tokio::test]
async fn fault_engine_unreachable() {
    fault(
        "redis: unreachable",
        |p| p.set(Fault::Refuse),
        |p| p.set(Fault::None),
    )
    .await;
}

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
    let mut browser = Subscriber::connect(&a.url("/events")).await;
    let before = faults::publish_when_up(&a.publisher, "before", "redis").await;
    assert_eq!(browser.next().await.unwrap().id, before.to_string());
    let seen = browser.last_event_id();
    let flushed = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "FLUSHALL"])
        .output()
        .unwrap();
    assert!(flushed.status.success(), "{flushed:?}");
    let after = faults::publish_when_up(&a.publisher, "after", "redis").await;
    assert!(after > before, "ids go on above the lost ones");
    let mut resumed = match browser.next().await {
        None => Subscriber::resume(&a.url("/events"), seen.as_deref()).await,
        Some(event) => panic!("the old stream got {event:?} after the loss"),
    };
    assert_eq!(resumed.next().await.unwrap().event, RESET_EVENT);
    let live = faults::publish_when_up(&a.publisher, "live", "redis").await;
    let mut next = resumed.next().await.unwrap();
    if next.id == after.to_string() {
        next = resumed.next().await.unwrap();
    }
    assert_eq!((next.data.as_str(), next.id), ("live", live.to_string()));
}

/// Redis restarted empty within a moment, nothing published meanwhile:
/// the same.
#[tokio::test]
async fn redis_back_empty_at_once_is_a_reset_then_live() {
    let mut redis = Redis::start();
    let key = key();
    let a = instance(&redis.url(), &key).await;
    let mut browser = Subscriber::connect(&a.url("/events")).await;
    let before = faults::publish_when_up(&a.publisher, "before", "redis").await;
    assert_eq!(browser.next().await.unwrap().id, before.to_string());
    let seen = browser.last_event_id();
    let port = redis.port;
    redis.kill();
    let _redis = Redis::start_on(port, None);
    let after = faults::publish_when_up(&a.publisher, "after", "redis").await;
    assert!(after > before, "ids go on above the lost ones");
    let mut resumed = match browser.next().await {
        None => Subscriber::resume(&a.url("/events"), seen.as_deref()).await,
        Some(event) => panic!("the old stream got {event:?} after the loss"),
    };
    assert_eq!(resumed.next().await.unwrap().event, RESET_EVENT);
    let live = faults::publish_when_up(&a.publisher, "live", "redis").await;
    let mut next = resumed.next().await.unwrap();
    if next.id == after.to_string() {
        next = resumed.next().await.unwrap();
    }
    assert_eq!((next.data.as_str(), next.id), ("live", live.to_string()));
}
