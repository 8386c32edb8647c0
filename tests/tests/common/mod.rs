//! Shared pieces of the integration tests: the backend conformance suite and
//! backends that fail on purpose.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

pub mod conformance;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cache_runtime::entry::Generation;
use cache_runtime::{
    Backend, CacheKey, Error, Lookup, MemoryBackend, PutCondition, PutOutcome, Result,
};

/// Body runs counted per argument, so tests running in parallel on one cached
/// function (each with its own arguments) do not see each other's runs.
#[derive(Default)]
pub struct Runs(std::sync::Mutex<std::collections::HashMap<u64, u32>>);

impl Runs {
    pub fn record(&self, id: u64) {
        *self.0.lock().unwrap().entry(id).or_default() += 1;
    }

    pub fn of(&self, id: u64) -> u32 {
        self.0.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

/// A memory backend that can be switched to failing every operation, to play
/// a cache that goes down and comes back.
#[derive(Debug, Default)]
pub struct Switchable {
    pub inner: MemoryBackend,
    down: AtomicBool,
    pub calls: AtomicU64,
}

impl Switchable {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(Error::backend("switchable", "connection refused (test)"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Backend for Switchable {
    fn name(&self) -> &'static str {
        "switchable"
    }
    async fn get(&self, key: &CacheKey) -> Result<Lookup> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn generation(&self, shard: &str) -> Result<Generation> {
        self.check()?;
        self.inner.generation(shard).await
    }
    async fn put(
        &self,
        key: &CacheKey,
        entry: Bytes,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome> {
        self.check()?;
        self.inner.put(key, entry, ttl, condition).await
    }
    async fn set(&self, key: &CacheKey, entry: Bytes, ttl: Duration) -> Result<()> {
        self.check()?;
        self.inner.set(key, entry, ttl).await
    }
    async fn bump(&self, shards: &[String]) -> Result<()> {
        self.check()?;
        self.inner.bump(shards).await
    }
    async fn ping(&self) -> Result<()> {
        self.check()
    }
}
