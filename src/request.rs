//! Reading a stream request: the topics it asks for (query) and where it
//! resumes (`Last-Event-ID`, or the `lastEventId` query parameter).

use http::request::Parts;
use std::net::{IpAddr, SocketAddr};

use crate::{config::Config, hub::Resume, refusal::Refusal, topic};

/// What a client asked for on a stream path.
#[derive(Debug)]
pub(crate) struct StreamRequest {
    pub(crate) topics: Vec<String>,
    pub(crate) resume: Resume,
    /// `with=topic`: each event carries a `topic:` line.
    pub(crate) with_topic: bool,
}

/// The query parameter of a stream's options (unless the topic parameter
/// has taken its name), and its one value: `with=topic` makes each event
/// carry its topic, for clients that route one stream's events by topic.
pub(crate) const WITH_PARAM: &str = "with";
const WITH_TOPIC: &str = "topic";

/// Reads topics from the query parameter `topic_param` (repeatable), the
/// options (`with=topic`) and the resume point (see [`resume`]).
pub(crate) fn parse(
    parts: &Parts,
    topic_param: &str,
    max_topics: usize,
) -> Result<StreamRequest, Refusal> {
    let mut topics: Vec<String> = Vec::new();
    let mut params = 0;
    let mut with_topic = false;
    for (key, value) in query(parts) {
        if key == WITH_PARAM && topic_param != WITH_PARAM {
            with_topic = option(&value)?;
            continue;
        }
        if key != topic_param {
            continue;
        }
        // Parameters are counted, not distinct topics, so a query of
        // thousands of copies is refused as early as a varied one.
        params += 1;
        if params > max_topics {
            return Err(Refusal::too_many_topics(max_topics, Some(topic_param)));
        }
        if !topic::is_valid(&value) {
            return Err(Refusal::invalid_topic(&value));
        }
        if !topics.iter().any(|t| *t == value) {
            topics.push(value.into_owned());
        }
    }
    Ok(StreamRequest {
        topics,
        resume: resume(parts),
        with_topic,
    })
}

/// Whether the request asks for each event's topic (`with=topic`), for a
/// stream a handler opens.
pub(crate) fn with_topic(parts: &Parts, topic_param: &str) -> Result<bool, Refusal> {
    if topic_param == WITH_PARAM {
        return Ok(false);
    }
    let mut with_topic = false;
    for (_, value) in query(parts).filter(|(key, _)| key == WITH_PARAM) {
        with_topic = option(&value)?;
    }
    Ok(with_topic)
}

/// One `with` value: `topic` is the only one.
fn option(value: &str) -> Result<bool, Refusal> {
    match value {
        WITH_TOPIC => Ok(true),
        _ => Err(Refusal::unknown_option(WITH_PARAM, value, "`topic`")),
    }
}

/// The resume point: the `Last-Event-ID` header, or else the `lastEventId`
/// query parameter (for clients that cannot set headers).
pub(crate) fn resume(parts: &Parts) -> Resume {
    match parts.headers.get("last-event-id") {
        Some(value) if !value.is_empty() => match std::str::from_utf8(value.as_bytes()) {
            Ok(id) => Resume::After(id.to_owned()),
            Err(_) => Resume::Unknown,
        },
        _ => query(parts)
            .filter(|(key, value)| key == "lastEventId" && !value.is_empty())
            .last()
            .map_or(Resume::Live, |(_, id)| Resume::After(id.into_owned())),
    }
}

/// The client's address: as the layer's
/// [`client_address`](crate::SseLayer::client_address) finds it, else axum's
/// `ConnectInfo<SocketAddr>` (feature `axum`), else a `SocketAddr` in the
/// request's extensions.
pub(crate) fn address(config: &Config, parts: &Parts) -> Option<IpAddr> {
    if let Some(find) = &config.client_address {
        return (find.0)(parts);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0.ip());
    }
    parts.extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

fn query(parts: &Parts) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, StatusCode};

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
        assert_eq!(req.resume, Resume::Live);

        let p = parts("/events?topic=a%0Ab", None);
        let err = parse(&p, "topic", 64).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("invalid topic"), "{err}");

        let p = parts("/events?topic=", None);
        assert!(parse(&p, "topic", 64).is_err());
        let p = parts(&format!("/events?topic={}", "a".repeat(129)), None);
        assert!(parse(&p, "topic", 64).is_err());
    }

    #[test]
    fn with_topic_is_read_and_unknown_options_are_a_400() {
        let p = parts("/events?topic=a&with=topic", None);
        assert!(parse(&p, "topic", 64).unwrap().with_topic);
        let p = parts("/events?topic=a", None);
        assert!(!parse(&p, "topic", 64).unwrap().with_topic);
        let p = parts("/events?with=colour", None);
        let err = parse(&p, "topic", 64).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("unknown `with` value"), "{err}");
        // A layer whose topic parameter is `with` reads topics there.
        let p = parts("/events?with=colour", None);
        let req = parse(&p, "with", 64).unwrap();
        assert_eq!((req.topics, req.with_topic), (vec!["colour".into()], false));
    }

    #[test]
    fn too_many_topics_is_a_400() {
        let query: Vec<String> = (0..65).map(|i| format!("topic=t{i}")).collect();
        let p = parts(&format!("/events?{}", query.join("&")), None);
        let err = parse(&p, "topic", 64).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("too many topics"));
    }

    #[test]
    fn last_event_id_from_header_then_query() {
        let resume = |uri, id| parse(&parts(uri, id), "topic", 64).unwrap().resume;
        assert_eq!(
            resume("/events?lastEventId=7", Some(b"42")),
            Resume::After("42".into())
        );
        assert_eq!(
            resume("/events?lastEventId=7", None),
            Resume::After("7".into())
        );
        assert_eq!(resume("/events", Some(b"\xff\xfe")), Resume::Unknown);
        assert_eq!(resume("/events", Some(b"")), Resume::Live);
    }

    #[test]
    fn invalid_percent_encoding_is_not_a_panic() {
        let p = parts("/events?topic=%ff%fe&lastEventId=%zz", None);
        assert!(parse(&p, "topic", 64).is_err());
        let p = parts("/events?lastEventId=%ff", None);
        assert!(parse(&p, "topic", 64).is_ok());
    }
}
