//! Timing helpers: latency percentiles of sequential calls, throughput of
//! concurrent tasks. No statistics beyond that: the table reports what ran.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency percentiles of a set of samples.
pub(crate) struct Latency {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) mean: Duration,
}

impl Latency {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Latency {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let n = samples.len();
        Latency {
            p50: samples[n / 2],
            p99: samples[(n * 99 / 100).min(n - 1)],
            mean: samples.iter().sum::<Duration>() / n as u32,
        }
    }
}

/// The duration of each of `n` sequential calls.
pub(crate) async fn samples<F, Fut>(n: usize, mut call: F) -> Vec<Duration>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        call(i as u64).await;
        samples.push(t.elapsed());
    }
    samples
}

/// Mean time per call over `n` sequential calls, without per-call clocks (for
/// calls too short to time one by one).
pub(crate) async fn mean_time<F, Fut>(n: usize, mut call: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    for i in 0..n {
        call(i as u64).await;
    }
    start.elapsed() / n as u32
}

/// Runs `f` on a worker thread of the runtime, as the throughput tasks and a
/// server's request handlers run, rather than on the thread blocked in
/// `block_on` (whose wake-ups cost more).
pub(crate) async fn on_worker<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    tokio::spawn(f).await.expect("a benchmark task panicked")
}

/// The median of `runs` measurements.
pub(crate) fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// Calls per second achieved by `tasks` tasks calling in a loop for `duration`.
pub(crate) async fn throughput<F, Fut>(tasks: usize, duration: Duration, call: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (call, stop, done) = (Arc::clone(&call), Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                let mut i = t as u64 * 7919;
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    call(i).await;
                    i += 1;
                    count += 1;
                }
                done.fetch_add(count, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await.expect("a benchmark task panicked");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

pub(crate) fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

pub(crate) fn nanos(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e9)
}
