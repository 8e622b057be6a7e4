//! Answering a WebSocket handshake (HTTP/1.1 `Upgrade`, or HTTP/2 extended
//! `CONNECT`): checked, admitted once, then handed to a session.

use super::*;

/// What makes a request a WebSocket handshake, and how to answer it.
enum Handshake {
    /// HTTP/1.1 `Upgrade: websocket`: answered `101` with this accept key.
    Upgrade(String),
    /// HTTP/2 extended `CONNECT` (RFC 8441): answered `200`.
    Connect,
}

fn handshake(parts: &Parts) -> Result<Handshake, (StatusCode, &'static str)> {
    if parts.method == Method::CONNECT {
        return match parts.extensions.get::<hyper::ext::Protocol>() {
            Some(p) if p.as_str().eq_ignore_ascii_case("websocket") => Ok(Handshake::Connect),
            _ => Err((
                StatusCode::BAD_REQUEST,
                "CONNECT here needs the websocket protocol (RFC 8441)",
            )),
        };
    }
    if parts.method != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket handshake is a GET",
        ));
    }
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let upgrade = header(header::UPGRADE).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = header(header::CONNECTION).is_some_and(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !upgrade || !connection {
        return Err((
            StatusCode::BAD_REQUEST,
            "this path speaks WebSocket: send `Connection: upgrade` and `Upgrade: websocket`",
        ));
    }
    if header(header::SEC_WEBSOCKET_VERSION) != Some("13") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13",
        ));
    }
    let Some(key) = header(header::SEC_WEBSOCKET_KEY) else {
        return Err((StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    };
    Ok(Handshake::Upgrade(derive_accept_key(key.as_bytes())))
}

/// A plain-text answer to a request that is not a usable handshake.
fn not_a_handshake(status: StatusCode, message: &str) -> Response<OwnBody> {
    let mut response = text(status, format!("{message}\n"));
    if status == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    response
}

/// Answers a request on the WebSocket path: checks the handshake, opens the
/// subscription as the stream path does, and hands the upgraded connection
/// to a session task.
pub(crate) async fn respond(mut parts: Parts, publisher: Publisher) -> Response<OwnBody> {
    let handshake = match handshake(&parts) {
        Ok(handshake) => handshake,
        Err((status, message)) => return not_a_handshake(status, message),
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return not_a_handshake(
            StatusCode::INTERNAL_SERVER_ERROR,
            "WebSocket needs a hyper-based server that supports upgrades",
        );
    };
    let config = publisher.config().clone();
    let opened = async {
        let request = request::parse(&parts, &config.topic_param, config.max_topics)?;
        let credentials = Credentials::Request(Box::new(parts));
        let admitted = admission::admit(publisher.hub(), &config, credentials).await?;
        let mut session = Session {
            publisher,
            admitted,
            topics: request.topics.into_iter().collect(),
            subscription: None,
            last: None,
            life: None,
        };
        session.subscribe(&request.resume).await?;
        session.life = session.subscription.as_ref().map(|subscription| {
            StreamLife::begin(
                Transport::WebSocket,
                subscription.topics(),
                subscription.user(),
                subscription.start().kind == StartKind::Reset,
            )
        });
        Ok::<_, Refusal>(session)
    };
    let session = match opened.await {
        Ok(session) => session,
        Err(refusal) => return refused(refusal),
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // Small buffers: a session mostly idles (tungstenite's
                // defaults, 128 KiB each, would cost that per client).
                let config = WebSocketConfig::default()
                    .read_buffer_size(4 * 1024)
                    .write_buffer_size(16 * 1024)
                    .max_message_size(Some(MAX_MESSAGE))
                    .max_frame_size(Some(MAX_MESSAGE));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session.run(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(OwnBody::full(Bytes::new()));
    if let Handshake::Upgrade(accept) = handshake {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
    }
    response
}
