//! Keeping each topic apart in the table: trimming each topic by the count
//! and age the hubs keep, the marks of what was trimmed (the table
//! `<table>_trimmed`: per topic, the highest id trimmed), reading a topic
//! back, and the retention every instance sharing the table must agree on.

use std::collections::HashSet;

use super::*;
use crate::backplane::TopicRead;

/// The mark of the default topic's rows (no topic is empty).
pub(super) const DEFAULT_MARK: &str = "";
/// The mark of every trim, whatever its topic (no topic has a `*`): a
/// reader past it missed nothing.
pub(super) const ANY_MARK: &str = "*";
/// Where the retention the instances agreed on is kept (no topic has a `#`).
const PER_TOPIC: &str = "#per_topic";
const AGE_MS: &str = "#age_ms";
/// The highest id that may have been lost when the table's ids went back
/// (truncated, restored): nothing before it is replayed.
const LOST: &str = "#lost";

/// The marks table of `table`.
pub(super) fn marks(table: &str) -> String {
    format!("{table}_trimmed")
}

/// The SQL that makes the marks table and the index a topic is read by.
pub(super) fn schema(table: &str) -> String {
    let marks = marks(table);
    format!(
        "CREATE TABLE IF NOT EXISTS {marks} (topic text PRIMARY KEY, up_to bigint NOT NULL);
        CREATE INDEX IF NOT EXISTS {table}_topic ON {table} (topic, id);"
    )
}

/// `delete` (a `DELETE … ` of rows of `table`, without `RETURNING`), and
/// the marks of what it deleted raised, in one statement.
fn marked(table: &str, delete: &str) -> String {
    let marks = marks(table);
    format!(
        "WITH gone AS ({delete} RETURNING topic, id), \
         raised AS (SELECT COALESCE(topic, '{DEFAULT_MARK}') AS topic, max(id) AS up_to \
            FROM gone GROUP BY topic \
            UNION ALL SELECT '{ANY_MARK}', max(id) FROM gone HAVING count(*) > 0) \
         INSERT INTO {marks} (topic, up_to) SELECT topic, up_to FROM raised \
         ON CONFLICT (topic) DO UPDATE SET up_to = GREATEST({marks}.up_to, EXCLUDED.up_to)"
    )
}

/// The topics appended to since the last trim (`None`: the default one).
#[derive(Default)]
pub(super) struct Appended {
    topics: HashSet<String>,
    default: bool,
}

impl Appended {
    pub(super) fn add(&mut self, messages: &[Message]) {
        for message in messages {
            match message.topic() {
                None => self.default = true,
                Some(topic) => {
                    if !self.topics.contains(topic) {
                        self.topics.insert(topic.to_owned());
                    }
                }
            }
        }
    }
}

