//! The in-process backend, on moka. Always built; the default when nothing else
//! is configured.

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
/// Shard generations kept at most; losing one only costs misses.
const MAX_GENERATIONS: u64 = 65_536;
/// A generation nobody read for this long is dropped; its shard starts afresh.
const GENERATION_IDLE: Duration = Duration::from_secs(24 * 60 * 60);

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
    generations: Moka<String, Generation>,
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
            generations: Moka::builder()
                .max_capacity(MAX_GENERATIONS)
                .time_to_idle(GENERATION_IDLE)
                .build(),
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
            generation: self.generations.get(key.shard()).await,
        })
    }

    async fn generation(&self, shard: &str) -> Result<Generation> {
        Ok(self
            .generations
            .get_with_by_ref(shard, async { Generation::random() })
            .await)
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
        if self.generations.get(key.shard()).await != Some(condition.generation) {
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
            self.generations
                .insert(shard.clone(), Generation::random())
                .await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
