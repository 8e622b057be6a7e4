//! A tonic gRPC service on the `Publisher` that `SseLayer` puts into every
//! request's extensions: `Notify` publishes to browsers, and the
//! server-streaming `Watch` forwards the same events to gRPC clients. The
//! same server serves the event stream at `GET /events` (HTTP/1.1 accepted).
//!
//! Both are admitted by the hub's one authorization hook: [`authorize`]
//! reads a bearer token from the `authorization` header of the stream's
//! request, or from the gRPC call's metadata (`Subscribe::grpc`), and its
//! refusal reaches a gRPC client as a `Status` with the hook's own message.

use std::pin::Pin;

use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::{transport::Server, Request, Response, Status};
use tower_sse::{Access, Event, Lagged, Publisher, Record, SseLayer};

pub mod proto {
    tonic::include_proto!("notify");
}

use proto::{
    notifier_server::{Notifier, NotifierServer},
    Notification, NotifyReply, NotifyRequest, WatchRequest,
};

/// The `Watch` response: the hub's records as notifications.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Notification, Status>> + Send>>;

/// The gRPC service: it holds no state, the publisher comes with each request.
#[derive(Default)]
pub struct NotifierService;

/// The layer's publisher, which `SseLayer` put into the request's extensions.
fn publisher<T>(request: &Request<T>) -> Result<Publisher, Status> {
    request
        .extensions()
        .get::<Publisher>()
        .cloned()
        .ok_or_else(|| Status::internal("no Publisher: serve this service behind SseLayer"))
}

/// The example's tokens and their users (a real app asks its session store).
const TOKENS: [(&str, &str); 2] = [("alice-token", "alice"), ("bob-token", "bob")];

/// The hub's authorization hook, for the browsers' stream and `Watch` alike:
/// a known bearer token follows its user's `orders/<user>` topic (without
/// asking) and may ask for any `public/` topic; anything else is a `401`
/// whose message the client gets (as a gRPC `UNAUTHENTICATED` status's).
pub async fn authorize(parts: http::request::Parts) -> Result<Access, http::Response<String>> {
    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let user = token.and_then(|token| TOKENS.iter().find(|(t, _)| *t == token));
    match user {
        Some((_, user)) => Ok(Access::none()
            .allow_prefix("public/")
            .follow(format!("orders/{user}"))
            .user(*user)),
        None => {
            let mut refusal = http::Response::new("unknown token".to_owned());
            *refusal.status_mut() = http::StatusCode::UNAUTHORIZED;
            Err(refusal)
        }
    }
}

/// A record as a notification; `id` is the one a client resumes from.
fn notification(record: Record) -> Notification {
    Notification {
        id: record.last_event_id().into_owned(),
        topic: record.topic().unwrap_or_default().to_owned(),
        event: record.event().unwrap_or_default().to_owned(),
        message: record.data().to_owned(),
        reset: false,
    }
}

#[tonic::async_trait]
impl Notifier for NotifierService {
    async fn notify(
        &self,
        request: Request<NotifyRequest>,
    ) -> Result<Response<NotifyReply>, Status> {
        let publisher = publisher(&request)?;
        let NotifyRequest {
            topic,
            event,
            message,
        } = request.into_inner();
        let mut sse = Event::default().data(message);
        if !event.is_empty() {
            sse = sse.event(event);
        }
        let published = if topic.is_empty() {
            publisher.publish(sse)
        } else {
            publisher.publish_to(&topic, sse)
        }
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = published
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(NotifyReply { id: id.to_string() }))
    }

    type WatchStream = WatchStream;

    /// Opens a subscription of the hub (the same limits, history and lag
    /// bound as the browsers' stream) and forwards its records. A resume
    /// point the history no longer covers starts the stream with a
    /// notification whose `reset` is true. While a client does not read,
    /// HTTP/2 flow control stops the forwarding; once it is further behind
    /// than the hub's lag bound, the call ends with `ABORTED` (gRPC's code
    /// for "retry at a higher level": here, call `Watch` again with the last
    /// id received; `RESOURCE_EXHAUSTED` would read as a quota, which is
    /// what a `429` refusal becomes).
    ///
    /// The call is admitted by the hub's authorization hook, if the hub has
    /// one, from its metadata (`Subscribe::grpc`); a refusal becomes the
    /// status of the call, with the hook's message (`UNAUTHENTICATED`,
    /// `PERMISSION_DENIED` for a topic not granted).
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let publisher = publisher(&request)?;
        let subscribe = publisher.subscribe().grpc(&request);
        let WatchRequest {
            topics,
            last_event_id,
        } = request.into_inner();
        let mut subscribe = subscribe.topics(topics);
        if !last_event_id.is_empty() {
            subscribe = subscribe.after(last_event_id);
        }
        let records = subscribe.records().await?;
        let reset = records.is_reset().then(|| Notification {
            id: records.starts_after().to_string(),
            reset: true,
            ..Notification::default()
        });
        let notifications = records.map(|item| match item {
            Ok(record) => Ok(notification(record)),
            // The record stream ends after it.
            Err(Lagged { .. }) => Err(Status::aborted(
                "fell further behind than the server's lag bound: \
                 call Watch again with last_event_id set to the last id received",
            )),
        });
        let stream = tokio_stream::iter(reset.map(Ok)).chain(notifications);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves gRPC and the event stream on `listener` until `shutdown` resolves;
/// the hub is closed then, so open streams end and the server can stop.
pub async fn serve(
    listener: TcpListener,
    sse: SseLayer,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let publisher = sse.publisher();
    Server::builder()
        // Browsers' EventSource speaks HTTP/1.1; gRPC clients HTTP/2.
        .accept_http1(true)
        .layer(sse)
        .add_service(NotifierServer::new(NotifierService))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                shutdown.await;
                publisher.close();
            },
        )
        .await
}
