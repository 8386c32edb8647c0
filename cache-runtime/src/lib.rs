//! Cache-aside memoization for async Rust.
//!
//! Put [`#[cached]`](macro@cached) on an async function and its results are
//! cached under a key built from its arguments, in a namespace you can
//! invalidate as a whole:
//!
//! ```
//! use cache_runtime::cached;
//!
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
//! struct User {
//!     id: u64,
//!     name: String,
//! }
//!
//! #[cached(namespace = "users", ttl = "10m")]
//! async fn get_user(id: u64) -> Result<User, String> {
//!     // The expensive part: a database query, an HTTP call...
//!     Ok(User { id, name: format!("user {id}") })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cache_runtime::Error> {
//! let user = get_user(7).await;          // miss: runs the body, stores the value
//! assert_eq!(get_user(7).await, user);   // hit: decoded from the cache
//!
//! get_user_invalidate(&7).await?;                 // one entry
//! cache_runtime::invalidate_namespace(GET_USER_NAMESPACE).await?; // the whole namespace
//! # Ok(())
//! # }
//! ```
//!
//! What the runtime guarantees (each has tests; the model-based test in
//! `tests/tests/model/` checks them together under random interleavings,
//! faults and cancellations):
//!
//! - **Never a wrong value (G1).** An entry decodes only into the type and
//!   schema that wrote it, on every path (a hit, or a value handed over by a
//!   concurrent call); instantiations of generic code never share entries. A
//!   foreign, old or broken entry is a miss, and decoding is bounded by the
//!   entry's length, so hostile bytes cannot abort the process.
//! - **Injective keys (G2).** Distinct arguments never share an entry,
//!   whatever characters they contain; no argument reaches into another
//!   namespace; distinct functions never share (or lose) their keys (one
//!   exception: same-named cached functions nested in sibling blocks of one
//!   function body, run by different processes, which the compiler names
//!   alike).
//! - **Invalidation is final (G3).** Once an invalidation returns `Ok`, no call
//!   that starts afterwards returns a value computed before it, in this
//!   process or any other sharing the backend: entries of older generations
//!   are misses, stores racing with it are refused, and a call never takes
//!   another's value unless it was computed (or stored) after the call began.
//!   What backs this is the backend remembering what it acknowledged: see
//!   the guide's Deployment chapter for Redis persistence and failover.
//! - **Fail-open (G4).** A cache failure (backend down, slow, panicking;
//!   hostile entries; no Tokio runtime) never fails the call: the body runs,
//!   and the call's own requests wait at most the backend's timeout, about
//!   nothing once the circuit is open (a call queued behind another call of
//!   its key also waits for that call, as single-flight does). A call
//!   cancelled at any point leaves nothing stuck.
//! - **Single-flight (G5).** Concurrent misses on one key in one process run
//!   the body once (twice if the store is refused because another process or
//!   an invalidation got there first), even if the first caller is
//!   cancelled; a failing body runs for one caller at a time.
//! - **Bounded (G6).** Every key written has a TTL (at most
//!   [`MAX_TTL`], 365 days) and every tier has a size bound.
//!
//! With nothing configured, an in-memory cache serves. Install another one at
//! startup with [`Cache::builder`]; run a test under its own cache with
//! [`Cache::scope`]. See the [`global`] function for the lookup order.
//!
//! # Redis
//!
//! ```no_run
//! use std::time::Duration;
//! use cache_runtime::{Cache, RedisConfig};
//!
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder()
//!     .redis(RedisConfig::new("redis://:password@cache.internal:6379/0")?
//!         .response_timeout(Duration::from_millis(100)))
//!     .prefix("myapp")
//!     .connect() // lazy: the service starts even if Redis is down
//!     .await?;
//! cache_runtime::install(cache.clone()).expect("installed once, at startup");
//!
//! // In a health endpoint: 200 if healthy, 503 otherwise.
//! let health = cache_runtime::health().await;
//! # let _ = health;
//! // On shutdown, after the server stopped taking requests:
//! cache.close(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
//!
//! A hit is one round trip (`MGET` of the entry and its shard's state).
//! When Redis fails, calls run uncached and pay at most the response timeout;
//! after 5 consecutive failures a circuit breaker stops asking Redis until a
//! probe (50 ms, doubling to 5 s) finds it back.
//!
//! # Configuration
//!
//! Precedence: explicit code first, then the environment, then defaults.
//! [`CacheBuilder::from_env`](crate::CacheBuilder::from_env) starts a builder
//! from the environment; every setter called on it afterwards wins. An
//! application that wants its own defaults, still overridable by the
//! environment, sets them before
//! [`CacheBuilder::with_env`](crate::CacheBuilder::with_env).
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `REDIS_URL` | use Redis at this URL | unset: in-memory |
//! | `REDIS_CLUSTER_NODES` | use a Redis Cluster through these nodes (`host:port,...`; feature `cluster`) | unset |
//! | `REDIS_USERNAME`, `REDIS_PASSWORD` | the credentials of `host:port` cluster nodes, or of a Sentinel group's primary | unset |
//! | `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER` | use the primary these sentinels monitor under this name (feature `sentinel`) | unset |
//! | `REDIS_SENTINEL_USERNAME`, `REDIS_SENTINEL_PASSWORD` | the sentinels' own credentials | unset |
//! | `CACHE_BACKEND` | `memory` or `redis` | `redis` if `REDIS_URL` or `REDIS_CLUSTER_NODES` is set |
//! | `CACHE_PREFIX` | key prefix | `cache` |
//! | `CACHE_DEFAULT_TTL` | TTL of functions without one (`300`, `5m`; 1 s to 365 days) | 5 minutes |
//! | `CACHE_LEASE` | one body per missed key across processes; the lease TTL (`5s`), or `off` | `5s` for Redis, `off` otherwise |
//! | `CACHE_LEASE_WAIT` | how long a caller waits for another process's value (`10s`) | 10 s |
//! | `CACHE_TTL_JITTER` | shorten each TTL by a random part of up to this much (`10%`), or `off` | `10%` |
//! | `CACHE_CONNECT_TIMEOUT` | Redis connect timeout (`1s`) | 1 s |
//! | `CACHE_RESPONSE_TIMEOUT` | Redis response timeout (`250ms`) | 250 ms |
//! | `CACHE_BACKOFF_BASE` | first reconnect / circuit delay | 50 ms |
//! | `CACHE_BACKOFF_MAX` | longest reconnect / circuit delay | 5 s |
//! | `CACHE_TCP_KEEPALIVE` | Redis TCP keepalive idle time (`15s`), or `off` | 15 s |
//! | `CACHE_PING_INTERVAL` | ping an idle Redis connection this often (`5s`), or `off` | 5 s |
//! | `CACHE_FAIL_FAST` | `true`: startup fails if Redis is unreachable | `false` |
//! | `CACHE_WAIT_REPLICAS` | invalidations wait for this many replicas (`0`: no wait) | 1 on a cluster or Sentinel group, 0 otherwise |
//! | `CACHE_WAIT_TIMEOUT` | how long an invalidation waits for them (`100ms`) | 100 ms |
//! | `CACHE_LOG_KEYS` | `true`: fail-open warnings show the key (it holds argument values) | `false` |

