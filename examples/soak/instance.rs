//! One instance of the soak's app, a process of its own (so its RSS is its
//! own): the layer on an engine, `POST /publish?topic=..&seq=..` which
//! answers with the event's id once the engine holds it, and `GET /stats`:
//! how often it saw its engine go down and come back.

use axum::{extract::Query, http::StatusCode, routing::get, routing::post, Router};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tower_sse::{
    BackplaneStatus, Event, Hub, HubBuilder, NatsBackplane, PostgresBackplane, Publisher,
    RedisBackplane, SseLayer,
};

use crate::engines::Kind;

/// How long a publish may wait for the engine before the driver hears an
/// error (the hub's own bound on an append is 15 s).
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

pub async fn run(kind: Kind, url: &str) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_max_level(if std::env::var_os("SOAK_INFO").is_some() {
            tracing::Level::INFO
        } else {
            tracing::Level::WARN
        })
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let builder = Hub::builder()
        .open_access()
        .history(200)
        .max_subscribers(100_000)
        .max_streams_per_address(100_000);
    let hub = connect(kind, url, builder)
        .await
        .map_err(|e| format!("{kind:?}: {e}"))?;
    let layer = SseLayer::new("/events").hub(&hub);
    let publisher = layer.publisher();
    let (downs, ups) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    tokio::spawn(count_outages(publisher.clone(), downs.clone(), ups.clone()));
    let streams = publisher.clone();
    let app = Router::new()
        .route(
            "/publish",
            post({
                let publisher = publisher.clone();
                move |query| publish(publisher.clone(), query)
            }),
        )
        .route(
            "/stats",
            get(move || async move {
                format!(
                    "down={} up={} heap={} streams={}",
                    downs.load(Ordering::Relaxed),
                    ups.load(Ordering::Relaxed),
                    crate::heap::live(),
                    streams.subscriber_count()
                )
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("listening {port}");
    // The crate's own server, as the README advises for production: a
    // stream leaves hyper once its head is written (about 2 KB of heap
    // each, not hyper's ~30 KB), so a crowd after a restart costs little.
    // Every client comes from 127.0.0.1 here. `SOAK_SERVER=axum`: on
    // axum::serve, where hyper keeps every stream.
    if std::env::var("SOAK_SERVER").is_ok_and(|server| server == "axum") {
        return axum::serve(listener, app).await.map_err(|e| e.to_string());
    }
    tower_sse::serve(listener, app)
        .max_connections_per_address(usize::MAX)
        .await
        .map_err(|e| e.to_string())
}

async fn connect(kind: Kind, url: &str, builder: HubBuilder) -> Result<Hub, tower_sse::Error> {
    Ok(match kind {
        Kind::Redis => builder
            .backplane(RedisBackplane::connect(url).await?)
            .build(),
        Kind::Postgres => builder
            .backplane(PostgresBackplane::connect(url).await?)
            .build(),
        Kind::Nats => builder
            .backplane(NatsBackplane::connect(url).await?)
            .build(),
    })
}

async fn publish(
    publisher: Publisher,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let (Some(topic), Some(seq)) = (query.get("topic"), query.get("seq")) else {
        return (StatusCode::BAD_REQUEST, "topic and seq, please".into());
    };
    let published = match publisher.publish_to(topic, Event::default().data(seq.as_str())) {
        Ok(published) => published,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match tokio::time::timeout(PUBLISH_WAIT, published).await {
        Ok(Ok(id)) => (StatusCode::OK, id.to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the engine".into(),
        ),
    }
}

/// Counts the engine going down, and coming back up.
async fn count_outages(publisher: Publisher, downs: Arc<AtomicU64>, ups: Arc<AtomicU64>) {
    let mut status = publisher.watch_backplane();
    let mut was_down = false;
    while status.changed().await.is_ok() {
        let (down, up) = {
            let now = status.borrow_and_update();
            (matches!(*now, BackplaneStatus::Down(_)), now.is_up())
        };
        if down && !was_down {
            downs.fetch_add(1, Ordering::Relaxed);
            was_down = true;
        } else if up && was_down {
            ups.fetch_add(1, Ordering::Relaxed);
            was_down = false;
        }
    }
}
