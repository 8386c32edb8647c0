//! The [`Cache`] handle: configuration, backend, codec, counters and flights,
//! shared by every cached function that runs under it. Every backend
//! operation passes through its guard ([`guard`]: circuit breaker, timeout,
//! panics, timing).

mod api;
mod builder;
mod guard;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

pub use self::builder::{CacheBuilder, DEFAULT_SLOW_THRESHOLD};
use crate::backend::{Backend, NodeHealth};
use crate::call::flight::Flights;
use crate::circuit::{Circuit, CircuitConfig};
use crate::entry::CodecKind;
use crate::error::{Error, Result};
use crate::key::{self, CacheKey, Namespace};
use crate::observe::{Counters, ErrorKind, Op, Registry, Stats, Throttle, Timing};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "cache";
/// The default TTL of functions that set none: five minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The longest TTL an entry may have: 365 days. Longer ones are rejected
/// where they are configured.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// At most one fail-open warning per this period; the rest are counted.
const WARN_PERIOD: Duration = Duration::from_secs(10);

/// A cache: a backend plus everything the cached functions share (key prefix,
/// default TTL, codec, counters, single-flight).
///
/// Cheap to clone; clones share everything. Most programs use one, installed
/// with [`CacheBuilder::install`] or started on first use (see
/// [`global`](crate::global)); tests run code under another with
/// [`Cache::scope`].
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: u64,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) prefix: String,
    pub(crate) default_ttl: Duration,
    /// Up to how much jitter takes off each TTL, in percent.
    pub(crate) ttl_jitter: u8,
    /// `None`: no leases.
    pub(crate) lease: Option<crate::call::LeaseConfig>,
    pub(crate) codec: CodecKind,
    pub(crate) flights: Arc<Flights>,
    pub(crate) stats: Registry,
    log_keys: bool,
    pub(crate) throttle: Throttle,
    pub(crate) timing: Timing,
    circuit_config: CircuitConfig,
    circuit: Circuit,
    closed: AtomicBool,
    writes_in_flight: AtomicUsize,
    writes_done: Notify,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.backend)
            .field("prefix", &self.inner.prefix)
            .field("default_ttl", &self.inner.default_ttl)
            .field("ttl_jitter", &self.inner.ttl_jitter)
            .field("lease", &self.inner.lease)
            .field("codec", &self.inner.codec.name())
            .field("circuit", &self.inner.circuit_config)
            .field("log_keys", &self.inner.log_keys)
            .finish_non_exhaustive()
    }
}

/// Whether a cache answers, for a health endpoint.
///
/// Serializes to `{"healthy":true,"latency_ms":0.1,"backend":"memory","circuit_open":false}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The backend answered a ping.
    pub healthy: bool,
    /// How long the ping took, in milliseconds.
    pub latency_ms: f64,
    /// The backend's name.
    pub backend: &'static str,
    /// Whether calls currently skip the backend after repeated failures. A
    /// successful ping closes the circuit, so this is rarely true when
    /// `healthy` is.
    pub circuit_open: bool,
    /// For a backend of several nodes (a Redis Cluster): how many it has and
    /// how many answer. Left out of the JSON for one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeHealth>,
}

impl Cache {
    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// A cache on a fresh in-memory backend with default settings.
    pub fn memory() -> Cache {
        Cache::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// A snapshot of the hit, miss and error counters, per namespace.
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot()
    }

    /// Invalidates every entry of a namespace, in every process sharing the
    /// backend, in time independent of how many entries it holds.
    ///
    /// When this returns `Ok`, no call that starts afterwards, in any process
    /// sharing the backend, returns a value computed before it: entries of
    /// older generations are misses, and stores racing with it are refused.
    /// An `Err` means the backend could not be reached; the entries may
    /// still be served when it comes back, so a writer may retry or alert.
    ///
    /// Cancel safety: if the future is dropped, the invalidation may or may
    /// not have happened.
    pub async fn invalidate_namespace(&self, namespace: &str) -> Result<()> {
        let namespace = Namespace::new(namespace.to_owned())?;
        let shards = key::namespace_shards(&self.inner.prefix, &namespace);
        let result = self
            .guarded(Op::Bump, self.inner.backend.bump(&shards))
            .await;
        self.inner.flights.detach_namespace(namespace.as_str());
        result
    }

