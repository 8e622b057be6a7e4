//! One subscriber's place in the hub ([`Subscription`]): a cursor per
//! followed topic, and the read that merges those topics in id order.
//! Transports read through it; it knows none of them.

use atomic_waker::AtomicWaker;
use std::{sync::Arc, task::Waker};

use super::{
    history::Follow,
    start::{Resume, Start, SubscribeError},
    state::Core,
};
use crate::record::Record;

/// The subscriber fell further behind than the lag bound, or a record it
/// had not read yet left the history: its stream must end (and the client
/// resume from its last id).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Lagged;

/// Why a subscription has nothing more to read, if it has not.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// `disconnect_all` was called since it opened: the client reconnects.
    Disconnected,
    /// The hub closed: the client should go away (what was published before
    /// is still delivered first).
    Closed,
}

/// A subscriber registered with the hub. Dropping it unregisters it.
pub(crate) struct Subscription {
    core: Arc<Core>,
    generation: u64,
    waker: Arc<AtomicWaker>,
    follows: Vec<Follow>,
    start: Start,
}

impl Subscription {
    /// Registers a subscriber of `topics` (and the default topic) from `resume`.
    pub(crate) fn open(
        core: &Arc<Core>,
        topics: &[&str],
        resume: &Resume,
    ) -> Result<Subscription, SubscribeError> {
        let waker = Arc::new(AtomicWaker::new());
        let generation = core.generation();
        let (follows, start) = core.register(topics, resume, &waker)?;
        Ok(Subscription {
            core: core.clone(),
            generation,
            waker,
            follows,
            start,
        })
    }

    /// Where it starts, for the transport to tell the client.
    pub(crate) fn start(&self) -> Start {
        self.start
    }

    /// Wakes `waker` when a followed topic gets a record, or the
    /// subscription ends. Register before reading, so that a record appended
    /// after the read wakes it and one appended before is in what it read.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Whether it was ended: disconnected (checked first: it ends at once)
    /// or closed (it ends once it has read what is left).
    pub(crate) fn ended(&self) -> Option<Ended> {
        if self.core.generation() != self.generation {
            Some(Ended::Disconnected)
        } else if self.core.is_closed() {
            Some(Ended::Closed)
        } else {
            None
        }
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
        self.core.unregister(&self.follows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Event, hub::settings::Settings, hub::start::StartKind, record::Message};

    fn core(max_lag: usize) -> Arc<Core> {
        Core::new(
            Settings {
                max_lag,
                history: 100,
                ..Settings::default()
            },
            false,
        )
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
        let mut sub = Subscription::open(&core, &["a", "b"], &Resume::Live).unwrap();
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
        let mut sub = Subscription::open(&core, &["a", "b"], &Resume::Live).unwrap();
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
        let core = Core::new(
            Settings {
                history: 3,
                max_lag: 1,
                ..Settings::default()
            },
            false,
        );
        let ids: Vec<u64> = (0..5)
            .map(|i| publish(&core, None, &i.to_string()))
            .collect();
        let mut sub = Subscription::open(&core, &[], &Resume::After(ids[2].to_string())).unwrap();
        assert_eq!(sub.start().kind, StartKind::Resumed);
        assert_eq!(
            read_all(&mut sub).unwrap(),
            ["3", "4"],
            "backlog is not lag"
        );
        let lost = Subscription::open(&core, &[], &Resume::After(ids[0].to_string())).unwrap();
        assert_eq!(lost.start().kind, StartKind::Reset);
        assert_eq!(lost.start().after, ids[4]);
        let unknown = Subscription::open(&core, &[], &Resume::Unknown).unwrap();
        assert_eq!(unknown.start().kind, StartKind::Reset);
    }

    #[test]
    fn lag_past_the_bound_ends_the_read() {
        let core = core(2);
        let mut sub = Subscription::open(&core, &["a"], &Resume::Live).unwrap();
        publish(&core, Some("a"), "1");
        publish(&core, None, "2");
        assert_eq!(read_all(&mut sub).unwrap(), ["1", "2"]);
        for i in 0..3 {
            publish(&core, Some("a"), &i.to_string());
        }
        assert_eq!(read_all(&mut sub), Err(Lagged));
    }

    #[test]
    fn disconnect_and_close_end_it_and_drop_unregisters() {
        let core = core(10);
        let sub = Subscription::open(&core, &["a"], &Resume::Live).unwrap();
        assert_eq!(core.subscriber_count(), 1);
        assert_eq!(sub.ended(), None);
        core.disconnect_all();
        assert_eq!(sub.ended(), Some(Ended::Disconnected));
        let fresh = Subscription::open(&core, &["a"], &Resume::Live).unwrap();
        assert_eq!(fresh.ended(), None);
        core.close();
        assert_eq!(fresh.ended(), Some(Ended::Closed));
        drop((sub, fresh));
        assert_eq!(core.subscriber_count(), 0);
        assert!(matches!(
            Subscription::open(&core, &[], &Resume::Live),
            Err(SubscribeError::Closed)
        ));
    }
}
