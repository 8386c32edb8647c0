//! Where entries live. A backend is a small object-safe trait; the [`Cache`]
//! handle builds everything else (keys, envelopes, single-flight, fail-open) on
//! top of it, so a new backend only has to store bytes, keep one small state
//! per shard, and compare versions.
//!
//! Every backend must pass the conformance suite
//! ([`testing::conformance`](crate::testing::conformance), feature
//! `testing`).
//!
//! [`Cache`]: crate::Cache

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::key::CacheKey;

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{MemoryBackend, MemoryBackendBuilder};

#[cfg(feature = "redis")]
pub use redis::RedisBackend;

/// A namespace shard's generation. Generations are random, never counters: a
/// generation that was lost (expired, evicted, flushed) and recreated can never
/// take a value it had before, so it can never revive entries it invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Generation(pub u64);

impl Generation {
    /// A fresh random generation.
    pub fn random() -> Self {
        // Zero is reserved: never a shard's generation.
        Generation(fastrand::u64(1..))
    }
}

/// The state of one shard ([`CacheKey::shard`]): its generation, which a
/// namespace invalidation replaces, and an epoch, which every entry
/// invalidation in the shard increments.
///
/// Entries record the generation they were computed under; an entry of
/// another generation is a miss. The epoch lets a store that read "no entry"
/// prove that no invalidation removed one since: see [`PutCondition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardState {
    /// The shard's generation.
    pub generation: Generation,
    /// Entry invalidations in this generation.
    pub epoch: u64,
}

impl ShardState {
    /// A new shard state: a fresh random generation, epoch zero.
    pub fn fresh() -> Self {
        ShardState {
            generation: Generation::random(),
            epoch: 0,
        }
    }
}

/// An entry's version: opaque bytes, unique per write, that a conditional
/// store compares (like an object store's e-tag). The cache chooses it when it
/// writes; a backend stores it with the entry and returns it on reads.
///
/// A backend holding a value it did not write through [`Backend::put`]
/// (garbage, another program's key) reports whatever version its storage
/// derives for it, up to 8 bytes; it just must not match a version the cache
/// could have written.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    bytes: [u8; 8],
    len: u8,
}

impl Version {
    /// A fresh random version, for a new write.
    pub fn random() -> Self {
        Version {
            bytes: fastrand::u64(..).to_le_bytes(),
            len: 8,
        }
    }

    /// The version a backend stored as these bytes (at most 8; more are cut).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let len = bytes.len().min(8);
        let mut out = [0; 8];
        out[..len].copy_from_slice(&bytes[..len]);
        Version {
            bytes: out,
            len: len as u8,
        }
    }

    /// The version's bytes, as a backend stores them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// An entry as stored: its version and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The version it was written with.
    pub version: Version,
    /// The bytes, as they were written.
    pub bytes: Bytes,
}

/// What one read returns: the entry (if any) and the state of the entry's
/// shard (if it has one), read together so that a hit costs one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The stored entry.
    pub entry: Option<Stored>,
    /// The shard's current state; `None` if it has none yet (or lost it).
    pub shard: Option<ShardState>,
}

/// The condition a conditional store checks, atomically with the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutCondition {
    /// The shard state the reader saw (or created) before computing the value.
    pub shard: ShardState,
    /// The entry the reader saw: `None` for no entry, else its version.
    pub previous: Option<Version>,
}

impl PutCondition {
    /// Whether the condition still holds, given the current shard state and
    /// the current entry's version.
    ///
    /// The generation must be unchanged (no namespace invalidation, no lost
    /// shard state). If the reader saw an entry, that same entry must still
    /// be there. If it saw none, there must still be none *and* the epoch
    /// must be unchanged: an entry invalidation in the shard since the read
    /// may have removed an entry this value predates, and there is nothing
    /// else left to tell.
    pub fn holds(&self, shard: Option<ShardState>, current: Option<Version>) -> PutOutcome {
        let Some(shard) = shard.filter(|s| s.generation == self.shard.generation) else {
            return PutOutcome::GenerationChanged;
        };
        match (self.previous, current) {
            (Some(previous), Some(current)) if previous == current => PutOutcome::Stored,
            (None, None) if shard.epoch == self.shard.epoch => PutOutcome::Stored,
            _ => PutOutcome::EntryChanged,
        }
    }
}

/// What a conditional store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// The entry was written.
    Stored,
    /// The entry was written over a value that was not an entry at all
    /// (another program's key of another type, which reads found no entry in).
    StoredOverForeign,
    /// Nothing was written: the shard moved to another generation (a namespace
    /// invalidation ran since the read, or the shard state was lost).
    GenerationChanged,
    /// Nothing was written: the entry changed since the read (an entry
    /// invalidation, or another writer).
    EntryChanged,
}

/// Who holds a lease: random, fresh for every lease a call asks for, so
/// that a holder can only renew or release its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub u64);

impl LeaseToken {
    /// A fresh random token.
    pub fn random() -> Self {
        // Zero is reserved, like a generation's: never a token.
        LeaseToken(fastrand::u64(1..))
    }
}

/// What asking for a key's lease ([`Backend::lease`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseState {
    /// The caller holds the lease now, for the TTL it asked.
    Taken,
    /// Someone else holds it.
    Held,
    /// The backend has no leases: every process computes for itself.
    Unsupported,
}

