//! The error type of publishing events.

use std::fmt;

/// An error of any kind, as engines report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an event could not be published.
///
/// Nothing is sent to any subscriber when `publish` returns an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The event name contains a line break (`\n` or `\r`), which would end
    /// the `event:` field early and let the rest be read as other fields.
    InvalidEventName,
    /// The event name is `reset` (the [`RESET_EVENT`](crate::RESET_EVENT) a
    /// stream starts with when events were missed) or starts with
    /// `tower-sse:` (the orders the hub sends itself through a backplane):
    /// the stream's own control events, which a publisher cannot forge.
    ReservedEventName,
    /// The event id contains a line break or a NUL character; browsers
    /// ignore an id with NUL, and a line break would end the field early.
    InvalidId,
    /// The event could not be serialized to JSON.
    #[cfg(feature = "json")]
    Json(serde_json::Error),
    /// The event is larger than the configured maximum
    /// ([`HubBuilder::max_event_size`](crate::HubBuilder::max_event_size)).
    TooLarge {
        /// Size of the rejected event (name, data and ids), in bytes.
        size: usize,
        /// The configured maximum, in bytes.
        limit: usize,
    },
    /// The topic name is empty, too long, or has a character outside the
    /// allowed set (see [`Publisher::publish_to`](crate::Publisher::publish_to)).
    InvalidTopic,
    /// The backplane did not take the event: it is unreachable, answered
    /// with an error, or is not keeping up. The source is the engine's error.
    Backplane(BoxError),
    /// Too much waits for the backplane: the events accepted but not yet
    /// taken by the engine (hung, slow or unreachable) reached the bound set
    /// with [`HubBuilder::backplane_backlog`](crate::HubBuilder::backplane_backlog).
    /// Nothing of this event was kept; publishing is accepted again as the
    /// engine takes what waits.
    Backlog {
        /// Events waiting for the engine.
        events: usize,
        /// Their size, in bytes, as the bound counts it.
        bytes: usize,
        /// The bound, in bytes.
        limit: usize,
    },
    /// The hub was closed with [`Publisher::close`](crate::Publisher::close);
    /// no more events are accepted.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidEventName => {
                f.write_str("invalid event name: it must not contain `\\n` or `\\r`")
            }
            Error::ReservedEventName => f.write_str(
                "invalid event name: `reset` and names starting with `tower-sse:` are \
                 reserved for the stream's own control events",
            ),
            Error::InvalidId => {
                f.write_str("invalid event id: it must not contain `\\n`, `\\r` or NUL")
            }
            #[cfg(feature = "json")]
            Error::Json(e) => write!(f, "event data could not be serialized to JSON: {e}"),
            Error::TooLarge { size, limit } => write!(
                f,
                "event is {size} bytes, more than the limit of {limit} bytes \
                 (raise it with `HubBuilder::max_event_size`)"
            ),
            Error::InvalidTopic => f.write_str(
                "invalid topic: use 1 to 128 characters from `A-Z a-z 0-9 - _ . / : @ ~`",
            ),
            Error::Backplane(e) => {
                write!(f, "the backplane did not take the event: {e}")?;
                // What the engine's client said (a database's own message
                // is often only in the source: "db error" then "permission
                // denied for table …"), unless already said.
                let mut said = e.to_string();
                let mut source = e.source();
                while let Some(cause) = source {
                    let text = cause.to_string();
                    if !said.contains(&text) {
                        write!(f, ": {text}")?;
                        said = text;
                    }
                    source = cause.source();
                }
                Ok(())
            }
            Error::Backlog {
                events,
                bytes,
                limit,
            } => write!(
                f,
                "the backplane is not keeping up (hung, slow or unreachable): {events} events \
                 ({bytes} bytes) wait for it, at the bound of {limit} bytes; retry later, \
                 or raise the bound with `HubBuilder::backplane_backlog`"
            ),
            Error::Closed => f.write_str("the event hub is closed; no more events are accepted"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "json")]
            Error::Json(e) => Some(e),
            Error::Backplane(e) => Some(&**e),
            _ => None,
        }
    }
}

/// With the `axum` feature a handler can return the error of `publish`:
/// `400` for an invalid event or topic, `413` for one over the size limit,
/// `503` when the hub is closed, its backplane did not take the event, or
/// too much waits for it.
#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Error {
    fn into_response(self) -> axum_core::response::Response {
        use http::StatusCode;
        let status = match self {
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Backplane(_) | Error::Backlog { .. } | Error::Closed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        (status, format!("{self}\n")).into_response()
    }
}
