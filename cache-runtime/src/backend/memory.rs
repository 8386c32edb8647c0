//! The in-process backend, on moka. Always built; the default when nothing else
//! is configured.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::future::Cache as Moka;
use moka::ops::compute::{CompResult, Op};

use super::{Backend, Lookup, PutCondition, PutOutcome};
use crate::entry::{Generation, identity};
use crate::error::Result;
use crate::key::CacheKey;

/// Default bound: 100,000 entries.
const DEFAULT_MAX_ENTRIES: u64 = 100_000;
/// Shard generations kept at most. Past that the map is cleared: every shard
/// then gets a new random generation, which costs misses and nothing else.
const MAX_GENERATIONS: usize = 65_536;

#[derive(Clone)]
struct Stored {
    bytes: Bytes,
    ttl: Duration,
}

/// Expires each entry after its own TTL, also when it is overwritten.
struct PerEntryTtl;

impl moka::Expiry<String, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, value: &Stored, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// An in-process backend: a bounded moka cache with per-entry TTLs.
///
/// Bounded by entry count (default 100,000) or by bytes
/// ([`MemoryBackendBuilder::max_bytes`]); least-recently and least-frequently
/// used entries are evicted first. Cheap to clone: clones share the storage,
/// which is how tests simulate two processes on one shared cache.
#[derive(Clone)]
pub struct MemoryBackend {
    entries: Moka<String, Stored>,
    /// Read on every hit, written only when a shard is created or bumped: a
    /// plain read-mostly map, cheaper than a second moka lookup.
    generations: Arc<RwLock<HashMap<Box<str>, Generation>>>,
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
    fn current_generation(&self, shard: &str) -> Option<Generation> {
        let map = self.generations.read().unwrap_or_else(|e| e.into_inner());
        map.get(shard).copied()
    }

    fn set_generation(
        &self,
        shard: &str,
        generation: Generation,
        only_if_missing: bool,
    ) -> Generation {
        let mut map = self.generations.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&current) = map.get(shard).filter(|_| only_if_missing) {
            return current;
        }
        if map.len() >= MAX_GENERATIONS && !map.contains_key(shard) {
            map.clear();
        }
        map.insert(shard.into(), generation);
        generation
    }

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

    /// The number of entries held (approximate: moka counts lazily).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// The bytes of an entry as stored, for tests and debugging.
    pub async fn raw(&self, key: &str) -> Option<Bytes> {
        self.entries.get(key).await.map(|s| s.bytes)
    }

    /// Overwrites an entry with arbitrary bytes, for tests of broken entries.
    pub async fn set_raw(&self, key: &str, bytes: Bytes, ttl: Duration) {
        self.entries
            .insert(key.to_owned(), Stored { bytes, ttl })
            .await;
    }

    /// Applies pending evictions now (moka applies them lazily).
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
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
        let entries = Moka::builder().expire_after(PerEntryTtl);
        let entries = match self.bound {
            Bound::Entries(n) => entries.max_capacity(n).build(),
            Bound::Bytes(n) => entries
                .weigher(|k: &String, v: &Stored| {
                    u32::try_from(k.len() + v.bytes.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(n)
                .build(),
        };
        MemoryBackend {
            entries,
            generations: Arc::default(),
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
            entry: self.entries.get(key.as_str()).await.map(|s| s.bytes),
            generation: self.current_generation(key.shard()),
        })
    }

    async fn generation(&self, shard: &str) -> Result<Generation> {
        if let Some(generation) = self.current_generation(shard) {
            return Ok(generation);
        }
        Ok(self.set_generation(shard, Generation::random(), true))
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Bytes,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome> {
        // Checked before the write, not atomically with it: a bump in between
        // leaves an entry whose embedded generation is already old, which every
        // reader rejects. The generation check here only saves the write.
        if self.current_generation(key.shard()) != Some(condition.generation) {
            return Ok(PutOutcome::GenerationChanged);
        }
        let result = self
            .entries
            .entry_by_ref(key.as_str())
            .and_compute_with(|current| {
                let unchanged = match (&current, &condition.previous) {
                    (None, None) => true,
                    (Some(current), Some(previous)) => {
                        identity(&current.value().bytes) == &previous[..]
                    }
                    _ => false,
                };
                let op = if unchanged {
                    Op::Put(Stored { bytes: entry, ttl })
                } else {
                    Op::Nop
                };
                std::future::ready(op)
            })
            .await;
        Ok(match result {
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => PutOutcome::Stored,
            _ => PutOutcome::EntryChanged,
        })
    }

    async fn set(&self, key: &CacheKey, entry: Bytes, ttl: Duration) -> Result<()> {
        self.entries
            .insert(key.as_str().to_owned(), Stored { bytes: entry, ttl })
            .await;
        Ok(())
    }

    async fn bump(&self, shards: &[String]) -> Result<()> {
        for shard in shards {
            self.set_generation(shard, Generation::random(), false);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
