//! Topic names: what a valid one is.

/// Longest topic name, in bytes.
pub(crate) const MAX_LEN: usize = 128;

/// The characters a topic may use, for error messages.
pub(crate) const ALPHABET: &str = "`A-Z a-z 0-9 - _ . / : @ ~`";

/// Whether `topic` is a valid topic name: 1 to 128 characters from
/// `A-Z a-z 0-9 - _ . / : @ ~`, all of which stand in a URL query unescaped.
pub(crate) fn is_valid(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@~".contains(&b))
}
