//! The reader of a [`NatsBackplane`](super::NatsBackplane)'s stream: an
//! ordered consumer from the last sequence applied, checking once a second
//! that the stream is still the one it reads (its epoch, its last sequence).

use async_nats::jetstream::{
    consumer::{pull, DeliverPolicy},
    stream::{self, Stream},
};
use futures_util::{FutureExt, StreamExt};
use std::time::Duration;

use super::{epoch, info, BLOCK, CHECK_EVERY, COMMENT, EVENT, ID, RETRY};
use crate::{
    backplane::{BackplaneReader, BoxFuture, Read, Tail, Trim},
    error::BoxError,
    event::{Event, EventId},
    record::{Message, Record},
};

/// The id of the newest message the stream gave, if any.
pub(super) fn last(epoch: u64, state: &stream::State) -> Option<EventId> {
    (state.last_sequence > 0).then(|| EventId::new(epoch.saturating_add(state.last_sequence)))
}

/// Whether the stream (of `epoch`) holds every message after the id `after`.
fn holds(epoch: u64, state: &stream::State, after: u64) -> bool {
    holds_seq(
        epoch,
        (state.messages, state.first_sequence, state.last_sequence),
        after,
    )
}

/// [`holds`], from the stream's message count, first and last sequence.
fn holds_seq(epoch: u64, (messages, first, last): (u64, u64, u64), after: u64) -> bool {
    if after == 0 {
        return first <= 1 || messages == 0;
    }
    // An id of an earlier stream: this one was made after it.
    let Some(after) = after.checked_sub(epoch) else {
        return false;
    };
    if messages == 0 {
        last <= after
    } else {
        first <= after + 1
    }
}

/// An ordered consumer of the stream, and the sequence it delivers next.
pub(super) struct Reader {
    stream: Stream,
    epoch: u64,
    /// The subject prefix.
    subject: String,
    messages: Option<(pull::Ordered, u64)>,
    /// When the stream was last checked.
    checked: std::time::Instant,
    /// A hole in the stream named as trims of its subjects
    /// ([`Read::Trimmed`]): the sequence read from, and the first one after
    /// the hole, where the next read from there goes on.
    named: Option<(u64, u64)>,
}

/// The most subjects a hole is named by: past it, the hole is a
/// [`Read::Gap`] (every stream of the instance resumes).
const NAMED_SUBJECTS: usize = 1_000;

impl Reader {
    /// A reader of `stream`, of `epoch`, whose messages' subjects start
    /// with `subject`.
    pub(super) fn new(stream: Stream, epoch: u64, subject: String) -> Reader {
        Reader {
            stream,
            epoch,
            subject,
            messages: None,
            checked: std::time::Instant::now(),
            named: None,
        }
    }

    /// The subjects that may have lost messages in the hole `start..next`
    /// (dropped before this reader read them), as trims, or `None` when the
    /// hole cannot be told by subject. The stream keeps each subject apart,
    /// by count (`max_messages_per_subject`): it drops a subject's oldest
    /// first and keeps its newest, so a subject whose oldest message is
    /// before `start` lost nothing after it, and every other subject, from
    /// its oldest message on, holds all it has. With an age limit a whole
    /// subject can go unseen (and a stream cut at its front may be a
    /// purge): those holes stay a gap.
    async fn hole(&mut self, start: u64, next: u64) -> Result<Option<Vec<Trim>>, BoxError> {
        let info = info(&mut self.stream).await?;
        if !info.config.max_age.is_zero()
            || info.config.max_messages_per_subject <= 0
            || info.state.first_sequence >= next
        {
            return Ok(None);
        }
        // Each question is bounded by the connection's request timeout
        // (`ASK`, set where the client is made).
        let mut listed = self.stream.info_with_subjects(">").await?;
        let mut subjects = Vec::new();
        while let Some(subject) = listed.next().await {
            subjects.push(subject?.0);
            if subjects.len() > NAMED_SUBJECTS {
                return Ok(None);
            }
        }
        let mut trims = Vec::new();
        for subject in subjects {
            let oldest = self
                .stream
                .get_first_raw_message_by_subject(&subject, 1)
                .await?;
            if oldest.sequence < start {
                continue;
            }
            let Ok(topic) = topic_of(&self.subject, &subject) else {
                continue;
            };
            let up_to = self.epoch.saturating_add(oldest.sequence - 1);
            trims.push(Trim::new(topic, EventId::new(up_to)));
        }
        Ok(Some(trims))
    }

