//! The cache-aside path of one call: look up, decode on a hit; on a miss, join
//! the key's flight, run the body, encode, store conditionally. Every cache
//! failure on the way is counted, logged (rate-limited) and otherwise ignored:
//! the call returns what the body returns.
//!
//! Cancel safety: a call may be dropped at any await. What it set up is undone
//! by guards: its place in a flight (the next waiter leads), a circuit probe
//! (counted as failed), a store in flight (no longer awaited by `close`).

pub(crate) mod flight;

use std::time::Duration;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use self::flight::{Lead, Outcome, Turn};
use crate::backend::{PutCondition, PutOutcome, ShardState, Stored, Version};
use crate::cache::Cache;
use crate::entry::{self, HEADER_LEN, Rejection, TypeInfo};
use crate::error::Error;
use crate::key::{CacheKey, KeyArgs};
use crate::site::{self, CallSite};
use crate::stats::Counters;

/// How a function's return value relates to the value it caches.
///
/// `Result<T, E>` caches `Ok(T)`; `Option<T>` caches `Some(T)`; anything else
/// caches itself. Built by the macro from the written return type. Not public API.
#[derive(Debug)]
pub struct Shape<T, R> {
    /// The value to store, if this return value is cacheable.
    pub cacheable: fn(&R) -> Option<&T>,
    /// The return value for a cached value.
    pub wrap: fn(T) -> R,
    /// The return value that is not cached but may be shared with concurrent
    /// callers (`None`), if the shape has one.
    pub empty: Option<fn() -> R>,
}

impl<T, R> Clone for Shape<T, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, R> Copy for Shape<T, R> {}

impl<T, E> Shape<T, Result<T, E>> {
    /// Caches `Ok` only.
    pub const RESULT: Self = Shape {
        cacheable: |r| r.as_ref().ok(),
        wrap: Ok,
        empty: None,
    };
}

impl<T> Shape<T, Option<T>> {
    /// Caches `Some` only.
    pub const OPTION: Self = Shape {
        cacheable: Option::as_ref,
        wrap: Some,
        empty: Some(|| None),
    };
}

impl<T> Shape<T, T> {
    /// Caches every value (also `Option`s under `cache_none`).
    pub const VALUE: Self = Shape {
        cacheable: |value| Some(value),
        wrap: std::convert::identity,
        empty: None,
    };
}

/// What the read found.
enum Found<T> {
    /// A valid entry: the value, and the entry for waiters.
    Hit(T, Bytes),
    Miss(Observed),
}

/// What a miss saw, so the store can check nothing changed since.
struct Observed {
    shard: Option<ShardState>,
    previous: Option<Version>,
    /// False when the read failed: the state of the entry is unknown, so the
    /// store is skipped.
    known: bool,
}

impl Observed {
    const UNKNOWN: Observed = Observed {
        shard: None,
        previous: None,
        known: false,
    };
}

/// One call's context: what every step reports its failures with.
struct Call<'a> {
    cache: &'a Cache,
    counters: &'a Counters,
    function: &'a str,
    key: &'a CacheKey,
    info: &'static TypeInfo,
}

impl Cache {
    /// Runs one call of a cached function.
    pub(crate) async fn call<T, R, F>(
        &self,
        site: &'static CallSite,
        types: &[&'static str],
        args: KeyArgs,
        body: F,
        shape: Shape<T, R>,
    ) -> R
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Future<Output = R>,
    {
        let state = site.state();
        let counters = state.counters(self, site.namespace());
        let info = site.value_type::<T>();
        if self.is_closed()
            || state.refusal().is_some()
            || site::uncacheable(info, self.inner.codec)
        {
            counters.miss();
            return body.await;
        }
        let key = match args.finish() {
            Ok(args) => site.key(&self.inner.prefix, types, &args),
            Err(error) => {
                counters.miss();
                self.fail_uncached(&counters, &state.function_id, site.namespace(), &error);
                return body.await;
            }
        };
        let call = Call {
            cache: self,
            counters: &counters,
            function: &state.function_id,
            key: &key,
            info,
        };

        let seen = self.inner.flights.clock();
        let observed = match call.lookup::<T>().await {
            Found::Hit(value, _) => {
                counters.hit();
                return (shape.wrap)(value);
            }
            Found::Miss(observed) => observed,
        };
        counters.miss();

        let (flight, ticket) = self.inner.flights.join(&key);
        let mut lead = match flight.enter(ticket).await {
            Turn::Lead(lead) => lead,
            Turn::Follow(Outcome::Value(entry)) => {
                return match entry::open_shared(&entry, self.inner.codec, info.fingerprint) {
                    Ok(value) => (shape.wrap)(value),
                    Err(rejection) => {
                        call.reject(rejection);
                        body.await
                    }
                };
            }
            Turn::Follow(Outcome::Empty) => match shape.empty {
                Some(empty) => return empty(),
                None => return body.await,
            },
            Turn::Follow(Outcome::Unshared | Outcome::RunAlone) => return body.await,
        };

        // A later round reads again: another process may have stored by now.
        let observed = if lead.must_look_up(seen) {
            match call.lookup::<T>().await {
                Found::Hit(value, entry) => {
                    lead.finish(Outcome::Value(entry), false);
                    return (shape.wrap)(value);
                }
                Found::Miss(observed) => observed,
            }
        } else {
            observed
        };
        if !observed.known {
            lead.read_failed();
        }
        let shard = call.shard_for(&observed).await;
        let result = body.await;
        let (outcome, stored) = match (shape.cacheable)(&result) {
            Some(value) => {
                let ttl = site.ttl(self.inner.default_ttl);
                call.store(value, ttl, shard, observed, &mut lead).await
            }
            None if shape.empty.is_some() => (Outcome::Empty, false),
            None => (Outcome::Unshared, false),
        };
        lead.finish(outcome, stored);
        result
    }

    /// Logs a call that runs uncached because its key cannot be built.
    fn fail_uncached(&self, counters: &Counters, function: &str, namespace: &str, error: &Error) {
        counters.error();
        tracing::warn!(
            namespace,
            function,
            %error,
            "cannot encode the key arguments; running the function uncached"
        );
    }
}

impl Call<'_> {
    fn fail(&self, action: &str, error: &Error) {
        self.cache
            .fail(self.counters, self.function, self.key, action, error);
    }

