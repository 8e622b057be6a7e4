//! Publishing through an engine: the outbox where events wait, in call
//! order, and the appender that hands them to the engine in batches and
//! answers each publisher.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::sync::{oneshot, Notify};

use super::state::Core;
use crate::{
    backplane::Backplane, error::Error, event::EventId, published::Published, record::Message,
};

/// Events waiting for the engine, past which publishing is refused.
const OUTBOX: usize = 16 * 1024;
/// Events appended in one call.
const APPEND_BATCH: usize = 512;

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

/// Too many events wait for the engine.
#[derive(Debug)]
struct Backlog(usize);

impl fmt::Display for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events are waiting for the backplane, which is not keeping up",
            self.0
        )
    }
}

impl std::error::Error for Backlog {}

struct Pending {
    message: Message,
    ack: oneshot::Sender<Result<EventId, Error>>,
}

/// The events waiting for the engine.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    queued: Notify,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// Set when the appender stopped for good (the hub closed): nothing
    /// queued after would ever be answered.
    closed: bool,
}

impl Outbox {
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
            if queue.pending.len() >= OUTBOX {
                return Err(Error::Backplane(Box::new(Backlog(queue.pending.len()))));
            }
            queue.pending.push_back(Pending { message, ack });
        }
        self.queued.notify_one();
        Ok(Published::waiting(answer))
    }

    /// The appender: takes the outbox in order, in batches, until the hub is
    /// closed and the outbox empty; then answers anything queued since with
    /// [`Error::Closed`].
    pub(crate) async fn drain(&self, core: &Core, backplane: &dyn Backplane) {
        loop {
            let batch: Vec<Pending> = {
                let mut outbox = self.queue();
                let n = outbox.pending.len().min(APPEND_BATCH);
                if n == 0 && core.is_closed() {
                    outbox.closed = true;
                    return;
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
            let result = match backplane.append(&messages).await {
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
                    let unheard = acks
                        .into_iter()
                        .map(|ack| ack.send(Err(shared(&error))).is_err())
                        .filter(|unheard| *unheard)
                        .count();
                    if unheard > 0 {
                        tracing::error!(
                            %error,
                            events = unheard,
                            "backplane: events the engine did not take, whose publishers did not \
                             await the outcome, are lost"
                        );
                    }
                }
            }
        }
    }
}
