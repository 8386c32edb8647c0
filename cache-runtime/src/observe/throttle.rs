//! The rate limit on the warnings fail-open logs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

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
}
