//! The hub's side of an engine ([`Backplane`]): publishing through it (an
//! outbox drained by the appender task, in order, in batches) and reading
//! its log into the hub (the reader task), with reconnection, catch-up and
//! gap detection. It knows engines only through the trait.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::{
    outbox::{shared, Outbox},
    start::Resume,
    state::Core,
};
mod topics;

use crate::{
    backplane::{Backplane, BackplaneReader, Read},
    error::{BoxError, Error},
    event::EventId,
    observe,
    published::Published,
    record::Message,
};

/// How long the engine's newest id, once asked, is reused.
const NEWEST_FOR: Duration = Duration::from_millis(100);
/// Records read in one call, at most; and about how many bytes (at most
/// this many of the hub's largest events, at least one).
const READ_BATCH: usize = 1000;
const READ_BYTES: usize = 16 * 1024 * 1024;
/// How long any call to the engine may take (connecting and loading the
/// history, one read) before it counts as failed.
const ENGINE_BOUND: Duration = Duration::from_secs(15);
/// How long a new subscription waits for the history to load or for the
/// id it resumes from to arrive (the reader is normally milliseconds behind).
const CATCH_UP: Duration = Duration::from_secs(2);

/// The state of a hub's backplane, as the hub's reader of the engine's log
/// last saw it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BackplaneStatus {
    /// The hub has no backplane.
    None,
    /// Not connected yet (or the history is loading).
    Connecting,
    /// The hub reads the engine's log.
    Up,
    /// The hub lost the engine's log with this error and is reconnecting;
    /// publishing is refused until it reads the log again.
    Down(Arc<dyn std::error::Error + Send + Sync>),
}

impl BackplaneStatus {
    /// Whether the hub reads the engine's log now (what a readiness check
    /// wants to know); `true` without a backplane.
    pub fn is_up(&self) -> bool {
        matches!(self, BackplaneStatus::None | BackplaneStatus::Up)
    }
}

pub(crate) struct Replica {
    backplane: Arc<dyn Backplane>,
    outbox: Outbox,
    status: watch::Sender<BackplaneStatus>,
    /// Whether the reader has loaded the history.
    loaded: watch::Sender<bool>,
    appender: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// The engine's newest id as last asked (for clients resuming from an
    /// app's id), and when: one request at a time, reused briefly.
    newest: tokio::sync::Mutex<Option<(Instant, Option<EventId>)>>,
}

impl Replica {
    pub(crate) fn new(backplane: Arc<dyn Backplane>, backlog: usize) -> Arc<Replica> {
        Arc::new(Replica {
            backplane,
            outbox: Outbox::new(backlog),
            status: watch::Sender::new(BackplaneStatus::Connecting),
            loaded: watch::Sender::new(false),
            appender: Mutex::default(),
            reader: Mutex::default(),
            newest: tokio::sync::Mutex::new(None),
        })
    }

    pub(crate) fn status(&self) -> BackplaneStatus {
        self.status.borrow().clone()
    }

    pub(crate) fn watch_status(&self) -> watch::Receiver<BackplaneStatus> {
        self.status.subscribe()
    }

    fn set_status(&self, status: BackplaneStatus) {
        observe::backplane_up(status.is_up());
        self.status.send_replace(status);
    }

    /// Starts the appender and the reader, each if it is not running (the
    /// runtime it ran on may have gone) and a runtime is at hand.
    pub(crate) fn ensure_running(self: &Arc<Self>, core: &Arc<Core>) {
        if core.is_closed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let start = |slot: &Mutex<Option<JoinHandle<()>>>, spawn: &dyn Fn() -> JoinHandle<()>| {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.as_ref().is_none_or(JoinHandle::is_finished) {
                *slot = Some(spawn());
            }
        };
        start(&self.appender, &|| {
            let (core, replica) = (core.clone(), self.clone());
            runtime.spawn(async move { replica.outbox.drain(&core, &*replica.backplane).await })
        });
        start(&self.reader, &|| {
            runtime.spawn(read(core.clone(), self.clone()))
        });
    }

    /// Queues `message` for the engine; the answer comes through the
    /// returned [`Published`].
    pub(crate) fn publish(&self, core: &Core, message: Message) -> Result<Published, Error> {
        core.admit(&message)?;
        if let BackplaneStatus::Down(error) = &*self.status.borrow() {
            return Err(shared(error));
        }
        self.outbox.push(message)
    }

    /// Waits (at most [`CATCH_UP`]) until the history is loaded and, when a
    /// client resumes from an id this instance has not read yet (seen on
    /// another instance), until it has: a number above the newest read here
    /// is waited for; an app's id not in the history, by reading up to the
    /// engine's newest id at this moment (one round trip). Then replays
    /// from the engine into memory what a resume after that id needs of
    /// `topics` and the memory no longer holds ([`Replica::fill`]).
    pub(crate) async fn caught_up(&self, core: &Core, topics: &[&str], resume: &Resume) {
        self.wait_caught_up(core, resume).await;
        if let Resume::After(last) = resume {
            if let Ok(after) = last.parse::<u64>() {
                let fill = self.fill(core, topics, after);
                if tokio::time::timeout(ENGINE_BOUND, fill).await.is_err() {
                    tracing::debug!("backplane: replaying from the engine took too long");
                }
            }
        }
    }