    /// Invalidates one entry (what the generated `*_invalidate` companions
    /// call): removes it and moves its shard's epoch on, so that a call that
    /// missed before the invalidation and stores after it is refused.
    pub(crate) async fn invalidate_key(&self, key: &CacheKey) -> Result<()> {
        let _write = self.write_started();
        let result = self
            .guarded(Op::Invalidate, self.inner.backend.invalidate(key))
            .await;
        self.inner.flights.detach(key.as_str());
        result
    }

    /// Pings the backend, whether the circuit is open or not; a successful
    /// ping closes an open circuit, as a successful probe would.
    pub async fn health(&self) -> Health {
        let start = Instant::now();
        let healthy = !self.is_closed()
            && self
                .bypassing(Op::Ping, self.inner.backend.ping())
                .await
                .is_ok();
        let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        // Not through the circuit: a count of nodes says nothing about
        // whether this cache's operations succeed.
        let nodes = if self.is_closed() {
            None
        } else {
            self.inner.backend.nodes().await
        };
        Health {
            healthy,
            latency_ms,
            backend: self.inner.backend.name(),
            circuit_open: self.inner.circuit.is_open(),
            nodes,
        }
    }

    /// Shuts the cache down gracefully: from now on cached calls run uncached;
    /// stores already under way are awaited (at most `grace`), then
    /// [`Backend::close`] runs. The built-in backends hold nothing to release
    /// there: the Redis connection closes when the last clone of the cache is
    /// dropped. Call it once the server stopped taking requests.
    ///
    /// Returns `false` if some stores were still running after `grace`.
    pub async fn close(&self, grace: Duration) -> bool {
        self.inner.closed.store(true, Ordering::SeqCst);
        let drained = tokio::time::timeout(grace, async {
            loop {
                let done = self.inner.writes_done.notified();
                if self.inner.writes_in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                done.await;
            }
        })
        .await
        .is_ok();
        self.inner.backend.close().await;
        drained
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Counts a store under way until the returned guard drops, so that
    /// [`close`](Self::close) can wait for it.
    pub(crate) fn write_started(&self) -> WriteGuard<'_> {
        self.inner.writes_in_flight.fetch_add(1, Ordering::SeqCst);
        WriteGuard(self)
    }

    /// Runs `future` with this cache as the current one: cached functions called
    /// inside it (on this task) use this cache instead of the global one.
    ///
    /// Meant for tests: each test can run on its own in-memory cache.
    /// Tasks spawned inside the future do not inherit the scope.
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        crate::global::scoped(self.clone(), future).await
    }

    pub(crate) fn counters(&self, namespace: &str) -> Arc<Counters> {
        self.inner.stats.counters(namespace)
    }

    /// Identifies this cache and its clones; never reused in the process (an
    /// address could be, by a cache built after this one is dropped).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Counts a cache failure the call survives and logs it, rate-limited.
    /// Logs name the namespace and function; the key (which holds argument
    /// values) only with [`CacheBuilder::log_keys`].
    pub(crate) fn fail(
        &self,
        counters: &Counters,
        function: &str,
        key: &CacheKey,
        kind: ErrorKind,
        action: &str,
        error: &Error,
    ) {
        counters.error(kind);
        if let Some(suppressed) = self.inner.throttle.admit() {
            let backend = self.inner.backend.name();
            let namespace = key.namespace();
            if self.inner.log_keys {
                tracing::warn!(backend, namespace, function, %key, %error, suppressed,
                    "cache {action} failed; running the function uncached");
            } else {
                tracing::warn!(backend, namespace, function, %error, suppressed,
                    "cache {action} failed; running the function uncached");
            }
        }
    }
}

pub(crate) struct WriteGuard<'a>(&'a Cache);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if self.0.inner.writes_in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.writes_done.notify_waiters();
        }
    }
}
