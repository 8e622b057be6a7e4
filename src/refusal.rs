//! [`Refusal`]: why a stream was not opened, as an HTTP answer (and, with
//! the `tonic` feature, a gRPC status).

use http::{header, HeaderValue, Response, StatusCode};
use std::{borrow::Cow, fmt, time::Duration};

use crate::{observe, topic};

/// Why a stream was not opened, and the HTTP answer that says so: `400` for
/// a bad request, `401` without credentials on a hub that authorizes (or
/// with an expired access), `403` for a topic the authorization hook does
/// not grant, `429`/`503` with `Retry-After` past a limit or while the hub
/// closes, or the hook's own response.
///
/// A handler that opens a stream returns it as its error (it is an axum
/// `IntoResponse` with the `axum` feature, and converts into an
/// `http::Response<String>`). Other transports read its
/// [`status`](Refusal::status) and [`message`](Refusal::message); with the
/// `tonic` feature it converts into a `tonic::Status` that keeps the message
/// (the hook's own, when the hook refused).
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_sse::Refusal;
///
/// let refusal = Refusal::with_response(
///     Response::builder().status(StatusCode::UNAUTHORIZED).body("unknown token\n".to_owned()).unwrap(),
/// );
/// assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(refusal.message(), "unknown token");
/// assert_eq!(refusal.to_string(), "unknown token");
/// ```
#[derive(Debug)]
pub struct Refusal {
    kind: Kind,
    // Boxed: a refusal travels in `Result`s of the open path.
    response: Box<Response<String>>,
}

/// What kind of refusal, for transports that answer other than with HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A malformed request: an invalid topic, say.
    Invalid,
    /// More topics than allowed.
    TooManyTopics,
    /// A topic the hook does not grant.
    Forbidden,
    /// Past a limit, or the hub is closing: try again later.
    Unavailable,
    /// The access granted is already expired.
    Expired,
    /// The hook answered with its own response.
    Hook,
    /// A fault on the server's side.
    Internal,
}

impl Refusal {
    fn new(kind: Kind, status: StatusCode, message: String) -> Refusal {
        observe::refused(status.as_u16());
        let mut response = Response::new(message + "\n");
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Refusal {
            kind,
            response: Box::new(response),
        }
    }

    pub(crate) fn invalid_topic(topic: &str) -> Refusal {
        Refusal::new(
            Kind::Invalid,
            StatusCode::BAD_REQUEST,
            format!(
                "invalid topic {:?}: use 1 to {} characters from {}",
                truncate(topic),
                topic::MAX_LEN,
                topic::ALPHABET
            ),
        )
    }

    /// A stream option the layer does not know (`?with=…`).
    pub(crate) fn unknown_option(param: &str, value: &str, known: &str) -> Refusal {
        Refusal::new(
            Kind::Invalid,
            StatusCode::BAD_REQUEST,
            format!(
                "unknown `{param}` value {:?}: the stream knows {known}",
                truncate(value)
            ),
        )
    }

    pub(crate) fn too_many_topics(max: usize, param: Option<&str>) -> Refusal {
        let message = match param {
            Some(param) => {
                format!("too many topics: at most {max} `{param}` parameters per stream")
            }
            None => format!("too many topics: at most {max}"),
        };
        Refusal::new(Kind::TooManyTopics, StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn forbidden(topic: &str) -> Refusal {
        Refusal::new(
            Kind::Forbidden,
            StatusCode::FORBIDDEN,
            format!("not allowed to follow topic {:?}", truncate(topic)),
        )
    }

    /// No credentials where the hub's hook needs them.
    pub(crate) fn unauthenticated(message: String) -> Refusal {
        Refusal::new(Kind::Expired, StatusCode::UNAUTHORIZED, message)
    }

    pub(crate) fn internal(message: &str) -> Refusal {
        Refusal::new(
            Kind::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            message.into(),
        )
    }

    pub(crate) fn unavailable(message: &str, retry_after: Duration) -> Refusal {
        Refusal::retry_later(StatusCode::SERVICE_UNAVAILABLE, message, retry_after)
    }

    pub(crate) fn retry_later(status: StatusCode, message: &str, retry_after: Duration) -> Refusal {
        let mut refusal = Refusal::new(Kind::Unavailable, status, message.into());
        refusal
            .response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after.as_secs().into());
        refusal
    }

    /// A refusal that answers with `response` (the authorization hook's).
    pub fn with_response(response: Response<String>) -> Refusal {
        observe::refused(response.status().as_u16());
        Refusal {
            kind: Kind::Hook,
            response: Box::new(response),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// What the answer says, without its final line break: the crate's
    /// reason, or the body of the hook's own response (empty if it had none).
    pub fn message(&self) -> &str {
        self.response.body().trim_end()
    }

    /// How long the client should wait before trying again (`Retry-After`
    /// of a `429` or `503`), if the answer says.
    pub fn retry_after(&self) -> Option<Duration> {
        let value = self.response.headers().get(header::RETRY_AFTER)?;
        let seconds = value.to_str().ok()?.parse().ok()?;
        Some(Duration::from_secs(seconds))
    }

    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.message()) {
            (Kind::Hook, "") => write!(f, "refused by the authorization hook ({})", self.status()),
            (_, message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Refusal {}

impl From<Refusal> for Response<String> {
    fn from(refusal: Refusal) -> Self {
        *refusal.response
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Refusal {
    fn into_response(self) -> axum_core::response::Response {
        self.response.map(axum_core::body::Body::from)
    }
}

/// At most 64 characters of client input, for an error message.
fn truncate(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(64) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// The gRPC status of a refusal: its message (the hook's own, when the hook
/// refused), a code from its HTTP status (`400` invalid argument, `401`
/// unauthenticated, `403` permission denied, `429` resource exhausted, `503`
/// unavailable, `500` internal, any other unknown), and its `Retry-After` in
/// the `retry-after` metadata.
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl From<Refusal> for tonic::Status {
    fn from(refusal: Refusal) -> Self {
        use tonic::Code;
        let code = match refusal.status().as_u16() {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            500 => Code::Internal,
            _ => Code::Unknown,
        };
        let mut status = tonic::Status::new(code, refusal.to_string());
        if let Some(after) = refusal.retry_after() {
            status
                .metadata_mut()
                .insert("retry-after", after.as_secs().into());
        }
        status
    }
}
