//! Per-key single-flight: concurrent misses on one key in one process run the
//! body once, and never hand a caller a value older than what it may see.
//!
//! A flight runs in rounds. The caller holding the flight's lock leads a
//! round: it runs the body (or, in later rounds, first looks the key up
//! again) and publishes what it got; the others wait on the lock. Which
//! waiters may take a published value is decided by order of events in the
//! flight (a counter every join, round start and store start draws from):
//!
//! - a value whose round *started after* the waiter joined was computed (or
//!   read from the shared tier) after the waiter's call began, so it reflects
//!   every invalidation that returned before that: the waiter takes it;
//! - a value whose store *started after* the waiter joined and succeeded
//!   proves that no invalidation came between the round's read and the
//!   store (the store would have been refused), so the waiter takes it too;
//! - anything else (a refused or failed store seen by a waiter that joined
//!   mid-round, a result that is not shared such as an `Err`) sends the
//!   waiter to lead a round of its own, one waiter at a time.
//!
//! So a stampede runs the body once when the store succeeds, twice when it is
//! refused (the second round usually finds another process's value), and
//! failing bodies run one at a time rather than all at once. A leader whose
//! future is dropped (or whose body panics) releases the lock with nothing
//! published, and the next waiter leads.
//!
//! A caller whose lookup missed just before a store of its key landed may
//! find the flight already gone when it joins, and start a new one. The
//! store is remembered (a landing, stamped by a clock the caller read before
//! its lookup), so that caller looks the key up again before it computes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

use crate::key::CacheKey;

/// What a round's leader leaves for its waiters.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// A value, as a sealed entry: decode it (with the schema check).
    Value(Bytes),
    /// `stale_if_error`: the body failed, and the leader returned this
    /// entry's last good value (still in the cache after the body): the
    /// waiters return it too, rather than each running the failing body.
    Stale(Bytes),
    /// A result that is not cached but can be shared: a `None`.
    Empty,
    /// Nothing to share (an `Err`): the next waiter leads a round.
    Unshared,
    /// The cache cannot serve this key's calls (a value that cannot be
    /// encoded): every waiter runs the body itself, at once.
    RunAlone,
}

#[derive(Debug, Clone)]
struct Published {
    outcome: Outcome,
    /// When the round started.
    round: u64,
    /// When its store started, if the store succeeded.
    stored: Option<u64>,
    /// The round's read of the backend failed.
    read_failed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Arc<str>, Weak<Flight>>>,
    /// Counts successful stores, in process.
    clock: AtomicU64,
    /// The clock of the last successful store of recent keys.
    landings: Mutex<HashMap<Arc<str>, u64>>,
}

/// Landings remembered at most; past that they are forgotten, which costs
/// at worst a body run, never a stale value.
const LANDINGS: usize = 4096;

/// The landing clock as a caller read it before its lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(u64);

#[derive(Debug)]
pub(crate) struct Flight {
    key: CacheKey,
    /// Orders joins, round starts and store starts.
    events: AtomicU64,
    slot: tokio::sync::Mutex<Option<Published>>,
    flights: Arc<Flights>,
    /// When a round of this flight first found the key's lease held by
    /// another process: every round's wait counts from then.
    lease_wait: std::sync::OnceLock<std::time::Instant>,
}

/// A caller's place in a flight: when it joined.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// A caller's turn in a flight.
pub(crate) enum Turn<'a> {
    /// Lead a round, then [`Lead::finish`].
    Lead(Lead<'a>),
    /// A round's outcome, fresh enough for this caller.
    Follow(Outcome),
}

