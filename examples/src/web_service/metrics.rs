//! The cache's metrics in Prometheus's text format, for `GET /metrics`: a
//! Prometheus recorder installed as the process-wide `metrics` recorder, whose
//! handle renders what the cache emitted (see `cache_runtime`'s metrics
//! table), and a task that keeps the recorder's histograms drained between
//! scrapes.
//!
//! The recorder must be installed before the cache is built: the cache takes
//! its metric handles from the recorder installed when it is built (and when
//! a namespace sees its first call), and keeps them, so a recorder installed
//! later would never see a sample.
//!
//! `CACHE_METRICS=false` (see `cache_runtime`'s configuration table) turns
//! the cache's metrics off: `GET /metrics` then answers 200 without them.

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

/// The latency of one backend operation, in seconds. From 10 µs (the
/// memory backend; Redis on the same host takes some 100 µs) to 1 s: well
/// past the default response timeout (250 ms), so an operation that timed
/// out still lands in a bucket of its own rather than only in `+Inf`.
const BACKEND_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// How long a cached function's body ran, in seconds: from 100 µs (this
/// service's SQLite point lookups, on the blocking pool) to 10 s (the slow
/// queries and remote calls a cache is usually put in front of).
const BODY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often the histograms' raw samples are folded into their buckets
/// when nobody scrapes: the exporter's own default period.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Renders the process's metrics for `GET /metrics`. Cheap to clone.
///
/// Disabled when the recorder could not be installed: [`render`](Self::render)
/// then answers `None`, which the route turns into a 503.
#[derive(Debug, Clone)]
pub struct MetricsExporter {
    handle: Option<PrometheusHandle>,
}

/// The task that keeps the recorder's histograms drained; stopped on drop.
#[derive(Debug)]
pub struct Upkeep(JoinHandle<()>);

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl MetricsExporter {
    /// Installs a Prometheus recorder as the process-wide `metrics`
    /// recorder. Call it before the cache is built (see the module docs).
    ///
    /// Never fails the service: if a recorder is already installed (an
    /// embedding program installed its own), the error is logged and the
    /// exporter returned is disabled. The cache's metrics then go to the
    /// recorder that was there.
    pub fn install() -> MetricsExporter {
        match install_recorder() {
            Ok(handle) => MetricsExporter {
                handle: Some(handle),
            },
            Err(error) => {
                tracing::error!(
                    %error,
                    "cannot install the Prometheus recorder; GET /metrics will answer 503"
                );
                MetricsExporter::disabled()
            }
        }
    }

    /// An exporter that exports nothing: [`render`](Self::render) answers
    /// `None`.
    pub fn disabled() -> MetricsExporter {
        MetricsExporter { handle: None }
    }

    /// The metrics in Prometheus's text format ([`CONTENT_TYPE`]); `None` if
    /// this exporter is disabled.
    pub fn render(&self) -> Option<String> {
        self.handle.as_ref().map(PrometheusHandle::render)
    }

    /// Starts the upkeep task on the current runtime; `None` if this exporter
    /// is disabled.
    ///
    /// `install_recorder` leaves upkeep to its caller: without it, a
    /// histogram's samples pile up in memory until the next scrape, and
    /// forever if nothing scrapes.
    #[must_use = "the task stops when the returned guard is dropped"]
    pub fn start_upkeep(&self) -> Option<Upkeep> {
        let handle = self.handle.clone()?;
        Some(Upkeep(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_PERIOD);
            // A late tick (a busy runtime) is not made up for with a burst.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                handle.run_upkeep();
            }
        })))
    }
}

fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    // With no buckets the exporter renders every histogram as a summary
    // (quantiles computed in this process, which cannot be aggregated across
    // instances). Buckets make them Prometheus histograms, with the
    // `_bucket` series that `histogram_quantile` (and the Grafana dashboard
    // in examples/grafana/) reads. The names are the runtime's, from its
    // metrics table.
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("cache_backend_duration_seconds".to_owned()),
            &BACKEND_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("cache_body_duration_seconds".to_owned()),
            &BODY_BUCKETS,
        )?
        .install_recorder()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test of this binary that installs a recorder: the first
    // install takes the process-wide slot.
    #[test]
    fn a_second_install_is_disabled_not_a_panic() {
        let first = MetricsExporter::install();
        assert!(first.render().is_some(), "the first install exports");
        let second = MetricsExporter::install();
        assert!(
            second.render().is_none(),
            "a recorder was already installed: the second exporter is disabled"
        );
    }
}