    async fn wait_caught_up(&self, core: &Core, resume: &Resume) {
        let (mut loaded, mut newest) = (self.loaded.subscribe(), core.watch_newest());
        let mut wanted = None;
        let caught_up = tokio::time::timeout(CATCH_UP, async {
            loaded.wait_for(|l| *l).await.ok();
            let Resume::After(last) = resume else {
                return;
            };
            wanted = match last.parse::<u64>() {
                Ok(id) => Some(id),
                Err(_) if core.knows(last) => None,
                Err(_) => self.newest_id().await.ok().flatten().map(EventId::as_u64),
            };
            if let Some(id) = wanted {
                newest.wait_for(|n| *n >= id).await.ok();
            }
        })
        .await;
        // Still behind an id a client saw on another instance (this one's
        // reader is reconnecting after the engine went away, say). A reset
        // now would start the client at this instance's newest id, below
        // its own, and hand it again every event up to it. So unless the
        // engine says it does not hold that id (it lost it: then the reset
        // is the truth), the reader is waited for, longer: an engine that
        // holds it, and one that cannot be asked now, alike.
        let Some(id) = wanted.filter(|_| caught_up.is_err()) else {
            return;
        };
        if *newest.borrow() >= id {
            return;
        }
        let engine = tokio::time::timeout(CATCH_UP, self.newest_id()).await;
        if let Ok(Ok(held)) = &engine {
            if held.is_none_or(|n| n.as_u64() < id) {
                return;
            }
        }
        let _ = tokio::time::timeout(ENGINE_BOUND, newest.wait_for(|n| *n >= id)).await;
    }
}

/// The reader: keeps the hub's history equal to the tail of the engine's
/// log, until the hub closes.
async fn read(core: Arc<Core>, replica: Arc<Replica>) {
    // Id of the last record applied (or read past), and whether a history
    // was loaded.
    let mut last = EventId::new(0);
    let mut loaded = false;
    let mut failures = 0u32;
    // Set by a loss that left the engine no trace of its log (see
    // `catch_up`): the first record read then marks every id below it lost.
    let mut floor_pending = false;
    while !core.is_closed() {
        let connect = async {
            let mut reader = replica.backplane.reader().await?;
            let from = if loaded { From::Reconnect } else { From::Start };
            let (caught_up, traceless) = catch_up(&core, &mut *reader, &mut last, from).await?;
            if let Some(traceless) = traceless {
                floor_pending = traceless;
            }
            Ok::<_, BoxError>((reader, caught_up))
        };
        let connect = bounded(connect, "connect and catch up");
        let connected = tokio::select! {
            connected = connect => connected,
            _ = core.closed() => return,
        };
        let mut reader = match connected {
            Ok((reader, caught_up)) => {
                tracing::info!(
                    caught_up,
                    recovered = failures > 0,
                    "backplane: reading the log"
                );
                if failures > 0 {
                    observe::backplane_reconnect();
                }
                loaded = true;
                replica.loaded.send_replace(true);
                replica.set_status(BackplaneStatus::Up);
                reader
            }
            Err(e) => {
                let delay = backoff(failures);
                tracing::warn!(error = %e, ?delay, "backplane: cannot read the log; retrying");
                replica.set_status(BackplaneStatus::Down(Arc::from(e)));
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = core.closed() => return,
                }
                continue;
            }
        };
        // Set by a reload after a gap, cleared by progress: a second gap
        // before any is an engine fault, retried with backoff.
        let mut reloaded = false;
        loop {
            let read = async {
                match reader.read(last, read_batch(&core)).await? {
                    Read::Records { records, up_to } => {
                        reloaded &= records.is_empty() && up_to.is_none();
                        if let Some(first) = records.first().filter(|_| floor_pending) {
                            core.lost_below(first.id().as_u64());
                            floor_pending = false;
                        }
                        for record in records {
                            if record.id() > last {
                                last = record.id();
                                core.insert(record);
                            }
                        }
                        last = last.max(up_to.unwrap_or(last));
                    }
                    Read::Gap if reloaded => {
                        return Err("the engine reports a gap again right after a reload".into());
                    }
                    Read::Gap => {
                        let (_, traceless) =
                            catch_up(&core, &mut *reader, &mut last, From::Gap).await?;
                        floor_pending = traceless == Some(true);
                        reloaded = true;
                    }
                    // Before any later event of those topics is applied: a
                    // stream of one never goes on past the trim.
                    Read::Trimmed(trims) => {
                        tracing::info!(
                            topics = trims.len(),
                            "backplane: topics were trimmed past this instance; their streams resume"
                        );
                        core.trimmed(&trims);
                    }
                }
                Ok::<_, BoxError>(())
            };
            let read = bounded(read, "read its log");
            let read = tokio::select! {
                read = read => read,
                _ = core.closed() => return,
            };
            match read {
                Ok(()) => {
                    failures = 0;
                    if !matches!(*replica.status.borrow(), BackplaneStatus::Up) {
                        replica.set_status(BackplaneStatus::Up);
                    }
                }
                Err(e) => {
                    // The first retry at once (a dropped connection), then
                    // with backoff (an engine failing after every connect).
                    let delay = (failures > 0).then(|| backoff(failures - 1));
                    tracing::warn!(error = %e, ?delay, "backplane: lost the log; reconnecting");
                    replica.set_status(BackplaneStatus::Down(Arc::from(e)));
                    failures += 1;
                    if let Some(delay) = delay {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = core.closed() => return,
                        }
                    }
                    break;
                }
            }
        }
    }
}

