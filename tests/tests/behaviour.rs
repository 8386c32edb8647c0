//! What a cached function does, on the in-memory backend: hits and misses, TTL,
//! return shapes, methods and reference arguments, invalidation, counters,
//! scoping, and fail-open when the backend is down (G4 in-process).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, NamespaceStats, cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user-{id}"),
    }
}

static GET_USER_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "users", ttl = 60)]
async fn get_user(id: u64) -> User {
    GET_USER_RUNS.fetch_add(1, SeqCst);
    user(id)
}

#[tokio::test]
async fn a_second_call_is_a_hit() {
    let cache = Cache::memory();
    cache
        .scope(async {
            let before = GET_USER_RUNS.load(SeqCst);
            assert_eq!(get_user(1).await, user(1));
            assert_eq!(get_user(1).await, user(1));
            assert_eq!(
                GET_USER_RUNS.load(SeqCst) - before,
                1,
                "the hit ran the body"
            );
            assert_eq!(get_user(2).await, user(2));
            assert_eq!(
                GET_USER_RUNS.load(SeqCst) - before,
                2,
                "another argument is another entry"
            );
        })
        .await;
    let stats: NamespaceStats = cache.stats().namespace("users");
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 2, 0));
}

static SHORT_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "short", ttl = 1)]
async fn short_lived(id: u64) -> u64 {
    SHORT_RUNS.fetch_add(1, SeqCst);
    id * 2
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    Cache::memory()
        .scope(async {
            assert_eq!(short_lived(4).await, 8);
            assert_eq!(short_lived(4).await, 8);
            assert_eq!(SHORT_RUNS.load(SeqCst), 1);
            tokio::time::sleep(Duration::from_millis(1300)).await;
            assert_eq!(short_lived(4).await, 8);
            assert_eq!(SHORT_RUNS.load(SeqCst), 2, "the entry outlived its TTL");
        })
        .await;
}

static FALLIBLE_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "fallible")]
async fn fallible(id: u64) -> Result<u64, String> {
    FALLIBLE_RUNS.fetch_add(1, SeqCst);
    if id == 0 { Err("zero".into()) } else { Ok(id) }
}

#[tokio::test]
async fn errors_are_not_cached_and_ok_is() {
    Cache::memory()
        .scope(async {
            assert_eq!(fallible(0).await, Err("zero".into()));
            assert_eq!(fallible(0).await, Err("zero".into()));
            assert_eq!(FALLIBLE_RUNS.load(SeqCst), 2, "an Err was cached");
            assert_eq!(fallible(5).await, Ok(5));
            assert_eq!(fallible(5).await, Ok(5));
            assert_eq!(FALLIBLE_RUNS.load(SeqCst), 3, "an Ok was not cached");
        })
        .await;
}

static FIND_RUNS: AtomicU32 = AtomicU32::new(0);
static FIND_NEG_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "find")]
async fn find(id: u64) -> Option<User> {
    FIND_RUNS.fetch_add(1, SeqCst);
    (id != 0).then(|| user(id))
}

#[cached(namespace = "find-negative", cache_none = true)]
async fn find_negative(id: u64) -> Option<User> {
    FIND_NEG_RUNS.fetch_add(1, SeqCst);
    (id != 0).then(|| user(id))
}

#[tokio::test]
async fn none_is_cached_only_with_cache_none() {
    Cache::memory()
        .scope(async {
            assert_eq!(find(0).await, None);
            assert_eq!(find(0).await, None);
            assert_eq!(FIND_RUNS.load(SeqCst), 2, "None was cached");
            assert_eq!(find(3).await, Some(user(3)));
            assert_eq!(find(3).await, Some(user(3)));
            assert_eq!(FIND_RUNS.load(SeqCst), 3, "Some was not cached");

            assert_eq!(find_negative(0).await, None);
            assert_eq!(find_negative(0).await, None);
            assert_eq!(
                FIND_NEG_RUNS.load(SeqCst),
                1,
                "cache_none did not cache None"
            );
            assert_eq!(find_negative(3).await, Some(user(3)));
            assert_eq!(find_negative(3).await, Some(user(3)));
            assert_eq!(FIND_NEG_RUNS.load(SeqCst), 2);
        })
        .await;
}

