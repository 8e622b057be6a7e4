//! Publishing through an engine: the outbox where events wait, in call
//! order, and the appender that hands them to the engine in batches and
//! answers each publisher.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use tokio::{
    sync::{oneshot, Notify},
    time::Instant,
};

use super::state::Core;
use crate::{
    backplane::Backplane, error::Error, event::EventId, observe, published::Published,
    record::Message,
};

/// Events waiting for the engine, past which publishing is refused.
const OUTBOX: usize = 16 * 1024;
/// Events appended in one call, and about how many bytes (at least one
/// event): a batch is held until the engine answers it.
const APPEND_BATCH: usize = 512;
const APPEND_BYTES: usize = 4 * 1024 * 1024;
/// How long one append may take before its publishers are told it failed.
const APPEND_BOUND: Duration = Duration::from_secs(15);
/// What an event costs in the outbox beyond its fields: the queue entry,
/// the answer's channel, the strings' headers.
const OVERHEAD: usize = 256;
/// Lost events are logged at most once per this long (a burst), with how
/// many were lost since the last line.
const LOG_LOST_EVERY: Duration = Duration::from_secs(10);

/// The bytes an event holds while it waits for the engine, as the bound
/// counts them.
fn cost(message: &Message) -> usize {
    message.size() + message.topic().map_or(0, str::len) + OVERHEAD
}

/// An engine error shared by every event of a batch.
struct Shared(Arc<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

pub(crate) fn shared(error: &Arc<dyn std::error::Error + Send + Sync>) -> Error {
    Error::Backplane(Box::new(Shared(error.clone())))
}

struct Pending {
    message: Message,
    ack: oneshot::Sender<Result<EventId, Error>>,
}

/// The events waiting for the engine: bounded by count and by bytes, those
/// of the batch the engine is taking included (they are held until it
/// answers), so a hung engine costs at most the bound.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    queued: Notify,
    /// The bound in bytes ([`HubBuilder::backplane_backlog`](crate::HubBuilder::backplane_backlog)).
    max_bytes: usize,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// Events and bytes waiting: queued, and in the batch being appended.
    events: usize,
    bytes: usize,
    /// Set when the appender stopped for good (the hub closed): nothing
    /// queued after would ever be answered.
    closed: bool,
}

/// Events lost since the last line logged about them, and when that was.
#[derive(Default)]
struct Lost {
    logged: Option<Instant>,
    unlogged: usize,
}

impl Lost {
    /// Counts `events` lost, and logs them unless a line was logged within
    /// [`LOG_LOST_EVERY`] (then the next line says how many since).
    fn lost(&mut self, events: usize, error: &dyn std::error::Error) {
        observe::events_lost(events);
        self.unlogged += events;
        if self.logged.is_some_and(|at| at.elapsed() < LOG_LOST_EVERY) {
            return;
        }
        tracing::error!(
            %error,
            events = self.unlogged,
            "backplane: events the engine did not take, whose publishers did not await the \
             outcome, are lost (counted in tower_sse_backplane_lost_total; logged at most \
             once per 10 s)"
        );
        self.logged = Some(Instant::now());
        self.unlogged = 0;
    }
}

