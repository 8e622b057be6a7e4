//! Server-Sent Events for any [tower] app: wrap the router in one
//! [`SseLayer`] and every handler can push events to every open browser.
//!
//! The layer serves an event stream on one path (say `GET /events`, read by
//! the browser's `EventSource`) and puts a [`Publisher`] into the extensions
//! of every other request. No second server, no message bus, no global state.
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{routing::post, Router};
//! use tower_sse::{Event, Publisher, SseLayer};
//!
//! // With the `axum` feature, `Publisher` is an extractor.
//! async fn say(publisher: Publisher, text: String) -> &'static str {
//!     match publisher.publish(Event::default().event("said").data(text)) {
//!         Ok(_) => "sent\n",
//!         Err(_) => "not sent\n",
//!     }
//! }
//!
//! let sse = SseLayer::new("/events");
//! let background = sse.publisher(); // for tasks outside any request
//! let app: Router = Router::new().route("/say", post(say)).layer(sse);
//! background.publish(Event::default().data("server started")).unwrap();
//! # }
//! ```
//!
//! In the browser:
//!
//! ```js
//! const events = new EventSource("/events");
//! events.addEventListener("said", (e) => console.log(e.data, e.lastEventId));
//! ```
//!
//! # How it works
//!
//! * [`Publisher::publish`] validates and encodes the event once, gives it the
//!   next id of the hub and appends it to the history; every subscriber gets
//!   the same bytes. Publishing never waits for subscribers.
//! * The stream body ([`EventStream`]) sends, on each poll, everything
//!   already published that the subscriber has not seen, in one frame. When
//!   it has sent nothing for the keep-alive interval it sends a comment.
//! * A subscriber further behind than [`SseLayer::max_lag`] is disconnected;
//!   the browser reconnects with `Last-Event-ID` and is replayed from the
//!   history, so nothing is lost while the history covers the gap.
//! * [`Publisher::close`] ends every stream, so graceful shutdown completes.
//!
//! # Topics
//!
//! A stream follows the topics named in its query, `/events?topic=a&topic=b`,
//! and always the default topic that [`Publisher::publish`] sends to;
//! [`Publisher::publish_to`] sends to one topic. A topic is 1 to 128
//! characters from `A-Z a-z 0-9 - _ . / : @ ~`; an invalid topic, or more
//! than [`SseLayer::max_topics`], is `400 Bad Request`.
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
//! [`SseLayer::authorize`] sets a hook that sees each stream request and
//! grants an [`Access`] (which topics it may follow, and private topics it
//! follows without asking) or answers with its own response (`401`...).
//! A stream asking for a topic it may not follow gets `403`.
//!
//! # Feature flags
//!
//! * `axum`: [`Publisher`] is an axum extractor.
//! * `json`: [`Event::json_data`].
//! * `redis`: [`RedisBackplane`], for several instances sharing one stream.
//! * `ws`: [`SseLayer::websocket`], the same hub over WebSocket.
//!
//! [tower]: https://docs.rs/tower

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authorize;
pub mod backplane;
mod body;
mod config;
mod error;
mod event;
mod hub;
mod layer;
mod open;
mod published;
mod publisher;
mod record;
mod request;
mod service;
mod sse;
mod stream;
mod subscribe;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod topic;
mod wire;
#[cfg(feature = "ws")]
mod ws;

pub use authorize::Access;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use backplane::redis::RedisBackplane;
pub use body::SseBody;
pub use error::{BoxError, Error};
pub use event::{Event, EventId};
pub use hub::{BackplaneStatus, Hub, HubBuilder};
pub use layer::SseLayer;
pub use open::Refusal;
pub use published::Published;
#[cfg(feature = "axum")]
pub use publisher::MissingPublisher;
pub use publisher::Publisher;
pub use record::{Message, Record};
pub use service::{ResponseFuture, SseService};
pub use sse::{EventStream, RESET_EVENT};
pub use stream::{Lagged, RecordStream};
pub use subscribe::Subscribe;
