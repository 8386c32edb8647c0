//! The in-process backend, on moka. Always built; the default when nothing else
//! is configured.
//!
//! Entries live in a bounded moka cache. Shard states live in a plain map
//! bounded to 65,536 shards (4,096 namespaces' worth), evicted by CLOCK: a
//! shard read since the hand last passed gets a second chance, so a used
//! one stays; a lost one only costs its shard's entries a miss. A hit reads
//! the entry without a lock and the shard's state under a read lock. Writes are serialized where the conditional store needs it:
//! a store and an invalidation of the same key exclude each other (one of 64
//! stripes of locks), and every change of a shard state excludes every store
//! (a read-write lock that stores share), so a store's check and its write
//! happen with nothing in between that could make the check false.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache as Moka;

use super::{
    Backend, LeaseState, LeaseToken, Lookup, PutCondition, PutOutcome, ShardState, Stored,
};
use crate::error::Result;
use crate::key::CacheKey;

/// Default bound: 100,000 entries.
const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// Shard states kept at most.
const MAX_SHARDS: usize = 65_536;

/// Lock stripes for stores and invalidations.
const STRIPES: usize = 64;

#[derive(Clone)]
struct Entry {
    stored: Stored,
    ttl: Duration,
}

/// Expires each entry after its own TTL, also when it is overwritten.
struct OwnTtl;

impl moka::Expiry<String, Entry> for OwnTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The shard states, bounded, with CLOCK eviction.
#[derive(Default)]
struct Shards {
    map: HashMap<Box<str>, Shard>,
    /// The order of insertion; the hand takes from the front.
    order: VecDeque<Box<str>>,
}

struct Shard {
    state: ShardState,
    /// Read since the hand last passed: spared once.
    referenced: AtomicBool,
}

impl Shards {
    fn get(&self, shard: &str) -> Option<ShardState> {
        let slot = self.map.get(shard)?;
        if !slot.referenced.load(Relaxed) {
            slot.referenced.store(true, Relaxed);
        }
        Some(slot.state)
    }

    /// Sets a shard's state, making room first if it is new.
    fn set(&mut self, shard: &str, state: ShardState) {
        if let Some(slot) = self.map.get_mut(shard) {
            slot.state = state;
            return;
        }
        while self.map.len() >= MAX_SHARDS {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            match self.map.get(&oldest) {
                Some(slot) if slot.referenced.swap(false, Relaxed) => self.order.push_back(oldest),
                Some(_) => {
                    self.map.remove(&oldest);
                }
                // Already gone (evicted by a test hook): nothing to free.
                None => {}
            }
        }
        if self.order.len() > 2 * MAX_SHARDS {
            // Keys a test hook removed piled up: start the order again.
            self.order = self.map.keys().cloned().collect();
        }
        let key: Box<str> = shard.into();
        self.order.push_back(key.clone());
        self.map.insert(
            key,
            Shard {
                state,
                referenced: AtomicBool::new(false),
            },
        );
    }
}

/// An in-process backend: a bounded moka cache with per-entry TTLs.
///
/// Bounded by entry count (default 100,000) or by bytes
/// ([`MemoryBackendBuilder::max_bytes`]); least-recently and least-frequently
/// used entries are evicted first; shard states are bounded on their own (see
/// the module docs).
/// Cheap to clone: clones share the storage, which is how tests play two
/// processes on one shared cache.
#[derive(Clone)]
pub struct MemoryBackend {
    entries: Moka<String, Entry>,
    locks: std::sync::Arc<Locks>,
    leases: std::sync::Arc<Mutex<Leases>>,
}

/// Leases held, by key: for caches that share one `MemoryBackend`.
#[derive(Default)]
struct Leases(HashMap<String, (LeaseToken, Instant)>);

/// Leases held at once, at most: past it (after dropping expired ones), a
/// key gets no lease and its callers compute for themselves.
const MAX_LEASES: usize = 65_536;

impl Leases {
    fn holder(&self, key: &str, now: Instant) -> Option<LeaseToken> {
        self.0
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(token, _)| *token)
    }

    fn take(&mut self, key: &str, token: LeaseToken, ttl: Duration) -> LeaseState {
        let now = Instant::now();
        match self.holder(key, now) {
            Some(ABANDONED) => return LeaseState::Unsupported,
            Some(_) => return LeaseState::Held,
            None => {}
        }
        if self.0.len() >= MAX_LEASES {
            self.0.retain(|_, (_, until)| *until > now);
            if self.0.len() >= MAX_LEASES {
                return LeaseState::Unsupported;
            }
        }
        self.0.insert(key.to_owned(), (token, until(now, ttl)));
        LeaseState::Taken
    }
}

/// The holder of a lease given up without a value (no token is zero).
const ABANDONED: LeaseToken = LeaseToken(0);