    fn reject(&self, rejection: Rejection) {
        match rejection {
            Rejection::Stale => {}
            Rejection::Foreign => tracing::debug!(
                namespace = self.key.namespace(),
                function = self.function,
                "entry written by another type, schema or codec; recomputing"
            ),
            Rejection::Broken(error) => self.fail("decode", &error),
        }
    }

    async fn lookup<T: DeserializeOwned>(&self) -> Found<T> {
        let cache = self.cache;
        let lookup = match cache.guarded(cache.inner.backend.get(self.key)).await {
            Ok(lookup) => lookup,
            Err(error) => {
                self.fail("read", &error);
                return Found::Miss(Observed::UNKNOWN);
            }
        };
        let Some(stored) = lookup.entry else {
            return Found::Miss(Observed {
                shard: lookup.shard,
                previous: None,
                known: true,
            });
        };
        let generation = lookup.shard.map(|s| s.generation);
        match entry::open(
            &stored.bytes,
            cache.inner.codec,
            self.info.fingerprint,
            generation,
        ) {
            Ok(value) => Found::Hit(value, stored.bytes),
            Err(rejection) => {
                self.reject(rejection);
                Found::Miss(Observed {
                    shard: lookup.shard,
                    previous: Some(stored.version),
                    known: true,
                })
            }
        }
    }

    /// The shard state the body's value will be stored under; `None` if it
    /// cannot be known, in which case nothing is stored.
    async fn shard_for(&self, observed: &Observed) -> Option<ShardState> {
        if !observed.known {
            return None;
        }
        if observed.shard.is_some() {
            return observed.shard;
        }
        // The shard has no state yet. It must exist before the body runs: one
        // created after could postdate an invalidation the body missed.
        let cache = self.cache;
        match cache
            .guarded(cache.inner.backend.shard(self.key.shard()))
            .await
        {
            Ok(shard) => Some(shard),
            Err(error) => {
                self.fail("shard state read", &error);
                None
            }
        }
    }

    /// Encodes and stores the body's value; returns what the round's waiters
    /// get, and whether the store succeeded.
    async fn store<T: Serialize + DeserializeOwned>(
        &self,
        value: &T,
        ttl: Duration,
        shard: Option<ShardState>,
        observed: Observed,
        lead: &mut Lead<'_>,
    ) -> (Outcome, bool) {
        let cache = self.cache;
        let codec = cache.inner.codec;
        let generation = shard.map_or(crate::backend::Generation(0), |s| s.generation);
        let entry = match entry::seal(codec, self.info.fingerprint, generation, ttl, value) {
            Ok(entry) => entry,
            Err(error) => {
                self.fail("encode", &error);
                return (Outcome::RunAlone, false);
            }
        };
        if self.info.round_trips(codec).is_none() && !self.check_round_trip::<T>(&entry) {
            return (Outcome::RunAlone, false);
        }
        let Some(shard) = shard else {
            // The backend is unreachable: share the value in process only.
            return (Outcome::Value(entry), false);
        };
        let condition = PutCondition {
            shard,
            previous: observed.previous,
        };
        let stored = Stored {
            version: Version::random(),
            bytes: entry.clone(),
        };
        let _write = cache.write_started();
        lead.store_starts();
        let put = cache.inner.backend.put(self.key, stored, ttl, &condition);
        match cache.guarded(put).await {
            Ok(PutOutcome::Stored) => (Outcome::Value(entry), true),
            Ok(PutOutcome::StoredOverForeign) => {
                self.counters.error();
                tracing::warn!(
                    backend = cache.inner.backend.name(),
                    namespace = self.key.namespace(),
                    function = self.function,
                    "the entry's key held a value that was not an entry (another type of \
                     key, written by another program); replaced it"
                );
                (Outcome::Value(entry), true)
            }
            // An invalidation ran while the body did, or another process
            // stored first: only waiters of a later round may take it.
            Ok(_) => (Outcome::Value(entry), false),
            Err(error) => {
                self.fail("write", &error);
                (Outcome::Value(entry), false)
            }
        }
    }

    /// Decodes the first entry of a value type back, once per process: a
    /// type whose `Deserialize` the codec cannot drive (serde `untagged`,
    /// `flatten`, `deserialize_any`) would fail every hit; it is reported once
    /// and its functions run uncached from then on.
    fn check_round_trip<T: DeserializeOwned>(&self, entry: &[u8]) -> bool {
        let codec = self.cache.inner.codec;
        match codec.decode::<T>(&entry[HEADER_LEN..]) {
            Ok(_) => {
                self.info.record_round_trip(codec, true);
                true
            }
            Err(error) => {
                if self.info.record_round_trip(codec, false) {
                    self.counters.error();
                    tracing::error!(
                        value_type = std::any::type_name::<T>(),
                        codec = codec.name(),
                        namespace = self.key.namespace(),
                        function = self.function,
                        %error,
                        "values of this type cannot be read back with the cache's codec \
                         (serde `untagged`, `flatten` and `deserialize_any` need a self-describing \
                         format); functions returning it run uncached"
                    );
                }
                false
            }
        }
    }
}
