//! Per-key single-flight: concurrent misses on one key in one process run the
//! body once.
//!
//! The first caller to miss becomes the leader and holds the flight's slot lock
//! while it runs the body; the others queue on the lock. When the leader is done
//! it leaves the encoded entry in the slot, and each waiter decodes its own copy.
//! If the leader's future is dropped mid-flight, its guard is released with the
//! slot still empty, and the next waiter in line takes over as leader. If the
//! result cannot be shared (an `Err`, a `None`, or a value an invalidation made
//! stale while it was computed), waiters run the body themselves, concurrently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

use crate::key::CacheKey;

/// What a finished leader leaves for its waiters.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The entry the leader stored (or tried to): decode it.
    Shared(Bytes),
    /// Run the body yourself.
    RunAlone,
}

#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Arc<str>, Weak<Flight>>>,
}

#[derive(Debug)]
pub(crate) struct Flight {
    key: CacheKey,
    slot: tokio::sync::Mutex<Option<Outcome>>,
    flights: Arc<Flights>,
}

/// A caller's turn in a flight.
pub(crate) enum Turn<'a> {
    /// Run the body, then [`Lead::finish`].
    Lead(Lead<'a>),
    /// The leader's outcome.
    Follow(Outcome),
}

pub(crate) struct Lead<'a> {
    flight: &'a Arc<Flight>,
    slot: tokio::sync::MutexGuard<'a, Option<Outcome>>,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Weak<Flight>>> {
        // The map stays consistent even if a holder panicked: every operation on
        // it is a single insert, remove or retain.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight for `key`, starting one if none is in the air.
    pub(crate) fn join(self: &Arc<Self>, key: &CacheKey) -> Arc<Flight> {
        let mut map = self.lock();
        if let Some(flight) = map.get(key.as_str()).and_then(Weak::upgrade) {
            return flight;
        }
        let flight = Arc::new(Flight {
            key: key.clone(),
            slot: tokio::sync::Mutex::new(None),
            flights: Arc::clone(self),
        });
        map.insert(Arc::from(key.as_str()), Arc::downgrade(&flight));
        flight
    }

    /// Detaches the flight of one key: later callers start a new one instead of
    /// joining a computation that began before an invalidation.
    pub(crate) fn detach(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Detaches every flight of a namespace.
    pub(crate) fn detach_namespace(&self, namespace: &str) {
        // Upgraded flights are dropped after the lock is released: dropping the
        // last one runs `Flight::drop`, which takes the lock again.
        let mut upgraded = Vec::new();
        self.lock().retain(|_, flight| match flight.upgrade() {
            Some(flight) => {
                let keep = flight.key.namespace() != namespace;
                upgraded.push(flight);
                keep
            }
            None => false,
        });
        drop(upgraded);
    }

    /// Flights in the air, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Flight {
    /// Waits for this caller's turn.
    pub(crate) async fn enter(self: &Arc<Self>) -> Turn<'_> {
        let slot = self.slot.lock().await;
        match &*slot {
            Some(outcome) => Turn::Follow(outcome.clone()),
            None => Turn::Lead(Lead { flight: self, slot }),
        }
    }
}

impl Lead<'_> {
    /// Publishes the outcome to the waiters and lands the flight.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        *self.slot = Some(outcome);
        let flight = self.flight;
        let mut map = flight.flights.lock();
        if map
            .get(flight.key.as_str())
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(flight)))
        {
            map.remove(flight.key.as_str());
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        // The last participant is gone (for example every caller was cancelled):
        // forget the flight unless a newer one took its place.
        let mut map = self.flights.lock();
        if map
            .get(self.key.as_str())
            .is_some_and(|w| w.strong_count() == 0)
        {
            map.remove(self.key.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Namespace;

    fn key(arg: u8) -> CacheKey {
        CacheKey::from_parts("t", &Namespace::new("ns").unwrap(), "f", 0, &[arg])
    }

    #[tokio::test]
    async fn second_caller_follows_the_leader() {
        let flights = Arc::new(Flights::default());
        let a = flights.join(&key(1));
        let b = flights.join(&key(1));
        assert!(Arc::ptr_eq(&a, &b));
        let Turn::Lead(lead) = a.enter().await else {
            panic!("first caller must lead")
        };
        lead.finish(Outcome::Shared(Bytes::from_static(b"v")));
        assert!(matches!(b.enter().await, Turn::Follow(Outcome::Shared(v)) if v == "v"));
        // Landed: a new caller starts a new flight.
        assert!(!Arc::ptr_eq(&flights.join(&key(1)), &a));
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_over() {
        let flights = Arc::new(Flights::default());
        let a = flights.join(&key(2));
        let b = flights.join(&key(2));
        match a.enter().await {
            Turn::Lead(lead) => drop(lead),
            Turn::Follow(_) => panic!("first caller must lead"),
        }
        assert!(matches!(b.enter().await, Turn::Lead(_)));
    }

    #[tokio::test]
    async fn abandoned_flights_are_forgotten() {
        let flights = Arc::new(Flights::default());
        drop(flights.join(&key(3)));
        assert_eq!(flights.len(), 0);
        let kept = flights.join(&key(4));
        flights.detach_namespace("other");
        assert_eq!(flights.len(), 1);
        flights.detach_namespace("ns");
        assert_eq!(flights.len(), 0);
        drop(kept);
    }
}
