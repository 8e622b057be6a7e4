//! The reader of a [`PostgresBackplane`](super::PostgresBackplane)'s table:
//! one connection that listens for new rows and reads them in id order,
//! and checks the table still holds what was read (trims, restores, ids
//! restarted).

use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::Notify;
use tokio_postgres::{Client, Row, Statement};

use super::{last_id, topics, BLOCK, STATEMENT};
use crate::{
    backplane::{BackplaneReader, BoxFuture, Read, Tail, Trim},
    error::BoxError,
    event::{Event, EventId},
    record::{Message, Record},
};

/// One connection that reads the table and listens for new rows.
pub(super) struct Reader {
    client: Client,
    table: String,
    notify: Arc<Notify>,
    /// The rows after an id, each with the table's oldest id in the same
    /// snapshot (see `PostgresBackplane::reader`).
    after: Statement,
    /// The last read returned every row there was: the next waits for a
    /// notification before asking (one sent since that read is kept by
    /// `Notify`).
    drained: bool,
    /// The id and the inserting transaction (`xmin`) of the last row read:
    /// a row under that id from another transaction means the ids went
    /// back to exactly it.
    last_read: Option<(i64, i64)>,
    /// The trims this reader named, by topic (its mark then), while they
    /// are past what was read: each is named once. (The mark of every trim,
    /// `'*'`, cannot tell a new trim: one topic's may take lower ids than
    /// another's before it.)
    named: HashMap<String, i64>,
}

impl Reader {
    /// A reader on `client`, which listens on `table`'s channel (waking
    /// `notify`), reading rows with `after`.
    pub(super) fn new(
        client: Client,
        table: String,
        notify: Arc<Notify>,
        after: Statement,
    ) -> Reader {
        Reader {
            client,
            table,
            notify,
            after,
            drained: false,
            last_read: None,
            named: HashMap::new(),
        }
    }

    /// Whether the table still has a row at or before `after` (else it was
    /// made again) and a row at or after it; with no row at all, whether
    /// nothing was read yet. A topic trimmed after it (each apart, by the
    /// count or age it keeps) is no loss of the table: the next read names
    /// it ([`Read::Trimmed`]).
    async fn holds_now(&self, after: EventId) -> Result<bool, BoxError> {
        let row = self
            .client
            .query_one(
                &format!("SELECT min(id), max(id) FROM {table}", table = self.table),
                &[],
            )
            .await?;
        // And not less than was read: the newest row (which trimming keeps)
        // at or after it, else the table was restored to an earlier state,
        // and its sequence would give ids already given: raised first.
        Ok(
            match (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
                (Some(_), Some(newest)) if (newest as u64) < after.as_u64() => {
                    self.raise_ids(after).await?;
                    false
                }
                (Some(first), Some(_)) => first as u64 <= after.as_u64(),
                _ => after.as_u64() == 0,
            },
        )
    }

    /// Whether the row under `after`, the last one read, is not that row
    /// any more (the table's ids went back to exactly it, as after a
    /// truncation with `RESTART IDENTITY` of a table that held one row);
    /// then its ids are raised.
    async fn replaced(&self, after: EventId) -> Result<bool, BoxError> {
        let Some((id, xmin)) = self
            .last_read
            .filter(|(id, _)| *id as u64 == after.as_u64())
        else {
            return Ok(false);
        };
        let query = format!("SELECT xmin::text::int8 FROM {} WHERE id = $1", self.table);
        let now: Option<i64> = self
            .client
            .query_opt(&query, &[&id])
            .await?
            .map(|row| row.get(0));
        if now.is_some_and(|now| now != xmin) {
            self.raise_ids(after).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Makes the table's next id come after `after` (ids never go back, even
    /// after a restore). Needs `UPDATE` on the id's sequence; without it,
    /// an error saying what to run.
    async fn raise_ids(&self, after: EventId) -> Result<(), BoxError> {
        // Past `after + 1`: the hub counts the id after the last one read
        // as possibly lost, so the next must be above it to be read.
        let after = i64::try_from(after.as_u64()).unwrap_or(i64::MAX - 1) + 1;
        let raised = self
            .client
            .query_one(
                "SELECT setval(pg_get_serial_sequence($1, 'id'), $2::int8)",
                &[&self.table, &after],
            )
            .await;
        match raised {
            Ok(_) => {
                // What a topic read replays must not reach back across it.
                let lost = format!(
                    "INSERT INTO {table}_trimmed (topic, up_to) VALUES ('#lost', $1) \
                     ON CONFLICT (topic) DO UPDATE SET up_to = GREATEST({table}_trimmed.up_to, $1)",
                    table = self.table
                );
                if let Err(e) = self.client.execute(&lost, &[&after]).await {
                    tracing::warn!(error = %e, "backplane: could not mark the ids lost");
                }
                tracing::warn!(
                    table = %self.table,
                    after,
                    "backplane: the table holds less than was read (restored?); its ids now go on after the last one read"
                );
                Ok(())
            }
            Err(e) => Err(format!(
                "the table {table} holds less than was read (restored?) and its ids would \
                 repeat; raise them: ALTER TABLE {table} ALTER COLUMN id RESTART WITH {next} \
                 ({e})",
                table = self.table,
                next = after.saturating_add(1)
            )
            .into()),
        }
    }

    async fn rows_after(&self, after: EventId, limit: usize) -> Result<Vec<Row>, BoxError> {
        let after = i64::try_from(after.as_u64()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&after, &limit];
        let query = self.client.query(&self.after, &params);
        match tokio::time::timeout(STATEMENT, query).await {
            Ok(rows) => Ok(rows?),
            Err(_) => Err("PostgreSQL did not answer a read within 10 s".into()),
        }
    }

    /// The topics trimmed past `after` that this reader has not named yet
    /// (or whose mark rose since), each with its mark.
    async fn trims(&mut self, after: EventId) -> Result<Vec<Trim>, BoxError> {
        let after = i64::try_from(after.as_u64()).unwrap_or(i64::MAX);
        let query = format!(
            "SELECT topic, up_to FROM {marks} WHERE up_to > $1 \
             AND topic <> '{any}' AND topic NOT LIKE '#%'",
            marks = topics::marks(&self.table),
            any = topics::ANY_MARK,
        );
        let rows = self.client.query(&query, &[&after]).await?;
        // What was read has passed the others: they cannot be named again.
        self.named.retain(|_, up_to| *up_to > after);
        let mut trims = Vec::new();
        for row in rows {
            let (topic, up_to): (String, i64) = (row.get(0), row.get(1));
            if self.named.get(&topic).is_some_and(|named| *named >= up_to) {
                continue;
            }
            self.named.insert(topic.clone(), up_to);
            let topic = (topic != topics::DEFAULT_MARK).then_some(topic);
            trims.push(Trim::new(topic, EventId::new(up_to as u64)));
        }
        Ok(trims)
    }

    /// Waits (at most [`BLOCK`]) for a notification; whether one came.
    async fn notified(&self) -> bool {
        tokio::time::timeout(BLOCK, self.notify.notified())
            .await
            .is_ok()
    }
}

impl BackplaneReader for Reader {
    fn tail(&mut self, limit: usize) -> BoxFuture<'_, Result<Tail, BoxError>> {
        Box::pin(async move {
            // The newest id first: a row added after it is in the range read
            // next, or is read later (it is above `last`).
            let last = last_id(&self.client, &self.table).await?;
            let query = format!(
                "SELECT id, topic, event, data, app_id, retry_ms, comment FROM \
                 (SELECT * FROM {} ORDER BY id DESC LIMIT $1) newest ORDER BY id",
                self.table
            );
            let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
            let rows = self.client.query(&query, &[&limit]).await?;
            Ok(Tail::new(rows.iter().filter_map(record).collect(), last))
        })
    }

    fn holds(&mut self, after: EventId) -> BoxFuture<'_, Result<bool, BoxError>> {
        Box::pin(async move { self.holds_now(after).await })
    }