/// `now + ttl`, or far in the future for a TTL past what `Instant` holds.
fn until(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

struct Locks {
    stripes: Vec<Mutex<()>>,
    /// Stores hold it shared while they check and write; every change of a
    /// shard's state holds it exclusively.
    shards: RwLock<Shards>,
    hasher: std::collections::hash_map::RandomState,
}

impl Locks {
    fn stripe(&self, key: &str) -> std::sync::MutexGuard<'_, ()> {
        let stripe = &self.stripes[(self.hasher.hash_one(key) as usize) % STRIPES];
        // The guarded data is `()`: a panic while holding it leaves nothing
        // inconsistent.
        stripe.lock().unwrap_or_else(|e| e.into_inner())
    }

    // The maps stay consistent if a holder panicked: every change is one
    // insert, update or removal.
    fn shards(&self) -> std::sync::RwLockReadGuard<'_, Shards> {
        self.shards.read().unwrap_or_else(|e| e.into_inner())
    }

    fn shard_change(&self) -> std::sync::RwLockWriteGuard<'_, Shards> {
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
    }

    fn shard_state(&self, shard: &str) -> Option<ShardState> {
        self.locks.shards().get(shard)
    }

    fn entry(&self, key: &str) -> Option<Stored> {
        self.entries.get(key).map(|e| e.stored)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        // Every change is one map operation: a panic leaves nothing half done.
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
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
        self.locks.shard_change().map.remove(key);
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
            locks: std::sync::Arc::new(Locks {
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                shards: RwLock::default(),
                hasher: Default::default(),
            }),
            leases: std::sync::Arc::default(),
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
        let mut shards = self.locks.shard_change();
        if let Some(state) = shards.get(shard) {
            return Ok(state);
        }
        let state = ShardState::fresh();
        shards.set(shard, state);
        Ok(state)
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Stored,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome> {
        let _key = self.locks.stripe(key.as_str());
        let shards = self.locks.shards();
        let current = self.entry(key.as_str()).map(|stored| stored.version);
        let outcome = condition.holds(shards.get(key.shard()), current);
        if outcome == PutOutcome::Stored {
            let entry = Entry { stored: entry, ttl };
            self.entries.insert(key.as_str().to_owned(), entry);
        }
        Ok(outcome)
    }

    async fn invalidate(&self, key: &CacheKey) -> Result<()> {
        let _key = self.locks.stripe(key.as_str());
        let mut shards = self.locks.shard_change();
        let state = match shards.get(key.shard()) {
            Some(state) => ShardState {
                epoch: state.epoch.wrapping_add(1),
                ..state
            },
            None => ShardState::fresh(),
        };
        shards.set(key.shard(), state);
        self.entries.invalidate(key.as_str());
        // Callers after the invalidation do not wait for a holder computing
        // from before it.
        self.leases().0.remove(key.as_str());
        Ok(())
    }

    async fn bump(&self, shards: &[String]) -> Result<()> {
        let mut states = self.locks.shard_change();
        for shard in shards {
            states.set(shard, ShardState::fresh());
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn lease(&self, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Result<LeaseState> {
        Ok(self.leases().take(key.as_str(), token, ttl))
    }

    async fn renew_lease(&self, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Result<bool> {
        let mut leases = self.leases();
        if leases.holder(key.as_str(), Instant::now()) != Some(token) {
            return Ok(false);
        }
        leases
            .0
            .insert(key.as_str().to_owned(), (token, until(Instant::now(), ttl)));
        Ok(true)
    }

    async fn release_lease(&self, key: &CacheKey, token: LeaseToken) -> Result<()> {
        let mut leases = self.leases();
        if leases
            .0
            .get(key.as_str())
            .is_some_and(|(held, _)| *held == token)
        {
            leases.0.remove(key.as_str());
        }
        Ok(())
    }

    async fn abandon_lease(
        &self,
        key: &CacheKey,
        token: LeaseToken,
        pause: Duration,
    ) -> Result<()> {
        let mut leases = self.leases();
        let now = Instant::now();
        if leases.holder(key.as_str(), now) == Some(token) {
            leases
                .0
                .insert(key.as_str().to_owned(), (ABANDONED, until(now, pause)));
        }
        Ok(())
    }

    fn operation_timeout(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(generation: u64) -> ShardState {
        ShardState {
            generation: crate::backend::Generation(generation),
            epoch: 0,
        }
    }

    #[test]
    fn shard_states_are_bounded_and_a_used_one_stays() {
        let mut shards = Shards::default();
        shards.set("hot", state(1));
        for round in 0..3 {
            for i in 0..MAX_SHARDS {
                shards.set(&format!("cold-{round}-{i}"), state(2));
                if i % 1000 == 0 {
                    assert_eq!(
                        shards.get("hot"),
                        Some(state(1)),
                        "the hand took a used shard"
                    );
                }
            }
            assert!(shards.map.len() <= MAX_SHARDS);
            assert!(shards.order.len() <= 2 * MAX_SHARDS);
        }
        assert_eq!(shards.get("hot"), Some(state(1)));
        assert_eq!(shards.get("cold-0-5"), None, "an unused shard stayed");
    }
}
