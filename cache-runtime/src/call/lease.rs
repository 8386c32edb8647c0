//! The fleet-wide single flight of a missed key (decision 0019): the
//! leader of a process's flight asks the backend for the key's lease
//! before it runs the body. One caller in the fleet gets it and computes;
//! the others poll for its entry and take that, or take the lease over if
//! its holder gave it up (failed, was cancelled) or died (the lease
//! expired).
//!
//! A lease is advisory. What keeps values right is the conditional store,
//! as without leases: a holder that lost its lease (it stalled past the
//! TTL, a failover lost the lease) and stores late is refused if anything
//! was stored or invalidated since its read. Losing a lease costs a
//! duplicate computation, never a wrong or resurrected value.
//!
//! Cancel safety: the holder's [`Hold`] renews the lease from a task of
//! its own while the body runs, and gives the lease up before the call
//! returns, so that a call holds nothing once it returned (a process that
//! makes one call and exits leaves no lease behind): in the store's own
//! request ([`Backend::put_releasing`]), or in one of its own when nothing
//! is stored (an `Err`). When the call is cancelled or its body panics, a
//! task its `Drop` spawns gives it up, so that a waiter takes over at once
//! instead of after the TTL.
//!
//! [`Backend::put_releasing`]: crate::Backend::put_releasing

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::flight::Lead;
use super::{Call, Found, Observed};
use crate::backend::{LeaseState, LeaseToken};
use crate::cache::Cache;
use crate::key::CacheKey;
use crate::observe::{ErrorKind, Op};

/// The default lease TTL: how long a dead holder keeps the others waiting.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// The default longest wait for another process's value.
pub const DEFAULT_LEASE_WAIT: Duration = Duration::from_secs(10);

/// The first pause between two looks at a leased key; it doubles up to
/// [`LAST_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(5);

/// The longest pause between two looks: a waiter sees the holder's value
/// at most this long after it was stored.
const LAST_POLL: Duration = Duration::from_millis(100);

/// How long a lease given up without a value (an `Err`, a `None` not
/// cached) tells callers to compute for themselves: longer than a waiter's
/// longest pause, so that every waiter sees it.
const ABANDONED_FOR: Duration = Duration::from_secs(1);

/// How a cache uses leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseConfig {
    /// How long a lease lasts without renewal; renewed every third of it.
    pub(crate) ttl: Duration,
    /// How long a caller waits for another's value before it computes its
    /// own (which the conditional store may then refuse).
    pub(crate) wait: Duration,
}

impl LeaseConfig {
    /// Checks a configuration given in code or the environment.
    pub(crate) fn check(&self) -> crate::Result<()> {
        if self.ttl < Duration::from_millis(100) || self.ttl > Duration::from_secs(3600) {
            return Err(crate::Error::Config(format!(
                "the lease TTL must be from 100ms to 1h, not {:?}",
                self.ttl
            )));
        }
        if self.wait > Duration::from_secs(3600) {
            return Err(crate::Error::Config(format!(
                "the lease wait must be at most 1h, not {:?}",
                self.wait
            )));
        }
        Ok(())
    }
}

/// What the lease step decided.
pub(crate) enum Leased<T> {
    /// Another process's value, found while waiting: the value and its entry.
    Found(T, bytes::Bytes),
    /// Run the body: with the lease held, or without one (no leases, the
    /// backend failed, the wait ran out). The observation is the latest
    /// read, which the store is conditioned on.
    Compute(Observed, Option<Hold>),
}

impl Call<'_> {
    /// Takes the key's lease, or waits for the holder's value. `observed`
    /// is what the flight's read saw (a miss whose state is known); `lead`
    /// the flight's round, whose flight keeps the time waiting began, so
    /// that leaders cancelled one after another (callers with deadlines)
    /// do not each wait anew behind a stuck holder.
    pub(crate) async fn lease<T: DeserializeOwned>(
        &self,
        mut observed: Observed,
        lead: &Lead<'_>,
    ) -> Leased<T> {
        let cache = self.cache;
        let Some(config) = cache.inner.lease.filter(|_| self.policy.lease) else {
            return Leased::Compute(observed, None);
        };
        // Waiting and renewing need Tokio's timer and tasks; a runtime
        // without timers panics when a timer is made.
        if tokio::runtime::Handle::try_current().is_err()
            || std::panic::catch_unwind(|| tokio::time::sleep(Duration::ZERO)).is_err()
        {
            return Leased::Compute(observed, None);
        }
        let generation = observed.shard.map(|s| s.generation);
        let mut pause = FIRST_POLL;
        loop {
            // Given up if the request is cancelled or fails: Redis may have
            // run it and answered too late.
            let asking = Hold::asking(cache, self.key);
            let take = cache
                .inner
                .backend
                .lease(self.key, asking.token(), config.ttl);
            match cache.guarded(Op::Lease, take).await {
                Ok(LeaseState::Taken) => {
                    return Leased::Compute(observed, Some(asking.renewing(config)));
                }
                Ok(LeaseState::Held) => asking.given_up(),
                Ok(_) => {
                    asking.given_up();
                    return Leased::Compute(observed, None);
                }
                Err(error) => {
                    drop(asking);
                    self.lease_failed(&error);
                    return Leased::Compute(observed, None);
                }
            }
            let since = lead.lease_wait_started();
            let Some(left) = config
                .wait
                .checked_sub(since.elapsed())
                .filter(|l| !l.is_zero())
            else {
                tracing::debug!(
                    namespace = self.key.namespace(),
                    function = self.function,
                    waited = ?config.wait,
                    "another process still holds the key's lease; computing without it"
                );
                return Leased::Compute(observed, None);
            };
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(LAST_POLL);
            match self.read::<T>().await {
                Ok(Found::Hit(value, entry)) => return Leased::Found(value, entry),
                // The namespace was invalidated: the holder computes from
                // before it, and its store will be refused. Do not wait.
                // (A shard that had no state has one once the holder made
                // it: not an invalidation.)
                Ok(Found::Miss(seen))
                    if generation.is_some() && seen.shard.map(|s| s.generation) != generation =>
                {
                    return Leased::Compute(seen, None);
                }
                Ok(Found::Miss(seen)) => observed = seen,
                Err(error) => return Leased::Compute(self.read_failed(&error), None),
            }
        }
    }

    /// A failed lease request: counted and logged (rate-limited) like other
    /// cache failures, but the call still stores what it computes.
    fn lease_failed(&self, error: &crate::Error) {
        let cache = self.cache;
        self.counters.error(ErrorKind::Write);
        if let Some(suppressed) = cache.inner.throttle.admit() {
            tracing::warn!(
                backend = cache.inner.backend.name(),
                namespace = self.key.namespace(),
                function = self.function,
                %error,
                suppressed,
                "cache lease failed; computing without it (other processes may compute the \
                 same value)"
            );
        }
    }
}

