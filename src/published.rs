//! [`Published`]: what publishing an event returns once the hub took it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::sync::oneshot;

use crate::{error::Error, event::EventId};

/// An event the hub accepted. Await it for the event's id once it is
/// stored: at once without a backplane, once the engine acknowledged it
/// with one. Dropping it does not withdraw the event; with a backplane it
/// gives up the only word of its fate: an event the engine then refuses is
/// lost, counted (`tower_sse_backplane_lost_total`, feature `metrics`) and
/// logged at `error` level once per burst, and the streams of its topic on
/// this instance end: resuming from before it gets the `reset`.
///
/// ```
/// # async fn run(publisher: tower_sse::Publisher) -> Result<(), tower_sse::Error> {
/// use tower_sse::Event;
///
/// // Fire and forget: stored when `publish` returns without a backplane; with
/// // one, on its way to the engine (lost, counted and logged, if it refuses).
/// publisher.publish(Event::default().data("one"))?;
/// // Or wait until it is stored (with a backplane: in the engine).
/// let id = publisher.publish(Event::default().data("two"))?.await?;
/// # let _ = id; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Published {
    state: State,
}

#[derive(Debug)]
enum State {
    Stored(EventId),
    Waiting(oneshot::Receiver<Result<EventId, Error>>),
}

impl Published {
    pub(crate) fn stored(id: EventId) -> Self {
        Published {
            state: State::Stored(id),
        }
    }

    pub(crate) fn waiting(ack: oneshot::Receiver<Result<EventId, Error>>) -> Self {
        Published {
            state: State::Waiting(ack),
        }
    }

    /// The event's id if it is known without waiting: always without a
    /// backplane (the hub numbers its events as it takes them), never with
    /// one (the engine's answer comes by awaiting).
    pub fn id(&self) -> Option<EventId> {
        match &self.state {
            State::Stored(id) => Some(*id),
            State::Waiting(_) => None,
        }
    }
}

impl Future for Published {
    type Output = Result<EventId, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Stored(id) => Poll::Ready(Ok(*id)),
            State::Waiting(ack) => Pin::new(ack)
                .poll(cx)
                // The hub went away with the event unanswered.
                .map(|answer| answer.unwrap_or(Err(Error::Closed))),
        }
    }
}