pub(crate) struct Lead<'a> {
    flight: &'a Flight,
    slot: tokio::sync::MutexGuard<'a, Option<Published>>,
    round: u64,
    store: Option<u64>,
    read_failed: bool,
    /// The round before this one, if any, had a failed read.
    after_failed_read: bool,
    /// The first round of a fresh flight: the leader's own lookup, made just
    /// before, stands for the round's read.
    first: bool,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Weak<Flight>>> {
        // The map stays consistent even if a holder panicked: every operation on
        // it is a single insert, remove or retain.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the landing clock: call before looking a key up.
    pub(crate) fn clock(&self) -> Clock {
        Clock(self.clock.load(SeqCst))
    }

    pub(crate) fn landed(&self, key: &CacheKey) {
        let mut landings = self.landings.lock().unwrap_or_else(|e| e.into_inner());
        if landings.len() >= LANDINGS {
            landings.clear();
        }
        let at = self.clock.fetch_add(1, SeqCst) + 1;
        landings.insert(Arc::from(key.as_str()), at);
    }

    fn landed_since(&self, key: &CacheKey, seen: Clock) -> bool {
        let landings = self.landings.lock().unwrap_or_else(|e| e.into_inner());
        landings.get(key.as_str()).is_some_and(|&at| at > seen.0)
    }

    /// Joins the flight for `key`, starting one if none is in the air.
    pub(crate) fn join(self: &Arc<Self>, key: &CacheKey) -> (Arc<Flight>, Ticket) {
        let mut map = self.lock();
        let flight = match map.get(key.as_str()).and_then(Weak::upgrade) {
            Some(flight) => flight,
            None => {
                let flight = Arc::new(Flight {
                    key: key.clone(),
                    events: AtomicU64::new(0),
                    slot: tokio::sync::Mutex::new(None),
                    flights: Arc::clone(self),
                    lease_wait: std::sync::OnceLock::new(),
                });
                map.insert(Arc::from(key.as_str()), Arc::downgrade(&flight));
                flight
            }
        };
        let ticket = Ticket(flight.events.fetch_add(1, SeqCst) + 1);
        (flight, ticket)
    }

    /// Detaches the flight of one key: later callers start a new one instead of
    /// queueing behind a computation that began before an invalidation.
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
    /// Waits for this caller's turn: an outcome it may take, or the lead.
    ///
    /// Cancel safety: dropping the future gives up the place in the queue
    /// and nothing else.
    pub(crate) async fn enter(&self, ticket: Ticket) -> Turn<'_> {
        let slot = self.slot.lock().await;
        let first = slot.is_none();
        let after_failed_read = slot.as_ref().is_some_and(|p| p.read_failed);
        if let Some(published) = &*slot {
            let fresh =
                published.round > ticket.0 || published.stored.is_some_and(|s| s > ticket.0);
            match &published.outcome {
                Outcome::RunAlone => return Turn::Follow(Outcome::RunAlone),
                outcome @ (Outcome::Value(_) | Outcome::Stale(_) | Outcome::Empty) if fresh => {
                    return Turn::Follow(outcome.clone());
                }
                _ => {}
            }
        }
        let round = self.events.fetch_add(1, SeqCst) + 1;
        Turn::Lead(Lead {
            flight: self,
            slot,
            round,
            store: None,
            read_failed: false,
            after_failed_read,
            first,
        })
    }
}