impl PostgresBackplane {
    /// Trims each topic of `appended` to `retention.per_topic` rows, and
    /// every row older than `retention.age` (the table's newest row always
    /// stays), raising the marks of what went.
    pub(super) async fn trim(&self, client: &Client, retention: Retention, appended: Appended) {
        let table = &self.inner.table;
        let keep = i64::try_from(retention.per_topic.max(1)).unwrap_or(i64::MAX);
        let topics: Vec<String> = appended.topics.into_iter().collect();
        let by_count = marked(
            table,
            &format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM (SELECT id, row_number() \
                 OVER (PARTITION BY topic ORDER BY id DESC) AS n FROM {table} \
                 WHERE topic = ANY($2::text[]) OR ($3 AND topic IS NULL)) r WHERE n > $1)"
            ),
        );
        if let Err(e) = client
            .execute(&by_count, &[&keep, &topics, &appended.default])
            .await
        {
            tracing::warn!(error = %e, "backplane: could not trim the table");
        }
        if let Some(age) = retention.age {
            let by_age = marked(
                table,
                &format!(
                    "DELETE FROM {table} WHERE created_at < now() - $1::float8 * interval '1 second' \
                     AND id < (SELECT max(id) FROM {table})"
                ),
            );
            if let Err(e) = client.execute(&by_age, &[&age.as_secs_f64()]).await {
                tracing::warn!(error = %e, "backplane: could not trim the table by age");
            }
        }
    }

    /// Records the retention of this instance's hubs in the marks table if
    /// none is there, else refuses one that differs: instances sharing a
    /// table must keep the same history, or one would trim what another
    /// still replays.
    pub(super) async fn agree(&self, client: &Client) -> Result<(), BoxError> {
        let Some(retention) = *self
            .inner
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        else {
            return Ok(());
        };
        let marks = marks(&self.inner.table);
        let per_topic = i64::try_from(retention.per_topic).unwrap_or(i64::MAX);
        let age_ms = retention
            .age
            .map_or(-1, |age| i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        let row = client
            .query_one(
                &format!(
                    "WITH mine AS (INSERT INTO {marks} (topic, up_to) VALUES ('{PER_TOPIC}', $1), \
                     ('{AGE_MS}', $2) ON CONFLICT (topic) DO NOTHING RETURNING topic) \
                     SELECT (SELECT up_to FROM {marks} WHERE topic = '{PER_TOPIC}'), \
                     (SELECT up_to FROM {marks} WHERE topic = '{AGE_MS}')"
                ),
                &[&per_topic, &age_ms],
            )
            .await?;
        // Made by this statement: its snapshot does not see them yet.
        let agreed = (
            row.get::<_, Option<i64>>(0).unwrap_or(per_topic),
            row.get::<_, Option<i64>>(1).unwrap_or(age_ms),
        );
        if agreed != (per_topic, age_ms) {
            let age = |ms: i64| match ms {
                -1 => "no age limit".to_owned(),
                ms => format!("an age limit of {ms} ms"),
            };
            return Err(format!(
                "the table {table} keeps {} events of each topic and {}; this instance's hub \
                 keeps {per_topic} and {}: every instance sharing a table must keep the same \
                 history (`HubBuilder::history`, `history_rule`, `history_ttl`, `max_lag`). \
                 To change it for all, stop them and run: DELETE FROM {marks} WHERE topic LIKE '#%'",
                agreed.0,
                age(agreed.1),
                age(age_ms),
                table = self.inner.table,
            )
            .into());
        }
        Ok(())
    }

    /// The rows of `topic` after `after` (at most `limit`), with the mark of
    /// that topic and the table's oldest id, read in one snapshot.
    pub(super) async fn read_topic_rows(
        &self,
        topic: Option<&str>,
        after: EventId,
        limit: usize,
    ) -> Result<TopicRead, BoxError> {
        let client = self.client().await?;
        let table = &self.inner.table;
        let marks = marks(table);
        let rows_of = match topic {
            None => "topic IS NULL",
            Some(_) => "topic = $1",
        };
        let query = format!(
            "WITH m AS (SELECT GREATEST((SELECT up_to FROM {marks} WHERE topic = $1), \
                (SELECT up_to FROM {marks} WHERE topic = '{LOST}')) AS up_to, \
                (SELECT min(id) FROM {table}) AS first) \
             SELECT e.id, e.topic, e.event, e.data, e.app_id, e.retry_ms, e.comment, \
                m.up_to, m.first FROM m LEFT JOIN LATERAL \
                (SELECT * FROM {table} WHERE {rows_of} AND id > $2 ORDER BY id LIMIT $3) e ON true"
        );
        let key = topic.unwrap_or(DEFAULT_MARK);
        let after = i64::try_from(after.as_u64()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&key, &after, &limit];
        let read = client.client.query(&query, &params);
        let rows = match tokio::time::timeout(STATEMENT, read).await {
            Ok(rows) => rows?,
            Err(_) => return Err("PostgreSQL did not answer a read within 10 s".into()),
        };
        let (up_to, first) = rows.first().map_or((None, None), |row| {
            (row.get::<_, Option<i64>>(7), row.get::<_, Option<i64>>(8))
        });
        // Nothing of the topic trimmed after `after`, and a row at or
        // before it still there (else the table may have been made again).
        let held = up_to.is_none_or(|up_to| up_to <= after)
            && (first.is_some_and(|first| first <= after) || (first.is_none() && after == 0));
        let records = rows
            .iter()
            .filter(|row| row.get::<_, Option<i64>>(0).is_some())
            .filter_map(reader::record)
            .collect();
        Ok(TopicRead::new(records, held))
    }
}
