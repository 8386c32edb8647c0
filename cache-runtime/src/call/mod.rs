//! The cache-aside path of one call: look up, decode on a hit; on a miss, join
//! the key's flight, run the body, encode, store conditionally. Every cache
//! failure on the way is counted, logged (rate-limited) and otherwise ignored:
//! the call returns what the body returns.
//!
//! Cancel safety: a call may be dropped at any await. What it set up is undone
//! by guards: its place in a flight (the next waiter leads), a circuit probe
//! (counted as failed), a store in flight (no longer awaited by `close`).

pub(crate) mod flight;
mod lease;
mod outcome;
mod refresh;
mod ttl;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use self::flight::{Clock, Flight, Lead, Outcome, Turn};
use crate::backend::{PutCondition, PutOutcome, ShardState, Stored, Version};
use crate::cache::Cache;
use crate::entry::{self, HEADER_LEN, Rejection, TypeInfo};
use crate::error::Error;
use crate::global::Current;
use crate::key::{CacheKey, KeyArgs};
use crate::observe::{Counters, ErrorKind, Op};
use crate::site::{self, CallSite, SiteCounters};

pub(crate) use self::lease::LeaseConfig;
pub use self::lease::{DEFAULT_LEASE_TTL, DEFAULT_LEASE_WAIT};
use self::lease::{Hold, Leased};
pub use self::outcome::CallOutcome;
pub(crate) use self::outcome::{Mode, Request};
pub(crate) use self::ttl::{CACHE_JITTER, check_jitter, parse_jitter};
pub use self::ttl::{DEFAULT_TTL_JITTER, MAX_TTL_JITTER};

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
    /// Whether a cached value is a `None` that the function's `none_ttl`
    /// applies to; set by the macro when `none_ttl` is given.
    pub none: Option<fn(&T) -> bool>,
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
        none: None,
    };
}

impl<T> Shape<T, Option<T>> {
    /// Caches `Some` only.
    pub const OPTION: Self = Shape {
        cacheable: Option::as_ref,
        wrap: Some,
        empty: Some(|| None),
        none: None,
    };
}

impl<T> Shape<T, T> {
    /// Caches every value (also `Option`s under `cache_none`).
    pub const VALUE: Self = Shape {
        cacheable: |value| Some(value),
        wrap: std::convert::identity,
        empty: None,
        none: None,
    };
}

/// What the read found.
pub(crate) enum Found<T> {
    /// A valid entry: the value, and the entry for waiters.
    Hit(T, Bytes),
    Miss(Observed),
}

/// What a miss saw, so the store can check nothing changed since.
pub(crate) struct Observed {
    pub(crate) shard: Option<ShardState>,
    pub(crate) previous: Option<Version>,
    /// False when the read failed: the state of the entry is unknown, so the
    /// store is skipped.
    pub(crate) known: bool,
    /// An entry of the current generation past its TTL, kept for
    /// `stale_if_error`: what the call returns if its body returns `Err`.
    pub(crate) stale: Option<Stale>,
}

/// An entry past its TTL, as a read found it (`stale_if_error`).
pub(crate) struct Stale {
    bytes: Bytes,
    version: Version,
    generation: Option<crate::backend::Generation>,
}

impl Observed {
    const UNKNOWN: Observed = Observed {
        shard: None,
        previous: None,
        known: false,
        stale: None,
    };
}

/// How one call stores and shares what it computes: its function's options
/// over the cache's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// The TTL of what the call stores (before jitter).
    pub(crate) ttl: Duration,
    /// The TTL of a `None` it stores, if the function has one.
    pub(crate) none_ttl: Option<Duration>,
    /// Up to how much of a TTL jitter takes off, in percent.
    pub(crate) jitter: u8,
    /// Whether a miss takes the cache's lease (where it has leases).
    pub(crate) lease: bool,
    /// `stale_if_error`: how long past its TTL an entry is kept.
    pub(crate) grace: Option<Duration>,
}

impl Policy {
    /// The programmatic API's: `ttl` with the cache's jitter and leases.
    pub(crate) fn api(cache: &Cache, ttl: Duration) -> Policy {
        Policy {
            ttl,
            none_ttl: None,
            jitter: cache.inner.ttl_jitter,
            lease: true,
            grace: None,
        }
    }
}

