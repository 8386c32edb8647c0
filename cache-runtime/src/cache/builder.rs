//! [`CacheBuilder`]: configuration from code and the environment, checked
//! once, when the cache is built.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Cache, DEFAULT_PREFIX, DEFAULT_TTL, Inner, MAX_TTL, NEXT_ID, WARN_PERIOD};
use crate::backend::{Backend, MemoryBackend};
use crate::circuit::{Circuit, CircuitConfig};
use crate::config;
#[cfg(feature = "redis")]
use crate::config::RedisConfig;
use crate::entry::CodecKind;
use crate::error::{Error, Result};
use crate::key;
use crate::observe::{Registry, Throttle, Timing};

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
    ttl_jitter: u8,
    /// `None`: the default for the backend (on for Redis).
    lease: Option<Option<Duration>>,
    lease_wait: Duration,
    codec: CodecKind,
    /// `None`: follow the Redis backoff, or the defaults.
    circuit: Option<CircuitConfig>,
    log_keys: bool,
    /// `None`: the default for the backend (see `slow_threshold`).
    slow_threshold: Option<Option<Duration>>,
    metrics: bool,
}

/// The default [`CacheBuilder::slow_threshold`]: 100 ms.
pub const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_millis(100);

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            backend: None,
            #[cfg(feature = "redis")]
            redis: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            default_ttl: DEFAULT_TTL,
            ttl_jitter: crate::call::DEFAULT_TTL_JITTER,
            lease: None,
            lease_wait: crate::call::DEFAULT_LEASE_WAIT,
            codec: CodecKind::default(),
            circuit: None,
            log_keys: false,
            slow_threshold: None,
            metrics: false,
        }
    }
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("backend", &self.backend)
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("ttl_jitter", &self.ttl_jitter)
            .field("lease", &self.lease)
            .field("lease_wait", &self.lease_wait)
            .field("codec", &self.codec)
            .field("circuit", &self.circuit)
            .field("log_keys", &self.log_keys)
            .field("slow_threshold", &self.slow_threshold)
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl CacheBuilder {
    /// A builder configured from the environment: `CACHE_PREFIX`,
    /// `CACHE_DEFAULT_TTL`, and Redis if `REDIS_URL`, `REDIS_CLUSTER_NODES`
    /// or `REDIS_SENTINELS` is set (or `CACHE_BACKEND=redis`), with its `CACHE_*` timeouts. See the table in
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
        if let Some(jitter) = config::var("CACHE_TTL_JITTER") {
            self.ttl_jitter = crate::call::parse_jitter("CACHE_TTL_JITTER", &jitter)?;
        }
        if let Some(ttl) = config::ttl_var("CACHE_DEFAULT_TTL")? {
            check_ttl("CACHE_DEFAULT_TTL", ttl)?;
            self.default_ttl = ttl;
        }
        let backend = config::var("CACHE_BACKEND").map(|b| b.to_ascii_lowercase());
        let use_redis = match backend.as_deref() {
            None => ["REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_SENTINELS"]
                .iter()
                .any(|name| config::var(name).is_some()),
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
        let base = config::duration_var("CACHE_BACKOFF_BASE")?;
        let cap = config::duration_var("CACHE_BACKOFF_MAX")?;
        if base.is_some() || cap.is_some() {
            let mut circuit = self.circuit.unwrap_or_else(|| self.backoff_circuit());
            circuit.base = base.unwrap_or(circuit.base);
            circuit.cap = cap.unwrap_or(circuit.cap);
            self.circuit = Some(circuit);
        }
        if let Some(log_keys) = config::bool_var("CACHE_LOG_KEYS")? {
            self.log_keys = log_keys;
        }
        if let Some(lease) = config::optional_duration_var("CACHE_LEASE")? {
            self.lease = Some(lease);
        }
        if let Some(wait) = config::duration_var("CACHE_LEASE_WAIT")? {
            self.lease_wait = wait;
        }
        if let Some(slow) = config::optional_duration_var("CACHE_SLOW_THRESHOLD")? {
            self.slow_threshold = Some(slow);
        }
        if let Some(metrics) = config::bool_var("CACHE_METRICS")? {
            self.metrics = metrics;
        }
        Ok(self)
    }

    /// Redis as the backend. Connects lazily; see [`connect`](Self::connect)
    /// for fail-fast. Unless [`circuit`](Self::circuit) is set (before or
    /// after), the circuit breaker probes on the Redis reconnect backoff.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, config: RedisConfig) -> Self {
        self.redis = Some(config);
        self.backend = None;
        self
    }

    /// When the circuit breaker opens and how it backs off. Default: open after
    /// 5 consecutive failures, probe after 50 ms, doubling to 5 s (with Redis:
    /// its reconnect backoff). Set here, it wins whatever else is set, in
    /// any order.
    pub fn circuit(mut self, circuit: CircuitConfig) -> Self {
        self.circuit = Some(circuit);
        self
    }

    /// Puts the key (which holds the key arguments' values, e-mail
    /// addresses and tokens included) into the fail-open warnings. Default
    /// false: they name the namespace and function only. `CACHE_LOG_KEYS`.
    pub fn log_keys(mut self, log_keys: bool) -> Self {
        self.log_keys = log_keys;
        self
    }

    /// Logs backend operations that take at least this long at `warn`
    /// (rate-limited: one line per 10 s, with the count of those held
    /// back); `None` turns the warning off. Default: [`DEFAULT_SLOW_THRESHOLD`]
    /// (100 ms) for Redis, off for the in-memory backend and backends given
    /// with [`backend`](Self::backend) (timing costs two clock reads per
    /// operation; set it to have them timed). `CACHE_SLOW_THRESHOLD`
    /// (`250ms`, or `off`).
    pub fn slow_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.slow_threshold = Some(threshold);
        self
    }

    /// Emits metrics through the `metrics` facade (see the guide's
    /// Observability chapter for the names). Needs the crate's `metrics`
    /// feature (building fails without it). Default false: the facade cannot
    /// tell whether a recorder is installed, and metrics cost every call
    /// (timing each backend operation, about 500 instructions per hit),
    /// so a cache that nobody records pays one branch per event instead.
    /// `CACHE_METRICS`.
    ///
    /// The metric handles are registered with the recorder installed when
    /// the cache is built and when a namespace sees its first call: install
    /// the exporter before building the cache.
    pub fn metrics(mut self, metrics: bool) -> Self {
        self.metrics = metrics;
        self
    }

    /// The circuit that follows the backend's reconnect backoff.
    fn backoff_circuit(&self) -> CircuitConfig {
        #[allow(unused_mut)] // without the `redis` feature nothing changes it
        let mut circuit = CircuitConfig::default();
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            circuit.base = redis.backoff_base;
            circuit.cap = redis.backoff_max;
        }
        circuit
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

    /// The TTL of functions whose attribute sets none: one second to
    /// [`MAX_TTL`] (365 days). Default five minutes.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// TTL jitter: each store's TTL is shortened by a random amount of up
    /// to `percent` of it (to the millisecond, never below one second), so
    /// that entries written together do not expire together and send their
    /// callers to the database together. It never lengthens a TTL: a TTL
    /// stays the longest a value is served. Default 10 %
    /// ([`DEFAULT_TTL_JITTER`](crate::DEFAULT_TTL_JITTER)); 0 turns it off;
    /// at most 50. A function's `ttl_jitter` option wins over it.
    /// Environment: `CACHE_TTL_JITTER` (`10%`, `off`).
    pub fn ttl_jitter(mut self, percent: u8) -> Self {
        self.ttl_jitter = percent;
        self
    }

    /// Leases: one caller in the whole fleet runs the body of a missed key
    /// while callers in other processes wait for its entry, instead of
    /// every process querying the database at once (a stampede when a hot
    /// key expires). `Some(ttl)`: how long a lease lasts unrenewed, so how
    /// long a holder that died keeps the others waiting; a live holder
    /// renews it every third of it, so a long body is not run twice. From
    /// 100 ms to 1 h. `None`: off. Default: on with
    /// [`DEFAULT_LEASE_TTL`](crate::DEFAULT_LEASE_TTL) (5 s) for Redis, off
    /// for the in-memory backend and backends given with
    /// [`backend`](Self::backend) (whose own processes single-flight
    /// already). A miss with leases costs two more backend requests (take,
    /// release); a hit costs nothing more. `CACHE_LEASE` (`5s`, or `off`).
    pub fn lease(mut self, ttl: Option<Duration>) -> Self {
        self.lease = Some(ttl);
        self
    }

    /// How long a caller waits for another process's value before it runs
    /// the body itself (a holder that is alive but slower than this; a
    /// holder that died frees the lease after its TTL instead). Default
    /// [`DEFAULT_LEASE_WAIT`](crate::DEFAULT_LEASE_WAIT) (10 s); at most
    /// 1 h. `CACHE_LEASE_WAIT`.
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
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
        check_ttl("the default TTL", self.default_ttl)?;
        crate::call::check_jitter("the TTL jitter", self.ttl_jitter)?;
        let circuit = self.circuit.unwrap_or_else(|| self.backoff_circuit());
        if circuit.threshold == 0 || circuit.base.is_zero() || circuit.cap < circuit.base {
            return Err(Error::Config(format!(
                "invalid circuit breaker settings {circuit:?}: the threshold and base must be positive and the cap at least the base"
            )));
        }
        let networked = self.backend.is_none() && {
            #[cfg(feature = "redis")]
            let redis = self.redis.is_some();
            #[cfg(not(feature = "redis"))]
            let redis = false;
            redis
        };
        let slow_threshold = self
            .slow_threshold
            .unwrap_or(networked.then_some(DEFAULT_SLOW_THRESHOLD));
        let lease = self
            .lease
            .unwrap_or(networked.then_some(crate::call::DEFAULT_LEASE_TTL))
            .map(|ttl| crate::call::LeaseConfig {
                ttl,
                wait: self.lease_wait,
            });
        if let Some(lease) = &lease {
            lease.check()?;
        }
        let backend: Arc<dyn Backend> = match self.backend {
            Some(backend) => backend,
            #[cfg(feature = "redis")]
            None if self.redis.is_some() => Arc::new(crate::backend::RedisBackend::lazy(
                self.redis.clone().expect("checked"),
            )?),
            None => Arc::new(MemoryBackend::new()),
        };
        if !cfg!(feature = "metrics") && self.metrics {
            return Err(Error::Config(
                "metrics were turned on, but cache-runtime was built without its `metrics` feature"
                    .to_owned(),
            ));
        }
        let metrics = self.metrics;
        let backend_name = backend.name();
        let own_circuits = backend.own_circuits();
        Ok(Cache {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                backend,
                prefix: self.prefix,
                default_ttl: self.default_ttl,
                ttl_jitter: self.ttl_jitter,
                lease,
                codec: self.codec,
                flights: Arc::default(),
                stats: Registry::new(metrics),
                log_keys: self.log_keys,
                throttle: Throttle::new(WARN_PERIOD),
                timing: Timing::new(backend_name, slow_threshold, metrics, WARN_PERIOD),
                circuit_config: circuit,
                circuit: if own_circuits {
                    Circuit::never_open(circuit)
                } else {
                    Circuit::new(circuit)
                },
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

/// Checks a TTL against the bounds every backend can store.
pub(crate) fn check_ttl(what: &str, ttl: Duration) -> Result<()> {
    if ttl < Duration::from_secs(1) {
        return Err(Error::Config(format!(
            "{what} must be at least one second, not {ttl:?}"
        )));
    }
    if ttl > MAX_TTL {
        return Err(Error::Config(format!(
            "{what} must be at most 365 days, not {}",
            humantime::format_duration(ttl)
        )));
    }
    Ok(())
}
