//! Which cache a cached call uses.
//!
//! Lookup order, first match wins:
//! 1. the cache of an enclosing [`Cache::scope`] on the current task;
//! 2. the process-wide cache, installed once with [`install`] or
//!    [`CacheBuilder::install`](crate::CacheBuilder::install);
//! 3. if none was installed, one started on first use: an in-memory cache with
//!    default settings, which says so once at info level.

use std::sync::OnceLock;

use crate::cache::{Cache, CacheBuilder};

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
///
/// Started from the environment ([`CacheBuilder::from_env`]): Redis if
/// `REDIS_URL` is set, in memory otherwise. A configuration error is logged and
/// the in-memory cache serves instead: a cache never stops the service.
///
/// [`CacheBuilder::from_env`]: crate::CacheBuilder::from_env
pub fn global() -> &'static Cache {
    GLOBAL.get_or_init(|| {
        match CacheBuilder::from_env().and_then(CacheBuilder::build) {
            Ok(cache) if cache.backend_name() == "memory" => {
                tracing::info!(
                    "no cache installed and REDIS_URL unset; using an in-memory cache"
                );
                cache
            }
            Ok(cache) => {
                tracing::info!(backend = cache.backend_name(), "no cache installed; started one from the environment");
                cache
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the cache from the environment; using an in-memory cache");
                Cache::memory()
            }
        }
    })
}

/// The cache a cached call on this task would use now.
pub fn current() -> Cache {
    Current::get().clone()
}

/// [`current`] without cloning the handle in the common case (the global
/// cache): a clone is an atomic increment on a cache line every task shares.
pub(crate) enum Current {
    Global(&'static Cache),
    Scoped(Cache),
}

impl Current {
    pub(crate) fn get() -> Current {
        SCOPED
            .try_with(|cache| Current::Scoped(cache.clone()))
            .unwrap_or_else(|_| Current::Global(global()))
    }
}

impl std::ops::Deref for Current {
    type Target = Cache;

    fn deref(&self) -> &Cache {
        match self {
            Current::Global(cache) => cache,
            Current::Scoped(cache) => cache,
        }
    }
}
