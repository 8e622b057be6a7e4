//! [`PostgresBackplane`]: many instances, one stream, through a table of the
//! PostgreSQL database the app already has.
//!
//! Every event is a row; the table's identity column gives its global id.
//! `LISTEN`/`NOTIFY` only wakes the readers (a notification carries nothing:
//! readers read the rows). The known trap of sequences — a transaction that
//! drew id 10 committing after the one that drew 11, so a reader past 11
//! skips 10 forever — is closed by the table itself: a statement-level
//! `BEFORE INSERT` trigger takes a transaction-scoped advisory lock before
//! any id is drawn, so inserts into the table (the engine's, or any other
//! program's) commit one at a time, in id order.
//!
//! The schema, created by the engine when it is missing
//! (`tower_sse_events` unless [`PostgresBackplane::table`] names another;
//! PostgreSQL 14 or later). Once it exists — made by the engine or by a
//! migration that runs [`PostgresBackplane::schema`] — the app's role needs
//! only `SELECT`, `INSERT` and `DELETE` on the table, and `SELECT`,
//! `INSERT` and `UPDATE` on `<table>_trimmed`:
//!
//! ```sql
//! CREATE TABLE tower_sse_events (
//!     id bigint GENERATED ALWAYS AS IDENTITY (START WITH <µs since 1970 at creation>) PRIMARY KEY,
//!     topic text,        -- NULL: every subscriber
//!     event text,        -- the event name
//!     data text NOT NULL,
//!     app_id text,       -- the app's own id (Event::id)
//!     retry_ms bigint,
//!     comment text,
//!     created_at timestamptz NOT NULL DEFAULT now()
//! );
//! -- plus the two statement triggers: the advisory lock, and pg_notify
//! CREATE TABLE tower_sse_events_trimmed (topic text PRIMARY KEY, up_to bigint NOT NULL);
//! CREATE INDEX tower_sse_events_topic ON tower_sse_events (topic, id);
//! ```
//!
//! So a SQL trigger or a worker in any language publishes with a plain
//! `INSERT INTO tower_sse_events (topic, event, data) VALUES (…)`. Ids start
//! at the table's creation time in microseconds, so a table made again after
//! a loss numbers above every id a browser kept. Each topic is trimmed apart
//! to the history the hubs keep (its newest rows by count, none older than
//! the age; the table's newest row always stays) once a second or every
//! quarter of a topic's count, by the instance that appends, in a statement
//! apart from the inserts, so trimming never holds up a publisher; a flood
//! on one topic never costs a quiet one its rows. `<table>_trimmed` marks
//! the highest id trimmed of each topic (and of any: a reader behind it
//! missed rows), and keeps the count and age every instance must agree on.
//!
//! Connections are plain with [`PostgresBackplane::connect`], TLS (rustls)
//! with `PostgresBackplane::connect_tls` (feature `postgres-tls`).

use std::{
    future::poll_fn,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};
use tokio_postgres::{
    tls::{MakeTlsConnect, TlsConnect},
    AsyncMessage, Client, NoTls, Socket, Statement,
};

mod connection;
mod reader;
mod topics;

use connection::open;
#[cfg(feature = "postgres-tls")]
use connection::rustls_connector;

use reader::Reader;

use super::{Backplane, BackplaneReader, BoxFuture, Retention, TopicRead};
use crate::{
    error::{BoxError, Error},
    event::EventId,
    record::Message,
};