impl Lead<'_> {
    /// Whether this round must look the key up again before computing: every
    /// round but the first of a fresh flight, whose leader just did, unless
    /// a store of the key landed since the clock `seen` was read before that
    /// lookup. Not after a round whose read failed: the backend is failing,
    /// and a second read would make the waiters pay a second timeout (the
    /// round then stores nothing and shares its value with the callers that
    /// were waiting when it began, which is fresh for them).
    pub(crate) fn must_look_up(&self, seen: Clock) -> bool {
        if self.flight.flights.landed_since(&self.flight.key, seen) {
            return true;
        }
        !self.first && !self.after_failed_read
    }

    /// When this key's flight began waiting for another process's lease
    /// (now, if it had not).
    pub(crate) fn lease_wait_started(&self) -> std::time::Instant {
        *self.flight.lease_wait.get_or_init(std::time::Instant::now)
    }

    /// Records that this round's read of the backend failed.
    pub(crate) fn read_failed(&mut self) {
        self.read_failed = true;
    }

    /// Marks the start of the round's store; call right before sending it.
    pub(crate) fn store_starts(&mut self) {
        self.store = Some(self.flight.events.fetch_add(1, SeqCst) + 1);
    }

    /// Publishes the round's outcome to the waiters. `stored` says the store
    /// marked by [`store_starts`](Self::store_starts) succeeded.
    pub(crate) fn finish(mut self, outcome: Outcome, stored: bool) {
        if stored {
            self.flight.flights.landed(&self.flight.key);
        }
        *self.slot = Some(Published {
            outcome,
            round: self.round,
            stored: self.store.filter(|_| stored),
            read_failed: self.read_failed,
        });
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        // The last participant is gone: forget the flight unless a newer one
        // took its place.
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
        CacheKey::from_segment("t", &Namespace::new("ns").unwrap(), ":f:v0:", &[arg])
    }

    fn lead(turn: Turn<'_>) -> Lead<'_> {
        match turn {
            Turn::Lead(lead) => lead,
            Turn::Follow(outcome) => panic!("expected to lead, got {outcome:?}"),
        }
    }

    fn value() -> Outcome {
        Outcome::Value(Bytes::from_static(b"v"))
    }

    #[tokio::test]
    async fn a_waiter_takes_a_stored_value() {
        let flights = Arc::new(Flights::default());
        let (a, ta) = flights.join(&key(1));
        let mut round = lead(a.enter(ta).await);
        let (b, tb) = flights.join(&key(1));
        assert!(Arc::ptr_eq(&a, &b));
        round.store_starts();
        round.finish(value(), true);
        assert!(matches!(b.enter(tb).await, Turn::Follow(Outcome::Value(v)) if v == "v"));
    }

    #[tokio::test]
    async fn a_value_not_stored_is_only_for_waiters_of_a_later_round() {
        let flights = Arc::new(Flights::default());
        let (a, ta) = flights.join(&key(2));
        let mut first = lead(a.enter(ta).await);
        // Joined mid-round: the refused store's value may predate an
        // invalidation this caller must see; it leads the next round.
        let (b, tb) = flights.join(&key(2));
        first.store_starts();
        first.finish(value(), false);
        let second = lead(b.enter(tb).await);
        assert!(
            second.must_look_up(Clock(0)),
            "a later round looks the key up again"
        );
        // Waiting when the second round started: takes its value, stored or not.
        let (c, tc) = (Arc::clone(&b), Ticket(tb.0));
        second.finish(value(), false);
        assert!(matches!(c.enter(tc).await, Turn::Follow(Outcome::Value(_))));
    }

    #[tokio::test]
    async fn a_store_that_started_before_a_caller_joined_proves_nothing_to_it() {
        let flights = Arc::new(Flights::default());
        let (a, ta) = flights.join(&key(3));
        let mut round = lead(a.enter(ta).await);
        round.store_starts();
        let (b, tb) = flights.join(&key(3));
        round.finish(value(), true);
        assert!(matches!(b.enter(tb).await, Turn::Lead(_)));
    }

    #[tokio::test]
    async fn unshared_outcomes_hand_the_lead_on_and_run_alone_releases_all() {
        let flights = Arc::new(Flights::default());
        let (a, ta) = flights.join(&key(4));
        let round = lead(a.enter(ta).await);
        let (b, tb) = flights.join(&key(4));
        round.finish(Outcome::Unshared, false);
        let round = lead(b.enter(tb).await);
        let (c, tc) = flights.join(&key(4));
        round.finish(Outcome::RunAlone, false);
        assert!(matches!(c.enter(tc).await, Turn::Follow(Outcome::RunAlone)));
    }

    #[tokio::test]
    async fn a_caller_that_missed_before_a_store_landed_looks_again() {
        let flights = Arc::new(Flights::default());
        let seen = flights.clock(); // then its lookup misses
        let (a, ta) = flights.join(&key(8));
        let mut round = lead(a.enter(ta).await);
        round.store_starts();
        round.finish(value(), true);
        drop(a); // every participant left: the flight is gone
        let (b, tb) = flights.join(&key(8));
        let fresh = lead(b.enter(tb).await);
        assert!(
            fresh.must_look_up(seen),
            "it would compute what just landed"
        );
        assert!(!fresh.must_look_up(flights.clock()));
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_over() {
        let flights = Arc::new(Flights::default());
        let (a, ta) = flights.join(&key(5));
        let (b, tb) = flights.join(&key(5));
        drop(lead(a.enter(ta).await));
        assert!(matches!(b.enter(tb).await, Turn::Lead(_)));
    }

    #[tokio::test]
    async fn abandoned_flights_are_forgotten() {
        let flights = Arc::new(Flights::default());
        drop(flights.join(&key(6)));
        assert_eq!(flights.len(), 0);
        let kept = flights.join(&key(7));
        flights.detach_namespace("other");
        assert_eq!(flights.len(), 1);
        flights.detach_namespace("ns");
        assert_eq!(flights.len(), 0);
        drop(kept);
    }
}
