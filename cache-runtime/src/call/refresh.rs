//! A refresh ([`refresh`](crate::refresh), `@CachePut` in Spring's terms): run the
//! body and store its value whatever the entry holds, yet never over an
//! invalidation that ran while the body did.
//!
//! The shard's state is read before the body runs and conditions every
//! store attempt, as on a miss: an entry or namespace invalidation during the
//! body refuses the store (the body may have read what the invalidation was
//! about). The entry itself does not: when another writer stored since the
//! first read, the refresh reads the entry's version again and stores over
//! it, as long as the shard is still in the state it read before the body.

use serde::{Serialize, de::DeserializeOwned};

use super::{Call, CallOutcome, Observed, Plan, Shape};
use crate::backend::{PutCondition, PutOutcome, ShardState};
use crate::error::Error;
use crate::observe::{ErrorKind, Op};

/// Store attempts of one refresh when other writers keep storing between its
/// read of the entry and its store; past that, theirs stands (their values
/// are as recent as the refresh's).
const ATTEMPTS: usize = 3;

impl Call<'_> {
    /// A refresh up to the body: read the entry's version and the shard's
    /// state (creating it if missing).
    pub(super) async fn plan_refresh(&self) -> Plan<'static> {
        let observed = match self.observe().await {
            Ok(observed) => observed,
            Err(error) => {
                self.fail(ErrorKind::Read, "read", &error);
                Observed::UNKNOWN
            }
        };
        let shard = self.shard_for(&observed).await;
        Plan::Refresh { shard, observed }
    }

    /// A refresh after the body: store its result over the entry.
    pub(super) async fn finish_refresh<T, R>(
        &self,
        result: &R,
        shape: Shape<T, R>,
        shard: Option<ShardState>,
        observed: Observed,
    ) -> CallOutcome
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let Some(value) = (shape.cacheable)(result) else {
            return CallOutcome::Refreshed;
        };
        let ttl = self.store_ttl(shape.none.is_some_and(|none| none(value)));
        let (Some(shard), Ok(entry)) = (shard, self.seal(value, ttl, shard)) else {
            return CallOutcome::Uncached;
        };
        match self.replace(&entry, ttl, shard, observed).await {
            Ok(_) => CallOutcome::Refreshed,
            Err(_) => CallOutcome::Uncached,
        }
    }

    /// Stores `entry` whatever the entry holds, unless the shard left the
    /// state `shard` read before the value was computed (`observed` is the
    /// entry then). `Ok(false)`: refused by an invalidation, or given up to
    /// other writers after [`ATTEMPTS`]. Errors are logged and counted.
    pub(crate) async fn replace(
        &self,
        entry: &bytes::Bytes,
        ttl: std::time::Duration,
        shard: ShardState,
        observed: Observed,
    ) -> Result<bool, Error> {
        let mut condition = PutCondition {
            shard,
            previous: observed.previous,
        };
        for _ in 0..ATTEMPTS {
            match self
                .try_put(entry, self.kept_for(ttl), &condition, None, &mut None)
                .await?
            {
                PutOutcome::EntryChanged => {}
                PutOutcome::Stored | PutOutcome::StoredOverForeign => {
                    self.cache.inner.flights.landed(self.key);
                    return Ok(true);
                }
                // A namespace invalidation, or a lost shard state.
                _ => return Ok(false),
            }
            // Another writer stored, or an invalidation removed the entry:
            // only the former may be stored over.
            match self.observe().await {
                Ok(now) if now.shard == Some(shard) => condition.previous = now.previous,
                Ok(_) => return Ok(false),
                Err(error) => {
                    self.fail(ErrorKind::Read, "read", &error);
                    return Err(error);
                }
            }
        }
        Ok(false)
    }

    /// The entry's version and the shard's state, without decoding.
    pub(crate) async fn observe(&self) -> Result<Observed, Error> {
        let cache = self.cache;
        let lookup = cache
            .guarded(Op::Get, cache.inner.backend.get(self.key))
            .await?;
        Ok(Observed {
            shard: lookup.shard,
            previous: lookup.entry.map(|stored| stored.version),
            known: true,
            stale: None,
        })
    }
}
