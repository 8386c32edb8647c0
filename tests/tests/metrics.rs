//! The metrics the cache emits through the `metrics` facade, read back from
//! metrics-util's recorder after a known sequence of calls. One test in its
//! own binary: the recorder is process-wide, and reading it resets it.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, MemoryBackend, cached};
use common::{Faulty, Gate, Mode};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

static GATE: Gate = Gate::new_const();

/// A metric's kind, name and labels (sorted).
type Metric = (MetricKind, String, Vec<(String, String)>);

#[cached(namespace = "metered")]
async fn metered(id: u64, slow: bool) -> Option<u64> {
    if slow {
        GATE.pass().await;
    }
    (id != 0).then_some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_and_histograms_match_a_known_sequence_of_calls() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    let cache = Cache::builder().metrics(true).build().unwrap();
    let down = Arc::new(Faulty::new(Arc::new(MemoryBackend::new())));
    let failing = Cache::builder()
        .metrics(true)
        .shared_backend(down.clone())
        .build()
        .unwrap();
    GATE.open();
    cache
        .scope(async {
            metered(1, false).await; // miss, stored
            metered(1, false).await; // hit
            metered(1, false).await; // hit
            metered(2, false).await; // miss, stored
        })
        .await;
    // Three callers of one cold key: one runs the body, two are handed its value.
    GATE.close();
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.scope(metered(3, true)).await })
        })
        .collect();
    GATE.wait_reached(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    GATE.open();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), Some(3));
    }
    // An invalidation while the body runs: its store is refused.
    GATE.close();
    assert_eq!(GATE.reached.load(std::sync::atomic::Ordering::SeqCst), 1);
    let refused = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(metered(4, true)).await })
    };
    GATE.wait_reached(2).await;
    cache.scope(metered_invalidate(&4, &true)).await.unwrap();
    GATE.open();
    assert_eq!(refused.await.unwrap(), Some(4));
    // A failing backend: two failed reads.
    down.set_all(Mode::Fail);
    failing.scope(metered(5, false)).await;
    failing.scope(metered(5, false)).await;

    let metrics: HashMap<Metric, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((kind, key.name().to_owned(), labels), value)
        })
        .collect();
    let counter = |name: &str, labels: &[(&str, &str)]| {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match metrics.get(&(MetricKind::Counter, name.to_owned(), labels)) {
            Some(DebugValue::Counter(n)) => *n,
            None => 0,
            other => panic!("{name} is {other:?}"),
        }
    };
    let samples = |name: &str, labels: &[(&str, &str)]| {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match metrics.get(&(MetricKind::Histogram, name.to_owned(), labels)) {
            Some(DebugValue::Histogram(values)) => values.len(),
            None => 0,
            other => panic!("{name} is {other:?}"),
        }
    };
    let ns = [("namespace", "metered")];
    // Two caches emit under one namespace label: the failing one's calls
    // are misses too.
    assert_eq!(counter("cache_hits_total", &ns), 2, "{metrics:#?}");
    assert_eq!(counter("cache_misses_total", &ns), 2 + 3 + 1 + 2);
    assert_eq!(counter("cache_coalesced_total", &ns), 2);
    assert_eq!(counter("cache_stores_refused_total", &ns), 1);
    assert_eq!(
        counter(
            "cache_errors_total",
            &[("kind", "read"), ("namespace", "metered")]
        ),
        2
    );
    assert_eq!(
        counter(
            "cache_errors_total",
            &[("kind", "write"), ("namespace", "metered")]
        ),
        0
    );
    // Bodies: 1, 2, 3 (once), 4, and 5 twice.
    assert_eq!(samples("cache_body_duration_seconds", &ns), 6);
    // Reads of the memory cache: keys 1 (three calls), 2, 3 (three
    // callers; the leader's first round reuses its own lookup), 4.
    assert_eq!(
        samples(
            "cache_backend_duration_seconds",
            &[("backend", "memory"), ("op", "get")]
        ),
        3 + 1 + 3 + 1
    );
    assert_eq!(
        samples(
            "cache_backend_duration_seconds",
            &[("backend", "memory"), ("op", "invalidate")]
        ),
        1
    );
    assert!(
        samples(
            "cache_backend_duration_seconds",
            &[("backend", "memory"), ("op", "put")]
        ) >= 4
    );
}

#[test]
fn metrics_are_off_unless_asked_for() {
    // A recorder of this thread only: the test above installs the global one.
    let emitted = |metrics_on: bool| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let cache = Cache::builder().metrics(metrics_on).build().unwrap();
            common::block_on(cache.scope(metered(98, false)));
        });
        snapshotter.snapshot().into_vec().len()
    };
    assert_eq!(emitted(false), 0);
    assert!(emitted(true) > 0, "the same calls with metrics on emit");
}
