//! Server-Sent Events for any [tower] app: wrap the router in one
//! [`SseLayer`] and every handler can push events to every open browser.
//!
//! The layer serves an event stream on one path (say `GET /events`, read by
//! the browser's `EventSource`) and puts a [`Publisher`] into the extensions
//! of every other request: any handler publishes with it, or opens a stream
//! of its own under any route ([`Subscribe`]). No second server, no message
//! bus, no global state. Here with a plain tower service (no framework):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http::Request;
//! use http_body_util::{BodyExt, Empty};
//! use tower::{service_fn, ServiceExt};
//! use tower_layer::Layer;
//! use tower_sse::{Event, SseLayer};
//!
//! let layer = SseLayer::new("/events");
//! let publisher = layer.publisher(); // for tasks outside any request
//! let app = layer.layer(service_fn(|_: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<bytes::Bytes>::new()))
//! }));
//!
//! let response = app.oneshot(Request::get("/events").body(())?).await?;
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! let mut body = response.into_body();
//! let start = body.frame().await.unwrap()?.into_data().unwrap();
//! assert!(start.starts_with(b"id: ")); // the id it starts after
//!
//! let id = publisher.publish(Event::default().event("said").data("hi"))?.await?;
//! let frame = body.frame().await.unwrap()?.into_data().unwrap();
//! assert_eq!(frame, format!("event: said\ndata: hi\nid: {id}\n\n"));
//! # Ok(()) }
//! ```
//!
//! With axum (feature `axum`), [`Publisher`] and [`Subscribe`] are
//! extractors, and a handler returns the stream it opens:
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{extract::Path, routing::{get, post}, Router};
//! use tower_sse::{Error, Event, EventStream, Publisher, Refusal, SseLayer, Subscribe};
//!
//! async fn say(Path(room): Path<String>, publisher: Publisher, text: String) -> Result<String, Error> {
//!     let event = Event::default().event("said").data(text);
//!     let id = publisher.publish_to(&format!("room/{room}"), event)?.await?;
//!     Ok(format!("sent as {id}\n"))
//! }
//!
//! async fn room(Path(room): Path<String>, sub: Subscribe) -> Result<EventStream, Refusal> {
//!     sub.topic(format!("room/{room}")).event_stream().await
//! }
//!
//! let app: Router = Router::new()
//!     .route("/rooms/{room}", post(say))
//!     .route("/rooms/{room}/events", get(room))
//!     .layer(SseLayer::new("/events"));
//! # }
//! ```
//!
//! In the browser:
//!
//! ```js
//! const events = new EventSource("/rooms/lobby/events");
//! events.addEventListener("said", (e) => console.log(e.data, e.lastEventId));
//! ```
//!
//! Or let the layer serve a small module that reads the stream for every tab
//! of the browser over one connection, and retries where `EventSource`
//! gives up: [`SseLayer::client_script`].
//!
//! # How it works
//!
//! * [`Publisher::publish`] checks the event and hands it to the [`Hub`],
//!   which gives it the next id and keeps it in its history as one neutral
//!   [`Record`]. Each transport's encoding (the `text/event-stream` bytes, a
//!   WebSocket frame) is built once per event and shared by every
//!   subscriber. Publishing never waits for subscribers; the [`Published`] it
//!   returns may be awaited for the id, or dropped.
//! * The stream body ([`EventStream`]) sends, on each poll, everything
//!   already published that the subscriber has not seen, in one frame. When
//!   it has sent nothing for the keep-alive interval it sends a comment.
//! * A subscriber further behind than [`HubBuilder::max_lag`] is
//!   disconnected; the browser reconnects with `Last-Event-ID` and is
//!   replayed from the history, so nothing is lost while it covers the gap.
//! * [`Publisher::close`] ends every stream, so graceful shutdown completes.
//! * With a [backplane], events go through an engine shared by
//!   many instances (Redis: [`RedisBackplane`]); the code that publishes and
//!   subscribes does not change.
//!
//! # Topics
//!
//! A stream follows the topics named in its query, `/events?topic=a&topic=b`
//! (or given by the handler that opens it), and always the default topic that
//! [`Publisher::publish`] sends to; [`Publisher::publish_to`] sends to one
//! topic. A topic is 1 to 128 characters from `A-Z a-z 0-9 - _ . / : @ ~`;
//! an invalid topic, or more than [`SseLayer::max_topics`], is
//! `400 Bad Request`.
//!
//! With `with=topic` in the query, each event of that stream carries a
//! `topic: <topic>` line (none for the default topic), so a client can route
//! the events of one stream by topic; `EventSource` ignores the field.
//!
//! # Resuming
//!
//! Event ids increase across the whole hub, so one `Last-Event-ID` resumes a
//! stream of many topics: the stream first sends every event of its topics
//! published after that id, in order, then live ones. The id may also come in
//! the `lastEventId` query parameter, for clients that cannot set headers.
//!
//! If the history no longer holds every event after that id (or the id is
//! unknown, unreadable, or from before a server restart), the stream starts
//! with an event named [`RESET_EVENT`] (`reset`, empty data) and continues
//! live: the app should reload its state when it sees it.
//!
//! # Authorization
//!
//! Authorization belongs to the hub: [`HubBuilder::authorize`] (or
//! [`SseLayer::authorize`] on the hub a layer serves) sets a hook that sees
//! each stream request — on the layer's path, its WebSocket, streams
//! handlers open with [`Subscribe`], gRPC methods' streams, whichever
//! publisher of the hub opens them — and grants an [`Access`] (which topics
//! it may follow, and private topics it follows without asking) or answers
//! with its own response (`401`...). A stream asking for a topic it may not
//! follow gets `403`. With axum the hook can take the app's state and
//! extractors (`HubBuilder::authorize_with_state`, feature `axum`). A hub without a hook
//! is open to everyone (say so with [`HubBuilder::open_access`], or a
//! warning is logged).
//!
//! # Feature flags
//!
//! * `axum`: [`Publisher`] and [`Subscribe`] are axum extractors;
//!   [`EventStream`], [`Refusal`] and [`Error`] are `IntoResponse`.
//! * `json`: [`Event::json_data`].
//! * `jwt`: `Jwt`, a hub's authorization from JSON Web Tokens (header or
//!   `?token=`; `sub`, `exp` and a topics claim; HMAC, RSA, EC, key rotation).
//! * `tonic`: `Subscribe::grpc` (admission from a gRPC call's metadata),
//!   and [`Refusal`] into `tonic::Status`.
//! * `postgres`: [`PostgresBackplane`], several instances sharing one stream
//!   through a table of their PostgreSQL database.
//! * `redis`: [`RedisBackplane`], the same through a Redis Stream (user and
//!   password, Sentinel); `redis-tls` adds `rediss://` (rustls).
//! * `nats`: [`NatsBackplane`], the same through a NATS JetStream stream
//!   (replicated on a cluster).
//! * `ws`: [`SseLayer::websocket`], the same hub over WebSocket.
//! * `testing`: the engine conformance suite and an in-memory engine.
//!
//! [tower]: https://docs.rs/tower

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admission;
mod authorize;
pub mod backplane;
mod body;
mod client;
mod config;
mod error;
mod event;
mod hub;
mod layer;
mod observe;
mod published;
mod publisher;
mod recent;
mod record;
mod refusal;
mod request;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
mod serve;
mod service;
mod sse;
mod stream;
mod subscribe;
mod sync;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod topic;
mod wire;
#[cfg(feature = "ws")]
mod ws;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use admission::{AuthorizeFuture, AuthorizeHandler};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use admission::{Jwt, JwtKey, JwtKeyError};