    /// Checks that the stream is the one this reader reads, expecting
    /// sequence `start` next: the same epoch, and not holding less than what
    /// was read. Returns its last sequence.
    async fn check(&mut self, start: u64) -> Result<u64, BoxError> {
        self.checked = std::time::Instant::now();
        let info = info(&mut self.stream).await?;
        if epoch(&info.config) != self.epoch {
            return Err("the stream was made again (another epoch)".into());
        }
        let last = info.state.last_sequence;
        if last.saturating_add(1) < start {
            return Err(format!(
                "the stream's last sequence is {last}, below what was read ({}): \
                 made again or restored",
                start - 1
            )
            .into());
        }
        Ok(last)
    }

    /// The consumer's messages from `start` on, made anew unless it is there.
    async fn messages_from(&mut self, start: u64) -> Result<&mut pull::Ordered, BoxError> {
        if self
            .messages
            .as_ref()
            .is_none_or(|(_, next)| *next != start)
        {
            let consumer = self
                .stream
                .create_consumer(pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start.max(1),
                    },
                    ..pull::OrderedConfig::default()
                })
                .await?;
            self.messages = Some((consumer.messages().await?, start));
        }
        match &mut self.messages {
            Some((messages, _)) => Ok(messages),
            None => Err("no consumer".into()),
        }
    }
}

/// What one read of the consumer gave.
enum Batch {
    /// The message asked for first was dropped before it was read: the
    /// first one there is has this sequence.
    Gap(u64),
    /// Nothing within [`BLOCK`].
    Nothing,
    /// Consecutive messages, sequences `first..=last`.
    Messages {
        first: u64,
        last: u64,
        records: Vec<Record>,
    },
}

impl Reader {
    /// Reads up to `limit` consecutive messages from sequence `start` on.
    /// `strict`: the first must be `start` (else it is a gap); otherwise
    /// the first may come later (the oldest dropped meanwhile).
    async fn batch(&mut self, start: u64, limit: usize, strict: bool) -> Result<Batch, BoxError> {
        let messages = self.messages_from(start).await?;
        let Ok(first) = tokio::time::timeout(BLOCK, messages.next()).await else {
            // Nothing for a while: check the stream, and that the consumer
            // did not miss what it holds (a consumer lost in a server
            // restart is made anew).
            if self.check(start).await? >= start {
                self.messages = None;
            }
            return Ok(Batch::Nothing);
        };
        let mut batch = vec![first.ok_or("the consumer ended")??];
        while batch.len() < limit {
            match messages.next().now_or_never() {
                Some(Some(message)) => batch.push(message?),
                _ => break,
            }
        }
        let mut records = Vec::with_capacity(batch.len());
        let mut span: Option<(u64, u64)> = None;
        for message in &batch {
            let sequence = message.info()?.stream_sequence;
            match span {
                None if strict && sequence != start => {
                    // Dropped (purged, or deleted) before it was read.
                    self.messages = None;
                    return Ok(Batch::Gap(sequence));
                }
                Some((_, last)) if sequence != last + 1 => {
                    // Dropped further in: what came before is returned, and
                    // the next read, from a new consumer, starts at the jump.
                    self.messages = None;
                    break;
                }
                _ => {}
            }
            span = Some((span.map_or(sequence, |(first, _)| first), sequence));
            records.extend(record(
                self.epoch.saturating_add(sequence),
                &self.subject,
                message.headers.as_ref(),
                &message.payload,
                &message.subject,
            ));
        }
        let Some((first, last)) = span else {
            return Ok(Batch::Nothing);
        };
        if let Some((_, next)) = &mut self.messages {
            *next = last + 1;
        }
        Ok(Batch::Messages {
            first,
            last,
            records,
        })
    }
}

