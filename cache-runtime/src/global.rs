//! Which cache a cached call uses.
//!
//! Lookup order, first match wins:
//! 1. the cache of an enclosing [`Cache::scope`] on the current task;
//! 2. the process-wide cache, installed once with [`install`] or
//!    [`CacheBuilder::install`](crate::CacheBuilder::install);
//! 3. if none was installed, one started on first use: an in-memory cache with
//!    default settings, which says so once at info level.

use std::sync::OnceLock;

use crate::cache::Cache;

static GLOBAL: OnceLock<Cache> = OnceLock::new();

tokio::task_local! {
    pub(crate) static SCOPED: Cache;
}

/// Installs `cache` as the process-wide cache.
///
/// Returns the cache back if one is already in place: installing must happen
/// once, at startup, before the first cached call.
pub fn install(cache: Cache) -> Result<(), Cache> {
    let mut rejected = Some(cache);
    GLOBAL.get_or_init(|| rejected.take().expect("taken once"));
    match rejected {
        None => Ok(()),
        Some(cache) => Err(cache),
    }
}

/// The process-wide cache, started on first use if none was installed.
pub fn global() -> &'static Cache {
    GLOBAL.get_or_init(|| {
        tracing::info!(
            "no cache installed; using an in-memory cache (install one at startup with `Cache::builder()...install()`)"
        );
        Cache::memory()
    })
}

/// The cache a cached call on this task would use now.
pub fn current() -> Cache {
    SCOPED
        .try_with(Cache::clone)
        .unwrap_or_else(|_| global().clone())
}
