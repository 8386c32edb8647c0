//! What the cache tells about itself: counters ([`Cache::stats`]), metrics
//! through the `metrics` facade (feature `metrics`), spans and slow-operation
//! warnings through `tracing`, and the rate limit on fail-open warnings.
//!
//! [`Cache::stats`]: crate::Cache::stats

#[cfg(feature = "metrics")]
pub(crate) mod metrics;
pub(crate) mod stats;
pub(crate) mod throttle;
pub(crate) mod timing;

pub(crate) use self::stats::{Counters, ErrorKind, Registry};
pub use self::stats::{MAX_COUNTED_NAMESPACES, NamespaceStats, OVERFLOW, Stats};
pub(crate) use self::throttle::Throttle;
pub(crate) use self::timing::Timing;

/// A backend operation, for the latency histogram and slow-operation logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Shard,
    Put,
    Invalidate,
    Bump,
    Ping,
    /// Taking, renewing or releasing a lease.
    Lease,
}

impl Op {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [Op; 7] = [
        Op::Get,
        Op::Shard,
        Op::Put,
        Op::Invalidate,
        Op::Bump,
        Op::Ping,
        Op::Lease,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Shard => "shard",
            Op::Put => "put",
            Op::Invalidate => "invalidate",
            Op::Bump => "bump",
            Op::Ping => "ping",
            Op::Lease => "lease",
        }
    }
}
