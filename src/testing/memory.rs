//! [`MemoryBackplane`]: an engine in memory, shared by the hubs of one
//! process — the reference implementation of the backplane contract, and a
//! way to test several instances of an app in one test.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::{sync::watch, time::Instant};

use crate::{
    backplane::{Backplane, BackplaneReader, BoxFuture, Read, Retention, Tail, TopicRead},
    error::BoxError,
    event::EventId,
    record::{Message, Record},
};

/// How long a read waits for a record before returning none.
const BLOCK: Duration = Duration::from_secs(1);

/// An in-memory engine: hubs built with clones of it share one log, as
/// instances of an app share Redis. It keeps the contract of
/// [`Backplane`](crate::backplane) exactly (ids strictly increasing and
/// contiguous, the log trimmed to the largest [`Retention`] asked for, and
/// each topic's events kept apart by its count and age), and can be
/// made unreachable or lose its log, as a real engine can, to test what the
/// hub does then.
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use tower_sse::{testing::MemoryBackplane, Event, Hub};
///
/// let engine = MemoryBackplane::new();
/// let a = Hub::builder().backplane(engine.clone()).build();
/// let b = Hub::builder().backplane(engine.clone()).build();
/// let mut on_b = b.publisher().subscribe().records().await?;
/// let id = a.publisher().publish(Event::default().data("hi"))?.await?;
/// assert_eq!(on_b.next().await.unwrap()?.id(), id);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryBackplane {
    log: Arc<Log>,
}

#[derive(Debug, Default)]
struct Log {
    state: Mutex<State>,
    /// Bumped on every change readers may wait for.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    records: VecDeque<Record>,
    /// Each topic's newest events (`None`: those to every subscriber), as
    /// Redis keeps a stream per topic beside the log.
    topics: HashMap<Option<Arc<str>>, TopicLog>,
    /// Ids up to this one were lost (the log was): no topic holds them.
    lost_up_to: u64,
    per_topic: usize,
    age: Option<Duration>,
    /// Whether a hub asked for a retention yet.
    retained: bool,
    /// The next id to give (0: not started).
    next_id: u64,
    /// Whether anything was ever appended since the last loss.
    appended: bool,
    keep: usize,
    down: bool,
    /// Readers get nothing new while set (as when stalled on the network).
    stalled: bool,
    /// Appends wait, unanswered, while set (a hung server).
    hung: bool,
    /// Bumped when the engine goes down or loses its log: readers opened
    /// before lose their "connection", as with a real server.
    epoch: u64,
}

/// One topic's newest events, when each arrived, and the highest id it
/// trimmed.
#[derive(Debug, Default)]
struct TopicLog {
    records: VecDeque<(Record, Instant)>,
    trimmed_up_to: u64,
}

impl TopicLog {
    /// Drops what `per_topic` and `age` no longer keep at `now`.
    fn trim(&mut self, per_topic: usize, age: Option<Duration>, now: Instant) {
        while self.records.len() > per_topic.max(1)
            || self
                .records
                .front()
                .is_some_and(|(_, at)| age.is_some_and(|age| now.duration_since(*at) > age))
        {
            if let Some((old, _)) = self.records.pop_front() {
                self.trimmed_up_to = self.trimmed_up_to.max(old.id().as_u64());
            }
        }
    }
}

/// The engine is unreachable.
#[derive(Debug)]
struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the memory backplane is down")
    }
}

impl std::error::Error for Down {}

/// Ids start at the current time in microseconds, so a log that was lost
/// goes on above every id it gave before, as Redis's clock-based ids do.
fn clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
}

impl MemoryBackplane {
    /// A new, empty log.
    pub fn new() -> Self {
        MemoryBackplane::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.log.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.log.changed.send_modify(|n| *n += 1);
    }

    /// Makes the engine unreachable (`true`: every call fails, as with a
    /// lost connection) or reachable again, with its log intact.
    pub fn set_down(&self, down: bool) {
        let mut state = self.state();
        state.down = down;
        state.epoch += u64::from(down);
        drop(state);
        self.changed();
    }

    /// Stalls every reader (`true`: reads see nothing new, as a reader
    /// stuck on the network or far behind) or lets them go on: with a small
    /// retention, the log is trimmed past them meanwhile, and their next
    /// read finds the gap.
    pub fn stall_readers(&self, stalled: bool) {
        self.state().stalled = stalled;
        self.changed();
    }

    /// Hangs the engine for appends (`true`: every append waits,
    /// unanswered, as with a server stopped by `SIGSTOP`) or lets them go
    /// on. Readers are not affected (see [`stall_readers`](Self::stall_readers)).
    pub fn hang_appends(&self, hung: bool) {
        self.state().hung = hung;
        self.changed();
    }

    /// Loses the whole log, as Redis restarting without persistence does;
    /// ids go on above every id given before, with a gap.
    pub fn lose_data(&self) {
        let mut state = self.state();
        state.records.clear();
        state.topics.clear();
        state.lost_up_to = state.next_id;
        state.appended = false;
        state.epoch += 1;
        state.next_id = state.next_id.max(clock()) + 1_000_000;
        drop(state);
        self.changed();
    }

