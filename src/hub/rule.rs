//! What the history keeps of each topic ([`HistoryRule`]), the rules by
//! topic prefix, and why a set of rules is refused ([`BuildError`]).

use std::{fmt, sync::Arc, time::Duration};

/// What the history keeps of a topic: its newest events, up to a count and,
/// optionally, an age. Given per topic prefix with
/// [`HubBuilder::history_rule`](crate::HubBuilder::history_rule); topics no
/// rule names keep [`HubBuilder::history`](crate::HubBuilder::history) events
/// (and [`history_ttl`](crate::HubBuilder::history_ttl)).
///
/// Each topic keeps its own events: a flood on one topic never pushes
/// another topic's events out. The hub-wide byte budget
/// ([`HubBuilder::history_bytes`](crate::HubBuilder::history_bytes)) is the
/// memory bound over all of them; past it, events leave from the topics that
/// hold the most.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::{HistoryRule, Hub};
///
/// let hub = Hub::builder()
///     .history_rule("prices/", HistoryRule::latest())
///     .history_rule("chat/", HistoryRule::events(500).ttl(Duration::from_secs(3600)))
///     .history_rule("tmp/", HistoryRule::nothing())
///     .build();
/// # let _ = hub;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRule {
    pub(crate) events: usize,
    pub(crate) ttl: Option<Duration>,
    pub(crate) state: bool,
}

impl HistoryRule {
    /// Keeps the newest `events` of the topic.
    pub fn events(events: usize) -> Self {
        HistoryRule {
            events,
            ttl: None,
            state: false,
        }
    }

    /// Keeps nothing: a client resuming from before the topic's newest event
    /// gets the `reset`. (While a topic has streams open, what they have not
    /// read yet stays, up to [`max_lag`](crate::HubBuilder::max_lag).)
    pub fn nothing() -> Self {
        HistoryRule::events(0)
    }

    /// A *state* topic that keeps only its newest event: its current value
    /// (a price, an order's status, a dashboard's figure). Every stream that
    /// opens on it, or resumes, gets that event first; see
    /// [`state`](Self::state).
    pub fn latest() -> Self {
        HistoryRule::events(1).state()
    }

    /// Also drops events older than `age`. A state topic's newest event
    /// stays whatever its age.
    pub fn ttl(mut self, age: Duration) -> Self {
        self.ttl = Some(age);
        self
    }

    /// Makes the topic a *state* topic: every stream that opens on it, or
    /// resumes on it, gets its newest event first — unless it resumes from a
    /// point with newer events of the topic to replay (it gets those), or
    /// from that very event (it has it). After a `reset` the newest event
    /// follows the reset, so a client never sits without the current value.
    /// A stream resuming from a later event of another topic gets the value
    /// again: a value, sent twice, is still the value. Its newest event
    /// never leaves by age.
    pub fn state(mut self) -> Self {
        self.state = true;
        self
    }

    /// How many events it keeps.
    pub fn kept_events(&self) -> usize {
        self.events
    }

    /// The age past which its events leave, if any.
    pub fn kept_for(&self) -> Option<Duration> {
        self.ttl
    }

    /// Whether it is a state topic.
    pub fn is_state(&self) -> bool {
        self.state
    }

    /// Why this rule makes no sense, if it does not.
    fn check(&self, prefix: &str) -> Result<(), BuildError> {
        if self.ttl == Some(Duration::ZERO) {
            return Err(BuildError::ZeroTtl(prefix.to_owned()));
        }
        if self.state && self.events == 0 {
            return Err(BuildError::StateKeepsNothing(prefix.to_owned()));
        }
        Ok(())
    }
}

/// Why [`HubBuilder::try_build`](crate::HubBuilder::try_build) refused the
/// hub's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A history rule was given for the empty prefix: set the rule of every
    /// topic with `history` and `history_ttl` instead.
    EmptyPrefix,
    /// Two history rules were given for this prefix.
    DuplicatePrefix(String),
    /// A history rule's prefix has a character no topic may have, so it
    /// would never apply.
    InvalidPrefix(String),
    /// A history rule (of this prefix; empty for the default rule) has an
    /// age limit of zero: use `HistoryRule::nothing()` to keep nothing.
    ZeroTtl(String),
    /// A state topic rule (of this prefix) keeps no event.
    StateKeepsNothing(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = |prefix: &str| {
            if prefix.is_empty() {
                "the default history rule".to_owned()
            } else {
                format!("the history rule of `{prefix}`")
            }
        };
        match self {
            BuildError::EmptyPrefix => f.write_str(
                "a history rule needs a prefix; set the rule of every topic with \
                 `HubBuilder::history` and `history_ttl`",
            ),
            BuildError::DuplicatePrefix(p) => {
                write!(f, "two history rules were given for the prefix `{p}`")
            }
            BuildError::InvalidPrefix(p) => write!(
                f,
                "the history rule prefix `{p}` can match no topic: topics use only {}, \
                 at most {} bytes",
                crate::topic::ALPHABET,
                crate::topic::MAX_LEN
            ),
            BuildError::ZeroTtl(p) => write!(
                f,
                "{} has an age limit of zero; use `HistoryRule::nothing()` to keep nothing",
                rule(p)
            ),
            BuildError::StateKeepsNothing(p) => {
                write!(f, "{} is a state topic that keeps no event", rule(p))
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// The history rules of a hub: the default, and those by prefix (the
/// longest matching prefix wins).
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub(crate) default: HistoryRule,
    /// Longest prefix first, so the first match is the longest.
    by_prefix: Vec<(Box<str>, HistoryRule)>,
    /// The rules as topics share them, once checked (the default first,
    /// then those of `by_prefix` in its order).
    shared: Vec<Arc<HistoryRule>>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            default: HistoryRule::events(1024),
            by_prefix: Vec::new(),
            shared: vec![Arc::new(HistoryRule::events(1024))],
        }
    }
}