/// Entry points of the fuzz targets in `fuzz/`, built only by cargo-fuzz
/// (`--cfg fuzzing`): not part of the API.
#[cfg(all(fuzzing, feature = "ws"))]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::ws::fuzz as ws_control;
}

pub use authorize::Access;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use backplane::nats::{NatsBackplane, NatsBuilder};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use backplane::postgres::PostgresBackplane;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use backplane::redis::RedisBackplane;
pub use body::SseBody;
pub use error::{BoxError, Error};
pub use event::{Event, EventId};
pub use hub::{BackplaneStatus, BuildError, HistoryRule, Hub, HubBuilder};
pub use layer::SseLayer;
pub use published::Published;
#[cfg(feature = "axum")]
pub use publisher::MissingPublisher;
pub use publisher::{Presence, Publisher};
pub use recent::{HistoryPage, HistoryQuery, MAX_HISTORY_READ};
pub use record::{Message, Record};
pub use refusal::Refusal;
#[cfg(feature = "serve-tls")]
pub use serve::tls_config;
#[cfg(feature = "serve")]
pub use serve::{serve, Serve, WithGracefulShutdown};
pub use service::{ResponseFuture, SseService};
pub use sse::{EventStream, RESET_EVENT};
pub use stream::{Lagged, RecordStream};
pub use subscribe::Subscribe;

// The README's Rust snippets, compiled as doc tests (with the features they use).
#[cfg(all(doctest, feature = "axum", feature = "serve-tls", feature = "ws"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
