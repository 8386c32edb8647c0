//! A circuit breaker in front of the backend, so that a dead cache stops adding
//! a timeout to every call.
//!
//! Closed: calls go to the backend; `threshold` consecutive failures open it.
//! Open: calls skip the backend (and run uncached) until the open period ends.
//! Half-open: one call probes the backend; success closes the circuit, failure
//! opens it again for twice as long, up to the cap. The first open period is the
//! base, so recovery follows the same capped exponential backoff as reconnects.
//!
//! A probe is a [`Permit`] that must be resolved: a probe whose future is
//! dropped before it answers (a cancelled request, a timeout around the call)
//! counts as a failed probe in its `Drop`, so the circuit backs off and
//! probes again instead of waiting forever for an answer that never comes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// When a circuit opens and how it backs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitConfig {
    /// Consecutive failures that open the circuit. Default 5.
    pub threshold: u32,
    /// The first open period. Default 50 ms.
    pub base: Duration,
    /// The longest open period. Default 5 s.
    pub cap: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            threshold: 5,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Circuit {
    config: CircuitConfig,
    /// False for a backend with circuits of its own (per slot): then this
    /// one never opens.
    enabled: bool,
    /// Fast path: false while closed, so a healthy call reads one atomic.
    tripped: AtomicBool,
    failures: AtomicU32,
    state: Mutex<Tripped>,
}

#[derive(Debug, Clone, Copy)]
struct Tripped {
    /// When the next probe may go.
    until: Instant,
    /// The current open period.
    period: Duration,
    /// A probe is in flight.
    probing: bool,
}

/// What a transition means for the logs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Opened(Duration),
    Closed,
}

impl Circuit {
    pub(crate) fn new(config: CircuitConfig) -> Self {
        Circuit {
            config,
            enabled: true,
            tripped: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            state: Mutex::new(Tripped {
                until: Instant::now(),
                period: config.base,
                probing: false,
            }),
        }
    }

    /// A circuit that never opens: for a backend that isolates failures
    /// itself ([`Backend::own_circuits`](crate::Backend::own_circuits)).
    pub(crate) fn never_open(config: CircuitConfig) -> Self {
        Circuit {
            enabled: false,
            ..Circuit::new(config)
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Tripped> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may use the backend now: a permit to report the
    /// operation's result with, or `None` while the circuit is open.
    pub(crate) fn allow(&self) -> Option<Permit<'_>> {
        if !self.tripped.load(Relaxed) {
            return Some(Permit {
                circuit: self,
                probe: false,
            });
        }
        let mut state = self.state();
        if state.probing || Instant::now() < state.until {
            return None;
        }
        state.probing = true;
        Some(Permit {
            circuit: self,
            probe: true,
        })
    }

    /// A permit for an operation that runs whether the circuit is open or
    /// not (a health check), and whose answer counts all the same.
    pub(crate) fn bypass(&self) -> Permit<'_> {
        Permit {
            circuit: self,
            probe: false,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.tripped.load(Relaxed)
    }

    fn success(&self) -> Transition {
        if !self.tripped.load(Relaxed) {
            if self.failures.load(Relaxed) != 0 {
                self.failures.store(0, Relaxed);
            }
            return Transition::None;
        }
        let mut state = self.state();
        state.probing = false;
        state.period = self.config.base;
        self.failures.store(0, Relaxed);
        if self.tripped.swap(false, Relaxed) {
            Transition::Closed
        } else {
            Transition::None
        }
    }

    fn failure(&self, probe: bool) -> Transition {
        if !self.enabled {
            return Transition::None;
        }
        if !self.tripped.load(Relaxed) {
            let failures = self.failures.fetch_add(1, Relaxed) + 1;
            if failures < self.config.threshold {
                return Transition::None;
            }
            let mut state = self.state();
            if self.tripped.swap(true, Relaxed) {
                return Transition::None; // another caller opened it
            }
            state.period = self.config.base;
            state.until = Instant::now() + state.period;
            state.probing = false;
            return Transition::Opened(state.period);
        }
        let mut state = self.state();
        if !probe || !state.probing {
            // A call let through before the circuit opened, or past it (a
            // health check): the probe's answer decides.
            return Transition::None;
        }
        state.probing = false;
        state.period = (state.period * 2).min(self.config.cap);
        state.until = Instant::now() + state.period;
        Transition::Opened(state.period)
    }
}

/// Leave to use the backend for one operation; report its result with
/// [`success`](Self::success) or [`failure`](Self::failure). A probe dropped
/// unresolved counts as a failed one.
#[must_use]
pub(crate) struct Permit<'a> {
    circuit: &'a Circuit,
    probe: bool,
}

impl Permit<'_> {
    /// Any success closes the circuit: the backend answers.
    pub(crate) fn success(mut self) -> Transition {
        self.probe = false;
        self.circuit.success()
    }

    /// A failure counts towards opening the circuit; while it is open, only
    /// the probe's failure backs it off (an operation let through otherwise,
    /// such as a health check, must not take the probe's place).
    pub(crate) fn failure(mut self) -> Transition {
        let probe = std::mem::replace(&mut self.probe, false);
        self.circuit.failure(probe)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            let _ = self.circuit.failure(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(threshold: u32, base_ms: u64, cap_ms: u64) -> Circuit {
        Circuit::new(CircuitConfig {
            threshold,
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let c = circuit(3, 10_000, 10_000);
        let fail = |c: &Circuit| c.allow().expect("closed").failure();
        assert_eq!(fail(&c), Transition::None);
        assert_eq!(fail(&c), Transition::None);
        assert_eq!(c.allow().unwrap().success(), Transition::None);
        assert_eq!(fail(&c), Transition::None);
        assert_eq!(fail(&c), Transition::None);
        assert_eq!(fail(&c), Transition::Opened(Duration::from_secs(10)));
        assert!(c.allow().is_none());
        assert!(c.is_open());
    }

    #[test]
    fn half_open_probe_closes_or_backs_off() {
        let c = circuit(1, 1, 4);
        assert_eq!(
            c.allow().unwrap().failure(),
            Transition::Opened(Duration::from_millis(1))
        );
        std::thread::sleep(Duration::from_millis(3));
        let probe = c.allow().expect("the probe goes");
        assert!(c.allow().is_none(), "one probe at a time");
        assert_eq!(
            probe.failure(),
            Transition::Opened(Duration::from_millis(2))
        );
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(
            c.allow().unwrap().failure(),
            Transition::Opened(Duration::from_millis(4))
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            c.allow().unwrap().failure(),
            Transition::Opened(Duration::from_millis(4)),
            "capped"
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.allow().unwrap().success(), Transition::Closed);
        assert!(c.allow().is_some() && c.allow().is_some());
    }

    #[test]
    fn a_dropped_probe_counts_as_a_failed_one() {
        let c = circuit(1, 1, 4);
        let _ = c.allow().unwrap().failure();
        std::thread::sleep(Duration::from_millis(3));
        drop(c.allow().expect("the probe goes"));
        assert!(c.is_open());
        // The circuit backed off (2 ms) instead of waiting for the lost probe.
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.allow().expect("probes again").success() == Transition::Closed);
    }
}
