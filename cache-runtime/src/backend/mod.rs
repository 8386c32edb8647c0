//! Where entries live. A backend is a small object-safe trait; the [`Cache`]
//! handle builds everything else (keys, envelopes, single-flight, fail-open) on
//! top of it, so a new backend only has to store bytes and keep generations.
//!
//! Every backend must pass the conformance suite in `tests/tests/common/conformance.rs`.
//!
//! [`Cache`]: crate::Cache

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::entry::Generation;
use crate::error::Result;
use crate::key::CacheKey;

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{MemoryBackend, MemoryBackendBuilder};
#[cfg(feature = "redis")]
pub use redis::RedisBackend;

/// What one read returns: the entry (if any) and the current generation of the
/// entry's shard (if it has one), read together so that a hit costs one round
/// trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The stored bytes, as they were written.
    pub entry: Option<Bytes>,
    /// The shard's current generation; `None` if it has none yet (or lost it).
    pub generation: Option<Generation>,
}

/// The condition a conditional store checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutCondition {
    /// The shard must still be at this generation.
    pub generation: Generation,
    /// The entry must still be what the reader saw: absent (`None`), or an entry
    /// whose [`identity`](crate::entry::identity) is these bytes.
    pub previous: Option<Bytes>,
}

/// What a conditional store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// The entry was written.
    Stored,
    /// Nothing was written: the shard moved to another generation (a namespace
    /// invalidation ran since the read).
    GenerationChanged,
    /// Nothing was written: the entry changed since the read (an entry
    /// invalidation, or another writer).
    EntryChanged,
}

/// Storage for cache entries.
///
/// Keys are [`CacheKey`]s; values are opaque bytes. Two rules make the cache
/// correct on top of it:
///
/// - Each shard ([`CacheKey::shard`]) has a generation. [`get`](Self::get) returns
///   it with the entry; [`generation`](Self::generation) creates one when missing;
///   [`bump`](Self::bump) replaces it with a new random one. Generations may be
///   lost (expired, evicted); a lost one is simply created again.
/// - [`put`](Self::put) stores only if its [`PutCondition`] still holds, checked
///   atomically with the write as far as the entry is concerned.
///
/// Every write carries a TTL, and a backend must bound its memory.
#[async_trait]
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// A short name for logs, errors and health: `memory`, `redis`.
    fn name(&self) -> &'static str;

    /// Reads an entry and its shard's generation.
    async fn get(&self, key: &CacheKey) -> Result<Lookup>;

    /// Returns the generation of a shard, creating a random one if it has none.
    async fn generation(&self, shard: &str) -> Result<Generation>;

    /// Stores `entry` under `key` for `ttl` if `condition` holds.
    async fn put(
        &self,
        key: &CacheKey,
        entry: Bytes,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome>;

    /// Stores `entry` under `key` for `ttl` unconditionally.
    async fn set(&self, key: &CacheKey, entry: Bytes, ttl: Duration) -> Result<()>;

    /// Gives each shard a new random generation, invalidating all its entries.
    async fn bump(&self, shards: &[String]) -> Result<()>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<()>;

    /// Releases connections. Called by [`Cache::close`] after in-flight
    /// writes finished. The default does nothing.
    ///
    /// [`Cache::close`]: crate::Cache::close
    async fn close(&self) {}
}
