//! Which cache a cached call uses.
//!
//! Lookup order, first match wins:
//! 1. the cache of an enclosing [`Cache::scope`] on the current task;
//! 2. the process-wide cache, installed once with [`install`] or
//!    [`CacheBuilder::install`](crate::CacheBuilder::install);
//! 3. if none was installed, one started on first use: an in-memory cache with
//!    default settings, which says so once at info level.

use std::cell::Cell;
use std::sync::OnceLock;

use crate::cache::{Cache, CacheBuilder};
use crate::call::Request;

static GLOBAL: OnceLock<Cache> = OnceLock::new();

/// What a task carries for the cached calls it runs: a cache of
/// [`Cache::scope`], and a request ([`crate::refresh`] and its siblings)
/// for the next call.
pub(crate) struct Scope {
    cache: Option<Cache>,
    /// Taken by the first cached call that starts in the scope.
    request: Cell<Option<Request>>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `future` under `cache` (see [`Cache::scope`]). A request of an
/// enclosing [`requested`] not taken yet moves into the new scope: the
/// scope changes the cache, not what was asked of the call.
pub(crate) async fn scoped<F: Future>(cache: Cache, future: F) -> F::Output {
    let scope = Scope {
        cache: Some(cache),
        request: Cell::new(take_request()),
    };
    SCOPE.scope(scope, future).await
}

/// Runs `future` with `request` for its first cached call, under the
/// cache the task would use anyway (the one of an enclosing
/// [`Cache::scope`] when it is first polled).
///
/// The future is boxed: an `async` wrapper would hold it twice (as what it
/// captured and as what it awaits), and a cached call's future holds every
/// cached call nested in its body.
pub(crate) fn requested<F: Future>(request: Request, future: F) -> impl Future<Output = F::Output> {
    let future = Box::pin(future);
    async move {
        let cache = SCOPE.try_with(|s| s.cache.clone()).ok().flatten();
        // Nested wrappers: the inner mode wins, and both learn the outcome.
        let request = match take_request() {
            Some(outer) => request.within(outer),
            None => request,
        };
        let scope = Scope {
            cache,
            request: Cell::new(Some(request)),
        };
        SCOPE.scope(scope, future).await
    }
}

/// Takes the request left for the cached call starting now, if any.
pub(crate) fn take_request() -> Option<Request> {
    SCOPE.try_with(|scope| scope.request.take()).ok().flatten()
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
    /// The cache of the task, leaving any request where it is (for
    /// [`current`], invalidations, health: none of them is the call a
    /// request is for).
    pub(crate) fn get() -> Current {
        SCOPE
            .try_with(Current::of)
            .unwrap_or_else(|_| Current::Global(global()))
    }

    /// The cache of a scope: its own, or the process-wide one.
    fn of(scope: &Scope) -> Current {
        match &scope.cache {
            Some(cache) => Current::Scoped(cache.clone()),
            None => Current::Global(global()),
        }
    }

    /// The cache of a call starting now, and the request left for it
    /// (taken: calls nested in its body do not see it).
    pub(crate) fn for_call() -> (Current, Option<Request>) {
        SCOPE
            .try_with(|scope| (Current::of(scope), scope.request.take()))
            .unwrap_or_else(|_| (Current::Global(global()), None))
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