#![deny(missing_docs)]

mod backend;
mod cache;
mod call;
mod circuit;
mod config;
mod entry;
mod error;
mod global;
mod key;
mod observe;
mod site;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "redis")]
pub use backend::RedisBackend;
pub use backend::{
    Backend, Generation, LeaseState, LeaseToken, Lookup, MemoryBackend, MemoryBackendBuilder,
    NodeHealth, PutCondition, PutOutcome, ShardState, Stored, Version,
};
pub use cache::{
    Cache, CacheBuilder, DEFAULT_PREFIX, DEFAULT_SLOW_THRESHOLD, DEFAULT_TTL, Health, MAX_TTL,
};
pub use call::{
    CallOutcome, DEFAULT_LEASE_TTL, DEFAULT_LEASE_WAIT, DEFAULT_TTL_JITTER, MAX_TTL_JITTER,
};
pub use circuit::CircuitConfig;
#[cfg(feature = "cluster")]
pub use config::DEFAULT_CLUSTER_REPLICATION;
#[cfg(feature = "redis")]
pub use config::{DEFAULT_PING_INTERVAL, DEFAULT_REDIS_URL, DEFAULT_TCP_KEEPALIVE, RedisConfig};
#[cfg(feature = "postcard")]
pub use entry::codec::Postcard;
pub use entry::codec::{Bincode, Codec, CodecKind};
pub use error::{Error, Result};
pub use global::{current, global, install};
pub use key::{CacheKey, INLINE_ARGS_MAX, KeyArgs, Namespace, SHARDS};
pub use observe::{MAX_COUNTED_NAMESPACES, NamespaceStats, OVERFLOW, Stats};

#[doc(inline)]
pub use cache_macros::cached;

/// Invalidates every entry of a namespace in the current cache.
///
/// See [`Cache::invalidate_namespace`].
pub async fn invalidate_namespace(namespace: &str) -> Result<()> {
    current().invalidate_namespace(namespace).await
}

/// The hit, miss and error counters of the current cache.
pub fn stats() -> Stats {
    current().stats()
}

/// Pings the current cache's backend.
pub async fn health() -> Health {
    current().health().await
}