/// One call's context: what every step reports its failures with.
pub(crate) struct Call<'a> {
    pub(crate) cache: &'a Cache,
    pub(crate) counters: &'a Counters,
    /// The function's id, or `(api)` for the programmatic API: for logs.
    pub(crate) function: &'a str,
    pub(crate) key: &'a CacheKey,
    pub(crate) info: &'static TypeInfo,
    pub(crate) policy: Policy,
}

/// What a call runs with, owned, so that the call's future holds it: the
/// cache, the namespace's counters, and the key (or why there is none).
pub(crate) struct Prepared<C, N> {
    pub(crate) cache: C,
    pub(crate) counters: N,
    /// The function's id, or `(api)` for the programmatic API: for logs.
    pub(crate) function: &'static str,
    /// `Err`: the call runs uncached, with this outcome.
    pub(crate) key: Result<CacheKey, CallOutcome>,
    pub(crate) info: &'static TypeInfo,
    pub(crate) policy: Policy,
    pub(crate) request: Option<Request>,
    /// The call's span, whose `outcome` the call records.
    pub(crate) span: tracing::Span,
}

/// The span of one call, at `debug`: `cache_call{namespace, function,
/// outcome}`, from the call's start to its end. The body runs inside it
/// (its own spans and events are the call's children); the cache's own
/// steps do not enter it, which would cost every hit a move of the call's
/// future. Without a subscriber that wants it, it costs a relaxed atomic
/// load (and nothing is recorded).
pub(crate) fn span(namespace: &str, function: &str) -> tracing::Span {
    tracing::debug_span!(
        "cache_call",
        namespace,
        function,
        outcome = tracing::field::Empty
    )
}

impl Prepared<Current, SiteCounters<'static>> {
    /// Prepares one call of a cached function on `cache`: finds its key,
    /// or why it runs uncached. `request` is what
    /// [`refresh`](crate::refresh), [`uncached`](crate::uncached) or
    /// [`with_outcome`](crate::with_outcome) asked of it, if any.
    pub(crate) fn new<T: DeserializeOwned + 'static>(
        cache: Current,
        site: &'static CallSite,
        types: &[&'static str],
        args: KeyArgs,
        request: Option<Request>,
    ) -> Self {
        let state = site.state();
        let counters = state.counters(&cache, site.namespace());
        let info = site.value_type::<T>();
        let key = if request.as_ref().is_some_and(|r| r.mode == Mode::Bypass) {
            Err(CallOutcome::Bypassed)
        } else if cache.is_closed()
            || state.refusal().is_some()
            || site::uncacheable(info, cache.inner.codec)
        {
            counters.miss();
            Err(CallOutcome::Uncached)
        } else {
            match args.finish() {
                Ok(args) => Ok(site.key(&cache.inner.prefix, types, &args)),
                Err(error) => {
                    counters.miss();
                    cache.fail_uncached(&counters, &state.function_id, site.namespace(), &error);
                    Err(CallOutcome::Uncached)
                }
            }
        };
        let policy = site.policy(&cache);
        Prepared {
            cache,
            counters,
            function: &state.function_id,
            key,
            info,
            policy,
            request,
            span: span(site.namespace(), &state.function_id),
        }
    }
}

impl Cache {
    /// Logs a call that runs uncached because its key cannot be built.
    pub(crate) fn fail_uncached(
        &self,
        counters: &Counters,
        function: &str,
        namespace: &str,
        error: &Error,
    ) {
        counters.error(ErrorKind::Key);
        tracing::warn!(
            namespace,
            function,
            %error,
            "cannot build the cache key; running the function uncached"
        );
    }
}

/// What a call does around its body, decided before the body runs.
enum Plan<'f> {
    /// Run the body, store nothing; the stale entry, if the call has one for
    /// `stale_if_error`.
    Alone(CallOutcome, Option<Stale>),
    /// Lead a flight's round: run the body, store, publish.
    Lead {
        lead: Lead<'f>,
        shard: Option<ShardState>,
        observed: Observed,
        outcome: CallOutcome,
        /// The key's lease, held until the store is done.
        lease: Option<Hold>,
    },
    /// A refresh: run the body, store over the entry.
    Refresh {
        shard: Option<ShardState>,
        observed: Observed,
    },
}

