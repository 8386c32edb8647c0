//! The [`Cache`] handle: configuration, backend, codec, counters and flights,
//! shared by every cached function that runs under it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use serde::Serialize;

use crate::backend::{Backend, MemoryBackend};
use crate::circuit::{Circuit, CircuitConfig, Transition};
use crate::codec::CodecKind;
use crate::config;
#[cfg(feature = "redis")]
use crate::config::RedisConfig;
use crate::entry;
use crate::error::{Error, Result};
use crate::flight::Flights;
use crate::key::{self, CacheKey, Namespace};
use crate::stats::{Counters, Registry, Stats, Throttle};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "cache";
/// The default TTL of functions that set none: five minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
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
    pub(crate) codec: CodecKind,
    pub(crate) flights: Arc<Flights>,
    pub(crate) stats: Registry,
    throttle: Throttle,
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
    /// Whether calls currently skip the backend after repeated failures.
    pub circuit_open: bool,
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
        let result = self.guarded(self.inner.backend.bump(&shards)).await;
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
        let _write = self.write_started();
        let result = self
            .guarded(self.inner.backend.set(key, tombstone, ttl))
            .await;
        self.inner.flights.detach(key.as_str());
        result
    }

    /// Pings the backend (past the circuit breaker, so it tells the backend's
    /// real state).
    pub async fn health(&self) -> Health {
        let start = Instant::now();
        let healthy = !self.is_closed() && self.inner.backend.ping().await.is_ok();
        Health {
            healthy,
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
            backend: self.inner.backend.name(),
            connected: healthy,
            circuit_open: self.inner.circuit.is_open(),
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

    /// Runs one backend operation through the circuit breaker.
    pub(crate) async fn guarded<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        let backend = self.inner.backend.name();
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if !self.inner.circuit.allow() {
            return Err(Error::CircuitOpen { backend });
        }
        let result = op.await;
        let transition = match &result {
            Ok(_) => self.inner.circuit.success(),
            Err(_) => self.inner.circuit.failure(),
        };
        match transition {
            Transition::None => {}
            Transition::Opened(period) => tracing::warn!(
                backend,
                retry_in = ?period,
                "cache backend failing; circuit open: calls run uncached without waiting for it"
            ),
            Transition::Closed => {
                tracing::info!(backend, "cache backend answers again; circuit closed")
            }
        }
        result
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
        crate::global::SCOPED.scope(self.clone(), future).await
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

pub(crate) struct WriteGuard<'a>(&'a Cache);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if self.0.inner.writes_in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.writes_done.notify_waiters();
        }
    }
}

/// Configures a [`Cache`].
///
/// Precedence: what is set on the builder wins over what
/// [`from_env`](Self::from_env) read, which wins over the defaults.
pub struct CacheBuilder {
    backend: Option<Arc<dyn Backend>>,
    #[cfg(feature = "redis")]
    redis: Option<RedisConfig>,
    prefix: String,
    default_ttl: Duration,
    codec: CodecKind,
    circuit: CircuitConfig,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            backend: None,
            #[cfg(feature = "redis")]
            redis: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            default_ttl: DEFAULT_TTL,
            codec: CodecKind::default(),
            circuit: CircuitConfig::default(),
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
    /// A builder configured from the environment: `CACHE_PREFIX`,
    /// `CACHE_DEFAULT_TTL`, and Redis if `REDIS_URL` is set (or
    /// `CACHE_BACKEND=redis`), with its `CACHE_*` timeouts. See the table in
    /// the [crate docs](crate#configuration). Settings made on the returned
    /// builder override the environment.
    ///
    /// The same as `Cache::builder().with_env()`.
    pub fn from_env() -> Result<CacheBuilder> {
        CacheBuilder::default().with_env()
    }