/// Runs `call` as a refresh: its first cached call (a `#[cached]` function,
/// or [`Cache::get_or_insert_with`]) runs the body and stores the result
/// whatever the cache holds for its key: a cache put, for writers that
/// know the value changed.
///
/// The store is refused if an invalidation of the entry or its namespace
/// runs while the body does (the body may have read what the invalidation
/// was about). A cache failure does not fail the call. Cached calls nested
/// in the body run as usual.
///
/// ```
/// # use cache_runtime::cached;
/// # use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
/// static PRICE: AtomicU64 = AtomicU64::new(10);
///
/// #[cached(namespace = "prices")]
/// async fn price(sku: u32) -> u64 {
///     PRICE.load(Relaxed)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(price(1).await, 10);
/// PRICE.store(12, Relaxed);                                 // the database changed
/// assert_eq!(cache_runtime::refresh(price(1)).await, 12);  // recomputed and stored
/// assert_eq!(price(1).await, 12);                          // a hit
/// # }
/// ```
pub fn refresh<R>(call: impl Future<Output = R>) -> impl Future<Output = R> {
    global::requested(call::Request::new(call::Mode::Refresh), call)
}

/// Runs `call` without the cache: its first cached call runs the body, and
/// the cache is neither read nor written (nor counted). Cached calls
/// nested in the body run as usual.
///
/// ```
/// # use cache_runtime::cached;
/// #[cached]
/// async fn balance(account: u64) -> u64 {
///     account * 100 // the authoritative read
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Before a payment: read the source, not the cache.
/// let fresh = cache_runtime::uncached(balance(7)).await;
/// # assert_eq!(fresh, 700);
/// # }
/// ```
pub fn uncached<R>(call: impl Future<Output = R>) -> impl Future<Output = R> {
    global::requested(call::Request::new(call::Mode::Bypass), call)
}

/// Runs `call` and says what its first cached call did: a hit, a value
/// shared by a concurrent call, a miss, or a call the cache could not
/// serve. `None` if `call` made no cached call. Calls that do not ask pay
/// nothing for this.
///
/// "First" means the first cached call that *starts* on this task while
/// `call` runs (the same holds for [`refresh`] and [`uncached`]): not one
/// in a task it spawns, nor one that had started before it was wrapped;
/// of calls raced in a `join!` or `select!`, whichever is polled first.
/// Wrappers nest: the inner one's mode wins, and every `with_outcome`
/// around it learns the outcome.
///
/// ```
/// # use cache_runtime::{CallOutcome, cached};
/// #[cached(namespace = "users")]
/// async fn user_name(id: u64) -> String {
///     format!("user {id}")
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (_, outcome) = cache_runtime::with_outcome(user_name(1)).await;
/// assert_eq!(outcome, Some(CallOutcome::Miss));
/// let (_, outcome) = cache_runtime::with_outcome(user_name(1)).await;
/// assert_eq!(outcome, Some(CallOutcome::Hit)); // e.g. an `x-cache: hit` header
/// # }
/// ```
pub fn with_outcome<R>(
    call: impl Future<Output = R>,
) -> impl Future<Output = (R, Option<CallOutcome>)> {
    let (request, slot) = call::Request::reporting(call::Mode::Normal);
    let call = global::requested(request, call);
    async move {
        let result = call.await;
        let outcome = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        (result, outcome)
    }
}

/// What the code generated by `#[cached]` calls. Not public API: it may change
/// in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::call::Shape;
    pub use crate::key::KeyArgs;
    pub use crate::site::CallSite;

    use serde::{Serialize, de::DeserializeOwned};

    /// Runs one call of a cached function on the current cache. `types` are
    /// the names of the call's concrete types (`Self`, type parameters, key
    /// arguments, value), which tell instantiations of generic code apart.
    ///
    /// The key is built on the returned future's first poll, which is the
    /// call's only layer of futures.
    #[inline]
    pub fn cached<T, R, F>(
        site: &'static CallSite,
        types: &[&'static str],
        args: KeyArgs,
        body: F,
        shape: Shape<T, R>,
    ) -> impl Future<Output = R>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Future<Output = R>,
    {
        let prepare = move || {
            let (cache, request) = crate::global::Current::for_call();
            crate::call::Prepared::new::<T>(cache, site, types, args, request)
        };
        crate::call::execute(prepare, body, shape)
    }

    /// Invalidates the entry of one argument tuple on the current cache.
    pub async fn invalidate(
        site: &'static CallSite,
        types: &[&'static str],
        args: KeyArgs,
    ) -> crate::Result<()> {
        let cache = crate::current();
        let key = site.key(cache.prefix(), types, &args.finish()?);
        cache.invalidate_key(&key).await
    }

    /// The type of a value, for the names of the call's types.
    pub fn type_name_of_val<T: ?Sized>(_: &T) -> &'static str {
        std::any::type_name::<T>()
    }
}