impl Outbox {
    /// An outbox holding at most `max_bytes` (and one event, whatever its
    /// size, so that no event is too large ever to be published).
    pub(crate) fn new(max_bytes: usize) -> Outbox {
        Outbox {
            queue: Mutex::default(),
            queued: Notify::new(),
            max_bytes,
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message`; the answer comes through the returned [`Published`].
    pub(crate) fn push(&self, message: Message) -> Result<Published, Error> {
        let (ack, answer) = oneshot::channel();
        {
            let mut queue = self.queue();
            if queue.closed {
                return Err(Error::Closed);
            }
            let cost = cost(&message);
            let over = queue.events > 0 && queue.bytes.saturating_add(cost) > self.max_bytes;
            if over || queue.events >= OUTBOX {
                observe::backlog_refused();
                return Err(Error::Backlog {
                    events: queue.events,
                    bytes: queue.bytes,
                    limit: self.max_bytes,
                });
            }
            queue.events += 1;
            queue.bytes += cost;
            observe::backlog(queue.events, queue.bytes);
            queue.pending.push_back(Pending { message, ack });
        }
        self.queued.notify_one();
        Ok(Published::waiting(answer))
    }

    /// The appender: takes the outbox in order, in batches, until the hub is
    /// closed and the outbox empty; then answers anything queued since with
    /// [`Error::Closed`].
    pub(crate) async fn drain(&self, core: &Core, backplane: &dyn Backplane) {
        let mut lost = Lost::default();
        loop {
            let batch: Vec<Pending> = {
                let mut outbox = self.queue();
                if outbox.pending.is_empty() && core.is_closed() {
                    outbox.closed = true;
                    return;
                }
                let (mut n, mut bytes) = (0, 0);
                for pending in outbox.pending.iter().take(APPEND_BATCH) {
                    bytes += cost(&pending.message);
                    if n > 0 && bytes > APPEND_BYTES {
                        break;
                    }
                    n += 1;
                }
                outbox.pending.drain(..n).collect()
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.queued.notified() => {}
                    _ = core.closed() => {}
                }
                continue;
            }
            let (messages, acks): (Vec<Message>, Vec<_>) =
                batch.into_iter().map(|p| (p.message, p.ack)).unzip();
            // Kept past the batch: the topics a lost event would have reached.
            let topics: Vec<Option<Arc<str>>> =
                messages.iter().map(|m| m.topic_name().cloned()).collect();
            // Bounded whatever the engine's own timeouts: the publishers
            // are answered, and what the batch holds is given back.
            let appended = match tokio::time::timeout(APPEND_BOUND, backplane.append(&messages)).await {
                Ok(appended) => appended,
                Err(_) => Err(format!(
                    "the engine did not answer within {APPEND_BOUND:?} (it may still keep the events)"
                )
                .into()),
            };
            // Answered either way: what the batch held leaves the bound.
            {
                let mut queue = self.queue();
                queue.events -= messages.len();
                queue.bytes -= messages.iter().map(cost).sum::<usize>();
                observe::backlog(queue.events, queue.bytes);
            }
            drop(messages);
            let result = match appended {
                Ok(ids) if ids.len() == acks.len() => Ok(ids),
                Ok(ids) => Err(format!(
                    "the engine answered {} ids for {} events",
                    ids.len(),
                    acks.len()
                )
                .into()),
                Err(e) => Err(e),
            };
            match result {
                Ok(ids) => {
                    for (ack, id) in acks.into_iter().zip(ids) {
                        ack.send(Ok(id)).ok();
                    }
                }
                Err(e) => {
                    let error: Arc<dyn std::error::Error + Send + Sync> = Arc::from(e);
                    // Each publisher hears of it; the status is the reader's to set.
                    tracing::warn!(%error, events = acks.len(), "backplane: the engine did not take events");
                    let unheard: Vec<Option<Arc<str>>> = acks
                        .into_iter()
                        .zip(topics)
                        .filter_map(|(ack, topic)| {
                            ack.send(Err(shared(&error))).is_err().then_some(topic)
                        })
                        .collect();
                    if !unheard.is_empty() {
                        lost.lost(unheard.len(), &*error);
                        // Nobody will get them, and no publisher heard: the
                        // streams they would have reached are told (a reset).
                        core.lost(&unheard);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_logged_once_per_burst_with_their_count() {
        let error = std::io::Error::other("down");
        let mut lost = Lost::default();
        lost.lost(3, &error);
        assert!(lost.logged.is_some());
        assert_eq!(
            lost.unlogged, 0,
            "the first loss of a burst is logged at once"
        );
        lost.lost(2, &error);
        lost.lost(4, &error);
        assert_eq!(
            lost.unlogged, 6,
            "the rest of the burst waits for the next line"
        );
        lost.logged = Instant::now().checked_sub(LOG_LOST_EVERY);
        lost.lost(1, &error);
        assert_eq!(lost.unlogged, 0, "a later loss logs the count since");
    }

    #[test]
    fn the_outbox_refuses_past_its_bytes_but_always_takes_one_event() {
        let message = |size: usize| {
            Message::new(None, crate::event::Event::default().data("x".repeat(size))).unwrap()
        };
        let outbox = Outbox::new(10_000);
        outbox
            .push(message(50_000))
            .expect("one event, whatever its size");
        assert!(matches!(
            outbox.push(message(10)),
            Err(Error::Backlog {
                events: 1,
                limit: 10_000,
                ..
            })
        ));
        let outbox = Outbox::new(10_000);
        let mut taken = 0;
        while outbox.push(message(1_000)).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 10_000 / cost(&message(1_000)));
    }
}