/// Runs one call, cached or not, and reports its outcome if asked.
///
/// The body is awaited in one place only: every await point of an async
/// function keeps its own copy of what it awaits, and the body (which holds
/// every cached call nested in it) is the largest thing a call holds.
///
/// `prepare` runs on the first poll, inside the call's one future: built
/// there, what it returns is held once, and the future the caller moves
/// into its own state is small until it is polled. (An `async fn` would
/// move its arguments into locals and hold them twice.)
#[inline]
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold its arguments twice (see above)"
)]
pub(crate) fn execute<C, N, T, R, F>(
    prepare: impl FnOnce() -> Prepared<C, N>,
    body: F,
    shape: Shape<T, R>,
) -> impl Future<Output = R>
where
    C: std::ops::Deref<Target = Cache>,
    N: std::ops::Deref<Target = Counters>,
    T: Serialize + DeserializeOwned + 'static,
    F: Future<Output = R>,
{
    async move {
        let prepared = prepare();
        let prepared = &prepared;
        let mode = prepared.request.as_ref().map_or(Mode::Normal, |r| r.mode);
        let call = prepared
            .key
            .as_ref()
            .map_err(|outcome| *outcome)
            .map(|key| Call {
                cache: &prepared.cache,
                counters: &prepared.counters,
                function: prepared.function,
                key,
                info: prepared.info,
                policy: prepared.policy,
            });
        let mut flight = None;
        let plan = match &call {
            Err(outcome) => Plan::Alone(*outcome, None),
            Ok(call) if mode == Mode::Refresh => call.plan_refresh().await,
            Ok(call) => {
                let seen = call.cache.inner.flights.clock();
                let observed = match call.read::<T>().await {
                    Ok(Found::Hit(value, _)) => {
                        call.counters.hit();
                        prepared.report(CallOutcome::Hit);
                        return (shape.wrap)(value);
                    }
                    Ok(Found::Miss(observed)) => observed,
                    Err(error) => call.read_failed(&error),
                };
                match call.plan_miss(shape, &mut flight, seen, observed).await {
                    Ok(plan) => plan,
                    Err((result, outcome)) => {
                        prepared.report(outcome);
                        return result;
                    }
                }
            }
        };
        let counters = &prepared.counters;
        let start = (counters.times_bodies() && mode != Mode::Bypass).then(std::time::Instant::now);
        let result = tracing::Instrument::instrument(body, prepared.span.clone()).await;
        if let Some(start) = start {
            counters.body_ran(start.elapsed().as_secs_f64());
        }
        // `stale_if_error`: an `Err` (the one result a function with it does
        // not cache) gives way to the last good value, if it is still there.
        let (outcome, stale) = match (plan, &call) {
            (Plan::Alone(outcome, Some(stale)), Ok(call))
                if (shape.cacheable)(&result).is_none() =>
            {
                (outcome, call.confirm_stale(&stale).await)
            }
            (Plan::Alone(outcome, _), _) => (outcome, None),
            (
                Plan::Lead {
                    lead,
                    shard,
                    observed,
                    outcome,
                    mut lease,
                },
                Ok(call),
            ) => {
                let stale = call
                    .finish_lead(&result, shape, lead, shard, observed, &mut lease)
                    .await;
                // Not given up with a store (nothing was stored): now.
                if let Some(lease) = lease {
                    lease.abandon().await;
                }
                (outcome, stale)
            }
            (Plan::Refresh { shard, observed }, Ok(call)) => (
                call.finish_refresh(&result, shape, shard, observed).await,
                None,
            ),
            (_, Err(outcome)) => (*outcome, None),
        };
        if let Some(value) = stale {
            prepared.report(CallOutcome::Stale);
            return (shape.wrap)(value);
        }
        prepared.report(outcome);
        result
    }
}

impl<C, N> Prepared<C, N> {
    /// Records what the call did: in its span, and for whoever asked.
    fn report(&self, outcome: CallOutcome) {
        if !self.span.is_disabled() {
            self.span.record("outcome", outcome.as_str());
        }
        if let Some(request) = &self.request {
            request.report(outcome);
        }
    }
}