/// The table used unless [`PostgresBackplane::table`] names another.
const DEFAULT_TABLE: &str = "tower_sse_events";
/// How long a read waits for a notification when there is nothing to read.
const BLOCK: Duration = Duration::from_secs(1);
/// How long connecting may take unless the config sets `connect_timeout`.
const CONNECT: Duration = Duration::from_secs(5);
/// How long sent data may go unacknowledged before the kernel drops the
/// connection (`TCP_USER_TIMEOUT`, Linux), unless the config sets it.
const UNACKNOWLEDGED: Duration = Duration::from_secs(10);
/// How long one statement (an append, a read) may take before its
/// connection is given up and made again.
const STATEMENT: Duration = Duration::from_secs(10);
/// How often, at most, the appending instance trims the table.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// A PostgreSQL backplane: several instances of an app share one event
/// stream through a table of their database, with the same ids, history and
/// resume guarantees as a single instance.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_sse::Error> {
/// use tower_sse::{Event, Hub, PostgresBackplane, SseLayer};
///
/// let backplane = PostgresBackplane::connect("host=127.0.0.1 user=app dbname=app").await?;
/// let hub = Hub::builder().history(4096).backplane(backplane).build();
/// let layer = SseLayer::new("/events").hub(&hub);
/// let id = layer.publisher().publish(Event::default().data("hello"))?.await?;
/// # let _ = id; Ok(()) }
/// ```
///
/// It keeps one connection for publishing (reconnected when it breaks) and
/// each hub's reader one more, which `LISTEN`s. See the
/// [module documentation](self) for the table and how ordering holds.
/// [`connect`](Self::connect) makes connections without TLS; with the
/// `postgres-tls` feature, [`connect_tls`](Self::connect_tls) makes them with
/// TLS (rustls), as managed databases ask.
#[derive(Clone)]
pub struct PostgresBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    config: String,
    tls: Tls,
    table: String,
    publish: tokio::sync::Mutex<Option<Arc<Publishing>>>,
    /// What the hubs that use it keep (the largest asked), once one asked.
    retention: Mutex<Option<Retention>>,
    /// When the table was last trimmed, how many rows went in since, and
    /// to which topics.
    trimmed: Mutex<(Option<Instant>, usize, topics::Appended)>,
}

/// How connections are made.
#[derive(Clone)]
enum Tls {
    None,
    #[cfg(feature = "postgres-tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// The publishing connection and its statement.
struct Publishing {
    client: Client,
    /// One multi-row insert of a batch, in the batch's order.
    insert: Statement,
}

impl std::fmt::Debug for PostgresBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackplane")
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

impl PostgresBackplane {
    /// Connects with `config` (a `tokio-postgres` connection string:
    /// `host=… user=… dbname=…` or `postgresql://…`) and creates the table
    /// if it is missing. Fails with [`Error::Backplane`] when the database
    /// cannot be reached now.
    pub async fn connect(config: &str) -> Result<PostgresBackplane, Error> {
        PostgresBackplane::connect_to(config, Tls::None, DEFAULT_TABLE).await
    }

