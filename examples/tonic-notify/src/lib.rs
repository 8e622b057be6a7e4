//! A tonic gRPC service whose method publishes to browsers through the
//! `Publisher` that `SseLayer` puts into every request's extensions. The same
//! server serves the event stream at `GET /events` (HTTP/1.1 accepted).

use tokio::net::TcpListener;
use tonic::{transport::Server, Request, Response, Status};
use tower_sse::{Event, Publisher, SseLayer};

pub mod proto {
    tonic::include_proto!("notify");
}

use proto::{
    notifier_server::{Notifier, NotifierServer},
    NotifyReply, NotifyRequest,
};

/// The gRPC service: it holds no state, the publisher comes with each request.
#[derive(Default)]
pub struct NotifierService;

#[tonic::async_trait]
impl Notifier for NotifierService {
    async fn notify(
        &self,
        request: Request<NotifyRequest>,
    ) -> Result<Response<NotifyReply>, Status> {
        let publisher = request
            .extensions()
            .get::<Publisher>()
            .cloned()
            .ok_or_else(|| Status::internal("no Publisher: serve this service behind SseLayer"))?;
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