/// A repository whose methods are cached.
#[derive(Default)]
struct Repo {
    runs: AtomicU32,
    mutations: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Filter {
    min_id: u64,
    tag: String,
}

impl Repo {
    #[cached(namespace = "repo")]
    async fn by_name(&self, name: &str, filter: &Filter) -> Vec<String> {
        self.runs.fetch_add(1, SeqCst);
        vec![format!("{name}>{}#{}", filter.min_id, filter.tag)]
    }

    #[cached(namespace = "repo")]
    async fn bump(&mut self, by: u32) -> u32 {
        self.mutations += by;
        self.mutations
    }

    #[cached(namespace = "repo")]
    async fn constant(id: u64) -> String {
        format!("c{id}")
    }
}

#[tokio::test]
async fn methods_and_reference_arguments() {
    Cache::memory()
        .scope(async {
            let mut repo = Repo::default();
            let f = Filter {
                min_id: 3,
                tag: "x".into(),
            };
            let expected = vec!["ann>3#x".to_owned()];
            assert_eq!(repo.by_name("ann", &f).await, expected);
            assert_eq!(repo.by_name("ann", &f).await, expected);
            assert_eq!(repo.runs.load(SeqCst), 1);
            let g = Filter {
                tag: "y".into(),
                ..f.clone()
            };
            assert_eq!(repo.by_name("ann", &g).await, vec!["ann>3#y".to_owned()]);
            assert_eq!(repo.runs.load(SeqCst), 2, "a different &T argument hit");

            // `self` is not in the key: the cached result is served.
            assert_eq!(repo.bump(2).await, 2);
            assert_eq!(repo.bump(2).await, 2);
            assert_eq!(repo.mutations, 2);

            assert_eq!(Repo::constant(9).await, "c9");
            assert_eq!(Repo::constant(9).await, "c9");

            Repo::by_name_invalidate("ann", &f).await.unwrap();
            assert_eq!(repo.by_name("ann", &f).await, expected);
            assert_eq!(
                repo.runs.load(SeqCst),
                3,
                "the companion did not invalidate"
            );
        })
        .await;
}

static LIST_RUNS: AtomicU32 = AtomicU32::new(0);
static COUNT_RUNS: AtomicU32 = AtomicU32::new(0);
static OTHER_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "inv")]
async fn inv_get(id: u64) -> u64 {
    LIST_RUNS.fetch_add(1, SeqCst);
    id
}

#[cached(namespace = "inv")]
async fn inv_count() -> u64 {
    COUNT_RUNS.fetch_add(1, SeqCst);
    42
}