    /// Connects as [`connect`](Self::connect) does, over TLS (rustls),
    /// trusting the CA certificates in `ca_pem` (PEM; a managed database's
    /// bundle), or the webpki roots when `None`. The server's certificate
    /// must name the `host` of `config`. Put `sslmode=require` in `config`:
    /// without it, a server that offers no TLS is used in the clear.
    #[cfg(feature = "postgres-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres-tls")))]
    pub async fn connect_tls(
        config: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<PostgresBackplane, Error> {
        let tls = rustls_connector(ca_pem).map_err(Error::Backplane)?;
        PostgresBackplane::connect_to(config, Tls::Rustls(tls), DEFAULT_TABLE).await
    }

    /// The same backplane on another table (created if missing): instances
    /// that share a stream share a table; apps sharing a database use
    /// different tables. A table name is a lower-case letter, then lower-case
    /// letters, digits and `_`, at most 48 bytes (so that it is the same
    /// name in SQL, in `LISTEN` and in the names derived from it); any other
    /// name is [`Error::Backplane`] before anything is sent.
    pub async fn table(self, table: &str) -> Result<PostgresBackplane, Error> {
        PostgresBackplane::connect_to(&self.inner.config, self.inner.tls.clone(), table).await
    }

    /// The SQL that makes the table `table` and its triggers (what the
    /// engine runs when they are missing), for a migration run by a role
    /// allowed to create them; the app's role then needs only `SELECT`,
    /// `INSERT` and `DELETE` on the table, and `SELECT`, `INSERT` and
    /// `UPDATE` on `<table>_trimmed`. The ids start at the time the SQL
    /// runs (the server's clock, in microseconds), so the same SQL replayed
    /// after a loss still numbers above every earlier id.
    pub fn schema(table: &str) -> Result<String, Error> {
        check_table(table)?;
        Ok(schema(table))
    }

    async fn connect_to(config: &str, tls: Tls, table: &str) -> Result<PostgresBackplane, Error> {
        check_table(table)?;
        let backplane = PostgresBackplane {
            inner: Arc::new(Inner {
                config: config.to_owned(),
                tls,
                table: table.to_owned(),
                publish: tokio::sync::Mutex::new(None),
                retention: Mutex::new(None),
                trimmed: Mutex::new((None, 0, topics::Appended::default())),
            }),
        };
        // Bounded, handshake and schema included: a server that accepts and
        // then stalls is an error at start, not a hang.
        match tokio::time::timeout(STATEMENT, backplane.client()).await {
            Ok(client) => client.map_err(Error::Backplane)?,
            Err(_) => {
                return Err(Error::Backplane(
                    "PostgreSQL did not answer within 10 s (connecting, checking the table)".into(),
                ))
            }
        };
        Ok(backplane)
    }

    /// The publishing connection, made again when it broke.
    async fn client(&self) -> Result<Arc<Publishing>, BoxError> {
        let mut publish = self.inner.publish.lock().await;
        if let Some(publishing) = publish.as_ref().filter(|p| !p.client.is_closed()) {
            return Ok(publishing.clone());
        }
        let table = &self.inner.table;
        let client = open(&self.inner.config, &self.inner.tls, table, None).await?;
        // Prepared once per connection: each append is one round trip.
        let insert = client
            .prepare(&format!(
                "INSERT INTO {table} (topic, event, data, app_id, retry_ms, comment) \
                 SELECT t, e, d, i, r, c FROM unnest($1::text[], $2::text[], $3::text[], \
                 $4::text[], $5::int8[], $6::text[]) WITH ORDINALITY AS u(t, e, d, i, r, c, n) \
                 ORDER BY n RETURNING id"
            ))
            .await?;
        let publishing = Arc::new(Publishing { client, insert });
        *publish = Some(publishing.clone());
        Ok(publishing)
    }

    /// Inserts `messages` in one statement; their ids, in order.
    async fn insert(&self, messages: &[Message]) -> Result<Vec<EventId>, BoxError> {
        let client = self.client().await?;
        let column = |f: &dyn Fn(&Message) -> Option<String>| -> Vec<Option<String>> {
            messages.iter().map(f).collect()
        };
        let topics = column(&|m| m.topic().map(str::to_owned));
        let events = column(&|m| m.event().map(str::to_owned));
        let data: Vec<String> = messages.iter().map(|m| m.data().to_owned()).collect();
        let app_ids = column(&|m| m.app_id().map(str::to_owned));
        let comments = column(&|m| m.comment().map(str::to_owned));
        let retries: Vec<Option<i64>> = messages
            .iter()
            .map(|m| {
                m.retry()
                    .map(|r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX))
            })
            .collect();
        // One statement: the trigger's lock is held until it commits.
        // Rows go in in the batch's order, so the ids, sorted, are theirs.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&topics, &events, &data, &app_ids, &retries, &comments];
        let rows = match client.client.query(&client.insert, &params).await {
            Ok(rows) => rows,
            Err(e) => {
                // Made again on the next call: the table may have been
                // dropped and made again, which its prepared insert never
                // sees (it would fail on this connection for good).
                self.inner.publish.lock().await.take();
                return Err(e.into());
            }
        };
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort_unstable();
        // Trimming goes on apart, on the same connection, so the answer
        // does not wait for it.
        if let Some((retention, appended)) = self.trim_due(messages) {
            let backplane = self.clone();
            tokio::spawn(async move { backplane.trim(&client.client, retention, appended).await });
        }
        Ok(ids.into_iter().map(|id| EventId::new(id as u64)).collect())
    }

    /// Whether the table is due a trim after `messages` went in (once per
    /// [`TRIM_EVERY`], or sooner when a quarter of a topic's count went
    /// in), to what, and which topics went in since the last one.
    fn trim_due(&self, messages: &[Message]) -> Option<(Retention, topics::Appended)> {
        let retention = (*self
            .inner
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner()))?;
        let mut trimmed = self.inner.trimmed.lock().unwrap_or_else(|e| e.into_inner());
        trimmed.1 += messages.len();
        trimmed.2.add(messages);
        let due = trimmed.0.is_none_or(|at| at.elapsed() >= TRIM_EVERY)
            || trimmed.1 >= (retention.per_topic / 4).max(1);
        if !due {
            return None;
        }
        let appended = std::mem::take(&mut trimmed.2);
        *trimmed = (Some(Instant::now()), 0, topics::Appended::default());
        Some((retention, appended))
    }
}

/// The longest table name: its triggers' names (`<table>_notify`) stay
/// within PostgreSQL's 63 bytes.
const MAX_TABLE: usize = 48;

