//! The Server-Sent Events wire format (WHATWG HTML, "Server-sent events"):
//! how the fields of one event become the bytes a stream sends.

use bytes::{BufMut, Bytes, BytesMut};

/// The fields of one event as they go on the wire; all already valid (no
/// line break in `event` or `id`, no NUL in `id`).
pub(crate) struct Fields<'a> {
    pub(crate) event: Option<&'a str>,
    /// The `topic:` field, for streams that asked for it (`with=topic`);
    /// clients that do not know the field ignore it, as the format says.
    pub(crate) topic: Option<&'a str>,
    pub(crate) retry_ms: Option<u128>,
    /// Comment text, lines separated by `\n`.
    pub(crate) comment: Option<&'a str>,
    /// Data, lines separated by `\n`; `None` is sent as one empty `data:`
    /// line so the browser still dispatches the event.
    pub(crate) data: Option<&'a str>,
    /// The app's id, else the hub's number, else none.
    pub(crate) id: Id<'a>,
}

/// The `id:` field of an event.
pub(crate) enum Id<'a> {
    None,
    Text(&'a str),
    Number(u64),
}

/// Encodes one event, ending with the blank line that dispatches it, in one
/// allocation of the exact size.
pub(crate) fn encode(fields: &Fields<'_>) -> Bytes {
    let len = encoded_len(fields);
    let mut buf = BytesMut::with_capacity(len);
    if let Some(event) = fields.event {
        put_field(&mut buf, "event", event);
    }
    if let Some(topic) = fields.topic {
        put_field(&mut buf, "topic", topic);
    }
    if let Some(ms) = fields.retry_ms {
        put_field(&mut buf, "retry", itoa::Buffer::new().format(ms));
    }
    for line in fields.comment.iter().flat_map(|c| c.split('\n')) {
        put_field(&mut buf, "", line);
    }
    match fields.data {
        Some(data) => data
            .split('\n')
            .for_each(|l| put_field(&mut buf, "data", l)),
        None => buf.put_slice(b"data:\n"),
    }
    put_id(&mut buf, &fields.id);
    buf.put_u8(b'\n');
    debug_assert_eq!(buf.len(), len);
    buf.freeze()
}

/// An `id:` field alone: the client takes it as its last event id and
/// dispatches nothing.
pub(crate) fn encode_id(id: Id<'_>) -> Bytes {
    let mut buf = BytesMut::with_capacity(32);
    put_id(&mut buf, &id);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The length of [`encode`]'s output.
fn encoded_len(fields: &Fields<'_>) -> usize {
    // "name: value\n" is the value plus the name plus 3.
    // Each line is "name: line\n"; the text's own `\n`s end lines.
    let lines = |text: &str, name: &str| {
        let breaks = text.bytes().filter(|b| *b == b'\n').count();
        text.len() - breaks + (breaks + 1) * (name.len() + 3)
    };
    let mut len = 1;
    len += fields.comment.map_or(0, |c| lines(c, ""));
    len += fields.event.map_or(0, |e| lines(e, "event"));
    len += fields.topic.map_or(0, |t| lines(t, "topic"));
    len += fields
        .retry_ms
        .map_or(0, |ms| lines(itoa::Buffer::new().format(ms), "retry"));
    len += fields.data.map_or("data:\n".len(), |d| lines(d, "data"));
    len += match fields.id {
        Id::None => 0,
        Id::Text(id) => lines(id, "id"),
        Id::Number(id) => lines(itoa::Buffer::new().format(id), "id"),
    };
    len
}

fn put_id(buf: &mut BytesMut, id: &Id<'_>) {
    match *id {
        Id::None => {}
        Id::Text(id) => put_field(buf, "id", id),
        Id::Number(id) => put_field(buf, "id", itoa::Buffer::new().format(id)),
    }
}

fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

/// `text` as one or more comment lines ending the block (the keep-alive).
pub(crate) fn comment_block(text: &str) -> Bytes {
    let mut buf = BytesMut::new();
    for line in Lines::new(text) {
        buf.put_slice(b":");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Splits text at `\r\n`, `\n` and `\r`, the line ends of the SSE format.
/// Yields at least one (possibly empty) line, and an empty last line when the
/// text ends with a line break, so the client rebuilds the text exactly.
pub(crate) struct Lines<'a> {
    rest: Option<&'a str>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Lines { rest: Some(text) }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        match text.find(['\r', '\n']) {
            None => {
                self.rest = None;
                Some(text)
            }
            Some(i) => {
                let skip = if text[i..].starts_with("\r\n") { 2 } else { 1 };
                self.rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_is_exact() {
        let cases = [
            Fields {
                event: Some("e"),
                topic: Some("room/1"),
                retry_ms: Some(1500),
                comment: Some("a\nb"),
                data: Some("x\n\ny"),
                id: Id::Number(u64::MAX),
            },
            Fields {
                event: None,
                topic: None,
                retry_ms: None,
                comment: None,
                data: None,
                id: Id::None,
            },
            Fields {
                event: None,
                topic: None,
                retry_ms: Some(0),
                comment: Some(""),
                data: Some(""),
                id: Id::Text("custom"),
            },
        ];
        for fields in &cases {
            let bytes = encode(fields);
            assert_eq!(bytes.len(), encoded_len(fields));
        }
    }

    #[test]
    fn lines_split_at_every_line_end() {
        let lines: Vec<_> = Lines::new("a\nb\r\nc\rd\n").collect();
        assert_eq!(lines, ["a", "b", "c", "d", ""]);
    }
}