/// A lease asked for or held: renewed while it is held, given up when it
/// ends. Asked for and not yet known to be someone else's, it is given up
/// too if the request is dropped or fails (Redis may have taken it and
/// answered too late).
pub(crate) struct Hold {
    token: LeaseToken,
    /// `None` once given up (or known not taken).
    lease: Option<Lease>,
    /// While held.
    renewal: Option<tokio::task::JoinHandle<()>>,
}

/// What a release needs, owned so that a spawned task can do it.
struct Lease {
    cache: Cache,
    key: CacheKey,
    token: LeaseToken,
}

impl Lease {
    async fn release(self) {
        let release = self
            .cache
            .inner
            .backend
            .release_lease(&self.key, self.token);
        // A failed release is harmless: the lease expires by its TTL.
        let _ = self.cache.guarded(Op::Lease, release).await;
    }

    /// Releases from a task: for a guard's `Drop`. Without a runtime (as one
    /// shuts down) the lease expires by its TTL instead.
    fn release_later(self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.release());
        }
    }
}

impl Hold {
    /// A lease about to be asked for, under a fresh token.
    fn asking(cache: &Cache, key: &CacheKey) -> Hold {
        let token = LeaseToken::random();
        Hold {
            token,
            lease: Some(Lease {
                cache: cache.clone(),
                key: key.clone(),
                token,
            }),
            renewal: None,
        }
    }

    /// Taken: renews it every third of its TTL, for as long as another
    /// process would wait for it (`wait`): a holder stuck longer lets the
    /// lease expire, and callers elsewhere take it over instead of each
    /// waiting out `wait` first.
    fn renewing(mut self, config: LeaseConfig) -> Hold {
        let (cache, key, token) = match &self.lease {
            Some(lease) => (lease.cache.clone(), lease.key.clone(), self.token),
            None => return self,
        };
        let LeaseConfig { ttl, wait } = config;
        self.renewal = Some(tokio::spawn(async move {
            let taken = Instant::now();
            while taken.elapsed() < wait {
                tokio::time::sleep(ttl / 3).await;
                let renew = cache.inner.backend.renew_lease(&key, token, ttl);
                match cache.guarded(Op::Lease, renew).await {
                    Ok(true) => {}
                    // Lost (expired while this process stalled, or taken
                    // over): the conditional store still fences this
                    // holder's value; stop renewing.
                    Ok(false) => return,
                    // Try again at the next turn: the lease is good for two
                    // more.
                    Err(_) => {}
                }
            }
        }));
        self
    }

    /// The token the lease is asked for, or held, under.
    pub(crate) fn token(&self) -> LeaseToken {
        self.token
    }

    /// Nothing left to give up: a request that carried the token gave the
    /// lease up (a store), or it was never taken.
    pub(crate) fn given_up(mut self) {
        self.stop_renewing();
        self.lease = None;
    }

    /// Gives the lease up when nothing was stored (an `Err`, a value not
    /// cached): for [`ABANDONED_FOR`], callers elsewhere compute at once
    /// rather than one after another, each waiting for the one before.
    pub(crate) async fn abandon(mut self) {
        self.stop_renewing();
        if let Some(lease) = self.lease.take() {
            let backend = &lease.cache.inner.backend;
            let abandon = backend.abandon_lease(&lease.key, lease.token, ABANDONED_FOR);
            // A failed request is harmless: the lease expires by its TTL.
            let _ = lease.cache.guarded(Op::Lease, abandon).await;
        }
    }

    fn stop_renewing(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.stop_renewing();
        // Cancelled, panicked or failed before the store: give the lease up
        // now, so that a waiter need not wait for its TTL.
        if let Some(lease) = self.lease.take() {
            lease.release_later();
        }
    }
}