impl BackplaneReader for Reader {
    fn tail(&mut self, limit: usize) -> BoxFuture<'_, Result<Tail, BoxError>> {
        Box::pin(async move {
            let state = info(&mut self.stream).await?.state.clone();
            let last = last(self.epoch, &state);
            if state.messages == 0 {
                return Ok(Tail::new(Vec::new(), last));
            }
            let count = (state.messages).min(limit.max(1) as u64);
            let mut next = state.last_sequence + 1 - count;
            let mut records = Vec::with_capacity(count as usize);
            // Up to the last message there was when asked. The stream may
            // drop its oldest meanwhile (its limits, under a fast
            // publisher): the tail then starts later, and stays one run of
            // consecutive messages.
            while next <= state.last_sequence {
                let wanted = usize::try_from(state.last_sequence + 1 - next).unwrap_or(usize::MAX);
                match self.batch(next, wanted, false).await? {
                    Batch::Messages {
                        first,
                        last,
                        records: batch,
                    } => {
                        if first != next {
                            records.clear();
                        }
                        records.extend(batch);
                        next = last + 1;
                    }
                    Batch::Gap(_) | Batch::Nothing => {
                        return Err("the stream's tail did not come within a second".into());
                    }
                }
            }
            Ok(Tail::new(records, last))
        })
    }

    fn holds(&mut self, after: EventId) -> BoxFuture<'_, Result<bool, BoxError>> {
        Box::pin(async move {
            let state = &info(&mut self.stream).await?.state;
            Ok(holds(self.epoch, state, after.as_u64()))
        })
    }

    fn read(&mut self, after: EventId, limit: usize) -> BoxFuture<'_, Result<Read, BoxError>> {
        Box::pin(async move {
            // The sequence to read from: after 0, the first; after an id of
            // an earlier stream, what this one holds is past a gap.
            let start = match after.as_u64() {
                0 => 1,
                id if id < self.epoch => return Ok(Read::Gap),
                id => id - self.epoch + 1,
            };
            // Once a second, busy or not: the stream is still the one read
            // (not made again with another epoch, not holding less than was
            // read, as after a restore); an error makes the hub reconnect,
            // which makes it again and reloads.
            if self.checked.elapsed() >= CHECK_EVERY {
                self.check(start).await?;
            }
            // After a hole named by subject, reading goes on past it (from
            // its first message, which must still be there).
            let from = start;
            let start = match self.named.take() {
                Some((named, next)) if named == from => next,
                _ => start,
            };
            Ok(
                match self.batch(start, limit.max(1), after.as_u64() > 0).await? {
                    Batch::Gap(next) => match self.hole(start, next).await? {
                        // A hole no subject explains (a message deleted
                        // by hand from the middle of one) stays a gap.
                        Some(trims) if !trims.is_empty() => {
                            self.named = Some((from, next));
                            Read::Trimmed(trims)
                        }
                        _ => Read::Gap,
                    },
                    Batch::Nothing => Read::records(Vec::new()),
                    Batch::Messages { last, records, .. } => Read::Records {
                        records,
                        up_to: Some(EventId::new(self.epoch.saturating_add(last))),
                    },
                },
            )
        })
    }
}

/// One message as a record; one that is not a valid event is logged and
/// skipped.
pub(super) fn record(
    id: u64,
    prefix: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    subject: &str,
) -> Option<Record> {
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let mut event = Event::default();
    if let Some(name) = header(EVENT) {
        event = event.event(name);
    }
    match std::str::from_utf8(payload) {
        Ok(data) => event = event.data(data),
        Err(_) => {
            tracing::warn!(id, "backplane: skipping a message whose data is not UTF-8");
            return None;
        }
    }
    if let Some(id) = header(ID) {
        event = event.id(id);
    }
    if let Some(retry) = header(RETRY).and_then(|ms| ms.parse().ok()) {
        event = event.retry(Duration::from_millis(retry));
    }
    if let Some(comment) = header(COMMENT) {
        event = event.comment(unescape(&comment));
    }
    let topic = match topic_of(prefix, subject) {
        Ok(topic) => topic,
        Err(()) => {
            tracing::warn!(
                id,
                subject,
                "backplane: skipping a message on another subject"
            );
            return None;
        }
    };
    match Message::new(topic.as_deref(), event) {
        Ok(message) => Some(Record::new(EventId::new(id), message)),
        Err(e) => {
            tracing::warn!(id, error = %e, "backplane: skipping a message that is not a valid event");
            None
        }
    }
}

/// The topic of a message on `subject` (`None`: every subscriber's); an
/// error when the subject is not the prefix's.
fn topic_of(prefix: &str, subject: &str) -> Result<Option<String>, ()> {
    if subject == prefix {
        return Ok(None);
    }
    match subject
        .strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('.'))
    {
        Some(topic) => Ok(Some(topic.replace("%2E", "."))),
        None => Err(()),
    }
}

/// `\n` back to a line break, `\\` to a backslash.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_cross_headers_with_their_line_breaks() {
        let comment = "one\ntwo \\n three\\";
        let escaped = comment.replace('\\', "\\\\").replace('\n', "\\n");
        assert!(!escaped.contains('\n'));
        assert_eq!(unescape(&escaped), comment);
    }

    #[test]
    fn a_stream_holds_what_follows_its_first_message() {
        let epoch = 1_000;
        assert!(holds_seq(epoch, (3, 10, 12), 1_009));
        assert!(holds_seq(epoch, (3, 10, 12), 1_012));
        assert!(!holds_seq(epoch, (3, 10, 12), 1_008), "9 was purged");
        assert!(holds_seq(epoch, (0, 13, 12), 1_012));
        assert!(!holds_seq(epoch, (0, 13, 12), 1_011));
        assert!(holds_seq(epoch, (0, 0, 0), 0));
        assert!(
            !holds_seq(epoch, (2, 1, 2), 999),
            "an id of an earlier stream"
        );
    }
}
