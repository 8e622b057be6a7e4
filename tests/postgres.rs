//! The PostgreSQL backplane against a real server: each test starts its own
//! (`initdb` and `pg_ctl` into a temporary directory, on a free port; as the
//! `postgres` user when run as root) and stops it. Needs the server's
//! binaries: `apt-get install postgresql` (`.ci/run` installs them if
//! absent). Run with `cargo test --features axum,postgres-tls,testing --test postgres`
//! (`postgres` without the TLS test).

mod common;
#[path = "faults/postgres.rs"]
mod faults;

use axum::Router;
use common::{
    services::{free_port, Scratch},
    within, Server, Subscriber,
};
use futures_util::StreamExt;
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};
use tower_sse::{testing::Harness, Event, EventId, Hub, PostgresBackplane, SseLayer};

/// A PostgreSQL binary: on the `PATH`, or in Debian's versioned directory.
fn binary(name: &str) -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let debian = || {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin").join(name)))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found.pop()
    };
    on_path
        .or_else(debian)
        .unwrap_or_else(|| panic!("{name} is needed for this test: apt-get install postgresql"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL binary, as `postgres` when we are root (the server
/// refuses to run as root).
fn run(name: &str, args: &[&str]) {
    let binary = binary(name);
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&binary);
        command
    } else {
        Command::new(&binary)
    };
    let status = command
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", binary.display()));
    assert!(status.success(), "{name} {args:?} failed");
}

/// A PostgreSQL server of this test, in a directory of its own; stopped and
/// removed when dropped.
struct Pg {
    dir: Scratch,
    port: u16,
}

impl Pg {
    fn start() -> Pg {
        let dir = Scratch::new("pg");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let pg = Pg {
            dir,
            port: free_port(),
        };
        pg.init();
        pg.start_server();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn init(&self) {
        run(
            "initdb",
            &[
                "-D",
                &self.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Serves TLS with `cert`/`key` (PEM) and accepts only TLS connections
    /// over TCP from then on (restarts the server).
    #[cfg(feature = "postgres-tls")]
    fn require_tls(&self, cert: &str, key: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = Path::new(&self.data()).to_owned();
        let write = |name: &str, contents: &str| {
            let path = data.join(name);
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                let ok = Command::new("chown")
                    .arg("postgres:")
                    .arg(&path)
                    .status()
                    .unwrap();
                assert!(ok.success());
            }
        };
        write("server.crt", cert);
        write("server.key", key);
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        );
        let conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        write("postgresql.conf", &format!("{conf}\nssl = on\n"));
        self.stop();
        self.start_server();
    }

    /// A copy of the data directory as it is now (the server stopped).
    fn snapshot(&self) -> PathBuf {
        let copy = self.dir.path().join("snapshot");
        let ok = Command::new("cp")
            .arg("-a")
            .arg(self.data())
            .arg(&copy)
            .status()
            .unwrap();
        assert!(ok.success());
        copy
    }

    /// Puts `snapshot` back as the data directory (the server stopped): a
    /// restore to an earlier state.
    fn restore(&self, snapshot: &Path) {
        std::fs::remove_dir_all(self.data()).unwrap();
        std::fs::rename(snapshot, self.data()).unwrap();
    }

    /// Stops the server and starts it with an empty database.
    fn lose_data(&self) {
        std::fs::remove_dir_all(Path::new(&self.data())).unwrap();
        self.init();
    }

    fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
            self.port
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} pg_ctl -D {} -m immediate stop >/dev/null 2>&1",
                if is_root() {
                    "runuser -u postgres --"
                } else {
                    ""
                },
                self.data()
            ))
            .env(
                "PATH",
                format!(
                    "{}:/usr/bin:/bin",
                    binary("pg_ctl").parent().unwrap().display()
                ),
            )
            .status();
    }
}

struct PgHarness {
    pg: Pg,
}

impl Harness for PgHarness {
    type Backplane = PostgresBackplane;

    async fn connect(&self) -> PostgresBackplane {
        PostgresBackplane::connect(&self.pg.config()).await.unwrap()
    }

