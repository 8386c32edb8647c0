//! The cache-aside path of one call: look up, decode on a hit; on a miss, join
//! the key's flight, run the body, encode, store conditionally. Every cache
//! failure on the way is counted, logged (rate-limited) and otherwise ignored:
//! the call returns what the body returns.

use std::time::Duration;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::backend::{PutCondition, PutOutcome};
use crate::cache::Cache;
use crate::entry::{self, Generation, HEADER_LEN, Rejection};
use crate::flight::{Outcome, Turn};
use crate::key::{CacheKey, KeyArgs};
use crate::site::CallSite;
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
    };
}

impl<T> Shape<T, Option<T>> {
    /// Caches `Some` only.
    pub const OPTION: Self = Shape {
        cacheable: Option::as_ref,
        wrap: Some,
    };
}

impl<T> Shape<T, T> {
    /// Caches every value (also `Option`s under `cache_none`).
    pub const VALUE: Self = Shape {
        cacheable: |value| Some(value),
        wrap: std::convert::identity,
    };
}

/// What the read found.
enum Found<T> {
    Hit(T),
    Miss(Observed),
}

/// What a miss saw, so the store can check nothing changed since.
struct Observed {
    generation: Option<Generation>,
    previous: Option<Bytes>,
    /// False when the read failed: the state of the entry is unknown, so the
    /// store is skipped.
    known: bool,
}

impl Cache {
    /// Runs one call of a cached function.
    pub(crate) async fn call<T, R, F>(
        &self,
        site: &'static CallSite,
        args: KeyArgs,
        body: F,
        shape: Shape<T, R>,
    ) -> R
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Future<Output = R>,
    {
        let state = site.state();
        if state.bypass || self.is_closed() {
            return body.await;
        }
        let counters = state.counters(self, site.namespace());
        let key = match args.finish() {
            Ok(args) => CacheKey::from_segment(
                &self.inner.prefix,
                &state.namespace,
                &state.key_segment,
                &state.function_id,
                &args,
            ),
            Err(error) => {
                counters.error();
                tracing::warn!(namespace = site.namespace(), function = %state.function_id, %error,
                    "cannot encode the key arguments; running the function uncached");
                return body.await;
            }
        };
        let fingerprint = site.fingerprint::<T>();

        let observed = match self.lookup::<T>(&key, fingerprint, &counters).await {
            Found::Hit(value) => {
                counters.hit();
                return (shape.wrap)(value);
            }
            Found::Miss(observed) => observed,
        };
        counters.miss();

        let flight = self.inner.flights.join(&key);
        let lead = match flight.enter().await {
            Turn::Lead(lead) => lead,
            Turn::Follow(Outcome::Shared(entry)) => {
                match self.inner.codec.decode(&entry[HEADER_LEN..]) {
                    Ok(value) => return (shape.wrap)(value),
                    Err(error) => {
                        self.fail(&counters, &key, "decode", &error);
                        return body.await;
                    }
                }
            }
            Turn::Follow(Outcome::RunAlone) => return body.await,
        };

        let generation = self.generation_for(&key, &observed, &counters).await;
        let result = body.await;
        let outcome = match (shape.cacheable)(&result) {
            None => Outcome::RunAlone,
            Some(value) => {
                let ttl = site.ttl(self.inner.default_ttl);
                self.store(
                    &key,
                    value,
                    fingerprint,
                    ttl,
                    generation,
                    observed,
                    &counters,
                )
                .await
            }
        };
        lead.finish(outcome);
        result
    }

    async fn lookup<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
        fingerprint: u64,
        counters: &Counters,
    ) -> Found<T> {
        let lookup = match self.guarded(self.inner.backend.get(key)).await {
            Ok(lookup) => lookup,
            Err(error) => {
                self.fail(counters, key, "read", &error);
                return Found::Miss(Observed {
                    generation: None,
                    previous: None,
                    known: false,
                });
            }
        };
        let Some(stored) = lookup.entry else {
            return Found::Miss(Observed {
                generation: lookup.generation,
                previous: None,
                known: true,
            });
        };
        match entry::open(&stored, self.inner.codec, fingerprint, lookup.generation) {
            Ok(value) => return Found::Hit(value),
            Err(Rejection::Stale) => {}
            Err(Rejection::Foreign) => {
                tracing::debug!(%key, "entry written by another type, schema or codec; recomputing");
            }
            Err(Rejection::Broken(error)) => {
                self.fail(counters, key, "decode", &error);
            }
        }
        Found::Miss(Observed {
            generation: lookup.generation,
            previous: Some(stored.slice(..stored.len().min(HEADER_LEN))),
            known: true,
        })
    }

    /// The generation the body's value will be stored under; `None` if it cannot
    /// be known, in which case nothing is stored.
    async fn generation_for(
        &self,
        key: &CacheKey,
        observed: &Observed,
        counters: &Counters,
    ) -> Option<Generation> {
        if !observed.known {
            return None;
        }
        if observed.generation.is_some() {
            return observed.generation;
        }
        // The shard has no generation yet. It must exist before the body runs:
        // one created after could postdate an invalidation the body missed.
        match self
            .guarded(self.inner.backend.generation(key.shard()))
            .await
        {
            Ok(generation) => Some(generation),
            Err(error) => {
                self.fail(counters, key, "generation read", &error);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    async fn store<T: Serialize>(
        &self,
        key: &CacheKey,
        value: &T,
        fingerprint: u64,
        ttl: Duration,
        generation: Option<Generation>,
        observed: Observed,
        counters: &Counters,
    ) -> Outcome {
        let sealed = entry::seal(
            self.inner.codec,
            fingerprint,
            generation.unwrap_or(Generation(0)),
            ttl,
            value,
        );
        let entry = match sealed {
            Ok(entry) => entry,
            Err(error) => {
                self.fail(counters, key, "encode", &error);
                return Outcome::RunAlone;
            }
        };
        let Some(generation) = generation else {
            // The backend is unreachable: share the value in-process only.
            return Outcome::Shared(entry);
        };
        let condition = PutCondition {
            generation,
            previous: observed.previous,
        };
        let _write = self.write_started();
        match self
            .guarded(self.inner.backend.put(key, entry.clone(), ttl, &condition))
            .await
        {
            Ok(PutOutcome::Stored) => Outcome::Shared(entry),
            // An invalidation ran while the body did (or another process stored
            // first): this value may predate the invalidation, so waiters that
            // might have arrived after it compute their own.
            Ok(_) => Outcome::RunAlone,
            Err(error) => {
                self.fail(counters, key, "write", &error);
                Outcome::Shared(entry)
            }
        }
    }
}
