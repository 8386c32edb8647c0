//! The in-process backend, on moka. Always built; the default when nothing else
//! is configured.
//!
//! Entries and shard states live in two bounded moka caches: entries by the
//! configured bound, shard states by a fixed one (65,536 shards, 4,096
//! namespaces' worth), so that neither crowds the other out. A shard's state
//! is read on every hit of the shard, so a used one stays; a lost one only
//! costs its shard's entries a miss. Reads take no lock. Writes are serialized where the conditional store needs it:
//! a store and an invalidation of the same key exclude each other (one of 64
//! stripes of locks), and every change of a shard state excludes every store
//! (a read-write lock that stores share), so a store's check and its write
//! happen with nothing in between that could make the check false.

use std::hash::BuildHasher;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache as Moka;

use super::{Backend, Lookup, PutCondition, PutOutcome, ShardState, Stored};
use crate::error::Result;
use crate::key::CacheKey;

/// Default bound: 100,000 entries.
const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// How long a shard state lives at least; stores extend it to outlive their
/// entries.
const SHARD_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Shard states kept at most.
const MAX_SHARDS: u64 = 65_536;

/// Lock stripes for stores and invalidations.
const STRIPES: usize = 64;

#[derive(Clone)]
struct Entry {
    stored: Stored,
    ttl: Duration,
}

#[derive(Clone, Copy)]
struct Shard {
    state: ShardState,
    until: Instant,
}

/// Expires each entry after its own TTL, and each shard state at its own
/// deadline, also when they are overwritten.
struct OwnTtl;

trait Lifetime {
    fn ttl(&self, now: Instant) -> Duration;
}

impl Lifetime for Entry {
    fn ttl(&self, _: Instant) -> Duration {
        self.ttl
    }
}

impl Lifetime for Shard {
    fn ttl(&self, now: Instant) -> Duration {
        self.until.saturating_duration_since(now)
    }
}

impl<V: Lifetime> moka::Expiry<String, V> for OwnTtl {
    fn expire_after_create(&self, _: &String, value: &V, now: Instant) -> Option<Duration> {
        Some(value.ttl(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &V,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl(now))
    }
}

/// An in-process backend: a bounded moka cache with per-entry TTLs.
///
/// Bounded by entry count (default 100,000) or by bytes
/// ([`MemoryBackendBuilder::max_bytes`]); least-recently and least-frequently
/// used entries are evicted first. Shard states count against the same bound.
/// Cheap to clone: clones share the storage, which is how tests play two
/// processes on one shared cache.
#[derive(Clone)]
pub struct MemoryBackend {
    entries: Moka<String, Entry>,
    shards: Moka<String, Shard>,
    locks: std::sync::Arc<Locks>,
}

struct Locks {
    stripes: Vec<Mutex<()>>,
    shards: RwLock<()>,
    hasher: std::collections::hash_map::RandomState,
}

impl Locks {
    fn stripe(&self, key: &str) -> std::sync::MutexGuard<'_, ()> {
        let stripe = &self.stripes[(self.hasher.hash_one(key) as usize) % STRIPES];
        // The guarded data is `()`: a panic while holding it leaves nothing
        // inconsistent.
        stripe.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stores(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.shards.read().unwrap_or_else(|e| e.into_inner())
    }

    fn shard_change(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.shards.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl MemoryBackend {
    /// A backend bounded to 100,000 entries.
    pub fn new() -> Self {
        MemoryBackend::builder().build()
    }

    /// Configures the bound.
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            bound: Bound::Entries(DEFAULT_MAX_ENTRIES),
        }
    }

    /// The number of entries held (approximate: moka counts lazily; see
    /// [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Applies pending evictions and counts now (moka applies them lazily).
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
        self.shards.run_pending_tasks();
    }

    fn shard_state(&self, shard: &str) -> Option<ShardState> {
        self.shards.get(shard).map(|s| s.state)
    }

    fn set_shard(&self, shard: &str, state: ShardState, until: Instant) {
        self.shards.insert(shard.to_owned(), Shard { state, until });
    }

    fn entry(&self, key: &str) -> Option<Stored> {
        self.entries.get(key).map(|e| e.stored)
    }

    /// Makes the shard outlive an entry stored for `ttl`, if it would not.
    fn extend_shard(&self, shard: &str, ttl: Duration) {
        let needed = Instant::now() + ttl + Duration::from_secs(1);
        if self.shards.get(shard).is_some_and(|s| s.until >= needed) {
            return;
        }
        let _change = self.locks.shard_change();
        // Re-read under the lock: a bump or an invalidation may have run.
        if let Some(current) = self.shards.get(shard)
            && current.until < needed
        {
            self.set_shard(shard, current.state, needed);
        }
    }
}

