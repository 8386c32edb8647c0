//! The programmatic API: typed `get`, `set`, `remove` and
//! `get_or_insert_with` on a namespace and a serializable key, for the cases
//! the attribute does not fit. Same machinery as `#[cached]`: envelope and
//! schema check, conditional stores, single-flight, fail-open.
//!
//! Keys: `{prefix}:{{namespace}:{shard}}:@:v0.{key type}:{key}`. A
//! function's keys have its path where this has `@`, and no path is `@`, so
//! this API never reaches a cached function's entries (nor they its). The
//! key's type is hashed in as a function's argument types are (`String` and
//! `&str` alike), so keys of different types that encode alike never meet.
//! The value type is not part of the key: one key holds one value, and
//! reading it as another type is a miss (the envelope's schema check), as
//! with any key-value store.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::{Cache, MAX_TTL};
use crate::call::{Call, CallOutcome, Found, Mode, Policy, Prepared, Request, Shape, execute};
use crate::entry;
use crate::error::{Error, Result};
use crate::key::{self, CacheKey, KeyArgs, Namespace};
use crate::observe::{Counters, ErrorKind, Op};

/// What the API's keys have where a function's keys have its path.
const SEGMENT: &str = "@";
/// The `function` field of the API's logs.
const FUNCTION: &str = "(api)";

/// The counters of calls without a valid namespace, which no namespace's
/// stats may count (their names are not checked, so not bounded).
static DETACHED: LazyLock<Arc<Counters>> = LazyLock::new(Arc::default);

impl Cache {
    /// Reads the value stored under `key` in `namespace`.
    ///
    /// `Ok(None)` if there is none, or if the entry is stale, was written by
    /// another type or schema, or cannot be decoded (a miss, never a wrong
    /// value). `Err` if the backend could not be asked: the cache is down,
    /// its circuit open, or `namespace` or `key` invalid.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// let cache = cache_runtime::Cache::memory();
    /// cache.set("sessions", "s-42", &17_u64, Duration::from_secs(60)).await?;
    /// assert_eq!(cache.get::<u64>("sessions", "s-42").await?, Some(17));
    /// assert_eq!(cache.get::<String>("sessions", "s-42").await?, None); // another type
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get<T>(
        &self,
        namespace: &str,
        key: &(impl Serialize + ?Sized),
    ) -> Result<Option<T>>
    where
        T: DeserializeOwned + 'static,
    {
        let key = self.api_key(namespace, key)?;
        let counters = self.counters(key.namespace());
        let call = self.api_call::<T>(&key, &counters, Duration::ZERO);
        let found = call
            .read::<T>()
            .await
            .inspect_err(|_| counters.error(ErrorKind::Read))?;
        match found {
            Found::Hit(value, _) => {
                counters.hit();
                Ok(Some(value))
            }
            Found::Miss(_) => {
                counters.miss();
                Ok(None)
            }
        }
    }

    /// Stores `value` under `key` in `namespace` for `ttl` (1 s to
    /// [`MAX_TTL`]), less the cache's TTL jitter (up to 10 % by default,
    /// [`CacheBuilder::ttl_jitter`](crate::CacheBuilder::ttl_jitter)), over
    /// whatever the key holds.
    ///
    /// Races are settled as if the concurrent operation came second: a
    /// concurrent invalidation of the namespace or key may remove the
    /// value, and a concurrent store may replace it. `Err` if the backend
    /// could not be asked or the value cannot be encoded; the key is then
    /// unchanged or invalidated, never holding an older value.
    pub async fn set<T>(
        &self,
        namespace: &str,
        key: &(impl Serialize + ?Sized),
        value: &T,
        ttl: Duration,
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        check_ttl(ttl)?;
        let key = self.api_key(namespace, key)?;
        let counters = self.counters(key.namespace());
        let call = self.api_call::<T>(&key, &counters, ttl);
        let observed = call
            .observe()
            .await
            .inspect_err(|_| counters.error(ErrorKind::Read))?;
        let shard = match observed.shard {
            Some(shard) => shard,
            None => self
                .guarded(Op::Shard, self.inner.backend.shard(key.shard()))
                .await
                .inspect_err(|_| counters.error(ErrorKind::Read))?,
        };
        let ttl = call.store_ttl(false);
        let entry = call.seal(value, ttl, Some(shard))?;
        call.replace(&entry, ttl, shard, observed).await?;
        Ok(())
    }

    /// Removes the value under `key` in `namespace`, in every process
    /// sharing the backend: when this returns `Ok`, no read that starts
    /// afterwards returns it, and no computation that started before it can
    /// store over the removal (as [`invalidate_namespace`](Self::invalidate_namespace)
    /// does for a whole namespace).
    pub async fn remove(&self, namespace: &str, key: &(impl Serialize + ?Sized)) -> Result<()> {
        let key = self.api_key(namespace, key)?;
        self.invalidate_key(&key).await
    }

