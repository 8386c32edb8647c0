//! The backend guard (cache/guard.rs) and the call around it: whatever the
//! backend and the runtime do, a cached call gets its value, and a request
//! goes to the call it was meant for. The first two failed on 883cd1c (found
//! by review): the operation timeout built its timer outside the panic guard.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, CallOutcome, MemoryBackend, cached, with_outcome};
use common::Faulty;

#[cached(namespace = "guard-no-timer")]
async fn no_timer(id: u64) -> u64 {
    id + 1
}

/// A runtime without the time driver and a backend with an operation timeout
/// (the `Backend` trait's default is 1 s). Before 883cd1c the timer's panic
/// was raised inside the guard's `catch_unwind` and became a backend error.
fn timerless_cache() -> (tokio::runtime::Runtime, Cache) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let backend = Arc::new(Faulty::with_timeout(
        Arc::new(MemoryBackend::new()),
        Duration::from_secs(1),
    ));
    let cache = Cache::builder().shared_backend(backend).build().unwrap();
    (rt, cache)
}

#[test]
fn a_call_on_a_runtime_without_timers_gets_an_error_not_a_panic() {
    let (rt, cache) = timerless_cache();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(cache.scope(no_timer(1)))
    }));
    assert_eq!(got.ok(), Some(2), "the cached call panicked");
}

#[test]
fn health_on_a_runtime_without_timers_does_not_panic() {
    let (rt, cache) = timerless_cache();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(cache.health()).healthy
    }));
    assert!(got.is_ok(), "health() panicked");
}

#[cached(namespace = "guard-join")]
async fn joined(id: u64) -> u64 {
    id
}

/// The request goes to whichever call is polled first, created first or not.
#[tokio::test]
async fn a_request_goes_to_the_first_call_polled() {
    let cache = Cache::memory();
    cache.scope(joined(2)).await; // 2 is cached; 1 is not
    let ((a, b), outcome) = cache
        .scope(with_outcome(async {
            let first_created = joined(1);
            let second_created = joined(2);
            let b = second_created.await;
            let a = first_created.await;
            (a, b)
        }))
        .await;
    assert_eq!((a, b), (1, 2));
    assert_eq!(outcome, Some(CallOutcome::Hit));
    // A call created and dropped unpolled leaves the request for the next.
    let (_, outcome) = cache
        .scope(with_outcome(async {
            drop(joined(2));
            joined(1).await
        }))
        .await;
    assert_eq!(outcome, Some(CallOutcome::Hit));
}

#[tokio::test]
async fn cached_futures_are_send() {
    fn check<F: std::future::Future + Send + 'static>(f: F) -> F {
        f
    }
    let cache = Cache::memory();
    let c = cache.clone();
    let h = tokio::spawn(check(async move { c.scope(joined(9)).await }));
    assert_eq!(h.await.unwrap(), 9);
    let h = tokio::spawn(check(async move { cache.health().await.healthy }));
    assert!(h.await.unwrap());
}
