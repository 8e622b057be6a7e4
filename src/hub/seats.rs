//! The hub's limits on open streams: in all, per user and per client
//! address. A stream takes its seat once, at its first subscription (or
//! before it waits for the engine), and keeps it for its life: an SSE stream or gRPC stream for its one subscription, a
//! WebSocket connection for every subscription it opens as its topics
//! change (so changing topics at a limit is never refused). The seat is
//! given back when its last holder goes. [`Owner`] is whose a subscription
//! is: its user, address, expiry, and that seat.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::time::Instant;

use super::{settings::Settings, start::SubscribeError};

/// Whose a subscription is, as its authorization and request said.
#[derive(Clone, Debug, Default)]
pub(crate) struct Owner {
    pub(crate) user: Option<Arc<str>>,
    pub(crate) address: Option<IpAddr>,
    /// When its access expires, if it does.
    pub(crate) expires: Option<Instant>,
    /// Its stream's place under the hub's limits, kept while any
    /// subscription of the stream is open (none for the hub's own tests).
    pub(crate) seat: Option<Arc<Seat>>,
}

/// The open streams, counted against the hub's limits.
#[derive(Debug)]
pub(crate) struct Seats {
    counts: Mutex<Counts>,
    max: usize,
    max_per_user: usize,
    max_per_address: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_user: HashMap<Arc<str>, usize>,
    per_address: HashMap<IpAddr, usize>,
}

/// One stream's place under the limits; given back when dropped.
pub(crate) struct Seat {
    seats: Arc<Seats>,
    user: Option<Arc<str>>,
    address: Option<IpAddr>,
}

impl Seats {
    pub(crate) fn new(settings: &Settings) -> Arc<Seats> {
        Arc::new(Seats {
            counts: Mutex::default(),
            max: settings.max_subscribers,
            max_per_user: settings.max_streams_per_user,
            max_per_address: settings.max_streams_per_address,
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding them:
        // each change is one step.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A seat for a stream of `user` from `address` (either may be
    /// unknown: it is then not counted under that limit), or the limit it
    /// would pass.
    pub(crate) fn take(
        self: &Arc<Self>,
        user: Option<Arc<str>>,
        address: Option<IpAddr>,
    ) -> Result<Seat, SubscribeError> {
        let mut counts = self.counts();
        if counts.total >= self.max {
            return Err(SubscribeError::TooManySubscribers);
        }
        if user
            .as_ref()
            .is_some_and(|u| counts.per_user.get(u).copied().unwrap_or(0) >= self.max_per_user)
        {
            return Err(SubscribeError::TooManyForUser);
        }
        if address.is_some_and(|a| {
            counts.per_address.get(&a).copied().unwrap_or(0) >= self.max_per_address
        }) {
            return Err(SubscribeError::TooManyForAddress);
        }
        counts.total += 1;
        if let Some(user) = &user {
            *counts.per_user.entry(user.clone()).or_default() += 1;
        }
        if let Some(address) = address {
            *counts.per_address.entry(address).or_default() += 1;
        }
        Ok(Seat {
            seats: self.clone(),
            user,
            address,
        })
    }
}

impl std::fmt::Debug for Seat {
    /// Not the table of every user and address it counts under.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat")
            .field("user", &self.user)
            .field("address", &self.address)
            .finish()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut counts = self.seats.counts();
        counts.total -= 1;
        if let Some(user) = &self.user {
            decrement(&mut counts.per_user, user);
        }
        if let Some(address) = &self.address {
            decrement(&mut counts.per_address, address);
        }
    }
}

/// One less under `key`; the entry goes at zero.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_in_all_per_user_and_per_address_and_seats_come_back() {
        let seats = Seats::new(&Settings {
            max_subscribers: 3,
            max_streams_per_user: 1,
            max_streams_per_address: 2,
            ..Settings::default()
        });
        let here = Some(IpAddr::from([10, 0, 0, 1]));
        let ann = seats.take(Some("ann".into()), here).unwrap();
        assert!(matches!(
            seats.take(Some("ann".into()), None),
            Err(SubscribeError::TooManyForUser)
        ));
        let anonymous = seats.take(None, here).unwrap();
        assert!(matches!(
            seats.take(Some("bob".into()), here),
            Err(SubscribeError::TooManyForAddress)
        ));
        let elsewhere = seats.take(None, None).unwrap();
        assert!(matches!(
            seats.take(None, None),
            Err(SubscribeError::TooManySubscribers)
        ));
        drop((ann, anonymous, elsewhere));
        assert!(seats.counts().per_user.is_empty() && seats.counts().per_address.is_empty());
        let _ann = seats.take(Some("ann".into()), here).unwrap();
        let _bob = seats.take(Some("bob".into()), here).unwrap();
    }
}