    /// Applies the environment's settings over this builder's: what was set
    /// before this call is a default the environment may override, what is set
    /// after it wins over the environment. Variables that are unset (or empty)
    /// change nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder()
    ///     .prefix("billing") // the application's default; CACHE_PREFIX wins
    ///     .with_env()?
    ///     .default_ttl(std::time::Duration::from_secs(60)) // wins over CACHE_DEFAULT_TTL
    ///     .build()?;
    /// # let _ = cache;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_env(mut self) -> Result<CacheBuilder> {
        if let Some(prefix) = config::var("CACHE_PREFIX") {
            self.prefix = prefix;
        }
        if let Some(ttl) = config::ttl_var("CACHE_DEFAULT_TTL")? {
            self.default_ttl = ttl;
        }
        let backend = config::var("CACHE_BACKEND").map(|b| b.to_ascii_lowercase());
        let use_redis = match backend.as_deref() {
            None => config::var("REDIS_URL").is_some(),
            Some("redis") => true,
            Some("memory") => {
                self = self.shared_backend(Arc::new(MemoryBackend::new()));
                false
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "CACHE_BACKEND={other:?} is not a backend; use `memory` or `redis`"
                )));
            }
        };
        if use_redis {
            #[cfg(feature = "redis")]
            {
                self = self.redis(RedisConfig::from_env()?);
            }
            #[cfg(not(feature = "redis"))]
            return Err(Error::Config(
                "REDIS_URL is set but cache-runtime was built without its `redis` feature"
                    .to_owned(),
            ));
        }
        // The circuit breaker probes on the reconnect schedule.
        if let Some(base) = config::duration_var("CACHE_BACKOFF_BASE")? {
            self.circuit.base = base;
        }
        if let Some(cap) = config::duration_var("CACHE_BACKOFF_MAX")? {
            self.circuit.cap = cap;
        }
        Ok(self)
    }

    /// Redis as the backend. Connects lazily; see [`connect`](Self::connect)
    /// for fail-fast.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, config: RedisConfig) -> Self {
        self.circuit.base = config.backoff_base;
        self.circuit.cap = config.backoff_max;
        self.redis = Some(config);
        self.backend = None;
        self
    }

    /// When the circuit breaker opens and how it backs off. Default: open after
    /// 5 consecutive failures, probe after 50 ms, doubling to 5 s.
    pub fn circuit(mut self, circuit: CircuitConfig) -> Self {
        self.circuit = circuit;
        self
    }

    /// The backend. Default: a new [`MemoryBackend`].
    pub fn backend(self, backend: impl Backend) -> Self {
        self.shared_backend(Arc::new(backend))
    }

    /// A backend shared with other caches (as a process would share Redis).
    pub fn shared_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        #[cfg(feature = "redis")]
        {
            self.redis = None;
        }
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

    /// Checks the configuration and builds the cache. A Redis backend connects
    /// lazily, on the first call (inside a Tokio runtime).
    pub fn build(self) -> Result<Cache> {
        key::check_name("prefix", &self.prefix, true)?;
        if self.default_ttl < Duration::from_secs(1) {
            return Err(Error::Config(format!(
                "the default TTL must be at least one second, not {:?}",
                self.default_ttl
            )));
        }
        if self.circuit.threshold == 0
            || self.circuit.base.is_zero()
            || self.circuit.cap < self.circuit.base
        {
            return Err(Error::Config(format!(
                "invalid circuit breaker settings {:?}: the threshold and base must be positive and the cap at least the base",
                self.circuit
            )));
        }
        let backend: Arc<dyn Backend> = match self.backend {
            Some(backend) => backend,
            #[cfg(feature = "redis")]
            None if self.redis.is_some() => Arc::new(crate::backend::RedisBackend::lazy(
                self.redis.clone().expect("checked"),
            )?),
            None => Arc::new(MemoryBackend::new()),
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                backend,
                prefix: self.prefix,
                default_ttl: self.default_ttl,
                codec: self.codec,
                flights: Arc::default(),
                stats: Registry::default(),
                throttle: Throttle::new(WARN_PERIOD),
                circuit: Circuit::new(self.circuit),
                closed: AtomicBool::new(false),
                writes_in_flight: AtomicUsize::new(0),
                writes_done: Notify::new(),
            }),
        })
    }

    /// Builds the cache and, if its Redis configuration asks for fail-fast,
    /// checks that Redis answers: startup then fails rather than running
    /// uncached.
    pub async fn connect(self) -> Result<Cache> {
        #[cfg(feature = "redis")]
        let fail_fast = self.redis.as_ref().is_some_and(|r| r.fail_fast);
        #[cfg(not(feature = "redis"))]
        let fail_fast = false;
        let cache = self.build()?;
        if fail_fast {
            cache.inner.backend.ping().await.map_err(|e| {
                Error::Config(format!(
                    "fail-fast is set and the cache backend does not answer: {e}"
                ))
            })?;
        }
        Ok(cache)
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
