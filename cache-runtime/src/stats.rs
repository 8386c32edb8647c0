//! Counters per namespace, and the rate limit on the warnings fail-open logs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters of one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NamespaceStats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that ran the body: nothing stored, or a stale, foreign or broken entry.
    pub misses: u64,
    /// Cache failures (backend, encode, decode) that the call survived.
    pub errors: u64,
}

/// A snapshot of a cache's counters, by namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Counters per namespace, sorted by name.
    pub namespaces: BTreeMap<String, NamespaceStats>,
}

impl Stats {
    /// The counters of one namespace (zero if it saw no calls).
    pub fn namespace(&self, name: &str) -> NamespaceStats {
        self.namespaces.get(name).copied().unwrap_or_default()
    }

    /// The counters summed over all namespaces.
    pub fn total(&self) -> NamespaceStats {
        self.namespaces
            .values()
            .fold(NamespaceStats::default(), |acc, s| NamespaceStats {
                hits: acc.hits + s.hits,
                misses: acc.misses + s.misses,
                errors: acc.errors + s.errors,
            })
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_namespace: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Registry {
    pub(crate) fn counters(&self, namespace: &str) -> Arc<Counters> {
        if let Some(c) = self.read().get(namespace) {
            return Arc::clone(c);
        }
        let mut map = self.by_namespace.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(namespace.to_owned()).or_default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Counters>>> {
        self.by_namespace.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            namespaces: self
                .read()
                .iter()
                .map(|(name, c)| {
                    let stats = NamespaceStats {
                        hits: c.hits.load(Relaxed),
                        misses: c.misses.load(Relaxed),
                        errors: c.errors.load(Relaxed),
                    };
                    (name.clone(), stats)
                })
                .collect(),
        }
    }
}

/// Lets one warning through per period and counts the ones it held back, so a
/// dead backend does not flood the logs with one line per call.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    start: Instant,
    /// Milliseconds since `start` of the last warning let through, plus one
    /// (zero: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(period: Duration) -> Self {
        Throttle {
            period,
            start: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if a warning may be logged now, `n` being how many were held
    /// back since the last one.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Relaxed);
        let period = u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < period
            || self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_admits_one_per_period() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        let t = Throttle::new(Duration::ZERO);
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), Some(0));
    }

    #[test]
    fn stats_sum_per_namespace() {
        let r = Registry::default();
        r.counters("a").hit();
        r.counters("a").miss();
        r.counters("b").error();
        let s = r.snapshot();
        assert_eq!(
            s.namespace("a"),
            NamespaceStats {
                hits: 1,
                misses: 1,
                errors: 0
            }
        );
        assert_eq!(
            s.total(),
            NamespaceStats {
                hits: 1,
                misses: 1,
                errors: 1
            }
        );
        assert_eq!(s.namespace("none"), NamespaceStats::default());
    }
}
