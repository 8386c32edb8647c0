//! The [`Cache`] handle: configuration, backend, codec, counters and flights,
//! shared by every cached function that runs under it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{Backend, MemoryBackend};
use crate::codec::CodecKind;
use crate::entry;
use crate::error::{Error, Result};
use crate::flight::Flights;
use crate::key::{self, CacheKey, Namespace};
use crate::stats::{Counters, Registry, Stats, Throttle};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "cache";
/// The default TTL of functions that set none: five minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
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
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) prefix: String,
    pub(crate) default_ttl: Duration,
    pub(crate) codec: CodecKind,
    pub(crate) flights: Arc<Flights>,
    pub(crate) stats: Registry,
    throttle: Throttle,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.backend)
            .field("prefix", &self.inner.prefix)
            .field("default_ttl", &self.inner.default_ttl)
            .field("codec", &self.inner.codec.name())
            .finish_non_exhaustive()
    }
}

/// Whether a cache answers, for a health endpoint.
///
/// Serializes to `{"healthy":true,"latency_ms":0.1,"backend":"memory","connected":true}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The backend answered a ping.
    pub healthy: bool,
    /// How long the ping took, in milliseconds.
    pub latency_ms: f64,
    /// The backend's name.
    pub backend: &'static str,
    /// Whether the backend holds a live connection (always true in memory).
    pub connected: bool,
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
    /// When this returns `Ok`, no call anywhere returns a value computed before
    /// it: entries of older generations are misses, and stores racing with it are
    /// refused. An `Err` means the backend could not be reached; the entries may
    /// still be served when it comes back, so a writer may retry or alert.
    pub async fn invalidate_namespace(&self, namespace: &str) -> Result<()> {
        let namespace = Namespace::new(namespace.to_owned())?;
        let shards = key::namespace_shards(&self.inner.prefix, &namespace);
        let result = self.inner.backend.bump(&shards).await;
        self.inner.flights.detach_namespace(namespace.as_str());
        result
    }

    /// Invalidates one entry (what the generated `*_invalidate` companions call).
    ///
    /// Leaves a tombstone rather than deleting, so that a call that missed before
    /// the invalidation and stores after it finds the entry changed and stores
    /// nothing.
    pub(crate) async fn invalidate_key(&self, key: &CacheKey, ttl: Duration) -> Result<()> {
        let tombstone = entry::tombstone(self.inner.codec, ttl);
        let result = self.inner.backend.set(key, tombstone, ttl).await;
        self.inner.flights.detach(key.as_str());
        result
    }

    /// Pings the backend.
    pub async fn health(&self) -> Health {
        let start = Instant::now();
        let healthy = self.inner.backend.ping().await.is_ok();
        Health {
            healthy,
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
            backend: self.inner.backend.name(),
            connected: healthy,
        }
    }

    /// Runs `future` with this cache as the current one: cached functions called
    /// inside it (on this task) use this cache instead of the global one.
    ///
    /// Meant for tests: each test can run on its own in-memory cache.
    /// Tasks spawned inside the future do not inherit the scope.
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        crate::global::SCOPED.scope(self.clone(), future).await
    }

    pub(crate) fn counters(&self, namespace: &str) -> Arc<Counters> {
        self.inner.stats.counters(namespace)
    }

    /// Counts a cache failure the call survives and logs it, rate-limited.
    pub(crate) fn fail(&self, counters: &Counters, key: &CacheKey, action: &str, error: &Error) {
        counters.error();
        if let Some(suppressed) = self.inner.throttle.admit() {
            tracing::warn!(
                backend = self.inner.backend.name(),
                %key,
                %error,
                suppressed,
                "cache {action} failed; running the function uncached"
            );
        }
    }
}

/// Configures a [`Cache`].
pub struct CacheBuilder {
    backend: Option<Arc<dyn Backend>>,
    prefix: String,
    default_ttl: Duration,
    codec: CodecKind,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            backend: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            default_ttl: DEFAULT_TTL,
            codec: CodecKind::default(),
        }
    }
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("backend", &self.backend)
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("codec", &self.codec)
            .finish()
    }
}

impl CacheBuilder {
    /// The backend. Default: a new [`MemoryBackend`].
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// A backend shared with other caches (as a process would share Redis).
    pub fn shared_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The key prefix: separates applications or environments sharing one
    /// backend. ASCII letters, digits, `_`, `.`, `-` and `:`. Default `cache`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The TTL of functions whose attribute sets none. Default five minutes.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The value codec. Default [`CodecKind::Bincode`].
    pub fn codec(mut self, codec: CodecKind) -> Self {
        self.codec = codec;
        self
    }

    /// Checks the configuration and builds the cache.
    pub fn build(self) -> Result<Cache> {
        key::check_name("prefix", &self.prefix, true)?;
        if self.default_ttl < Duration::from_secs(1) {
            return Err(Error::Config(format!(
                "the default TTL must be at least one second, not {:?}",
                self.default_ttl
            )));
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                backend: self
                    .backend
                    .unwrap_or_else(|| Arc::new(MemoryBackend::new())),
                prefix: self.prefix,
                default_ttl: self.default_ttl,
                codec: self.codec,
                flights: Arc::default(),
                stats: Registry::default(),
                throttle: Throttle::new(WARN_PERIOD),
            }),
        })
    }

    /// Builds the cache and installs it as the process-wide one.
    ///
    /// Fails if the configuration is invalid or a global cache is already in
    /// place (installed, or started by a cached call that ran first).
    pub fn install(self) -> Result<Cache> {
        let cache = self.build()?;
        crate::global::install(cache.clone()).map_err(|_| Error::AlreadyInstalled)?;
        Ok(cache)
    }
}