    /// How many records the log holds.
    pub fn len(&self) -> usize {
        self.state().records.len()
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Backplane for MemoryBackplane {
    fn retain(&self, retention: Retention) {
        let mut state = self.state();
        state.keep = state.keep.max(retention.events);
        state.per_topic = state.per_topic.max(retention.per_topic);
        // The longest age asked for; none if any asks for none.
        state.age = match state.retained {
            false => retention.age,
            true => state.age.zip(retention.age).map(|(a, b)| a.max(b)),
        };
        state.retained = true;
    }

    fn append<'a>(
        &'a self,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<Vec<EventId>, BoxError>> {
        Box::pin(async move {
            let mut changed = self.log.changed.subscribe();
            while self.state().hung {
                changed.changed().await.ok();
            }
            let mut state = self.state();
            if state.down {
                return Err(Down.into());
            }
            if state.next_id == 0 {
                state.next_id = clock();
            }
            let mut ids = Vec::with_capacity(messages.len());
            let now = Instant::now();
            let (per_topic, age) = (state.per_topic, state.age);
            for message in messages {
                let id = EventId::new(state.next_id);
                state.next_id += 1;
                let record = Record::new(id, message.clone());
                let topic = message.topic_name().cloned();
                let log = state.topics.entry(topic).or_default();
                log.records.push_back((record.clone(), now));
                log.trim(per_topic, age, now);
                state.records.push_back(record);
                ids.push(id);
            }
            state.appended = true;
            let keep = state.keep.max(1);
            while state.records.len() > keep {
                state.records.pop_front();
            }
            drop(state);
            self.changed();
            Ok(ids)
        })
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BoxError>> {
        Box::pin(async move {
            let state = self.state();
            if state.down {
                return Err(Down.into());
            }
            Ok(state.appended.then(|| EventId::new(state.next_id - 1)))
        })
    }

    fn reader(&self) -> BoxFuture<'_, Result<Box<dyn BackplaneReader>, BoxError>> {
        Box::pin(async move {
            let state = self.state();
            if state.down {
                return Err(Down.into());
            }
            Ok(Box::new(Reader {
                engine: self.clone(),
                epoch: state.epoch,
            }) as Box<dyn BackplaneReader>)
        })
    }

    fn read_topic<'a>(
        &'a self,
        topic: Option<&'a str>,
        after: EventId,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<TopicRead>, BoxError>> {
        Box::pin(async move {
            let mut state = self.state();
            if state.down {
                return Err(Down.into());
            }
            let (per_topic, age, lost_up_to) = (state.per_topic, state.age, state.lost_up_to);
            let after = after.as_u64();
            let Some(log) = state.topics.get_mut(&topic.map(Arc::from)) else {
                return Ok(Some(TopicRead::new(Vec::new(), after >= lost_up_to)));
            };
            log.trim(per_topic, age, Instant::now());
            let held = after >= lost_up_to && log.trimmed_up_to <= after;
            let start = log
                .records
                .partition_point(|(r, _)| r.id().as_u64() <= after);
            let records = log.records.range(start..).take(limit);
            let records = records.map(|(r, _)| r.clone()).collect();
            Ok(Some(TopicRead::new(records, held)))
        })
    }
}

/// Whether the log holds every event after `after`.
fn holds(state: &State, after: u64) -> bool {
    match state.records.front() {
        // Ids are contiguous: the one right after `after` is still here.
        Some(first) => first.id().as_u64() <= after + 1,
        None if state.appended => state.next_id - 1 <= after,
        None => after == 0,
    }
}

struct Reader {
    engine: MemoryBackplane,
    /// The engine's epoch when this reader "connected".
    epoch: u64,
}

impl Reader {
    fn state(&self) -> Result<MutexGuard<'_, State>, BoxError> {
        let state = self.engine.state();
        if state.down || state.epoch != self.epoch {
            return Err(Down.into());
        }
        Ok(state)
    }
}

impl BackplaneReader for Reader {
    fn tail(&mut self, limit: usize) -> BoxFuture<'_, Result<Tail, BoxError>> {
        Box::pin(async move {
            let state = self.state()?;
            let skip = state.records.len().saturating_sub(limit);
            let records = state.records.iter().skip(skip).cloned().collect();
            let last = state.appended.then(|| EventId::new(state.next_id - 1));
            Ok(Tail::new(records, last))
        })
    }

    fn holds(&mut self, after: EventId) -> BoxFuture<'_, Result<bool, BoxError>> {
        Box::pin(async move { Ok(holds(&*self.state()?, after.as_u64())) })
    }

    fn read(&mut self, after: EventId, limit: usize) -> BoxFuture<'_, Result<Read, BoxError>> {
        Box::pin(async move {
            let mut changed = self.engine.log.changed.subscribe();
            let deadline = tokio::time::Instant::now() + BLOCK;
            loop {
                let read = {
                    let state = self.state()?;
                    if state.stalled {
                        None
                    } else if after.as_u64() > 0 && !holds(&state, after.as_u64()) {
                        // After 0 (nothing read: the log was empty) is no gap.
                        Some(Read::Gap)
                    } else {
                        let start = state.records.partition_point(|r| r.id() <= after);
                        let records = state.records.range(start..).take(limit).cloned();
                        let records: Vec<Record> = records.collect();
                        (!records.is_empty()).then(|| Read::records(records))
                    }
                };
                if let Some(read) = read {
                    return Ok(read);
                }
                match tokio::time::timeout_at(deadline, changed.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return Ok(Read::records(Vec::new())),
                }
            }
        })
    }
}
