//! Reading a subscription from the stream request: its topics and where to
//! resume (`Last-Event-ID`).

use http::{request::Parts, StatusCode};
use std::borrow::Cow;

use crate::hub::Resume;

/// Longest topic name, in bytes.
pub(crate) const MAX_TOPIC_LEN: usize = 128;

/// Whether `topic` is a valid topic name: 1 to 128 characters from
/// `A-Z a-z 0-9 - _ . / : @ ~`, all of which stand in a URL query unescaped.
pub(crate) fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@~".contains(&b))
}

/// What a client asked for on the stream path.
#[derive(Debug)]
pub(crate) struct SubscribeRequest {
    pub(crate) topics: Vec<String>,
    last_event_id: LastEventId,
}

#[derive(Debug)]
enum LastEventId {
    None,
    Given(String),
    Unreadable,
}

impl SubscribeRequest {
    pub(crate) fn resume(&self) -> Resume<'_> {
        match &self.last_event_id {
            LastEventId::None => Resume::Live,
            LastEventId::Given(id) => Resume::After(id),
            LastEventId::Unreadable => Resume::Unknown,
        }
    }
}

/// A request the stream path refuses: the status and the text to send.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Rejection {
    fn bad_request(message: String) -> Self {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

/// Reads topics from the query parameter `topic_param` (repeatable) and the
/// resume point from the `Last-Event-ID` header, or else from the
/// `lastEventId` query parameter (for clients that cannot set headers).
pub(crate) fn parse(
    parts: &Parts,
    topic_param: &str,
    max_topics: usize,
) -> Result<SubscribeRequest, Rejection> {
    let mut topics: Vec<String> = Vec::new();
    let mut params = 0;
    let mut query_id = None;
    for (key, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        if key == topic_param {
            // Parameters are counted, not distinct topics, so a query of
            // thousands of copies is refused as early as a varied one.
            params += 1;
            if params > max_topics {
                return Err(Rejection::bad_request(format!(
                    "too many topics: at most {max_topics} `{topic_param}` parameters per stream"
                )));
            }
            if !is_valid_topic(&value) {
                return Err(Rejection::bad_request(format!(
                    "invalid topic {:?}: use 1 to {MAX_TOPIC_LEN} characters from \
                     `A-Z a-z 0-9 - _ . / : @ ~`",
                    truncate(&value)
                )));
            }
            if !topics.iter().any(|t| *t == value) {
                topics.push(value.into_owned());
            }
        } else if key == "lastEventId" && !value.is_empty() {
            query_id = Some(value.into_owned());
        }
    }
    let last_event_id = match parts.headers.get("last-event-id") {
        Some(value) if !value.is_empty() => match std::str::from_utf8(value.as_bytes()) {
            Ok(id) => LastEventId::Given(id.to_owned()),
            Err(_) => LastEventId::Unreadable,
        },
        _ => query_id.map_or(LastEventId::None, LastEventId::Given),
    };
    Ok(SubscribeRequest {
        topics,
        last_event_id,
    })
}

/// At most 64 characters of client input, for an error message.
fn truncate(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(64) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, last_event_id: Option<&[u8]>) -> Parts {
        let mut req = Request::get(uri);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", http::HeaderValue::from_bytes(id).unwrap());
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn topics_are_read_deduplicated_and_validated() {
        let p = parts("/events?topic=a&topic=b%2Fc&x=1&topic=a", None);
        let req = parse(&p, "topic", 64).unwrap();
        assert_eq!(req.topics, ["a", "b/c"]);
        assert!(matches!(req.resume(), Resume::Live));

        let p = parts("/events?topic=a%0Ab", None);
        let err = parse(&p, "topic", 64).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("invalid topic"), "{}", err.message);

        let p = parts("/events?topic=", None);
        assert!(parse(&p, "topic", 64).is_err());
        let p = parts(&format!("/events?topic={}", "a".repeat(129)), None);
        assert!(parse(&p, "topic", 64).is_err());
    }

    #[test]
    fn too_many_topics_is_a_400() {
        let query: Vec<String> = (0..65).map(|i| format!("topic=t{i}")).collect();
        let p = parts(&format!("/events?{}", query.join("&")), None);
        let err = parse(&p, "topic", 64).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("too many topics"));
    }

    #[test]
    fn last_event_id_from_header_then_query() {
        let p = parts("/events?lastEventId=7", Some(b"42"));
        assert!(matches!(
            parse(&p, "topic", 64).unwrap().resume(),
            Resume::After("42")
        ));
        let p = parts("/events?lastEventId=7", None);
        assert!(matches!(
            parse(&p, "topic", 64).unwrap().resume(),
            Resume::After("7")
        ));
        let p = parts("/events", Some(b"\xff\xfe"));
        assert!(matches!(
            parse(&p, "topic", 64).unwrap().resume(),
            Resume::Unknown
        ));
        let p = parts("/events", Some(b""));
        assert!(matches!(
            parse(&p, "topic", 64).unwrap().resume(),
            Resume::Live
        ));
    }

    #[test]
    fn invalid_percent_encoding_is_not_a_panic() {
        let p = parts("/events?topic=%ff%fe&lastEventId=%zz", None);
        assert!(parse(&p, "topic", 64).is_err());
        let p = parts("/events?lastEventId=%ff", None);
        assert!(parse(&p, "topic", 64).is_ok());
    }
}
