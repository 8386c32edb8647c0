//! Counters per namespace: what [`Cache::stats`](crate::Cache::stats) reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

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

/// What kind of cache failure a call survived: the `kind` label of
/// `cache_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// A read of the backend (an entry, a shard's state) failed.
    Read,
    /// A store or a lease failed, or a store replaced a key that was not
    /// an entry.
    Write,
    /// An entry could not be decoded, or values of its type cannot be read back.
    Decode,
    /// A value could not be encoded.
    Encode,
    /// The key could not be built: its arguments cannot be encoded. (An
    /// invalid namespace or TTL given to the programmatic API is a
    /// programming error, logged and not counted: it has no namespace to
    /// count it in.)
    Key,
}

impl ErrorKind {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [ErrorKind; 5] = [
        ErrorKind::Read,
        ErrorKind::Write,
        ErrorKind::Decode,
        ErrorKind::Encode,
        ErrorKind::Key,
    ];

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::Decode => "decode",
            ErrorKind::Encode => "encode",
            ErrorKind::Key => "key",
        }
    }
}

/// The counters of one namespace in one cache, and its metric handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<Box<super::metrics::NamespaceMetrics>>,
}

impl Counters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.hits.increment(1);
        }
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.misses.increment(1);
        }
    }
    /// A call handed a concurrent call's value (counted as a miss in
    /// [`Stats`], which it was when it looked up).
    pub(crate) fn coalesced(&self) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.coalesced.increment(1);
        }
    }
    pub(crate) fn error(&self, kind: ErrorKind) {
        self.errors.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.error(kind);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = kind;
    }
    /// A store refused because an invalidation or another writer came first.
    pub(crate) fn refused(&self) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.refused.increment(1);
        }
    }
    /// Whether the body's duration is wanted (it costs two clock reads).
    pub(crate) fn times_bodies(&self) -> bool {
        #[cfg(feature = "metrics")]
        return self.metrics.is_some();
        #[cfg(not(feature = "metrics"))]
        false
    }
    pub(crate) fn body_ran(&self, seconds: f64) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.body.record(seconds);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = seconds;
    }
}

/// Namespaces counted on their own, per cache; calls of any further ones
/// (namespaces built from request data through the programmatic API) are
/// counted together under [`OVERFLOW`], so neither the counters nor the
/// metrics' series grow without bound.
pub const MAX_COUNTED_NAMESPACES: usize = 1024;

/// Where calls of namespaces past [`MAX_COUNTED_NAMESPACES`] are counted.
/// Not a valid namespace name, so it never meets a real one.
pub const OVERFLOW: &str = "(other)";

#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_namespace: RwLock<HashMap<String, Arc<Counters>>>,
    /// Register metric handles for new namespaces.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metrics: bool,
}

impl Registry {
    pub(crate) fn new(metrics: bool) -> Registry {
        Registry {
            by_namespace: RwLock::default(),
            metrics,
        }
    }

    pub(crate) fn counters(&self, namespace: &str) -> Arc<Counters> {
        if let Some(c) = self.read().get(namespace) {
            return Arc::clone(c);
        }
        let mut map = self.by_namespace.write().unwrap_or_else(|e| e.into_inner());
        let namespace = if map.len() >= MAX_COUNTED_NAMESPACES && !map.contains_key(namespace) {
            if !map.contains_key(OVERFLOW) {
                tracing::warn!(
                    limit = MAX_COUNTED_NAMESPACES,
                    "more namespaces than the cache counts one by one; the calls of the others \
                     are counted together under `{OVERFLOW}`"
                );
            }
            OVERFLOW
        } else {
            namespace
        };
        let counters = map.entry(namespace.to_owned()).or_insert_with(|| {
            Arc::new(Counters {
                #[cfg(feature = "metrics")]
                metrics: self
                    .metrics
                    .then(|| Box::new(super::metrics::NamespaceMetrics::register(namespace))),
                ..Counters::default()
            })
        });
        Arc::clone(counters)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_sum_per_namespace() {
        let r = Registry::default();
        r.counters("a").hit();
        r.counters("a").miss();
        r.counters("b").error(ErrorKind::Read);
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
