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
    /// is what the flight's read saw (a miss whose state is known).
    pub(crate) async fn lease<T: DeserializeOwned>(&self, mut observed: Observed) -> Leased<T> {
        let cache = self.cache;
        let Some(config) = cache.inner.lease.filter(|_| self.lease) else {
            return Leased::Compute(observed, None);
        };
        // Waiting and renewing need Tokio's timer and tasks.
        if tokio::runtime::Handle::try_current().is_err() {
            return Leased::Compute(observed, None);
        }
        let token = LeaseToken::random();
        let start = Instant::now();
        let mut pause = FIRST_POLL;
        loop {
            let take = cache.inner.backend.lease(self.key, token, config.ttl);
            match cache.guarded(Op::Lease, take).await {
                Ok(LeaseState::Taken) => {
                    let hold = Hold::start(cache, self.key, token, config.ttl);
                    return Leased::Compute(observed, Some(hold));
                }
                Ok(LeaseState::Held) => {}
                Ok(_) => return Leased::Compute(observed, None),
                Err(error) => {
                    self.fail(ErrorKind::Write, "lease", &error);
                    return Leased::Compute(observed, None);
                }
            }
            let Some(left) = config
                .wait
                .checked_sub(start.elapsed())
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
                Ok(Found::Miss(seen)) => observed = seen,
                Err(error) => return Leased::Compute(self.read_failed(&error), None),
            }
        }
    }
}

/// A lease held: renewed while it lives, given up when it ends.
pub(crate) struct Hold {
    /// `None` once given up in line.
    lease: Option<Lease>,
    renewal: tokio::task::JoinHandle<()>,
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
}

impl Hold {
    fn start(cache: &Cache, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Hold {
        let renewal = {
            let (cache, key) = (cache.clone(), key.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let renew = cache.inner.backend.renew_lease(&key, token, ttl);
                    match cache.guarded(Op::Lease, renew).await {
                        Ok(true) => {}
                        // Lost (expired while this process stalled, or
                        // taken over): the conditional store still fences
                        // this holder's value; stop renewing.
                        Ok(false) => return,
                        // Try again at the next turn: the lease is good for
                        // two more.
                        Err(_) => {}
                    }
                }
            })
        };
        Hold {
            lease: Some(Lease {
                cache: cache.clone(),
                key: key.clone(),
                token,
            }),
            renewal,
        }
    }

    /// The token the lease is held under.
    pub(crate) fn token(&self) -> LeaseToken {
        self.lease
            .as_ref()
            .map_or(LeaseToken(0), |lease| lease.token)
    }

    /// The lease was given up by a request that carried its token (a store).
    pub(crate) fn given_up(mut self) {
        self.renewal.abort();
        self.lease = None;
    }

    /// Gives the lease up, when no store did.
    pub(crate) async fn release(mut self) {
        self.renewal.abort();
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.renewal.abort();
        // Cancelled or panicked before the store: give the lease up now, so
        // that a waiter need not wait for its TTL. Without a runtime (as one
        // shuts down) it expires by its TTL instead.
        if let Some(lease) = self.lease.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(lease.release());
        }
    }
}
