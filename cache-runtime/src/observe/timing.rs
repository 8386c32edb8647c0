//! Timing of backend operations: the latency histogram (feature `metrics`)
//! and the warning about slow operations.

use std::time::Duration;

use super::{Op, Throttle};

/// What a cache does with the duration of its backend operations.
#[derive(Debug)]
pub(crate) struct Timing {
    /// Warn about operations that take at least this long.
    slow: Option<Duration>,
    /// At most one slow-operation warning per period; the rest are counted.
    throttle: Throttle,
    #[cfg(feature = "metrics")]
    metrics: Option<super::metrics::BackendMetrics>,
}

impl Timing {
    pub(crate) fn new(
        backend: &'static str,
        slow: Option<Duration>,
        metrics: bool,
        period: Duration,
    ) -> Timing {
        #[cfg(not(feature = "metrics"))]
        let _ = (backend, metrics);
        Timing {
            slow,
            throttle: Throttle::new(period),
            #[cfg(feature = "metrics")]
            metrics: metrics.then(|| super::metrics::BackendMetrics::register(backend)),
        }
    }

    /// Whether operations are timed at all (two clock reads each).
    pub(crate) fn on(&self) -> bool {
        #[cfg(feature = "metrics")]
        if self.metrics.is_some() {
            return true;
        }
        self.slow.is_some()
    }

    pub(crate) fn record(&self, backend: &'static str, op: Op, elapsed: Duration) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.record(op, elapsed.as_secs_f64());
        }
        let Some(slow) = self.slow.filter(|slow| elapsed >= *slow) else {
            return;
        };
        if let Some(suppressed) = self.throttle.admit() {
            tracing::warn!(
                backend,
                op = op.as_str(),
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                threshold_ms = slow.as_secs_f64() * 1000.0,
                suppressed,
                "slow cache backend operation"
            );
        }
    }
}
