//! The browser module a layer serves with
//! [`SseLayer::client_script`](crate::SseLayer::client_script): one
//! dependency-free ES module (`client/tower-sse.js`), preceded by the
//! layer's own defaults so `connect()` needs no arguments.

use bytes::Bytes;
use http::{header, request::Parts, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::{only_get_and_head, OwnBody};

/// The module as written, without the defaults.
const SOURCE: &str = include_str!("../client/tower-sse.js");

/// The module of one layer: its path, its exact bytes and their `ETag`,
/// made once when the layer is configured.
#[derive(Debug)]
pub(crate) struct ClientScript {
    pub(crate) path: Box<str>,
    bytes: Bytes,
    etag: HeaderValue,
}

/// What the module needs to know of its layer.
pub(crate) struct Defaults<'a> {
    pub(crate) stream: &'a str,
    pub(crate) websocket: Option<&'a str>,
    pub(crate) topic_param: &'a str,
}

impl ClientScript {
    pub(crate) fn new(path: &str, defaults: &Defaults<'_>) -> ClientScript {
        // Relative to the module's own URL, so the defaults still hold when
        // the app is mounted under a prefix (axum's `nest`).
        let websocket = defaults
            .websocket
            .map_or("null".to_owned(), |ws| js_string(&relative(path, ws)));
        let prelude = format!(
            "// Served by tower-sse at {}: this layer's paths, relative to this module.\n\
             const DEFAULTS = {{ stream: {}, websocket: {}, topicParam: {} }};\n\n",
            path.replace(['\r', '\n'], " "),
            js_string(&relative(path, defaults.stream)),
            websocket,
            js_string(defaults.topic_param),
        );
        let bytes = Bytes::from(prelude + SOURCE);
        let etag = format!("\"{:016x}-{:x}\"", fnv1a(&bytes), bytes.len());
        ClientScript {
            path: path.into(),
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
            bytes,
        }
    }

    /// Answers a request on the module's path.
    pub(crate) fn respond(&self, parts: &Parts) -> Response<OwnBody> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let what = format!("the client module at {}", self.path);
            return only_get_and_head(&parts.method, &what);
        }
        let fresh = matches(&parts.headers, self.etag.as_bytes());
        let body = if fresh || parts.method == Method::HEAD {
            Bytes::new()
        } else {
            self.bytes.clone()
        };
        let mut response = Response::new(OwnBody::full(body));
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        // Cached, but checked again on every load: a new version of the
        // app is picked up at once, an unchanged one costs a `304`.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if fresh {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.bytes.len()));
        response
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare by
/// their value, as RFC 9110 says for this header.
fn matches(headers: &HeaderMap, etag: &[u8]) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(|tag| tag.trim_ascii())
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag)
}

/// FNV-1a, 64 bits: a stable hash of the bytes served (std's hasher may
/// change between Rust versions, and the tag should not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `target` (an absolute path) relative to the directory of `from` (the
/// module's absolute path): `./events` beside it, `../events` from a
/// directory below.
fn relative(from: &str, target: &str) -> String {
    let depth = from.matches('/').count().saturating_sub(1);
    let target = target.trim_start_matches('/');
    match depth {
        0 => format!("./{target}"),
        _ => "../".repeat(depth) + target,
    }
}

/// `text` as a JavaScript string literal (JSON's rules, plus `<` and the
/// two line separators JavaScript did not always allow in strings).
fn js_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' || c == '<' || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn script() -> ClientScript {
        ClientScript::new(
            "/events.js",
            &Defaults {
                stream: "/events",
                websocket: Some("/ws"),
                topic_param: "topic",
            },
        )
    }

    fn get(
        script: &ClientScript,
        method: Method,
        if_none_match: Option<&str>,
    ) -> Response<OwnBody> {
        let mut request = Request::builder().method(method).uri("/events.js");
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        script.respond(&request.body(()).unwrap().into_parts().0)
    }

    #[test]
    fn the_module_starts_with_the_layers_defaults() {
        let script = script();
        let text = std::str::from_utf8(&script.bytes).unwrap();
        assert!(text.contains(
            "const DEFAULTS = { stream: \"./events\", websocket: \"./ws\", topicParam: \"topic\" };"
        ));
        assert!(text.ends_with(SOURCE));
        let plain = ClientScript::new(
            "/static/js/sse.js",
            &Defaults {
                stream: "/events",
                websocket: None,
                topic_param: "t\"</script>",
            },
        );
        let text = std::str::from_utf8(&plain.bytes).unwrap();
        assert!(text.contains(
            "{ stream: \"../../events\", websocket: null, topicParam: \"t\\\"\\u003c/script>\" }"
        ));
        assert_ne!(plain.etag, script.etag);
    }

    #[test]
    fn get_head_304_and_405() {
        let script = script();
        let response = get(&script, Method::GET, None);
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers[header::ETAG], script.etag);
        assert!(matches!(response.body(), OwnBody::Full(Some(b)) if *b == script.bytes));

        let head = get(&script, Method::HEAD, None);
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()[header::CONTENT_LENGTH],
            script.bytes.len().to_string()
        );
        assert!(matches!(head.body(), OwnBody::Full(None)));

        let etag = script.etag.to_str().unwrap().to_owned();
        for tag in [etag.clone(), format!("\"x\", W/{etag}"), "*".into()] {
            let response = get(&script, Method::GET, Some(&tag));
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(response.headers()[header::ETAG], script.etag);
            assert!(matches!(response.body(), OwnBody::Full(None)));
        }
        let stale = get(&script, Method::GET, Some("\"0000\""));
        assert_eq!(stale.status(), StatusCode::OK);

        let post = get(&script, Method::POST, None);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn the_etag_is_the_hash_of_the_bytes() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let script = script();
        assert_eq!(
            script.etag,
            format!("\"{:016x}-{:x}\"", fnv1a(&script.bytes), script.bytes.len())
        );
    }
}