/// `call` to the engine, failing after [`ENGINE_BOUND`]: an engine that
/// does not answer (a half-open link, a server stalled mid-handshake) is
/// one that failed, whatever its own timeouts.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, BoxError>>,
    what: &str,
) -> Result<T, BoxError> {
    match tokio::time::timeout(ENGINE_BOUND, call).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("the engine did not {what} within {ENGINE_BOUND:?}").into()),
    }
}

/// Why the reader (re)loads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    /// First start: load the tail.
    Start,
    /// A new connection: go on reading if the engine still holds everything
    /// after the last record read, else reload.
    Reconnect,
    /// The engine said it dropped events the reader had not read: reload.
    Gap,
}

/// Loads the hub's history from the engine's tail (unless, reconnecting,
/// the engine still holds every event after the last one applied, and
/// reading goes on from there). After a loss, resuming from any older id
/// gets the reset. Returns how many records were loaded and, if it
/// reloaded, whether the loss left the engine with no trace of its log (no
/// event and no newest id: a store restarted empty): then the ids between
/// the last one read here and the first one it gives next are of the lost
/// log, which other instances may have read further, and the caller marks
/// them lost when that first one comes ([`Core::lost_below`]).
async fn catch_up(
    core: &Core,
    reader: &mut dyn BackplaneReader,
    last: &mut EventId,
    from: From,
) -> Result<(usize, Option<bool>), BoxError> {
    if from == From::Reconnect && reader.holds(*last).await? {
        return Ok((0, None));
    }
    if from != From::Start {
        tracing::warn!(
            last = %last,
            "backplane: the engine no longer holds every event after the last one read; \
             restarting the history (resuming clients get the reset event)"
        );
    }
    let tail = reader.tail(core.history_limit()).await?;
    // Known from here on: what follows the tail's first record. After a
    // loss, whatever followed the last record read may be gone too, so even
    // a client that saw that one must get the reset.
    let known_after = match tail.records.first() {
        Some(first) => first.id().as_u64().saturating_sub(1),
        None => tail.last.map_or(0, EventId::as_u64),
    }
    .max(if from == From::Start {
        0
    } else {
        last.as_u64() + 1
    });
    let traceless = from != From::Start && tail.records.is_empty() && tail.last.is_none();
    // Reading goes on after the tail's newest id; after nothing (0) when the
    // engine keeps no trace of any, so what it gets next is all read.
    *last = match tail.last {
        Some(newest) => newest.max(*last),
        None => EventId::new(0),
    };
    let count = tail.records.len();
    // With no trace, no id above the last one read here is known to be
    // the engine's: a client resuming from one waits for the reader (and
    // the engine's word), rather than be taken as up to date.
    let newest = if traceless { 0 } else { known_after };
    core.reload(known_after, newest, tail.records);
    if from != From::Start {
        // The engine lost, or trimmed past, events this hub had not read:
        // it cannot tell which, so none before is replayed from it.
        core.lost_before(known_after);
    }
    Ok((count, Some(traceless)))
}

/// How many records one read may return: [`READ_BATCH`], fewer when the
/// hub's events may be so large that they would hold more than
/// [`READ_BYTES`].
fn read_batch(core: &Core) -> usize {
    (READ_BYTES / core.settings.max_event_size.max(1)).clamp(1, READ_BATCH)
}

/// 100 ms doubling up to 5 s, times a random factor in [0.5, 1).
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.saturating_pow(failures.min(6));
    let base = base.min(Duration::from_secs(5));
    let random = RandomState::new().build_hasher().finish();
    base.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_holds_at_most_its_bytes_of_the_largest_events() {
        let batch = |max_event_size| {
            let settings = super::super::settings::Settings {
                max_event_size,
                ..Default::default()
            };
            read_batch(&Core::new(settings, true))
        };
        assert_eq!(
            batch(1024 * 1024),
            16,
            "the default: 16 MiB of 1 MiB events"
        );
        assert_eq!(batch(1024), READ_BATCH);
        assert_eq!(batch(usize::MAX), 1);
        assert_eq!(batch(0), READ_BATCH);
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_ceiling() {
        for failures in 0..20 {
            let d = backoff(failures);
            let base = (Duration::from_millis(100) * 2u32.pow(failures.min(6)))
                .min(Duration::from_secs(5));
            assert!(d >= base / 2 && d < base, "{failures}: {d:?}");
        }
    }
}