    /// Returns the value under `key` in `namespace`, computing it with
    /// `compute` and storing it for `ttl` on a miss: `#[cached]` without the
    /// attribute. Concurrent misses of the key in this process run one
    /// `compute` (single-flight); a cache failure, an invalid namespace or
    /// TTL make it run uncached (logged), never fail.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::time::Duration;
    /// # let cache = cache_runtime::Cache::memory();
    /// # async fn query_profile(id: u64) -> String { format!("profile {id}") }
    /// let id = 7_u64;
    /// let profile: String = cache
    ///     .get_or_insert_with("profiles", &id, Duration::from_secs(300), query_profile(id))
    ///     .await;
    /// # assert_eq!(profile, "profile 7");
    /// # }
    /// ```
    pub async fn get_or_insert_with<T>(
        &self,
        namespace: &str,
        key: &(impl Serialize + ?Sized),
        ttl: Duration,
        compute: impl Future<Output = T>,
    ) -> T
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        self.compute(namespace, key, ttl, compute, Shape::VALUE)
            .await
            .0
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with) for a fallible
    /// computation: `Ok` values are cached, errors are returned to this
    /// caller and not cached (concurrent callers of the key then compute
    /// one at a time).
    pub async fn try_get_or_insert_with<T, E>(
        &self,
        namespace: &str,
        key: &(impl Serialize + ?Sized),
        ttl: Duration,
        compute: impl Future<Output = std::result::Result<T, E>>,
    ) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        self.compute(namespace, key, ttl, compute, Shape::RESULT)
            .await
            .0
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with), also saying what
    /// the call did: a hit, a value shared by a concurrent call, a miss that
    /// computed, or a call the cache could not serve.
    pub async fn get_or_insert_with_outcome<T>(
        &self,
        namespace: &str,
        key: &(impl Serialize + ?Sized),
        ttl: Duration,
        compute: impl Future<Output = T>,
    ) -> (T, CallOutcome)
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        self.compute(namespace, key, ttl, compute, Shape::VALUE)
            .await
    }

    async fn compute<T, R>(
        &self,
        namespace: &str,
        key: &(impl Serialize + ?Sized),
        ttl: Duration,
        compute: impl Future<Output = R>,
        shape: Shape<T, R>,
    ) -> (R, CallOutcome)
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        // The caller's own request (`refresh`, `uncached`, `with_outcome`
        // around this call), and one of ours for the outcome we return.
        let outer = crate::global::take_request();
        let mode = outer.as_ref().map_or(Mode::Normal, |r| r.mode);
        let (request, slot) = Request::reporting(mode);
        let info = entry::type_info::<T>();
        let (key, counters) = match check_ttl(ttl).and_then(|()| self.api_key(namespace, key)) {
            _ if mode == Mode::Bypass => (Err(CallOutcome::Bypassed), None),
            Ok(key) => {
                let counters = self.counters(key.namespace());
                if self.is_closed() || crate::site::uncacheable(info, self.inner.codec) {
                    counters.miss();
                    (Err(CallOutcome::Uncached), Some(counters))
                } else {
                    (Ok(key), Some(counters))
                }
            }
            Err(error) => {
                tracing::warn!(
                    namespace,
                    %error,
                    "cannot build the cache key; running the computation uncached"
                );
                (Err(CallOutcome::Uncached), None)
            }
        };
        let prepared = Prepared {
            cache: self,
            counters: counters.unwrap_or_else(|| Arc::clone(&DETACHED)),
            function: FUNCTION,
            key,
            info,
            policy: Policy::api(self, ttl),
            request: Some(request),
            span: crate::call::span(namespace, FUNCTION),
        };
        let result = execute(move || prepared, compute, shape).await;
        let outcome = slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(CallOutcome::Uncached);
        if let Some(outer) = outer {
            outer.report(outcome);
        }
        (result, outcome)
    }

    fn api_key(&self, namespace: &str, key: &(impl Serialize + ?Sized)) -> Result<CacheKey> {
        let namespace = Namespace::new(namespace.to_owned())?;
        let mut args = KeyArgs::new();
        args.push(key);
        // The key's type, as a function's argument types are: `""` and
        // `0_u64` encode alike, and must not meet.
        let segment =
            key::function_segment(SEGMENT, 0, &[], &[crate::__private::type_name_of_val(key)]);
        Ok(CacheKey::from_segment(
            &self.inner.prefix,
            &namespace,
            &segment,
            &args.finish()?,
        ))
    }

    fn api_call<'a, T: DeserializeOwned + 'static>(
        &'a self,
        key: &'a CacheKey,
        counters: &'a Counters,
        ttl: Duration,
    ) -> Call<'a> {
        Call {
            cache: self,
            counters,
            function: FUNCTION,
            key,
            info: entry::type_info::<T>(),
            policy: Policy::api(self, ttl),
        }
    }
}

fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(Error::Config(format!(
            "a TTL must be between 1 s and {} days; got {ttl:?}",
            MAX_TTL.as_secs() / 86_400
        )));
    }
    Ok(())
}
