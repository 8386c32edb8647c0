//! What a call did ([`CallOutcome`]), and what [`refresh`](crate::refresh),
//! [`uncached`](crate::uncached) and [`with_outcome`](crate::with_outcome)
//! ask of the call they wrap ([`Request`]).
//!
//! The request rides on the task (see [`crate::global`]): the first cached
//! call that starts under it takes it, so calls nested in its body run as
//! usual. A plain call pays nothing for this beyond the task-local lookup
//! it makes anyway to find its cache.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// What one call did, as [`with_outcome`](crate::with_outcome) and
/// [`Cache::get_or_insert_with_outcome`](crate::Cache::get_or_insert_with_outcome)
/// report it.
///
/// More outcomes may come with new features (a near-tier hit, a stale
/// value served): match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallOutcome {
    /// Served from the cache; the body did not run.
    Hit,
    /// Handed the value of a concurrent call of the same key, which ran the
    /// body for both (single-flight): in this process, or, with leases, in
    /// another; the body did not run for this call.
    Coalesced,
    /// Not in the cache: the body ran, and its value was stored if it is
    /// cacheable (and no invalidation or other writer came first, and the
    /// store did not fail: a failed store is counted as an error).
    Miss,
    /// A [`refresh`](crate::refresh): the body ran and its value replaced
    /// the entry, unless the value is not cacheable (an `Err`, a `None`) or
    /// an invalidation ran while the body did (or other writers kept
    /// storing): the entry is then left as it was.
    Refreshed,
    /// An [`uncached`](crate::uncached) call: the body ran; the cache was
    /// neither read nor written.
    Bypassed,
    /// The cache could not be read (its backend failed or its circuit is
    /// open, it was closed, the key cannot be encoded, the value type cannot
    /// be read back, or the function is refused caching): the body ran
    /// uncached.
    Uncached,
    /// `stale_if_error`: the body ran and returned `Err`, and the call
    /// returned the entry's last good value instead, past its TTL but
    /// within its grace period.
    Stale,
}

impl CallOutcome {
    /// A short lower-case name (`hit`, `coalesced`, `miss`, `refreshed`,
    /// `bypassed`, `uncached`, `stale`): for headers, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Hit => "hit",
            CallOutcome::Coalesced => "coalesced",
            CallOutcome::Miss => "miss",
            CallOutcome::Refreshed => "refreshed",
            CallOutcome::Bypassed => "bypassed",
            CallOutcome::Uncached => "uncached",
            CallOutcome::Stale => "stale",
        }
    }

    /// Whether the body ran for this call.
    pub fn ran_body(self) -> bool {
        !matches!(self, CallOutcome::Hit | CallOutcome::Coalesced)
    }
}

impl std::fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Cache-aside: look up, run the body on a miss, store.
    Normal,
    /// Run the body and store its value whatever the entry holds.
    Refresh,
    /// Run the body; leave the cache alone.
    Bypass,
}

/// What a companion asks of the call it wraps.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) mode: Mode,
    /// Where to leave the call's outcome, for each wrapper that wants it.
    report: Vec<Arc<Mutex<Option<CallOutcome>>>>,
}

impl Request {
    pub(crate) fn new(mode: Mode) -> Request {
        Request {
            mode,
            report: Vec::new(),
        }
    }

    /// A request that reports the outcome into the returned slot.
    pub(crate) fn reporting(mode: Mode) -> (Request, Arc<Mutex<Option<CallOutcome>>>) {
        let slot = Arc::new(Mutex::new(None));
        let request = Request {
            mode,
            report: vec![Arc::clone(&slot)],
        };
        (request, slot)
    }

    /// This request inside `outer` (an enclosing wrapper's, not taken):
    /// this one's mode (a normal call inside a refresh refreshes), and both
    /// learn the outcome.
    pub(crate) fn within(mut self, outer: Request) -> Request {
        if self.mode == Mode::Normal {
            self.mode = outer.mode;
        }
        self.report.extend(outer.report);
        self
    }

    pub(crate) fn report(&self, outcome: CallOutcome) {
        for slot in &self.report {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        }
    }
}
