//! Where a subscription starts (and how the client said so), and why the
//! hub may refuse one.

/// Where a new subscriber starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// With the next event published.
    Live,
    /// After the event with this id (the `Last-Event-ID` the client sent).
    After(String),
    /// After an id that cannot be read (not UTF-8): the client gets a reset.
    Unknown,
}

/// Where a subscription starts, as its transport tells the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Start {
    /// The hub id it delivers after.
    pub(crate) after: u64,
    pub(crate) kind: StartKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartKind {
    /// Live from `after` (the newest id): the client learns that id, so even
    /// a stream cut before its first event resumes without loss.
    Live,
    /// From the client's own resume point, which the history covers.
    Resumed,
    /// The client's resume point is gone (or unreadable): it must be told it
    /// missed events, then gets live ones after `after`.
    Reset,
}

/// Why the hub refused a subscription.
#[derive(Debug)]
pub(crate) enum SubscribeError {
    Closed,
    TooManySubscribers,
    TooManyForUser,
    TooManyForAddress,
    NoRuntime,
}