/// The nodes of a backend made of several (a Redis Cluster), as the
/// cluster sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct NodeHealth {
    /// Nodes the cluster knows, primaries and replicas.
    pub known: usize,
    /// Of those, the nodes that answer (not marked failing, link connected).
    pub answering: usize,
}

impl NodeHealth {
    /// For backend implementations.
    pub fn new(known: usize, answering: usize) -> Self {
        NodeHealth { known, answering }
    }
}

/// Storage for cache entries.
///
/// Keys are [`CacheKey`]s; values are opaque bytes with a [`Version`]. Two
/// rules make the cache correct on top of it:
///
/// - Each shard ([`CacheKey::shard`]) has a [`ShardState`]. [`get`](Self::get)
///   returns it with the entry; [`shard`](Self::shard) creates one when missing;
///   [`bump`](Self::bump) gives a shard a new random generation;
///   [`invalidate`](Self::invalidate) removes an entry and increments its
///   shard's epoch. Shard states may be lost (expired, evicted); a lost one
///   is simply created again.
/// - [`put`](Self::put) stores only if its [`PutCondition`] still holds,
///   checked atomically with the write ([`PutCondition::holds`] is the rule).
///
/// Every write carries a TTL, and a backend must bound its memory. Operations
/// must not block the thread; a backend that may wait for a network bounds
/// each operation itself, or leaves that to the cache
/// ([`operation_timeout`](Self::operation_timeout)).
#[async_trait]
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// A short name for logs, errors and health: `memory`, `redis`.
    fn name(&self) -> &'static str;

    /// Reads an entry and its shard's state.
    async fn get(&self, key: &CacheKey) -> Result<Lookup>;

    /// Returns the state of a shard, creating a fresh one if it has none.
    async fn shard(&self, shard: &str) -> Result<ShardState>;

    /// Stores `entry` under `key` for `ttl` if `condition` holds. The shard's
    /// state must then live at least as long as the entry.
    async fn put(
        &self,
        key: &CacheKey,
        entry: Stored,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome>;

    /// Removes the entry under `key` (if any) and increments the epoch of its
    /// shard (creating a fresh shard state if it has none), so that no store
    /// conditioned on an earlier read succeeds.
    async fn invalidate(&self, key: &CacheKey) -> Result<()>;

    /// Gives each shard a new random generation, invalidating all its entries.
    async fn bump(&self, shards: &[String]) -> Result<()>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<()>;

    /// Takes the lease on computing `key`'s value for `ttl` under `token`,
    /// unless someone holds it: the lease makes one caller in the whole
    /// fleet run the body of a missed key while the others wait for its
    /// entry. A lease is advisory: losing one (it expired, a failover lost
    /// it) only means a value is computed twice; stores stay conditional.
    /// The default has none ([`LeaseState::Unsupported`]).
    async fn lease(&self, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Result<LeaseState> {
        let _ = (key, token, ttl);
        Ok(LeaseState::Unsupported)
    }

    /// Extends `key`'s lease to `ttl` from now if `token` holds it; `false`
    /// if it does not (it expired, or another caller holds it now).
    async fn renew_lease(&self, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Result<bool> {
        let _ = (key, token, ttl);
        Ok(false)
    }

    /// Gives `key`'s lease up if `token` holds it; leaves anyone else's.
    async fn release_lease(&self, key: &CacheKey, token: LeaseToken) -> Result<()> {
        let _ = (key, token);
        Ok(())
    }

    /// Gives `key`'s lease up without a value (the holder's body failed, or
    /// its value is not cached), if `token` holds it: for `pause`, asking
    /// for the lease finds [`LeaseState::Unsupported`], so that the callers
    /// waiting elsewhere compute at once instead of taking the lease one
    /// after another. The default releases it.
    async fn abandon_lease(
        &self,
        key: &CacheKey,
        token: LeaseToken,
        pause: Duration,
    ) -> Result<()> {
        let _ = pause;
        self.release_lease(key, token).await
    }

    /// [`put`](Self::put), then gives `key`'s lease up if `lease` holds it,
    /// whatever the store did: a lease holder's store. The default makes
    /// the two calls; a backend over a network does both in one request.
    async fn put_releasing(
        &self,
        key: &CacheKey,
        entry: Stored,
        ttl: Duration,
        condition: &PutCondition,
        lease: LeaseToken,
    ) -> Result<PutOutcome> {
        let outcome = self.put(key, entry, ttl, condition).await;
        // A release that fails leaves the lease to its TTL.
        let _ = self.release_lease(key, lease).await;
        outcome
    }

    /// Whether the backend isolates failures itself, with circuit breakers
    /// of its own (a cluster, per slot): the cache's circuit then never
    /// opens, so that one failing node does not stop calls to the healthy
    /// ones. Default false.
    fn own_circuits(&self) -> bool {
        false
    }

    /// The nodes behind the backend, for [`Cache::health`]: `None` for a
    /// backend that is one node (the default).
    ///
    /// [`Cache::health`]: crate::Cache::health
    async fn nodes(&self) -> Option<NodeHealth> {
        None
    }

    /// Releases connections. Called by [`Cache::close`] after in-flight
    /// writes finished. The default does nothing.
    ///
    /// [`Cache::close`]: crate::Cache::close
    async fn close(&self) {}

    /// How long the cache lets one operation run before it gives up on it and
    /// the call runs uncached; `None` for backends that never wait (memory)
    /// or bound each operation themselves (Redis, with its response timeout).
    /// Default: one second. The cache can only enforce it inside a Tokio
    /// runtime.
    fn operation_timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}