    fn read(&mut self, after: EventId, limit: usize) -> BoxFuture<'_, Result<Read, BoxError>> {
        Box::pin(async move {
            let limit = limit.max(1);
            // Asked once a second even without one, should a notification
            // have been missed.
            let mut notified = self.drained && self.notified().await;
            let mut rows = self.rows_after(after, limit).await?;
            if rows.is_empty() && !self.drained {
                if !self.notified().await {
                    return Ok(Read::records(Vec::new()));
                }
                notified = true;
                rows = self.rows_after(after, limit).await?;
            }
            // A row came, and none after what was read: the table's ids went
            // back (truncated with RESTART IDENTITY, made again, restored),
            // so its new rows would never be read. `holds_now` raises them.
            if rows.is_empty()
                && notified
                && after.as_u64() > 0
                && (!self.holds_now(after).await? || self.replaced(after).await?)
            {
                return Ok(Read::Gap);
            }
            let first = rows.first().and_then(|row| row.get::<_, Option<i64>>(7));
            let past = |id: Option<i64>| id.is_some_and(|id| id as u64 > after.as_u64());
            // No row left at or before what was read: the table may have
            // been emptied or made again, and what it lost cannot be told.
            if after.as_u64() > 0 && past(first) {
                return Ok(Read::Gap);
            }
            // Each topic is trimmed apart: a trim past what was read, not
            // named yet, is named (its topics' rows read here may follow a
            // gap, so none is returned before it).
            let trimmed = rows.first().and_then(|row| row.get::<_, Option<i64>>(9));
            if past(trimmed) {
                let trims = self.trims(after).await?;
                if !trims.is_empty() {
                    self.drained = false;
                    return Ok(Read::Trimmed(trims));
                }
            }
            self.drained = rows.len() < limit;
            if let Some(last) = rows.last() {
                self.last_read = Some((last.get(0), last.get(8)));
            }
            let up_to = rows
                .last()
                .map(|row| EventId::new(row.get::<_, i64>(0) as u64));
            let records = rows.iter().filter_map(record).collect();
            Ok(Read::Records { records, up_to })
        })
    }
}

/// One row as a record; a row that is not a valid event is logged and
/// skipped.
pub(super) fn record(row: &Row) -> Option<Record> {
    let id: i64 = row.get(0);
    let text = |i: usize| row.get::<_, Option<String>>(i);
    let mut event = Event::default();
    if let Some(name) = text(2) {
        event = event.event(name);
    }
    event = event.data(row.get::<_, String>(3));
    if let Some(app_id) = text(4) {
        event = event.id(app_id);
    }
    if let Some(retry) = row.get::<_, Option<i64>>(5) {
        event = event.retry(Duration::from_millis(u64::try_from(retry).unwrap_or(0)));
    }
    if let Some(comment) = text(6) {
        event = event.comment(comment);
    }
    let topic = text(1);
    match Message::new(topic.as_deref(), event) {
        Ok(message) => Some(Record::new(EventId::new(id as u64), message)),
        Err(e) => {
            tracing::warn!(id, error = %e, "backplane: skipping a row that is not a valid event");
            None
        }
    }
}