impl Rules {
    pub(crate) fn add(&mut self, prefix: String, rule: HistoryRule) {
        self.by_prefix.push((prefix.into(), rule));
    }

    /// Refuses empty, duplicate or impossible prefixes and rules that make
    /// no sense; then orders the prefixes longest first.
    pub(crate) fn check(&mut self) -> Result<(), BuildError> {
        self.default.check("")?;
        for (i, (prefix, rule)) in self.by_prefix.iter().enumerate() {
            if prefix.is_empty() {
                return Err(BuildError::EmptyPrefix);
            }
            if prefix.len() > crate::topic::MAX_LEN || !crate::topic::is_valid(prefix) {
                return Err(BuildError::InvalidPrefix(prefix.to_string()));
            }
            if self.by_prefix[..i].iter().any(|(p, _)| p == prefix) {
                return Err(BuildError::DuplicatePrefix(prefix.to_string()));
            }
            rule.check(prefix)?;
        }
        self.by_prefix
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        self.share();
        Ok(())
    }

    /// Makes the rules topics share from the rules as they are now.
    pub(crate) fn share(&mut self) {
        self.shared = self.all().map(|rule| Arc::new(*rule)).collect();
    }

    /// The rule of `topic` (the default topic, `""`, keeps the default), as
    /// checked by [`check`](Self::check).
    pub(crate) fn of(&self, topic: &str) -> Arc<HistoryRule> {
        let at = self
            .by_prefix
            .iter()
            .position(|(prefix, _)| topic.starts_with(&**prefix))
            .map_or(0, |i| i + 1);
        self.shared[at].clone()
    }

    /// Every rule, the default first.
    pub(crate) fn all(&self) -> impl Iterator<Item = &HistoryRule> {
        std::iter::once(&self.default).chain(self.by_prefix.iter().map(|(_, r)| r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(given: &[(&str, HistoryRule)]) -> Result<Rules, BuildError> {
        let mut rules = Rules::default();
        for (prefix, rule) in given {
            rules.add((*prefix).to_owned(), *rule);
        }
        rules.check().map(|()| rules)
    }

    #[test]
    fn the_longest_prefix_wins() {
        let rules = rules(&[
            ("chat/", HistoryRule::events(500)),
            ("chat/vip/", HistoryRule::events(5)),
            ("prices/", HistoryRule::latest()),
        ])
        .unwrap();
        assert_eq!(rules.of("chat/vip/1").events, 5);
        assert_eq!(rules.of("chat/general").events, 500);
        assert!(rules.of("prices/eur").state);
        assert_eq!(*rules.of("other"), HistoryRule::events(1024));
        assert_eq!(*rules.of(""), HistoryRule::events(1024));
    }

    #[test]
    fn rules_that_make_no_sense_are_refused() {
        let one = HistoryRule::events(1);
        assert_eq!(rules(&[("", one)]).unwrap_err(), BuildError::EmptyPrefix);
        assert_eq!(
            rules(&[("a/", one), ("a/", one)]).unwrap_err(),
            BuildError::DuplicatePrefix("a/".into())
        );
        assert_eq!(
            rules(&[("a b", one)]).unwrap_err(),
            BuildError::InvalidPrefix("a b".into())
        );
        assert_eq!(
            rules(&[("a/", one.ttl(Duration::ZERO))]).unwrap_err(),
            BuildError::ZeroTtl("a/".into())
        );
        assert_eq!(
            rules(&[("a/", HistoryRule::nothing().state())]).unwrap_err(),
            BuildError::StateKeepsNothing("a/".into())
        );
        let message = rules(&[("a/", one.ttl(Duration::ZERO))])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`a/`") && message.contains("nothing()"),
            "{message}"
        );
        assert!(rules(&[("tmp/", HistoryRule::nothing())]).is_ok());
    }
}
