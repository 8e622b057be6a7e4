//! One subscriber's place in the hub ([`Subscription`]): a cursor per
//! followed topic, and the read that merges those topics in id order.
//! Transports read through it; it knows none of them.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::time::Sleep;

pub(crate) use super::registry::Ended;
use super::{
    history::Follow,
    registry::Reader,
    seats::{Owner, Seat},
    start::{Resume, Start, SubscribeError},
    state::Core,
};
use crate::record::Record;

/// The subscriber fell further behind than the lag bound, or a record it
/// had not read yet left the history: its stream must end (and the client
/// resume from its last id).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Lagged;

/// A subscriber registered with the hub. Dropping it unregisters it.
pub(crate) struct Subscription {
    core: Arc<Core>,
    generation: u64,
    reader: Arc<Reader>,
    /// Fires when the owner's access expires.
    expiry: Option<Pin<Box<Sleep>>>,
    follows: Vec<Follow>,
    start: Start,
    /// Dropped with the subscription, after it is unregistered (what the
    /// hub does then, e.g. announce that its user left).
    on_drop: Option<Box<dyn Send + Sync>>,
    /// Its stream's place under the hub's limits (shared with the
    /// stream's other subscriptions, and given back after the last).
    seat: Option<Arc<Seat>>,
}

impl Subscription {
    /// Registers a subscriber of `topics` (and the default topic) from
    /// `resume`, for `owner`.
    pub(crate) fn open(
        core: &Arc<Core>,
        topics: &[&str],
        resume: &Resume,
        owner: Owner,
    ) -> Result<Subscription, SubscribeError> {
        let reader = Reader::new(owner.user.clone());
        let generation = core.generation();
        let (follows, start) = core.register(topics, resume, &reader)?;
        Ok(Subscription {
            core: core.clone(),
            generation,
            reader,
            expiry: owner
                .expires
                .map(|at| Box::pin(tokio::time::sleep_until(at))),
            follows,
            start,
            on_drop: None,
            seat: owner.seat,
        })
    }

    /// Keeps `guard` until the subscription is dropped, then drops it.
    pub(crate) fn on_drop(&mut self, guard: Box<dyn Send + Sync>) {
        self.on_drop = Some(guard);
    }

    /// The topics it follows, but the default one.
    pub(crate) fn topics(&self) -> impl Iterator<Item = &str> {
        self.follows
            .iter()
            .map(|f| &*f.topic.name)
            .filter(|name| !name.is_empty())
    }

    /// Its user, if its access named one.
    pub(crate) fn user(&self) -> Option<&str> {
        self.reader.user.as_deref()
    }

    /// Where it starts, for the transport to tell the client.
    pub(crate) fn start(&self) -> Start {
        self.start
    }

    /// Whether it was ended, and else wakes `cx`'s task when a followed
    /// topic gets a record or it is ended. Call it before reading, so that a
    /// record appended after the read wakes the task and one appended before
    /// is in what it read. Closed is told last: what was published before
    /// is still read; the other reasons end the subscription at once.
    pub(crate) fn poll_ended(&mut self, cx: &mut Context<'_>) -> Option<Ended> {
        self.reader.register(cx.waker());
        if let Some(why) = self.reader.ended() {
            return Some(why);
        }
        if self.core.generation() != self.generation {
            return Some(Ended::Disconnected);
        }
        if let Some(expiry) = &mut self.expiry {
            if expiry.as_mut().poll(cx) == Poll::Ready(()) {
                self.reader.end(Ended::Expired);
                return Some(Ended::Expired);
            }
        }
        self.core.is_closed().then_some(Ended::Closed)
    }

    /// Stops waking the task for new records until the next
    /// [`poll_ended`](Self::poll_ended): a stream that waits out a
    /// coalescing window is woken by its timer alone, not by each record.
    pub(crate) fn park(&self) {
        self.reader.register(std::task::Waker::noop());
    }

