//! The apps the benches serve: tower-sse (`SseLayer` on an axum router) and
//! the hand-rolled axum peer, each with the same routes: the stream of a
//! topic, `POST /pub/<topic>`, `GET /count` (subscribers) and `/health`. Included by `#[path]` from
//! the fanout and scale benches, beside `engine.rs`.

use crate::engine::Engine;
use std::{sync::Arc, time::Duration};

/// tower-sse: the layer serves `/events?topic=…`; handlers publish (through
/// the engine's backplane when `backplane` names one and its URL), with
/// `SseLayer::coalesce(window)` when `coalesce` is given.
pub async fn tower_sse(
    backplane: Option<(Engine, String)>,
    coalesce: Option<Duration>,
) -> axum::Router {
    use axum::extract::Path;
    use tower_sse::{
        Event, Hub, NatsBackplane, PostgresBackplane, Publisher, RedisBackplane, SseLayer,
    };

    async fn publish(
        publisher: Publisher,
        Path(topic): Path<String>,
        body: String,
    ) -> (axum::http::StatusCode, String) {
        use axum::http::StatusCode;
        // A refusal says why (the client shows the body when it fails).
        match publisher.publish_to(&topic, Event::default().data(body)) {
            Ok(published) => match published.await {
                Ok(_) => (StatusCode::ACCEPTED, String::new()),
                Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:?}")),
            },
            Err(e @ tower_sse::Error::Backplane(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("{e:?}"))
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e:?}")),
        }
    }
    async fn count(publisher: Publisher) -> String {
        publisher.subscriber_count().to_string()
    }
    // Every client comes from 127.0.0.1, thousands of them: no stream limit.
    let hub = Hub::builder()
        .history(4096)
        .max_lag(4096)
        .max_subscribers(usize::MAX)
        .max_streams_per_address(usize::MAX);
    let hub = match backplane {
        None => hub.build(),
        Some((Engine::Redis, url)) => {
            let backplane = RedisBackplane::connect(&url).await.expect("Redis is up");
            hub.backplane(backplane.key("bench")).build()
        }
        Some((Engine::Postgres, config)) => {
            let backplane = PostgresBackplane::connect(&config)
                .await
                .expect("PostgreSQL is up");
            hub.backplane(backplane).build()
        }
        Some((Engine::Nats, url)) => {
            let backplane = NatsBackplane::connect(&url).await.expect("NATS is up");
            hub.backplane(backplane).build()
        }
    };
    let mut layer = SseLayer::new("/events").hub(&hub).websocket("/ws");
    if let Some(window) = coalesce {
        layer = layer.coalesce(window);
    }
    // Ready once the hub reads the engine's log: publishing is refused
    // before.
    let publisher = layer.publisher();
    let mut status = publisher.watch_backplane();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.is_up()))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the backplane is not up: {:?}",
                publisher.backplane_status()
            )
        })
        .expect("the hub is open");
    axum::Router::new()
        .route("/pub/{topic}", axum::routing::post(publish))
        .route("/count", axum::routing::get(count))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(layer)
}

/// What axum's documentation leads to: `Sse` over a `broadcast` receiver
/// (one channel per topic, in a map), an `Event` built per subscriber.
pub fn hand_rolled() -> axum::Router {
    use axum::{
        extract::{Path, State},
        response::sse::{Event, KeepAlive, Sse},
    };
    use futures_util::StreamExt;
    use std::{collections::HashMap, sync::Mutex};
    use tokio::sync::broadcast;
    use tokio_stream::wrappers::BroadcastStream;

    type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<String>>>>;
    fn sender(topics: &Topics, topic: String) -> broadcast::Sender<String> {
        topics
            .lock()
            .unwrap()
            .entry(topic)
            .or_insert_with(|| broadcast::channel(4096).0)
            .clone()
    }
    async fn events(
        State(topics): State<Topics>,
        Path(topic): Path<String>,
    ) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
        let stream = BroadcastStream::new(sender(&topics, topic).subscribe()).filter_map(
            |message| async move { message.ok().map(|m| Ok(Event::default().data(m))) },
        );
        Sse::new(stream).keep_alive(KeepAlive::default())
    }
    async fn publish(
        State(topics): State<Topics>,
        Path(topic): Path<String>,
        body: String,
    ) -> axum::http::StatusCode {
        sender(&topics, topic).send(body).ok();
        axum::http::StatusCode::ACCEPTED
    }
    async fn count(State(topics): State<Topics>) -> String {
        let topics = topics.lock().unwrap();
        let n: usize = topics.values().map(|tx| tx.receiver_count()).sum();
        n.to_string()
    }
    axum::Router::new()
        .route("/sub/{topic}", axum::routing::get(events))
        .route("/pub/{topic}", axum::routing::post(publish))
        .route("/count", axum::routing::get(count))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .with_state(Topics::default())
}