#[cached(namespace = "inv-other")]
async fn other_get(id: u64) -> u64 {
    OTHER_RUNS.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn entry_and_namespace_invalidation() {
    Cache::memory()
        .scope(async {
            for id in [1, 2] {
                inv_get(id).await;
            }
            inv_count().await;
            other_get(1).await;
            assert_eq!(LIST_RUNS.load(SeqCst), 2);

            // One entry: only it is recomputed.
            inv_get_invalidate(&1).await.unwrap();
            inv_get(1).await;
            inv_get(2).await;
            assert_eq!(LIST_RUNS.load(SeqCst), 3);

            // The namespace: every function in it, and nothing outside it.
            assert_eq!(INV_GET_NAMESPACE, "inv");
            cache_runtime::invalidate_namespace(INV_GET_NAMESPACE)
                .await
                .unwrap();
            inv_get(1).await;
            inv_get(2).await;
            inv_count().await;
            other_get(1).await;
            assert_eq!(LIST_RUNS.load(SeqCst), 5);
            assert_eq!(COUNT_RUNS.load(SeqCst), 2);
            assert_eq!(
                OTHER_RUNS.load(SeqCst),
                1,
                "another namespace was invalidated"
            );

            let bad = cache_runtime::invalidate_namespace("no:colons").await;
            assert!(bad.unwrap_err().to_string().contains("invalid namespace"));
        })
        .await;
}

static SKIP_RUNS: AtomicU32 = AtomicU32::new(0);

/// Not serializable: must be skipped.
struct Pool;

#[cached(namespace = "skip", skip(pool, trace_id))]
async fn with_pool(pool: &Pool, id: u64, trace_id: String) -> u64 {
    let _ = (pool, trace_id);
    SKIP_RUNS.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn skipped_arguments_are_not_in_the_key() {
    Cache::memory()
        .scope(async {
            assert_eq!(with_pool(&Pool, 1, "a".into()).await, 1);
            assert_eq!(with_pool(&Pool, 1, "b".into()).await, 1);
            assert_eq!(SKIP_RUNS.load(SeqCst), 1);
            with_pool_invalidate(&1).await.unwrap();
            assert_eq!(with_pool(&Pool, 1, "c".into()).await, 1);
            assert_eq!(SKIP_RUNS.load(SeqCst), 2);
        })
        .await;
}

static SCOPE_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "scoped")]
async fn scoped(id: u64) -> u64 {
    SCOPE_RUNS.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn scoped_caches_are_isolated() {
    let a = Cache::memory();
    let b = Cache::memory();
    a.scope(scoped(1)).await;
    a.scope(scoped(1)).await;
    assert_eq!(SCOPE_RUNS.load(SeqCst), 1);
    b.scope(scoped(1)).await;
    assert_eq!(
        SCOPE_RUNS.load(SeqCst),
        2,
        "a scoped cache saw another's entry"
    );
    assert_eq!(a.stats().namespace("scoped").hits, 1);
    assert_eq!(b.stats().namespace("scoped").hits, 0);
}

static OPEN_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "fail-open")]
async fn fail_open(id: u64) -> Result<User, String> {
    OPEN_RUNS.fetch_add(1, SeqCst);
    Ok(user(id))
}

#[tokio::test]
async fn a_dead_backend_never_fails_the_call() {
    let backend = Arc::new(common::Faulty::new(Arc::new(
        cache_runtime::MemoryBackend::new(),
    )));
    let cache = Cache::builder()
        .shared_backend(backend.clone())
        .build()
        .unwrap();
    cache
        .scope(async {
            backend.set_all(common::Mode::Fail);
            for _ in 0..50 {
                assert_eq!(fail_open(1).await, Ok(user(1)));
            }
            assert_eq!(
                OPEN_RUNS.load(SeqCst),
                50,
                "every call runs the body while down"
            );
            // The circuit opened after 5 consecutive failures: later calls no
            // longer ask the backend (and would no longer pay its timeout).
            let asked = backend.calls.load(SeqCst);
            assert!(
                asked < 10,
                "the backend was asked {asked} times for 50 calls"
            );
            assert!(
                fail_open_invalidate(&1).await.is_err(),
                "invalidation reports the failure"
            );
            let health = cache_runtime::health().await;
            assert!(!health.healthy && health.circuit_open);

            // Back up: a half-open probe closes the circuit and caching resumes.
            backend.set_all(common::Mode::Pass);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while cache_runtime::stats().namespace("fail-open").hits == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "caching did not resume"
                );
                assert_eq!(fail_open(1).await, Ok(user(1)));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let health = cache_runtime::health().await;
            assert!(health.healthy && !health.circuit_open);
        })
        .await;
    let stats = cache.stats().namespace("fail-open");
    assert!(stats.errors >= 50, "{stats:?}");
}

#[tokio::test]
async fn configuration_errors_name_the_problem() {
    let err = Cache::builder().prefix("bad prefix").build().unwrap_err();
    assert!(
        err.to_string().contains("invalid prefix `bad prefix`"),
        "{err}"
    );
    let err = Cache::builder()
        .default_ttl(Duration::from_millis(10))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("at least one second"), "{err}");
}

#[tokio::test]
async fn health_is_serializable() {
    let health = Cache::memory().health().await;
    assert!(health.healthy && !health.circuit_open);
    assert_eq!(health.backend, "memory");
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json["healthy"], true);
    assert_eq!(json["backend"], "memory");
    assert!(json["latency_ms"].is_number());
}
