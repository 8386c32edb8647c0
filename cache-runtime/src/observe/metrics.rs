//! Metrics through the [`metrics`] facade (feature `metrics`): what
//! Prometheus, StatsD or OpenTelemetry exporters read.
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `cache_hits_total` | counter | `namespace` |
//! | `cache_misses_total` | counter | `namespace` |
//! | `cache_coalesced_total` | counter | `namespace` |
//! | `cache_errors_total` | counter | `namespace`, `kind` (`read`, `write`, `decode`, `encode`, `key`) |
//! | `cache_stores_refused_total` | counter | `namespace` |
//! | `cache_body_duration_seconds` | histogram | `namespace` |
//! | `cache_backend_duration_seconds` | histogram | `backend`, `op` (`get`, `shard`, `put`, `invalidate`, `bump`, `ping`) |
//!
//! Handles are registered with the recorder installed when a namespace sees
//! its first call in a cache (the backend's when the cache is built), and
//! kept: a recorder installed later does not see them, as the facade warns
//! for every library. Install the exporter before building the cache.

use metrics::{Counter, Histogram};

use super::Op;
use super::stats::ErrorKind;

/// The metric names, in one place: the guide's table and the dashboard use
/// them.
pub(crate) mod names {
    pub(crate) const HITS: &str = "cache_hits_total";
    pub(crate) const MISSES: &str = "cache_misses_total";
    pub(crate) const COALESCED: &str = "cache_coalesced_total";
    pub(crate) const ERRORS: &str = "cache_errors_total";
    pub(crate) const REFUSED: &str = "cache_stores_refused_total";
    pub(crate) const BODY: &str = "cache_body_duration_seconds";
    pub(crate) const BACKEND: &str = "cache_backend_duration_seconds";
}

/// The handles of one namespace in one cache.
#[derive(Debug)]
pub(crate) struct NamespaceMetrics {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) refused: Counter,
    /// By [`ErrorKind`], in its order.
    errors: [Counter; ErrorKind::ALL.len()],
    pub(crate) body: Histogram,
}

impl NamespaceMetrics {
    pub(crate) fn register(namespace: &str) -> NamespaceMetrics {
        let ns = namespace.to_owned();
        NamespaceMetrics {
            hits: metrics::counter!(names::HITS, "namespace" => ns.clone()),
            misses: metrics::counter!(names::MISSES, "namespace" => ns.clone()),
            coalesced: metrics::counter!(names::COALESCED, "namespace" => ns.clone()),
            refused: metrics::counter!(names::REFUSED, "namespace" => ns.clone()),
            errors: ErrorKind::ALL.map(|kind| {
                metrics::counter!(names::ERRORS, "namespace" => ns.clone(), "kind" => kind.as_str())
            }),
            body: metrics::histogram!(names::BODY, "namespace" => ns),
        }
    }

    pub(crate) fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].increment(1);
    }
}

/// The backend latency histograms of one cache, by [`Op`].
#[derive(Debug)]
pub(crate) struct BackendMetrics([Histogram; Op::ALL.len()]);

impl BackendMetrics {
    pub(crate) fn register(backend: &'static str) -> BackendMetrics {
        BackendMetrics(Op::ALL.map(
            |op| metrics::histogram!(names::BACKEND, "backend" => backend, "op" => op.as_str()),
        ))
    }

    pub(crate) fn record(&self, op: Op, seconds: f64) {
        self.0[op as usize].record(seconds);
    }
}