impl Call<'_> {
    /// The cache-aside path from a miss up to the body: join the key's
    /// flight. `seen` is the flights' clock before the first read, which
    /// saw `observed`. `Err` carries a call's result when the body need not
    /// run (a value handed over, or found by a later round's read).
    ///
    /// The first read is the caller's, not this function's: a hit then
    /// never builds this future (every layer of futures costs a hit).
    async fn plan_miss<'f, T, R>(
        &self,
        shape: Shape<T, R>,
        flight: &'f mut Option<Arc<Flight>>,
        seen: Clock,
        observed: Observed,
    ) -> Result<Plan<'f>, (R, CallOutcome)>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let cache = self.cache;
        let counters = self.counters;
        counters.miss();

        let (joined, ticket) = cache.inner.flights.join(self.key);
        let flight: &'f Flight = flight.insert(joined);
        let mut lead = match flight.enter(ticket).await {
            Turn::Lead(lead) => lead,
            Turn::Follow(Outcome::Value(entry)) => {
                return self.take_handed(&entry, shape, CallOutcome::Coalesced, observed.stale);
            }
            Turn::Follow(Outcome::Stale(entry)) => {
                return self.take_handed(&entry, shape, CallOutcome::Stale, None);
            }
            Turn::Follow(Outcome::Empty) => match shape.empty {
                Some(empty) => {
                    counters.coalesced();
                    return Err((empty(), CallOutcome::Coalesced));
                }
                None => return Ok(Plan::Alone(CallOutcome::Miss, observed.stale)),
            },
            Turn::Follow(Outcome::Unshared | Outcome::RunAlone) => {
                return Ok(Plan::Alone(CallOutcome::Miss, observed.stale));
            }
        };

        // A later round reads again: another process may have stored by now.
        let observed = if lead.must_look_up(seen) {
            match self.read::<T>().await {
                Ok(Found::Hit(value, entry)) => {
                    lead.finish(Outcome::Value(entry), false);
                    return Err(((shape.wrap)(value), CallOutcome::Hit));
                }
                Ok(Found::Miss(observed)) => observed,
                Err(error) => self.read_failed(&error),
            }
        } else {
            observed
        };
        // Across processes: one computes, the others wait for its entry.
        let (observed, lease) = if observed.known {
            match self.lease::<T>(observed, &lead).await {
                Leased::Found(value, entry) => {
                    lead.finish(Outcome::Value(entry), false);
                    counters.coalesced();
                    return Err(((shape.wrap)(value), CallOutcome::Coalesced));
                }
                Leased::Compute(observed, lease) => (observed, lease),
            }
        } else {
            (observed, None)
        };
        if !observed.known {
            lead.read_failed();
        }
        let outcome = if observed.known {
            CallOutcome::Miss
        } else {
            CallOutcome::Uncached
        };
        let shard = self.shard_for(&observed).await;
        Ok(Plan::Lead {
            lead,
            shard,
            observed,
            outcome,
            lease,
        })
    }

    /// A value a flight's leader handed over, as `outcome`: decoded with the
    /// schema check; one that does not decode runs the body alone (with the
    /// call's own stale entry, `stale`).
    fn take_handed<T: DeserializeOwned, R>(
        &self,
        entry: &[u8],
        shape: Shape<T, R>,
        outcome: CallOutcome,
        stale: Option<Stale>,
    ) -> Result<Plan<'static>, (R, CallOutcome)> {
        match entry::open_shared(entry, self.cache.inner.codec, self.info.fingerprint) {
            Ok(value) => {
                if outcome == CallOutcome::Coalesced {
                    self.counters.coalesced();
                }
                Err(((shape.wrap)(value), outcome))
            }
            Err(rejection) => {
                self.reject(rejection);
                Ok(Plan::Alone(CallOutcome::Miss, stale))
            }
        }
    }

    /// A round's end: store the body's result if it is cacheable, and
    /// publish what the waiters get. A store gives up `lease` with it.
    /// Returns the last good value to return instead of an `Err`
    /// (`stale_if_error`), which the waiters get too.
    async fn finish_lead<T, R>(
        &self,
        result: &R,
        shape: Shape<T, R>,
        mut lead: Lead<'_>,
        shard: Option<ShardState>,
        mut observed: Observed,
        lease: &mut Option<Hold>,
    ) -> Option<T>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let stale = observed.stale.take();
        let mut served = None;
        let (outcome, stored) = match (shape.cacheable)(result) {
            Some(value) => {
                let ttl = self.store_ttl(shape.none.is_some_and(|none| none(value)));
                self.store(value, ttl, shard, observed, Some(&mut lead), lease)
                    .await
            }
            None if shape.empty.is_some() => (Outcome::Empty, false),
            None => {
                let confirmed = match &stale {
                    Some(stale) => self.confirm_stale(stale).await,
                    None => None,
                };
                match (confirmed, stale) {
                    (Some(value), Some(stale)) => {
                        served = Some(value);
                        (Outcome::Stale(stale.bytes), false)
                    }
                    _ => (Outcome::Unshared, false),
                }
            }
        };
        lead.finish(outcome, stored);
        served
    }

    pub(crate) fn fail(&self, kind: ErrorKind, action: &str, error: &Error) {
        self.cache
            .fail(self.counters, self.function, self.key, kind, action, error);
    }

    /// How long an entry stored with `ttl` is kept: its TTL, and for
    /// `stale_if_error` the grace period after it.
    pub(crate) fn kept_for(&self, ttl: Duration) -> Duration {
        ttl.saturating_add(self.policy.grace.unwrap_or(Duration::ZERO))
    }

    /// `stale_if_error`: the body returned `Err`, and the call had found
    /// `stale`, past its TTL. Its value, if the same entry is still in the
    /// cache under the same generation: an invalidation that returned while
    /// the body ran removed it (or moved the generation), and must not be
    /// undone by returning what it invalidated. A read that fails proves
    /// nothing: the error is returned.
    async fn confirm_stale<T: DeserializeOwned>(&self, stale: &Stale) -> Option<T> {
        let now = self.observe().await.ok()?;
        if now.previous != Some(stale.version)
            || now.shard.map(|s| s.generation) != stale.generation
        {
            return None;
        }
        match entry::open_shared(&stale.bytes, self.cache.inner.codec, self.info.fingerprint) {
            Ok(value) => {
                tracing::debug!(
                    namespace = self.key.namespace(),
                    function = self.function,
                    "the function returned an error; returning its last good value (stale_if_error)"
                );
                Some(value)
            }
            Err(rejection) => {
                self.reject(rejection);
                None
            }
        }
    }

    pub(crate) fn reject(&self, rejection: Rejection) {
        match rejection {
            Rejection::Stale | Rejection::Expired => {}
            Rejection::Foreign => tracing::debug!(
                namespace = self.key.namespace(),
                function = self.function,
                "entry written by another type, schema or codec; recomputing"
            ),
            Rejection::Broken(error) => self.fail(ErrorKind::Decode, "decode", &error),
        }
    }

    /// A failed [`read`](Self::read) is logged and counted, and is a miss
    /// whose state is unknown.
    fn read_failed(&self, error: &Error) -> Observed {
        self.fail(ErrorKind::Read, "read", error);
        Observed::UNKNOWN
    }

    /// Reads the key: a valid entry is a hit; a stale, foreign or broken one
    /// a miss (logged as [`reject`](Self::reject) says).
    pub(crate) async fn read<T: DeserializeOwned>(&self) -> Result<Found<T>, Error> {
        let cache = self.cache;
        let lookup = cache
            .guarded(Op::Get, cache.inner.backend.get(self.key))
            .await?;
        let Some(stored) = lookup.entry else {
            return Ok(Found::Miss(Observed {
                shard: lookup.shard,
                previous: None,
                known: true,
                stale: None,
            }));
        };
        let generation = lookup.shard.map(|s| s.generation);
        match entry::open(
            &stored.bytes,
            cache.inner.codec,
            self.info.fingerprint,
            generation,
        ) {
            Ok(value) => Ok(Found::Hit(value, stored.bytes)),
            // Kept past its TTL (`stale_if_error`), which is over (by the
            // TTL in its header: decision 0020): a miss, whose value the
            // call returns if its body fails, when it has the option (an
            // older build without it just misses).
            Err(Rejection::Expired) => Ok(Found::Miss(Observed {
                shard: lookup.shard,
                previous: Some(stored.version),
                known: true,
                stale: self.policy.grace.map(|_| Stale {
                    version: stored.version,
                    generation,
                    bytes: stored.bytes,
                }),
            })),
            Err(rejection) => {
                self.reject(rejection);
                Ok(Found::Miss(Observed {
                    shard: lookup.shard,
                    previous: Some(stored.version),
                    known: true,
                    stale: None,
                }))
            }
        }
    }

    /// The shard state the body's value will be stored under; `None` if it
    /// cannot be known, in which case nothing is stored.
    pub(crate) async fn shard_for(&self, observed: &Observed) -> Option<ShardState> {
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
            .guarded(Op::Shard, cache.inner.backend.shard(self.key.shard()))
            .await
        {
            Ok(shard) => Some(shard),
            Err(error) => {
                self.fail(ErrorKind::Read, "shard state read", &error);
                None
            }
        }
    }

    /// Encodes and stores the body's value; returns what the round's waiters
    /// get, and whether the store succeeded. A lease held is given up with
    /// the store, if one is sent.
    pub(crate) async fn store<T: Serialize + DeserializeOwned>(
        &self,
        value: &T,
        ttl: Duration,
        shard: Option<ShardState>,
        observed: Observed,
        lead: Option<&mut Lead<'_>>,
        lease: &mut Option<Hold>,
    ) -> (Outcome, bool) {
        let Ok(entry) = self.seal(value, ttl, shard) else {
            return (Outcome::RunAlone, false);
        };
        let Some(shard) = shard else {
            // The backend is unreachable: share the value in process only.
            return (Outcome::Value(entry), false);
        };
        let condition = PutCondition {
            shard,
            previous: observed.previous,
        };
        let stored = matches!(
            self.put(&entry, self.kept_for(ttl), &condition, lead, lease)
                .await,
            Ok(true)
        );
        (Outcome::Value(entry), stored)
    }

    /// Encodes a value into an entry of `shard`'s generation, to be stored
    /// with `ttl`, checking once per type that the codec can read it back.
    /// Failures are logged and counted.
    pub(crate) fn seal<T: Serialize + DeserializeOwned>(
        &self,
        value: &T,
        ttl: Duration,
        shard: Option<ShardState>,
    ) -> Result<Bytes, Error> {
        let codec = self.cache.inner.codec;
        let generation = shard.map_or(crate::backend::Generation(0), |s| s.generation);
        let kept = self.policy.grace.is_some();
        let entry = match entry::seal(codec, self.info.fingerprint, generation, ttl, kept, value) {
            Ok(entry) => entry,
            Err(error) => {
                self.fail(ErrorKind::Encode, "encode", &error);
                return Err(error);
            }
        };
        let round_trips = match self.info.round_trips(codec) {
            Some(known) => known,
            None => self.check_round_trip::<T>(&entry),
        };
        if !round_trips {
            return Err(Error::Encode {
                what: "value",
                codec: codec.name(),
                message: format!(
                    "values of type `{}` cannot be read back with this codec",
                    std::any::type_name::<T>()
                ),
            });
        }
        Ok(entry)
    }

    /// Stores a sealed entry if `condition` holds. `Ok(true)`: stored;
    /// `Ok(false)`: refused (an invalidation, or another writer, came
    /// first); `Err`: the backend failed (logged and counted).
    pub(crate) async fn put(
        &self,
        entry: &Bytes,
        ttl: Duration,
        condition: &PutCondition,
        lead: Option<&mut Lead<'_>>,
        lease: &mut Option<Hold>,
    ) -> Result<bool, Error> {
        Ok(self.try_put(entry, ttl, condition, lead, lease).await? == PutOutcome::Stored)
    }

    /// [`put`](Self::put), with what the backend said. `lease`, if held, is
    /// given up in the same request (taken out of the option).
    pub(crate) async fn try_put(
        &self,
        entry: &Bytes,
        ttl: Duration,
        condition: &PutCondition,
        lead: Option<&mut Lead<'_>>,
        lease: &mut Option<Hold>,
    ) -> Result<PutOutcome, Error> {
        let cache = self.cache;
        let stored = Stored {
            version: Version::random(),
            bytes: entry.clone(),
        };
        let _write = cache.write_started();
        if let Some(lead) = lead {
            lead.store_starts();
        }
        let backend = &cache.inner.backend;
        let put = match lease.as_ref() {
            Some(hold) => backend.put_releasing(self.key, stored, ttl, condition, hold.token()),
            None => backend.put(self.key, stored, ttl, condition),
        };
        let answer = cache.guarded(Op::Put, put).await;
        if let Some(hold) = lease.take() {
            match answer {
                // Given up by the store's own request.
                Ok(_) => hold.given_up(),
                // The backend failed: from a task, not in this call's time
                // (it expires by its TTL if that fails too).
                Err(_) => drop(hold),
            }
        }
        match answer {
            Ok(PutOutcome::Stored) => Ok(PutOutcome::Stored),
            Ok(PutOutcome::StoredOverForeign) => {
                self.counters.error(ErrorKind::Write);
                tracing::warn!(
                    backend = cache.inner.backend.name(),
                    namespace = self.key.namespace(),
                    function = self.function,
                    "the entry's key held a value that was not an entry (another type of \
                     key, written by another program); replaced it"
                );
                Ok(PutOutcome::Stored)
            }
            // An invalidation ran while the body did, or another process
            // stored first: only waiters of a later round may take it.
            Ok(refused) => {
                self.counters.refused();
                Ok(refused)
            }
            Err(error) => {
                self.fail(ErrorKind::Write, "write", &error);
                Err(error)
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
                    self.counters.error(ErrorKind::Decode);
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
