//! Reading a topic's recent events from the history ([`HistoryQuery`],
//! [`HistoryPage`]): a page's first render, an API, a gRPC method.

use crate::record::Record;

/// The most events one history read returns; a larger limit is clipped to
/// it (and the page says so).
pub const MAX_HISTORY_READ: usize = 1000;

/// Without a limit, a read after an id returns at most this many.
const DEFAULT_LIMIT: usize = 100;

/// What to read of a topic's history with
/// [`Publisher::history`](crate::Publisher::history) or
/// [`Publisher::history_of`](crate::Publisher::history_of).
///
/// ```
/// use tower_sse::{Event, HistoryQuery, Hub};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower_sse::Error> {
/// let publisher = Hub::new().publisher();
/// for n in 0..5 {
///     publisher.publish_to("orders/42", Event::default().data(n.to_string()))?;
/// }
/// let page = publisher.history_of("orders/42", HistoryQuery::last(2)).await?;
/// let data: Vec<&str> = page.events.iter().map(|e| e.data()).collect();
/// assert_eq!(data, ["3", "4"]);
/// assert!(page.clipped, "there were more");
///
/// // Then, after the newest the page showed: what a stream resuming there gets.
/// let last = page.events[1].last_event_id().into_owned();
/// publisher.publish_to("orders/42", Event::default().data("5"))?;
/// let page = publisher.history_of("orders/42", HistoryQuery::since(last)).await?;
/// assert_eq!(page.events[0].data(), "5");
/// assert!(!page.reset);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    pub(crate) since: Option<String>,
    pub(crate) limit: usize,
}

impl HistoryQuery {
    /// The newest `events` of the topic, oldest first.
    pub fn last(events: usize) -> Self {
        HistoryQuery {
            since: None,
            limit: events,
        }
    }

    /// The events after the one whose id a client last saw (its
    /// `Last-Event-ID`: a hub id, or an id the app set with
    /// [`Event::id`](crate::Event::id)), oldest first: at most 100 unless
    /// [`limit`](Self::limit) says otherwise.
    pub fn since(last_event_id: impl Into<String>) -> Self {
        HistoryQuery {
            since: Some(last_event_id.into()),
            limit: DEFAULT_LIMIT,
        }
    }

    /// At most `events` events, and never more than [`MAX_HISTORY_READ`].
    pub fn limit(mut self, events: usize) -> Self {
        self.limit = events;
        self
    }
}

/// A page of a topic's history.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HistoryPage {
    /// The events, oldest first.
    pub events: Vec<Record>,
    /// More events matched than the page holds: it was cut at its limit (or
    /// at [`MAX_HISTORY_READ`]). After an id, read on from the last one's.
    pub clipped: bool,
    /// Events after the id asked for may have left the history already (or
    /// the id is unknown, or newer than the hub's newest): the page starts
    /// at the oldest event still held, and the caller should reload its
    /// state as a stream's `reset` would tell it.
    pub reset: bool,
}