    /// Offers the undelivered records of every followed topic to `take`, in
    /// id order, until it declines one (which stays undelivered); the cursors
    /// move past those it took.
    ///
    /// With several topics, every ring's read lock is held at once
    /// (appenders write one ring at a time, in id order, so this is a
    /// consistent snapshot); records newer than the newest appended id are
    /// left out as a second guard against a record of one topic overtaking
    /// an older one of another. Each ring is read in place: no copy per read.
    pub(crate) fn read(&mut self, mut take: impl FnMut(&Record) -> bool) -> Result<(), Lagged> {
        let max_lag = self.core.settings.max_lag as u64;
        if let [follow] = &mut self.follows[..] {
            let ring = follow.topic.ring();
            let start = follow.unread_start(&ring, max_lag).ok_or(Lagged)?;
            let taken = ring.entries.range(start..).take_while(|r| take(r)).count();
            drop(ring);
            follow.cursor += taken as u64;
            return Ok(());
        }
        let published = self.core.published();
        let mut heads = Vec::with_capacity(self.follows.len());
        for follow in &self.follows {
            let ring = follow.topic.ring();
            let start = follow.unread_start(&ring, max_lag).ok_or(Lagged)?;
            heads.push((ring, start, 0u64));
        }
        loop {
            let mut next: Option<(usize, u64)> = None;
            for (i, (ring, at, _)) in heads.iter().enumerate() {
                if let Some(record) = ring.entries.get(*at) {
                    let id = record.id().as_u64();
                    if id <= published && next.is_none_or(|(_, min)| id < min) {
                        next = Some((i, id));
                    }
                }
            }
            let Some((i, _)) = next else { break };
            let (ring, at, taken) = &mut heads[i];
            if !take(&ring.entries[*at]) {
                break;
            }
            *at += 1;
            *taken += 1;
        }
        let taken: Vec<u64> = heads.into_iter().map(|(_, _, taken)| taken).collect();
        for (follow, taken) in self.follows.iter_mut().zip(taken) {
            follow.cursor += taken;
        }
        Ok(())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The seat first: whoever sees the count drop (and opens another
        // stream at once) finds the limit's room already given back.
        self.seat = None;
        self.core.unregister(&self.follows);
        self.on_drop.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::Event,
        hub::{settings::Settings, start::StartKind},
        record::Message,
    };
    use std::task::Context;

    fn settings(history: usize, max_lag: usize) -> Settings {
        let mut settings = Settings {
            max_lag,
            ..Settings::default()
        };
        settings.rules.default.events = history;
        settings
    }

    fn core(max_lag: usize) -> Arc<Core> {
        Core::new(settings(100, max_lag), false)
    }

    fn publish(core: &Core, topic: Option<&str>, data: &str) -> u64 {
        let message = Message::new(topic, Event::default().data(data)).unwrap();
        core.publish(message).unwrap().as_u64()
    }

    fn read_all(subscription: &mut Subscription) -> Result<Vec<String>, Lagged> {
        let mut out = Vec::new();
        subscription.read(|r| {
            out.push(r.data().to_owned());
            true
        })?;
        Ok(out)
    }

    #[test]
    fn topics_are_merged_in_id_order_and_others_are_not_seen() {
        let core = core(100);
        let mut sub =
            Subscription::open(&core, &["a", "b"], &Resume::Live, Owner::default()).unwrap();
        assert_eq!(sub.start().kind, StartKind::Live);
        for (topic, data) in [
            (Some("b"), "1"),
            (Some("c"), "no"),
            (Some("a"), "2"),
            (None, "3"),
            (Some("b"), "4"),
        ] {
            publish(&core, topic, data);
        }
        assert_eq!(read_all(&mut sub).unwrap(), ["1", "2", "3", "4"]);
        assert_eq!(read_all(&mut sub).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_declined_record_stays_unread() {
        let core = core(100);
        let mut sub =
            Subscription::open(&core, &["a", "b"], &Resume::Live, Owner::default()).unwrap();
        for (topic, data) in [(Some("a"), "1"), (Some("b"), "2"), (Some("a"), "3")] {
            publish(&core, topic, data);
        }
        let mut first = Vec::new();
        sub.read(|r| {
            first.push(r.data().to_owned());
            first.len() < 2
        })
        .unwrap();
        assert_eq!(first, ["1", "2"], "offered the second, which it declined");
        assert_eq!(read_all(&mut sub).unwrap(), ["2", "3"]);
    }

    #[test]
    fn resuming_replays_after_the_id_and_a_lost_id_is_a_reset() {
        let core = Core::new(settings(3, 1), false);
        let ids: Vec<u64> = (0..5)
            .map(|i| publish(&core, None, &i.to_string()))
            .collect();
        let mut sub = Subscription::open(
            &core,
            &[],
            &Resume::After(ids[2].to_string()),
            Owner::default(),
        )
        .unwrap();
        assert_eq!(sub.start().kind, StartKind::Resumed);
        assert_eq!(
            read_all(&mut sub).unwrap(),
            ["3", "4"],
            "backlog is not lag"
        );
        let lost = Subscription::open(
            &core,
            &[],
            &Resume::After(ids[0].to_string()),
            Owner::default(),
        )
        .unwrap();
        assert_eq!(lost.start().kind, StartKind::Reset);
        assert_eq!(lost.start().after, ids[4]);
        let unknown = Subscription::open(&core, &[], &Resume::Unknown, Owner::default()).unwrap();
        assert_eq!(unknown.start().kind, StartKind::Reset);
    }

    #[test]
    fn a_trim_past_the_reader_ends_that_topics_streams_alone() {
        use crate::{backplane::Trim, event::EventId};
        let core = core(100);
        let open = |topic: &str, resume: Resume| {
            Subscription::open(&core, &[topic], &resume, Owner::default()).unwrap()
        };
        let (mut busy, mut quiet) = (open("busy", Resume::Live), open("quiet", Resume::Live));
        let seen = publish(&core, Some("quiet"), "seen");
        let first = publish(&core, Some("busy"), "first");
        assert_eq!(read_all(&mut busy).unwrap(), ["first"]);
        assert_eq!(read_all(&mut quiet).unwrap(), ["seen"]);
        let missed = publish(&core, Some("quiet"), "missed");
        // The engine trimmed the busy topic past what this hub read.
        core.trimmed(&[Trim::new(Some("busy".into()), EventId::new(missed + 5))]);
        assert_eq!(ended(&mut busy), Some(Ended::Disconnected));
        assert_eq!(ended(&mut quiet), None, "another topic's stream carries on");
        assert_eq!(read_all(&mut quiet).unwrap(), ["missed"]);
        assert_eq!(
            core.history_size().0,
            2,
            "the busy topic's events are forgotten"
        );
        let resumed = open("busy", Resume::After(first.to_string()));
        assert_eq!(resumed.start().kind, StartKind::Reset);
        let mut resumed = open("quiet", Resume::After(seen.to_string()));
        assert_eq!(resumed.start().kind, StartKind::Resumed);
        assert_eq!(read_all(&mut resumed).unwrap(), ["missed"]);
        // The default topic is a topic too: every stream follows it.
        core.trimmed(&[Trim::new(None, EventId::new(missed))]);
        assert_eq!(ended(&mut quiet), Some(Ended::Disconnected));
    }

    #[test]
    fn lag_past_the_bound_ends_the_read() {
        let core = core(2);
        let mut sub = Subscription::open(&core, &["a"], &Resume::Live, Owner::default()).unwrap();
        publish(&core, Some("a"), "1");
        publish(&core, None, "2");
        assert_eq!(read_all(&mut sub).unwrap(), ["1", "2"]);
        for i in 0..3 {
            publish(&core, Some("a"), &i.to_string());
        }
        assert_eq!(read_all(&mut sub), Err(Lagged));
    }

    fn ended(sub: &mut Subscription) -> Option<Ended> {
        sub.poll_ended(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn disconnect_and_close_end_it_and_drop_unregisters() {
        let core = core(10);
        let mut sub = Subscription::open(&core, &["a"], &Resume::Live, Owner::default()).unwrap();
        assert_eq!(core.subscriber_count(), 1);
        assert_eq!(ended(&mut sub), None);
        core.disconnect_all();
        assert_eq!(ended(&mut sub), Some(Ended::Disconnected));
        let mut fresh = Subscription::open(&core, &["a"], &Resume::Live, Owner::default()).unwrap();
        assert_eq!(ended(&mut fresh), None);
        core.close();
        assert_eq!(ended(&mut fresh), Some(Ended::Closed));
        drop((sub, fresh));
        assert_eq!(core.subscriber_count(), 0);
        assert!(matches!(
            Subscription::open(&core, &[], &Resume::Live, Owner::default()),
            Err(SubscribeError::Closed)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expiry_ends_it_and_its_seat_comes_back_after_its_last_subscription() {
        let core = Core::new(
            Settings {
                max_streams_per_user: 1,
                ..Settings::default()
            },
            false,
        );
        let seat = |core: &Arc<Core>| core.seats.take(Some("ann".into()), None).map(Arc::new);
        let at = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let ann = Owner {
            user: Some("ann".into()),
            expires: Some(at),
            seat: Some(seat(&core).unwrap()),
            ..Owner::default()
        };
        // Two subscriptions of one stream (a WebSocket changing topics):
        // one seat.
        let mut sub = Subscription::open(&core, &[], &Resume::Live, ann.clone()).unwrap();
        let next = Subscription::open(&core, &["a"], &Resume::Live, ann).unwrap();
        assert!(matches!(seat(&core), Err(SubscribeError::TooManyForUser)));
        assert_eq!(ended(&mut sub), None);
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert_eq!(ended(&mut sub), Some(Ended::Expired));
        drop(sub);
        assert!(matches!(seat(&core), Err(SubscribeError::TooManyForUser)));
        drop(next);
        assert!(seat(&core).is_ok());
    }
}
