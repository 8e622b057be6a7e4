//! What a WebSocket client may send: `subscribe` and `unsubscribe`
//! messages, how they are read, and how many a session takes.

use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Close;
use crate::{observe::Reason, refusal::Refusal, topic};

/// A change of topics a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Change {
    /// `subscribe` (else `unsubscribe`).
    pub(crate) subscribe: bool,
    /// Valid topics, as given.
    pub(crate) topics: Vec<String>,
    /// Where to resume from, if the client says.
    pub(crate) last_event_id: Option<String>,
}

/// Reads a client's text message; a malformed one, or an invalid topic, is
/// the close that says why.
pub(crate) fn parse(message: &str) -> Result<Change, Close> {
    let protocol = |why: &str| {
        Close(
            CloseCode::Protocol,
            format!("protocol error: {why}"),
            Reason::Protocol,
        )
    };
    let message: Value =
        serde_json::from_str(message).map_err(|_| protocol("a message is a JSON object"))?;
    let subscribe = match message.get("type").and_then(Value::as_str) {
        Some("subscribe") => true,
        Some("unsubscribe") => false,
        _ => return Err(protocol("`type` is `subscribe` or `unsubscribe`")),
    };
    let topics: Vec<String> = match message.get("topics") {
        None => Vec::new(),
        Some(Value::Array(topics)) => topics
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| protocol("topics are strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(protocol("`topics` is an array of strings")),
    };
    if let Some(bad) = topics.iter().find(|t| !topic::is_valid(t)) {
        return Err(Close::refusal(&Refusal::invalid_topic(bad)));
    }
    let last_event_id = match message.get("last_event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => return Err(protocol("`last_event_id` is a string")),
    };
    Ok(Change {
        subscribe,
        topics,
        last_event_id,
    })
}

/// Messages a session takes at once; then [`PER_SECOND`]. A client changes
/// topics when its page does: a few at a time. Each change may announce
/// presence to every follower of the topic, so a client that churns
/// topics must not be able to flood them.
pub(crate) const BURST: f64 = 20.0;
/// Messages a session takes per second, after [`BURST`].
pub(crate) const PER_SECOND: f64 = 5.0;

/// A token bucket of the messages a session may still send.
pub(crate) struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    pub(crate) fn new() -> Budget {
        Budget {
            tokens: BURST,
            at: Instant::now(),
        }
    }

    /// Takes one message, or the close of a client past its budget.
    pub(crate) fn take(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + refill).min(BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return Err(Close(
                // As HTTP's 429, in the application's range (4000-4999).
                CloseCode::Library(4029),
                format!(
                    "too many messages: at most {BURST} at once, then {PER_SECOND} a second; \
                     reconnect later"
                ),
                Reason::Protocol,
            ));
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

/// The fuzz target's entry (`fuzz/fuzz_targets/ws_control.rs`): parses
/// `message`, and checks what a parse promises.
#[cfg(fuzzing)]
pub fn fuzz(message: &str) {
    check(message);
}

/// What [`parse`] promises of any text: what it reads is read again the
/// same, and what it refuses it refuses with a code and a reason that fits
/// a close frame once cut.
#[cfg(any(fuzzing, test))]
fn check(message: &str) {
    match parse(message) {
        Ok(change) => {
            for t in &change.topics {
                assert!(topic::is_valid(t), "{t:?}");
            }
            // What was read is read again the same.
            let again = serde_json::json!({
                "type": if change.subscribe { "subscribe" } else { "unsubscribe" },
                "topics": change.topics,
                "last_event_id": change.last_event_id,
            });
            assert_eq!(parse(&again.to_string()).ok(), Some(change));
        }
        Err(Close(code, reason, _)) => {
            assert!(!reason.is_empty());
            assert!(
                matches!(code, CloseCode::Protocol | CloseCode::Policy),
                "{code:?}"
            );
            let cut = super::floor_char_boundary(&reason, super::MAX_CLOSE_REASON);
            assert!(cut <= super::MAX_CLOSE_REASON && reason.is_char_boundary(cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_or_refused_with_a_reason() {
        let change = parse(r#"{"type":"subscribe","topics":["a","b/c"],"last_event_id":"7"}"#);
        assert_eq!(
            change.ok(),
            Some(Change {
                subscribe: true,
                topics: vec!["a".into(), "b/c".into()],
                last_event_id: Some("7".into()),
            })
        );
        for (bad, why) in [
            ("not json", "JSON object"),
            (r#"{"type":"dance"}"#, "`type`"),
            (r#"{"type":"subscribe","topics":"a"}"#, "array"),
            (r#"{"type":"subscribe","topics":[1]}"#, "strings"),
            (r#"{"type":"subscribe","topics":["a b"]}"#, "invalid topic"),
            (r#"{"type":"unsubscribe","last_event_id":1}"#, "string"),
        ] {
            let Err(Close(_, reason, _)) = parse(bad) else {
                panic!("{bad} was taken");
            };
            assert!(reason.contains(why), "{bad}: {reason}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_takes_a_burst_then_five_a_second() {
        let mut budget = Budget::new();
        for _ in 0..20 {
            budget.take().unwrap();
        }
        let Err(Close(code, _, _)) = budget.take() else {
            panic!("the 21st at once was taken");
        };
        assert_eq!(code, CloseCode::Library(4029));
        tokio::time::advance(std::time::Duration::from_millis(1000)).await;
        for _ in 0..5 {
            budget.take().unwrap();
        }
        assert!(budget.take().is_err());
    }

    proptest::proptest! {
        /// What the fuzz target checks, on JSON-like text and on messages
        /// of the right shape with any topics and ids, and on the seeds.
        #[test]
        fn any_text_is_read_or_refused_with_a_reason(
            text in "[{}\\[\\]\",:a-z0-9/ _é€-]{0,80}",
            kind in "(subscribe|unsubscribe|other)",
            topics in proptest::collection::vec("\\PC{0,140}", 0..4),
            id in proptest::option::of("\\PC{0,10}"),
        ) {
            check(&text);
            let message = serde_json::json!({"type": kind, "topics": topics, "last_event_id": id});
            check(&message.to_string());
        }
    }

    #[test]
    fn the_fuzz_seeds_hold() {
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/ws_control");
        for seed in std::fs::read_dir(seeds).unwrap() {
            check(&std::fs::read_to_string(seed.unwrap().path()).unwrap());
        }
    }
}
