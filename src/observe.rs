//! What the crate tells operators: metrics (feature `metrics`, through the
//! `metrics` facade, so any exporter works) and a tracing span per stream.
//!
//! Metrics (Prometheus names; labels in brackets):
//!
//! * `tower_sse_streams_open` (gauge) `[transport]`: `sse`, `websocket`, `records`;
//! * `tower_sse_streams_opened_total` `[transport]`;
//! * `tower_sse_streams_closed_total` `[transport, reason]`: `client_gone`,
//!   `lagged`, `disconnected`, `shutdown`, `revoked`, `expired`,
//!   `topic_closed`, `protocol`, `refused`;
//! * `tower_sse_events_published_total`;
//! * `tower_sse_deliveries_total` `[transport]`: events sent to subscribers;
//! * `tower_sse_resets_total` `[transport]`: streams that started with the reset;
//! * `tower_sse_refusals_total` `[status]`: streams refused, by HTTP status;
//! * `tower_sse_history_events`, `tower_sse_history_bytes` (gauges);
//! * `tower_sse_backplane_up` (gauge, 1 or 0), `tower_sse_backplane_reconnects_total`;
//! * `tower_sse_backplane_backlog_events`, `tower_sse_backplane_backlog_bytes` (gauges):
//!   what waits for the engine; `tower_sse_backplane_backlog_refused_total`: publishes
//!   refused with `Error::Backlog`;
//! * `tower_sse_backplane_lost_total`: events accepted (fire and forget) that the
//!   engine did not take, whose publishers did not await the outcome.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

/// Set by the server that owns a stream's connection ([`crate::serve`])
/// when it ends the stream because it made no write progress (the client
/// stopped reading): the stream is counted `lagged`, as one that fell
/// behind the lag bound, not `client_gone`. Its client resumes from its id
/// either way. Given to the request in its extensions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stalled(Arc<AtomicBool>);

impl Stalled {
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A stream's transport, as metrics and spans name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Sse,
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    WebSocket,
    Records,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WebSocket => "websocket",
            Transport::Records => "records",
        }
    }
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The client went away (or the transport was dropped).
    ClientGone,
    Lagged,
    Disconnected,
    Shutdown,
    Revoked,
    Expired,
    TopicClosed,
    /// The client broke the protocol (WebSocket).
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    Protocol,
    /// A change of topics was refused for a limit (WebSocket).
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    Refused,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::ClientGone => "client_gone",
            Reason::Lagged => "lagged",
            Reason::Disconnected => "disconnected",
            Reason::Shutdown => "shutdown",
            Reason::Revoked => "revoked",
            Reason::Expired => "expired",
            Reason::TopicClosed => "topic_closed",
            Reason::Protocol => "protocol",
            Reason::Refused => "refused",
        }
    }
}

/// One stream's life: counted as open while it lives, its span, and why it
/// ended (told when it is dropped).
pub(crate) struct StreamLife {
    transport: Transport,
    span: tracing::Span,
    reason: Option<Reason>,
    /// Told by the server if it ended the stream for a stall.
    stalled: Option<Stalled>,
    #[cfg(feature = "metrics")]
    deliveries: metrics::Counter,
}

impl StreamLife {
    /// A stream of `transport` that opened: following `topics`, of `user`,
    /// starting with a reset or not. Its span is a child of the current one
    /// (the request's, under tower-http's `TraceLayer`).
    pub(crate) fn begin<'a>(
        transport: Transport,
        topics: impl Iterator<Item = &'a str>,
        user: Option<&str>,
        reset: bool,
    ) -> StreamLife {
        let topics: Vec<&str> = topics.collect();
        let span = tracing::debug_span!(
            "event_stream",
            transport = transport.name(),
            topics = ?topics,
            user,
            reset,
            reason = tracing::field::Empty,
        );
        tracing::debug!(parent: &span, "stream opened");
        #[cfg(feature = "metrics")]
        {
            let t = transport.name();
            metrics::counter!("tower_sse_streams_opened_total", "transport" => t).increment(1);
            metrics::gauge!("tower_sse_streams_open", "transport" => t).increment(1.0);
            if reset {
                metrics::counter!("tower_sse_resets_total", "transport" => t).increment(1);
            }
        }
        StreamLife {
            transport,
            #[cfg(feature = "metrics")]
            deliveries: metrics::counter!("tower_sse_deliveries_total", "transport" => transport.name()),
            span,
            reason: None,
            stalled: None,
        }
    }

    /// The server may end the stream for a stall, and says so in `stalled`.
    pub(crate) fn watched(&mut self, stalled: Stalled) {
        self.stalled = Some(stalled);
    }

    /// `events` were sent.
    pub(crate) fn delivered(&self, events: usize) {
        #[cfg(feature = "metrics")]
        self.deliveries.increment(events as u64);
        let _ = events;
    }

    /// The stream ends for `reason` (the first one told stays).
    pub(crate) fn end(&mut self, reason: Reason) {
        self.reason.get_or_insert(reason);
    }

    /// The stream's span, for what is logged about it.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }
}

impl Drop for StreamLife {
    fn drop(&mut self) {
        let stalled = self.stalled.as_ref().is_some_and(Stalled::is_set);
        let reason = match self.reason {
            Some(reason) => reason,
            None if stalled => Reason::Lagged,
            None => Reason::ClientGone,
        }
        .name();
        self.span.record("reason", reason);
        tracing::debug!(parent: &self.span, reason, "stream ended");
        #[cfg(feature = "metrics")]
        {
            let t = self.transport.name();
            metrics::gauge!("tower_sse_streams_open", "transport" => t).decrement(1.0);
            metrics::counter!("tower_sse_streams_closed_total", "transport" => t, "reason" => reason)
                .increment(1);
        }
        let _ = self.transport;
    }
}

/// An event was published (taken by the hub).
pub(crate) fn published() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_sse_events_published_total").increment(1);
}

/// A stream was refused with `status`.
pub(crate) fn refused(status: u16) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_sse_refusals_total", "status" => status.to_string()).increment(1);
    let _ = status;
}

/// What the history holds now.
pub(crate) fn history(events: usize, bytes: usize) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!("tower_sse_history_events").set(events as f64);
        metrics::gauge!("tower_sse_history_bytes").set(bytes as f64);
    }
    let _ = (events, bytes);
}

/// Whether the hub reads its engine's log.
pub(crate) fn backplane_up(up: bool) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("tower_sse_backplane_up").set(if up { 1.0 } else { 0.0 });
    let _ = up;
}

/// The hub reconnected to its engine.
pub(crate) fn backplane_reconnect() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_sse_backplane_reconnects_total").increment(1);
}

/// What waits for the engine now.
pub(crate) fn backlog(events: usize, bytes: usize) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!("tower_sse_backplane_backlog_events").set(events as f64);
        metrics::gauge!("tower_sse_backplane_backlog_bytes").set(bytes as f64);
    }
    let _ = (events, bytes);
}

/// A publish was refused: too much waits for the engine.
pub(crate) fn backlog_refused() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_sse_backplane_backlog_refused_total").increment(1);
}

/// `events` accepted without their publishers awaiting them were not taken
/// by the engine.
pub(crate) fn events_lost(events: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_sse_backplane_lost_total").increment(events as u64);
    let _ = events;
}
