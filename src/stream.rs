//! [`RecordStream`]: a subscription as a typed `Stream` of records, for code
//! that forwards the hub somewhere other than a browser (a gRPC
//! server-streaming method, a test, a bridge).

use futures_core::Stream;
use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use crate::{
    event::EventId,
    hub::{self, Ended, StartKind, Subscription},
    observe::{Reason, StreamLife, Transport},
    record::Record,
};

/// Records taken from the hub per read.
const BATCH: usize = 64;

/// The events of a subscription, in id order, as [`Record`]s: the same
/// topics, resume point, limits and lag bound as an event stream.
///
/// Open one with [`Subscribe::records`](crate::Subscribe::records). It
/// yields `Err(Lagged)` and ends when the consumer falls further behind than
/// the lag bound (resume from the last id received: nothing is lost while
/// the history covers it), and ends after
/// [`Publisher::disconnect_all`](crate::Publisher::disconnect_all) or once
/// the hub is closed (after what was published before).
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use tower_sse::{Event, Hub};
///
/// let hub = Hub::new();
/// let publisher = hub.publisher();
/// let mut records = publisher.subscribe().topic("orders").records().await?;
/// publisher.publish_to("orders", Event::default().event("paid").data("42"))?;
/// let record = records.next().await.unwrap()?;
/// assert_eq!((record.event(), record.data()), (Some("paid"), "42"));
/// # Ok(()) }
/// ```
pub struct RecordStream {
    subscription: Subscription,
    life: StreamLife,
    pending: VecDeque<Record>,
    done: bool,
}

/// The consumer of a [`RecordStream`] fell further behind than the hub's lag
/// bound; the stream ends. Resume from the last id received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lagged;

impl fmt::Display for Lagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fell behind the lag bound; resume from the last event id received")
    }
}

impl std::error::Error for Lagged {}

impl RecordStream {
    pub(crate) fn new(subscription: Subscription) -> Self {
        let life = StreamLife::begin(
            Transport::Records,
            subscription.topics(),
            subscription.user(),
            subscription.start().kind == StartKind::Reset,
        );
        RecordStream {
            subscription,
            life,
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// Whether the resume point asked for is no longer covered by the
    /// history (or was unreadable): events were missed, so the consumer
    /// should reload its state. The stream then goes on live. (An event
    /// stream sends the [`RESET_EVENT`](crate::RESET_EVENT) for this.)
    pub fn is_reset(&self) -> bool {
        self.subscription.start().kind == StartKind::Reset
    }

    /// The id the stream delivers after: the resume point, or when it
    /// starts live or after a reset, the newest id at its start.
    pub fn starts_after(&self) -> EventId {
        EventId::new(self.subscription.start().after)
    }
}

impl Stream for RecordStream {
    type Item = Result<Record, Lagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(record) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(record)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let ended = this.subscription.poll_ended(cx);
        if let Some(why) = ended {
            this.life.end(why.into());
        }
        if ended.is_some_and(|why| why != Ended::Closed) {
            this.done = true;
            return Poll::Ready(None);
        }
        let pending = &mut this.pending;
        let read = this.subscription.read(|record| {
            if pending.len() == BATCH {
                return false;
            }
            pending.push_back(record.clone());
            true
        });
        if let Err(hub::Lagged) = read {
            this.life.end(Reason::Lagged);
            this.done = true;
            this.pending.clear();
            return Poll::Ready(Some(Err(Lagged)));
        }
        this.life.delivered(this.pending.len());
        match this.pending.pop_front() {
            Some(record) => Poll::Ready(Some(Ok(record))),
            None if ended.is_some() => {
                this.done = true;
                Poll::Ready(None)
            }
            None => Poll::Pending,
        }
    }
}

impl fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordStream")
            .field("starts_after", &self.starts_after())
            .field("reset", &self.is_reset())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