/// Hooks for tests of code built on the cache: they reach past the cache's
/// rules on purpose.
#[cfg(feature = "testing")]
impl MemoryBackend {
    /// The bytes stored under `key` (an entry's envelope), if any.
    pub fn raw(&self, key: &str) -> Option<bytes::Bytes> {
        self.entry(key).map(|stored| stored.bytes)
    }

    /// Overwrites an entry with arbitrary bytes, as another program could.
    pub fn set_raw(&self, key: &str, bytes: bytes::Bytes, ttl: Duration) {
        let stored = Stored {
            version: super::Version::random(),
            bytes,
        };
        self.entries.insert(key.to_owned(), Entry { stored, ttl });
    }

    /// Drops whatever is stored under `key` (an entry, or a shard's state if
    /// `key` is a shard), as an eviction would.
    pub fn evict(&self, key: &str) {
        self.entries.invalidate(key);
        self.shards.invalidate(key);
    }

    /// The keys of the entries held, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .entries
            .iter()
            .map(|(key, _)| String::clone(&key))
            .collect();
        keys.sort();
        keys
    }

    /// The state of the shard an entry key belongs to (the key up to its
    /// first `}`), if it has one.
    pub fn shard_of(&self, key: &str) -> Option<ShardState> {
        let shard = key.find('}').map_or(key, |end| &key[..=end]);
        self.shard_state(shard)
    }
}

enum Bound {
    Entries(u64),
    Bytes(u64),
}

/// Builds a [`MemoryBackend`].
pub struct MemoryBackendBuilder {
    bound: Bound,
}

impl MemoryBackendBuilder {
    /// Holds at most `n` entries.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.bound = Bound::Entries(n);
        self
    }

    /// Holds at most about `n` bytes of keys and entries.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.bound = Bound::Bytes(n);
        self
    }

    /// Builds the backend.
    pub fn build(self) -> MemoryBackend {
        let entries = Moka::builder().expire_after(OwnTtl);
        let entries = match self.bound {
            Bound::Entries(n) => entries.max_capacity(n).build(),
            Bound::Bytes(n) => entries
                .weigher(|k: &String, v: &Entry| {
                    u32::try_from(k.len() + v.stored.bytes.len() + 16).unwrap_or(u32::MAX)
                })
                .max_capacity(n)
                .build(),
        };
        MemoryBackend {
            entries,
            shards: Moka::builder()
                .expire_after(OwnTtl)
                .max_capacity(MAX_SHARDS)
                .build(),
            locks: std::sync::Arc::new(Locks {
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                shards: RwLock::new(()),
                hasher: Default::default(),
            }),
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &CacheKey) -> Result<Lookup> {
        Ok(Lookup {
            entry: self.entry(key.as_str()),
            shard: self.shard_state(key.shard()),
        })
    }

    async fn shard(&self, shard: &str) -> Result<ShardState> {
        if let Some(state) = self.shard_state(shard) {
            return Ok(state);
        }
        let _change = self.locks.shard_change();
        if let Some(state) = self.shard_state(shard) {
            return Ok(state);
        }
        let state = ShardState::fresh();
        self.set_shard(shard, state, Instant::now() + SHARD_TTL);
        Ok(state)
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Stored,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome> {
        let outcome = {
            let _key = self.locks.stripe(key.as_str());
            let _stores = self.locks.stores();
            let current = self.entry(key.as_str()).map(|stored| stored.version);
            let outcome = condition.holds(self.shard_state(key.shard()), current);
            if outcome == PutOutcome::Stored {
                let entry = Entry { stored: entry, ttl };
                self.entries.insert(key.as_str().to_owned(), entry);
            }
            outcome
        };
        if outcome == PutOutcome::Stored {
            self.extend_shard(key.shard(), ttl);
        }
        Ok(outcome)
    }

    async fn invalidate(&self, key: &CacheKey) -> Result<()> {
        let _key = self.locks.stripe(key.as_str());
        let _change = self.locks.shard_change();
        match self.shards.get(key.shard()) {
            Some(Shard { state, until }) => {
                let state = ShardState {
                    epoch: state.epoch.wrapping_add(1),
                    ..state
                };
                self.set_shard(key.shard(), state, until);
            }
            None => self.set_shard(key.shard(), ShardState::fresh(), Instant::now() + SHARD_TTL),
        }
        self.entries.invalidate(key.as_str());
        Ok(())
    }

    async fn bump(&self, shards: &[String]) -> Result<()> {
        let _change = self.locks.shard_change();
        for shard in shards {
            self.set_shard(shard, ShardState::fresh(), Instant::now() + SHARD_TTL);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn operation_timeout(&self) -> Option<Duration> {
        None
    }
}