/// A table name used unquoted, the same in every statement (`LISTEN`,
/// `pg_notify`, trigger names): a lower-case letter, then lower-case
/// letters, digits and `_`, at most [`MAX_TABLE`] bytes.
fn check_table(table: &str) -> Result<(), Error> {
    let valid = table.len() <= MAX_TABLE
        && table.starts_with(|c: char| c.is_ascii_lowercase())
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(Error::Backplane(
            format!(
                "invalid table name {table:?}: a lower-case letter, then lower-case \
                 letters, digits and `_`, at most {MAX_TABLE} bytes"
            )
            .into(),
        ));
    }
    Ok(())
}

/// The table, its lock and its notification, created if missing. The ids
/// start at the server's clock when the table is made, in microseconds.
fn schema(table: &str) -> String {
    format!(
        "DO $tower_sse$ BEGIN
            EXECUTE format('CREATE TABLE IF NOT EXISTS {table} (
                id bigint GENERATED ALWAYS AS IDENTITY (START WITH %s) PRIMARY KEY,
                topic text,
                event text,
                data text NOT NULL,
                app_id text,
                retry_ms bigint,
                comment text,
                created_at timestamptz NOT NULL DEFAULT now()
            )', floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
        END $tower_sse$;
        CREATE OR REPLACE FUNCTION {table}_order() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock(hashtext('{table}')); RETURN NULL; END $$;
        CREATE OR REPLACE TRIGGER {table}_order BEFORE INSERT ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION {table}_order();
        CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('{table}', ''); RETURN NULL; END $$;
        CREATE OR REPLACE TRIGGER {table}_notify AFTER INSERT ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();
        {}",
        topics::schema(table)
    )
}

impl Backplane for PostgresBackplane {
    fn retain(&self, retention: Retention) {
        let mut kept = self
            .inner
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *kept = Some(kept.map_or(retention, |kept| kept.covering(retention)));
    }

    fn append<'a>(
        &'a self,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<Vec<EventId>, BoxError>> {
        Box::pin(async move {
            // Connecting again included: a server that stalls mid-handshake
            // (a half-open link) must not hold the publishers longer.
            match tokio::time::timeout(STATEMENT, self.insert(messages)).await {
                Ok(ids) => ids,
                Err(_) => {
                    // Its answer may still come: the connection is not
                    // used again (the events may have been kept).
                    self.inner.publish.lock().await.take();
                    Err("PostgreSQL did not answer the insert within 10 s".into())
                }
            }
        })
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BoxError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let id = last_id(&client.client, &self.inner.table).await;
            if id.is_err() {
                // As after a failed insert: made again on the next call.
                self.inner.publish.lock().await.take();
            }
            id
        })
    }

    fn reader(&self) -> BoxFuture<'_, Result<Box<dyn BackplaneReader>, BoxError>> {
        Box::pin(async move {
            let notify = Arc::new(Notify::new());
            let table = self.inner.table.clone();
            let client = open(
                &self.inner.config,
                &self.inner.tls,
                &table,
                Some(notify.clone()),
            )
            .await?;
            self.agree(&client).await?;
            client.batch_execute(&format!("LISTEN {table}")).await?;
            // The rows after an id, each with the table's oldest id in the
            // same snapshot (if that is at or before the id, the table was
            // not made again after it), the highest id any trim took (if
            // that is at or before the id, nothing after it had been trimmed
            // when these were read; else the reader asks which topics were),
            // and the transaction that inserted it (to tell a row from
            // another one under the same id, once ids went back).
            let after = client
                .prepare(&format!(
                    "SELECT id, topic, event, data, app_id, retry_ms, comment, \
                     (SELECT min(id) FROM {table}), xmin::text::int8, \
                     (SELECT up_to FROM {table}_trimmed WHERE topic = '*') FROM {table} \
                     WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .await?;
            Ok(Box::new(Reader::new(client, table, notify, after)) as Box<dyn BackplaneReader>)
        })
    }

    fn read_topic<'a>(
        &'a self,
        topic: Option<&'a str>,
        after: EventId,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<TopicRead>, BoxError>> {
        Box::pin(async move { Ok(Some(self.read_topic_rows(topic, after, limit).await?)) })
    }
}

async fn last_id(client: &Client, table: &str) -> Result<Option<EventId>, BoxError> {
    let row = client
        .query_one(&format!("SELECT max(id) FROM {table}"), &[])
        .await?;
    Ok(row
        .get::<_, Option<i64>>(0)
        .map(|id| EventId::new(id as u64)))
}