    async fn stop(&self) {
        self.pg.stop();
    }

    async fn start(&self, keep_data: bool) {
        if !keep_data {
            self.pg.lose_data();
        }
        self.pg.start_server();
    }
}

async fn pg_harness() -> PgHarness {
    PgHarness { pg: Pg::start() }
}

tower_sse::backplane_conformance!(pg_harness);

/// Raw connections of another program.
async fn raw(pg: &Pg) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.config(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn concurrent_inserts_on_many_connections_are_read_without_a_skip() {
    let pg = Pg::start();
    let hub = Hub::builder()
        .history(10_000)
        .max_lag(10_000)
        .backplane(PostgresBackplane::connect(&pg.config()).await.unwrap())
        .build();
    let mut records = hub.publisher().subscribe().records().await.unwrap();
    // Eight programs insert at once, each on its own connection: without the
    // table's lock, an id drawn first could commit last and be skipped.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let config = pg.config();
            tokio::spawn(async move {
                let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                for i in 0..100 {
                    client
                        .execute(
                            "INSERT INTO tower_sse_events (data) VALUES ($1)",
                            &[&format!("{w}-{i}")],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let client = raw(&pg).await;
    let all: Vec<i64> = client
        .query("SELECT id FROM tower_sse_events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(all.len(), 800);
    let mut seen = Vec::new();
    while seen.len() < all.len() {
        let record = within("every row", records.next()).await.unwrap().unwrap();
        seen.push(record.id().as_u64() as i64);
    }
    // (Compared without printing 800 ids when they differ.)
    let first_difference = seen.iter().zip(&all).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "every row read, once, in id order");
}

#[tokio::test]
async fn instances_starting_together_on_a_new_database_all_connect() {
    let pg = Pg::start();
    // Eight at once: the schema is made once, not raced (`CREATE OR
    // REPLACE` of one function at once fails).
    let connects: Vec<_> = (0..8)
        .map(|_| {
            let config = pg.config();
            tokio::spawn(async move { PostgresBackplane::connect(&config).await })
        })
        .collect();
    for connect in connects {
        connect.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_role_that_may_only_read_insert_and_delete_is_enough_once_the_schema_exists() {
    let pg = Pg::start();
    let admin = raw(&pg).await;
    // A migration run by the owner, with the SQL the engine gives.
    admin
        .batch_execute(&PostgresBackplane::schema("tower_sse_events").unwrap())
        .await
        .unwrap();
    admin
        .batch_execute(
            "CREATE ROLE app LOGIN; \
             GRANT SELECT, INSERT, DELETE ON tower_sse_events TO app; \
             GRANT SELECT, INSERT, UPDATE ON tower_sse_events_trimmed TO app;",
        )
        .await
        .unwrap();
    let config = pg.config().replace("user=postgres", "user=app");
    let (a, b) = (
        PostgresBackplane::connect(&config).await.unwrap(),
        PostgresBackplane::connect(&config).await.unwrap(),
    );
    crosses(a, b, "least privilege").await;
    // Without the schema, and no right to make it: a clear error.
    admin
        .batch_execute("DROP TABLE tower_sse_events")
        .await
        .unwrap();
    let err = PostgresBackplane::connect(&config).await.unwrap_err();
    assert!(matches!(err, tower_sse::Error::Backplane(_)), "{err:?}");
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test]
async fn a_row_inserted_by_plain_sql_reaches_a_browser_with_its_id() {
    let pg = Pg::start();
    let (_hub, server) = instance(&pg).await;
    let mut browser = Subscriber::connect(&server.url("/events?topic=orders")).await;
    let client = raw(&pg).await;
    let id: i64 = client
        .query_one(
            "INSERT INTO tower_sse_events (topic, event, data) \
             VALUES ('orders', 'paid', 'order 7\nis paid') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let event = browser.next().await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.data.as_str(), event.id.as_str()),
        ("paid", "order 7\nis paid", id.to_string().as_str())
    );
}

#[tokio::test]
async fn each_topic_is_trimmed_to_its_count_and_a_quiet_one_keeps_its_rows() {
    let pg = Pg::start();
    let hub = Hub::builder()
        .history(5)
        .max_lag(5)
        .backplane(PostgresBackplane::connect(&pg.config()).await.unwrap())
        .build();
    let publisher = hub.publisher();
    let quiet = publisher
        .publish_to("quiet", Event::default().data("kept"))
        .unwrap()
        .await
        .unwrap();
    let mut last = EventId::new(0);
    for i in 0..60 {
        last = publisher
            .publish_to("busy", Event::default().data(format!("{i}")))
            .unwrap()
            .await
            .unwrap();
    }
    let client = raw(&pg).await;
    let count = |topic: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT count(*), max(id) FROM tower_sse_events WHERE topic = $1",
                    &[&topic],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, i64>(1) as u64)
        }
    };
    let (busy, newest) = count("busy").await;
    // Trimmed at least every 5 / 4 rows, so at most one trim's worth over.
    assert!((5..=6).contains(&busy), "busy keeps its count: {busy} rows");
    assert_eq!(newest, last.as_u64(), "the newest stays");
    assert_eq!(
        count("quiet").await,
        (1, quiet.as_u64()),
        "a flood elsewhere takes nothing"
    );
    let mark: i64 = client
        .query_one(
            "SELECT up_to FROM tower_sse_events_trimmed WHERE topic = 'busy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(mark as u64 > quiet.as_u64() && (mark as u64) < last.as_u64());
}

#[tokio::test]
async fn instances_that_keep_a_different_history_are_refused_clearly() {
    let pg = Pg::start();
    let build = |events: usize, backplane: PostgresBackplane| {
        Hub::builder()
            .history(events)
            .max_lag(events)
            .backplane(backplane)
            .build()
            .publisher()
    };
    let a = build(5, PostgresBackplane::connect(&pg.config()).await.unwrap());
    tokio::time::timeout(
        Duration::from_secs(10),
        a.watch_backplane().wait_for(|s| s.is_up()),
    )
    .await
    .expect("A reads the table")
    .unwrap();
    let b = build(7, PostgresBackplane::connect(&pg.config()).await.unwrap());
    let error = common::refusal(&b).await;
    assert!(
        error.contains("keeps 5 events of each topic") && error.contains("keeps 7"),
        "{error}"
    );
}

#[tokio::test]
async fn connect_fails_clearly_when_postgres_is_unreachable() {
    let config = format!(
        "host=127.0.0.1 port={} user=postgres connect_timeout=2",
        free_port()
    );
    let err = PostgresBackplane::connect(&config).await.unwrap_err();
    assert!(matches!(err, tower_sse::Error::Backplane(_)), "{err:?}");
    let err = PostgresBackplane::connect(&config)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("backplane"), "{err}");
}

#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn a_database_that_requires_tls_is_reached_with_connect_tls() {
    let pg = Pg::start();
    let (ca, cert, key) = common::certificates();
    pg.require_tls(&cert, &key);
    let config = format!("{} sslmode=require", pg.config());

    let connect = || PostgresBackplane::connect_tls(&config, Some(ca.as_bytes()));
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    crosses(a, b, "over TLS").await;

    // Without TLS, or trusting another CA: a clear error.
    let err = PostgresBackplane::connect(&pg.config()).await.unwrap_err();
    assert!(err.to_string().contains("pg_hba.conf"), "{err}");
    let (other_ca, _, _) = common::certificates();
    let err = PostgresBackplane::connect_tls(&config, Some(other_ca.as_bytes()))
        .await
        .unwrap_err();
    assert!(matches!(err, tower_sse::Error::Backplane(_)), "{err:?}");
    let err = PostgresBackplane::connect_tls(&config, Some(b"not a certificate"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no CA certificate"), "{err}");
}

#[tokio::test]
async fn a_table_name_that_would_not_be_the_same_everywhere_is_refused() {
    // Checked before anything is sent: no server needed.
    let backplane = PostgresBackplane::schema("Events");
    assert!(
        backplane.is_err(),
        "upper case folds differently in LISTEN and pg_notify"
    );
    for table in ["Events", "1events", "", &"e".repeat(49), "my-events"] {
        let err = PostgresBackplane::schema(table).unwrap_err();
        assert!(
            err.to_string().contains("invalid table name"),
            "{table}: {err}"
        );
    }
    assert!(PostgresBackplane::schema(&"e".repeat(48)).is_ok());
}

/// `data` published on an instance on `a` reaches a browser of an
/// instance on `b`, with the id `a` was given.
async fn crosses(a: PostgresBackplane, b: PostgresBackplane, data: &str) {
    let layer_b = SseLayer::new("/events").hub(&Hub::builder().backplane(b).build());
    let publisher_b = layer_b.publisher();
    let server = Server::start(Router::new().layer(layer_b), publisher_b).await;
    let mut browser = Subscriber::connect(&server.url("/events")).await;
    let a = Hub::builder().backplane(a).build();
    let id = a
        .publisher()
        .publish(Event::default().data(data))
        .unwrap()
        .await
        .unwrap();
    let event = browser.next().await.unwrap();
    assert_eq!((event.data.as_str(), event.id), (data, id.to_string()));
}

/// An instance on `pg`'s default table, serving `/events` over TCP.
async fn instance(pg: &Pg) -> (Hub, Server) {
    let hub = Hub::builder()
        .backplane(PostgresBackplane::connect(&pg.config()).await.unwrap())
        .build();
    let layer = SseLayer::new("/events").hub(&hub);
    let server = Server::start(Router::new().layer(layer), hub.publisher()).await;
    (hub, server)
}

/// Publishes `data` on `publisher`, once its hub reads the engine again.
async fn publish_when_up(publisher: &tower_sse::Publisher, data: &str) -> EventId {
    within("the backplane to take an event", async {
        loop {
            let mut status = publisher.watch_backplane();
            status.wait_for(|s| s.is_up()).await.unwrap();
            match publisher.publish(Event::default().data(data)) {
                Ok(published) => match published.await {
                    Ok(id) => return id,
                    Err(tower_sse::Error::Backplane(_)) => continue,
                    Err(e) => panic!("{e}"),
                },
                Err(tower_sse::Error::Backplane(_)) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_database_restored_to_an_earlier_state_is_a_reset_and_ids_never_repeat() {
    let pg = Pg::start();
    let (hub, server) = instance(&pg).await;
    let publisher = hub.publisher();
    let mut browser = Subscriber::connect(&server.url("/events")).await;
    for i in 0..3 {
        publish_when_up(&publisher, &format!("before {i}")).await;
    }
    // Read by the instance before the database stops: an instance that has
    // read nothing of a table cannot tell a restart from a loss (nothing
    // proves no row was trimmed), and resets.
    let mut seen: Vec<String> = browser.take(3).await.into_iter().map(|e| e.id).collect();
    pg.stop();
    let snapshot = pg.snapshot();
    pg.start_server();
    let mut after = Vec::new();
    for i in 0..3 {
        after.push(publish_when_up(&publisher, &format!("after {i}")).await);
    }
    seen.extend(browser.take(3).await.into_iter().map(|e| e.id));
    assert_eq!(
        seen[3..],
        after.iter().map(|id| id.to_string()).collect::<Vec<_>>()[..]
    );

    // Restored to the snapshot: the last three are gone from the database.
    pg.stop();
    pg.restore(&snapshot);
    pg.start_server();

    // The instance notices when it reconnects: its streams end, a browser
    // resuming gets the reset, and new ids go on after every id given.
    assert!(browser.next().await.is_none(), "the stream ended");
    let mut resumed =
        Subscriber::resume(&server.url("/events"), seen.last().map(String::as_str)).await;
    assert_eq!(resumed.next().await.unwrap().event, tower_sse::RESET_EVENT);
    let id = publish_when_up(&publisher, "after the restore").await;
    assert!(id > after[2], "{id} after {}", after[2]);
    let event = resumed.next().await.unwrap();
    assert_eq!(
        (event.data.as_str(), event.id),
        ("after the restore", id.to_string())
    );
}
