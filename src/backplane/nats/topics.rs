//! Each topic kept apart in the stream (its subject's limits), agreed on by
//! every instance, and read back by subject.

use async_nats::jetstream::stream::{Config, RawMessageErrorKind};
use futures_util::TryStreamExt;

use super::{epoch, info, reader::record, NatsBackplane, Retention};
use crate::{backplane::TopicRead, error::BoxError, event::EventId};

/// Sets the stream's limits to `retention`: per subject (each topic), and
/// none on the whole stream (they would trim a quiet topic for a busy one).
pub(super) fn limits(config: &mut Config, retention: Retention) {
    config.max_messages_per_subject = i64::try_from(retention.per_topic.max(1)).unwrap_or(i64::MAX);
    config.max_age = retention.age.unwrap_or_default();
    config.max_messages = -1;
    config.max_bytes = -1;
}

/// Refuses a stream whose per-subject limits (set by another instance) are
/// not `wanted`'s: instances sharing a stream must keep the same history,
/// or one would trim what another still replays. A stream without them
/// (made by hand, or by an earlier version) takes ours.
pub(super) fn agree(current: &Config, wanted: &Config) -> Result<(), BoxError> {
    if current.max_messages_per_subject <= 0 {
        return Ok(());
    }
    let theirs = (current.max_messages_per_subject, current.max_age);
    let ours = (wanted.max_messages_per_subject, wanted.max_age);
    if theirs == ours {
        return Ok(());
    }
    let age = |age: std::time::Duration| match age.is_zero() {
        true => "no age limit".to_owned(),
        false => format!("an age limit of {age:?}"),
    };
    Err(format!(
        "the stream {} keeps {} events of each topic and {}; this instance's hub keeps {} and \
         {}: every instance sharing a stream must keep the same history (`HubBuilder::history`, \
         `history_rule`, `history_ttl`, `max_lag`). To change it for all, stop them and edit \
         the stream's max_msgs_per_subject and max_age (`nats stream edit`)",
        current.name,
        theirs.0,
        age(theirs.1),
        ours.0,
        age(ours.1),
    )
    .into())
}

impl NatsBackplane {
    /// The messages of `topic`'s subject after `after`, at most `limit`, and
    /// whether the stream holds every one after it: it still holds one at
    /// or before it (subjects are trimmed from their oldest), or it never
    /// trimmed the subject by count (fewer than the limit now) and nothing
    /// after it aged out (the stream's oldest message is not after it).
    pub(super) async fn read_subject(
        &self,
        topic: Option<&str>,
        after: EventId,
        limit: usize,
    ) -> Result<TopicRead, BoxError> {
        let subject = self.subject_of(topic);
        let mut stream = self.inner.context.get_stream(&self.inner.stream).await?;
        let info = info(&mut stream).await?.clone();
        let epoch = epoch(&info.config);
        let Some(after) = after
            .as_u64()
            .checked_sub(epoch)
            .filter(|_| after.as_u64() > 0)
        else {
            // Nothing read yet (0), or an id of an earlier stream.
            let held = after.as_u64() == 0;
            return self
                .messages(&stream, &subject, 1, limit, epoch)
                .await
                .map(|records| TopicRead::new(records, held));
        };
        let oldest = match stream.get_first_raw_message_by_subject(&subject, 1).await {
            Ok(message) => Some(message.sequence),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => None,
            Err(e) => return Err(e.into()),
        };
        let mut counts = stream.info_with_subjects(&subject).await?;
        let mut count = 0u64;
        while let Some((name, n)) = counts.try_next().await? {
            if name == subject {
                count = n as u64;
            }
        }
        let cap = u64::try_from(info.config.max_messages_per_subject).unwrap_or(u64::MAX);
        let aged = !info.config.max_age.is_zero();
        let held = oldest.is_some_and(|oldest| oldest <= after)
            || (count < cap && (!aged || info.state.first_sequence <= after + 1));
        let records = self
            .messages(&stream, &subject, after + 1, limit, epoch)
            .await?;
        Ok(TopicRead::new(records, held))
    }

    /// Up to `limit` messages of `subject` from sequence `from` on, as
    /// records of `epoch`.
    async fn messages(
        &self,
        stream: &async_nats::jetstream::stream::Stream,
        subject: &str,
        mut from: u64,
        limit: usize,
        epoch: u64,
    ) -> Result<Vec<crate::record::Record>, BoxError> {
        let mut records = Vec::new();
        while records.len() < limit {
            let message = match stream.get_first_raw_message_by_subject(subject, from).await {
                Ok(message) => message,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(e.into()),
            };
            from = message.sequence + 1;
            records.extend(record(
                epoch.saturating_add(message.sequence),
                &self.inner.subject,
                Some(&message.headers),
                &message.payload,
                &message.subject,
            ));
        }
        Ok(records)
    }
}
