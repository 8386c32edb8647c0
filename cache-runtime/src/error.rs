//! The runtime's one error type. Backends map their own failures into it; the
//! generated wrapper never lets one reach the caller (it fails open).

use std::fmt;

/// What went wrong inside the cache.
///
/// A cached function never returns this: the wrapper logs it, counts it in
/// [`stats`](crate::stats) and runs the function body instead. It is returned by
/// the explicit APIs (invalidation, configuration, [`install`](crate::install)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or answered with an error.
    #[error("cache backend `{backend}` failed: {message}")]
    Backend {
        /// The backend's name, e.g. `memory` or `redis`.
        backend: &'static str,
        /// What the backend reported.
        message: String,
    },
    /// The backend was not asked: its circuit is open after repeated failures.
    /// It is probed again after a backoff.
    #[error("cache backend `{backend}` skipped: the circuit is open after repeated failures")]
    CircuitOpen {
        /// The backend's name.
        backend: &'static str,
    },
    /// An invalidation was applied by the primary, but fewer replicas than
    /// configured ([`RedisConfig::wait_for_replicas`]) confirmed it in time.
    /// It holds unless that primary fails before its replicas catch up: a
    /// replica promoted then may not have it, and entries it removed would
    /// be served again. Retry it (invalidations are idempotent), or alert.
    ///
    /// [`RedisConfig::wait_for_replicas`]: crate::RedisConfig::wait_for_replicas
    #[error(
        "cache backend `{backend}` applied the invalidation, but {acknowledged} of {wanted} replicas confirmed it within {timeout:?}: a failover now could undo it; retry it"
    )]
    NotReplicated {
        /// The backend's name.
        backend: &'static str,
        /// Replicas that confirmed it.
        acknowledged: u32,
        /// Replicas the backend waits for.
        wanted: u32,
        /// How long it waited.
        timeout: std::time::Duration,
    },
    /// The cache was closed with [`Cache::close`](crate::Cache::close).
    #[error("the cache is closed")]
    Closed,
    /// A value or key argument could not be encoded.
    #[error("cannot encode {what} with {codec}: {message}")]
    Encode {
        /// What was being encoded: `value` or `key arguments`.
        what: &'static str,
        /// The codec's name.
        codec: &'static str,
        /// What the codec reported.
        message: String,
    },
    /// A stored entry could not be decoded. The entry is treated as a miss.
    #[error("cannot decode a cache entry: {0}")]
    Decode(String),
    /// A namespace name or key prefix is not valid.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// `namespace` or `prefix`.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected and what is allowed.
        reason: &'static str,
    },
    /// A configuration value is not valid.
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// A global cache is already installed; the new one was not.
    #[error(
        "a global cache is already installed; `install` must run once, before the first cached call"
    )]
    AlreadyInstalled,
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the backend answered, although with this error: a missing
    /// replica acknowledgement is not a failing backend, and does not count
    /// towards opening the circuit.
    pub(crate) fn backend_answered(&self) -> bool {
        matches!(self, Error::NotReplicated { .. })
    }

    /// A [`Error::Backend`], for backend implementations.
    pub fn backend(backend: &'static str, message: impl fmt::Display) -> Self {
        Error::Backend {
            backend,
            message: message.to_string(),
        }
    }
}
