//! The programmatic API (`Cache::get`, `set`, `remove`,
//! `get_or_insert_with`) and the wrappers that run a cached call in another
//! mode (`refresh`, `uncached`, `with_outcome`): the same guarantees as the
//! attribute, because the same machinery is underneath.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Backend, Cache, CallOutcome, Error, MAX_TTL, MemoryBackend, cached};
use common::{Faulty, Gate, Mode, Source};

const MINUTE: Duration = Duration::from_secs(60);

fn shared(backend: Arc<dyn Backend>) -> Cache {
    Cache::builder().shared_backend(backend).build().unwrap()
}

#[tokio::test]
async fn set_get_and_remove_round_trip() {
    let cache = Cache::memory();
    assert_eq!(cache.get::<String>("sessions", "s-1").await.unwrap(), None);
    cache
        .set("sessions", "s-1", &"alice".to_owned(), MINUTE)
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("sessions", "s-1").await.unwrap(),
        Some("alice".to_owned())
    );
    // Overwrites whatever is there.
    cache
        .set("sessions", "s-1", &"bob".to_owned(), MINUTE)
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("sessions", "s-1").await.unwrap(),
        Some("bob".to_owned())
    );
    // Another key, another namespace: not this entry.
    assert_eq!(cache.get::<String>("sessions", "s-2").await.unwrap(), None);
    assert_eq!(cache.get::<String>("other", "s-1").await.unwrap(), None);
    cache.remove("sessions", "s-1").await.unwrap();
    assert_eq!(cache.get::<String>("sessions", "s-1").await.unwrap(), None);
    let stats = cache.stats().namespace("sessions");
    assert_eq!((stats.hits, stats.misses), (2, 3));
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Profile {
    id: u64,
    name: String,
}

#[tokio::test]
async fn a_value_read_as_another_type_is_a_miss() {
    let cache = Cache::memory();
    let profile = Profile {
        id: 3,
        name: "c".into(),
    };
    cache
        .set("profiles", &3_u64, &profile, MINUTE)
        .await
        .unwrap();
    // Same key, other types: never decoded as them.
    assert_eq!(
        cache
            .get::<(u64, String)>("profiles", &3_u64)
            .await
            .unwrap(),
        None
    );
    assert_eq!(cache.get::<String>("profiles", &3_u64).await.unwrap(), None);
    assert_eq!(
        cache.get::<Profile>("profiles", &3_u64).await.unwrap(),
        Some(profile)
    );
}

#[tokio::test]
async fn keys_are_typed_values_not_strings() {
    // `7_u64` and `"7"` are different keys, as distinct arguments are for a
    // cached function.
    let cache = Cache::memory();
    cache.set("n", &7_u64, &1_u32, MINUTE).await.unwrap();
    assert_eq!(cache.get::<u32>("n", "7").await.unwrap(), None);
    assert_eq!(cache.get::<u32>("n", &7_u64).await.unwrap(), Some(1));
    // Tuples are keys too.
    cache.set("n", &(1_u8, "a"), &2_u32, MINUTE).await.unwrap();
    assert_eq!(cache.get::<u32>("n", &(1_u8, "a")).await.unwrap(), Some(2));
    assert_eq!(cache.get::<u32>("n", &(1_u8, "b")).await.unwrap(), None);
}

static USER_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "users")]
async fn user_name(id: u64) -> String {
    USER_RUNS.fetch_add(1, SeqCst);
    format!("function {id}")
}

#[tokio::test]
async fn api_keys_never_reach_a_functions_entries() {
    let cache = Cache::memory();
    cache
        .scope(async {
            assert_eq!(user_name(1).await, "function 1");
            let runs = USER_RUNS.load(SeqCst);
            // The same namespace and argument through the API: its own entry.
            assert_eq!(cache.get::<String>("users", &1_u64).await.unwrap(), None);
            cache
                .set("users", &1_u64, &"api 1".to_owned(), MINUTE)
                .await
                .unwrap();
            assert_eq!(user_name(1).await, "function 1");
            cache.remove("users", &1_u64).await.unwrap();
            assert_eq!(user_name(1).await, "function 1");
            assert_eq!(
                USER_RUNS.load(SeqCst),
                runs,
                "the function's entry was touched"
            );
            // A namespace invalidation reaches both.
            cache.invalidate_namespace("users").await.unwrap();
            assert_eq!(user_name(1).await, "function 1");
            assert_eq!(USER_RUNS.load(SeqCst), runs + 1);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_insert_with_runs_one_computation_per_stampede() {
    let cache = Cache::memory();
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Gate::default());
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let (cache, runs, gate) = (cache.clone(), runs.clone(), gate.clone());
            tokio::spawn(async move {
                cache
                    .get_or_insert_with_outcome("reports", "daily", MINUTE, async {
                        runs.fetch_add(1, SeqCst);
                        gate.pass().await;
                        42_u64
                    })
                    .await
            })
        })
        .collect();
    gate.wait_reached(1).await;
    // Let the others queue behind the first computation.
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.open();
    let mut outcomes = Vec::new();
    for call in calls {
        let (value, outcome) = call.await.unwrap();
        assert_eq!(value, 42);
        outcomes.push(outcome);
    }
    assert_eq!(runs.load(SeqCst), 1, "outcomes: {outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == CallOutcome::Miss).count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| matches!(
        o,
        CallOutcome::Miss | CallOutcome::Coalesced | CallOutcome::Hit
    )));
    let (_, outcome) = cache
        .get_or_insert_with_outcome("reports", "daily", MINUTE, async { 0_u64 })
        .await;
    assert_eq!(outcome, CallOutcome::Hit);
}

#[tokio::test]
async fn try_get_or_insert_with_caches_ok_only() {
    let cache = Cache::memory();
    let failed: Result<u64, &str> = cache
        .try_get_or_insert_with("rates", "eur", MINUTE, async { Err("down") })
        .await;
    assert_eq!(failed, Err("down"));
    let ok: Result<u64, &str> = cache
        .try_get_or_insert_with("rates", "eur", MINUTE, async { Ok(3) })
        .await;
    assert_eq!(ok, Ok(3));
    let cached: Result<u64, &str> = cache
        .try_get_or_insert_with("rates", "eur", MINUTE, async { Ok(4) })
        .await;
    assert_eq!(cached, Ok(3));
}

#[tokio::test]
async fn a_removal_during_a_computation_refuses_its_store() {
    let cache = Cache::memory();
    let source = Arc::new(Source::default());
    source.write(1);
    let computing = {
        let (cache, source) = (cache.clone(), source.clone());
        tokio::spawn(async move {
            cache
                .get_or_insert_with("rows", &9_u64, MINUTE, source.read(true))
                .await
        })
    };
    source.gate.wait_reached(1).await;
    // The writer: the row changes, then the entry is removed.
    source.write(2);
    cache.remove("rows", &9_u64).await.unwrap();
    source.gate.open();
    assert_eq!(computing.await.unwrap(), 1);
    // The computation read before the removal: its value must not be served.
    assert_eq!(cache.get::<u64>("rows", &9_u64).await.unwrap(), None);
    let value = cache
        .get_or_insert_with("rows", &9_u64, MINUTE, source.read(false))
        .await;
    assert_eq!(value, 2);
}

#[tokio::test]
async fn a_namespace_invalidation_removes_what_set_stored() {
    let cache = Cache::memory();
    cache.set("flags", "beta", &true, MINUTE).await.unwrap();
    cache.invalidate_namespace("flags").await.unwrap();
    assert_eq!(cache.get::<bool>("flags", "beta").await.unwrap(), None);
}

#[tokio::test]
async fn the_api_fails_open_where_it_computes_and_reports_where_it_does_not() {
    let backend = Arc::new(Faulty::new(Arc::new(MemoryBackend::new())));
    let cache = shared(backend.clone());
    backend.set_all(Mode::Fail);
    let (value, outcome) = cache
        .get_or_insert_with_outcome("down", "k", MINUTE, async { 5_u8 })
        .await;
    assert_eq!((value, outcome), (5, CallOutcome::Uncached));
    assert!(matches!(
        cache.get::<u8>("down", "k").await,
        Err(Error::Backend { .. } | Error::CircuitOpen { .. })
    ));
    assert!(cache.set("down", "k", &1_u8, MINUTE).await.is_err());
    assert!(cache.remove("down", "k").await.is_err());
    assert!(cache.stats().namespace("down").errors >= 3);
}

#[tokio::test]
async fn bad_names_and_ttls_are_errors_that_say_what_is_allowed() {
    let cache = Cache::memory();
    let error = cache.get::<u8>("no spaces", "k").await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidName {
                what: "namespace",
                ..
            }
        ),
        "{error}"
    );
    for ttl in [Duration::ZERO, Duration::from_millis(500), MAX_TTL + MINUTE] {
        let error = cache.set("ok", "k", &1_u8, ttl).await.unwrap_err();
        assert!(
            error.to_string().contains("between 1 s and 365 days"),
            "{error}"
        );
    }
    // Where the API computes, misuse runs the computation uncached.
    let (value, outcome) = cache
        .get_or_insert_with_outcome("no spaces", "k", MINUTE, async { 1_u8 })
        .await;
    assert_eq!((value, outcome), (1, CallOutcome::Uncached));
    let (_, outcome) = cache
        .get_or_insert_with_outcome("ok", "k", Duration::ZERO, async { 1_u8 })
        .await;
    assert_eq!(outcome, CallOutcome::Uncached);
}

#[tokio::test]
async fn the_current_cache_serves_the_api() {
    let cache = Cache::memory();
    cache
        .scope(async {
            cache_runtime::current()
                .set("scoped", "k", &1_u8, MINUTE)
                .await
                .unwrap();
        })
        .await;
    assert_eq!(cache.get::<u8>("scoped", "k").await.unwrap(), Some(1));
}

// Refresh, bypass and outcome.

// Tests run in parallel: each uses its own SKUs.
static PRICES: Mutex<BTreeMap<u32, (u64, u32)>> = Mutex::new(BTreeMap::new());
static PRICE_GATE: Gate = Gate::new_const();

fn set_price(sku: u32, price: u64) {
    PRICES.lock().unwrap().entry(sku).or_default().0 = price;
}

fn price_runs(sku: u32) -> u32 {
    PRICES.lock().unwrap().get(&sku).map_or(0, |p| p.1)
}

#[cached(namespace = "prices")]
async fn price(sku: u32, slow: bool) -> u64 {
    let price = {
        let mut prices = PRICES.lock().unwrap();
        let entry = prices.entry(sku).or_default();
        entry.1 += 1;
        entry.0
    };
    if slow {
        PRICE_GATE.pass().await;
    }
    price
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_uncached_and_with_outcome() {
    let cache = Cache::memory();
    cache
        .scope(async {
            set_price(1, 101);
            set_price(2, 102);
            assert_eq!(
                cache_runtime::with_outcome(price(1, false)).await,
                (101, Some(CallOutcome::Miss))
            );
            assert_eq!(
                cache_runtime::with_outcome(price(1, false)).await,
                (101, Some(CallOutcome::Hit))
            );

            // The price changes: a refresh runs the body and replaces the entry.
            set_price(1, 201);
            assert_eq!(cache_runtime::refresh(price(1, false)).await, 201);
            assert_eq!(price_runs(1), 2);
            assert_eq!(
                cache_runtime::with_outcome(price(1, false)).await,
                (201, Some(CallOutcome::Hit))
            );

            // Bypassed: the body runs, the cache is neither read nor written.
            set_price(1, 301);
            set_price(2, 302);
            let stats = cache.stats().namespace("prices");
            assert_eq!(cache_runtime::uncached(price(1, false)).await, 301);
            assert_eq!(cache_runtime::uncached(price(2, false)).await, 302);
            assert_eq!(cache.stats().namespace("prices"), stats);
            assert_eq!(price(1, false).await, 201);
            assert_eq!(
                cache_runtime::with_outcome(price(2, false)).await,
                (302, Some(CallOutcome::Miss))
            );
            assert_eq!((price_runs(1), price_runs(2)), (3, 2));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_does_not_store_over_an_invalidation_during_its_body() {
    let cache = Cache::memory();
    cache
        .scope(async {
            set_price(7, 17);
            PRICE_GATE.open();
            assert_eq!(price(7, true).await, 17);
            PRICE_GATE.close();
            let reached = PRICE_GATE.reached.load(SeqCst);
            let refresh = {
                let cache = cache.clone();
                tokio::spawn(
                    async move { cache.scope(cache_runtime::refresh(price(7, true))).await },
                )
            };
            PRICE_GATE.wait_reached(reached + 1).await;
            // The writer: the price changes and the entry is invalidated while
            // the refresh's body holds the old price.
            set_price(7, 27);
            price_invalidate(&7, &true).await.unwrap();
            PRICE_GATE.open();
            assert_eq!(refresh.await.unwrap(), 17);
            assert_eq!(
                cache_runtime::with_outcome(price(7, true)).await,
                (27, Some(CallOutcome::Miss))
            );
        })
        .await;
}

static OUTER_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "outer")]
async fn outer(id: u32) -> u64 {
    OUTER_RUNS.fetch_add(1, SeqCst);
    // A cached call nested in the body runs as usual: a request is for
    // `outer` only.
    price(id, false).await
}

#[tokio::test]
async fn a_request_is_for_the_first_cached_call_only() {
    let cache = Cache::memory();
    cache
        .scope(async {
            set_price(5, 1005);
            assert_eq!(price(5, false).await, 1005);
            set_price(5, 2005);
            // Refreshing `outer` re-runs its body, whose `price` call hits.
            assert_eq!(cache_runtime::refresh(outer(5)).await, 1005);
            assert_eq!(price_runs(5), 1);
            assert_eq!(cache_runtime::uncached(outer(5)).await, 1005);
            assert_eq!(
                cache_runtime::with_outcome(outer(5)).await,
                (1005, Some(CallOutcome::Hit))
            );
            assert_eq!(OUTER_RUNS.load(SeqCst), 2);
        })
        .await;
}

#[tokio::test]
async fn with_outcome_reports_an_uncached_call_when_the_backend_fails() {
    let backend = Arc::new(Faulty::new(Arc::new(MemoryBackend::new())));
    let cache = shared(backend.clone());
    backend.set_all(Mode::Fail);
    set_price(4, 4);
    let (value, outcome) = cache
        .scope(cache_runtime::with_outcome(price(4, false)))
        .await;
    assert_eq!((value, outcome), (4, Some(CallOutcome::Uncached)));
    // A refresh through a failing backend still returns the body's value.
    assert_eq!(
        cache.scope(cache_runtime::refresh(price(4, false))).await,
        4
    );
}

struct Repo {
    base: u64,
}

impl Repo {
    #[cached(namespace = "repo")]
    async fn sum(&self, mut a: u64, pair: (u64, u64)) -> u64 {
        a += self.base;
        a + pair.0 + pair.1
    }
}

#[tokio::test]
async fn the_wrappers_work_on_methods() {
    let cache = Cache::memory();
    let repo = Repo { base: 100 };
    cache
        .scope(async {
            assert_eq!(
                cache_runtime::with_outcome(repo.sum(1, (2, 3))).await,
                (106, Some(CallOutcome::Miss))
            );
            assert_eq!(
                cache_runtime::with_outcome(repo.sum(1, (2, 3))).await,
                (106, Some(CallOutcome::Hit))
            );
            assert_eq!(cache_runtime::refresh(repo.sum(1, (2, 3))).await, 106);
            assert_eq!(cache_runtime::uncached(repo.sum(1, (2, 4))).await, 107);
        })
        .await;
}

#[tokio::test]
async fn the_wrappers_reach_the_programmatic_api_and_say_none_without_a_cached_call() {
    let cache = Cache::memory();
    let compute = |v: u8| cache.get_or_insert_with("api-modes", "k", MINUTE, async move { v });
    assert_eq!(
        cache_runtime::with_outcome(compute(1)).await,
        (1, Some(CallOutcome::Miss))
    );
    assert_eq!(cache_runtime::refresh(compute(2)).await, 2);
    assert_eq!(cache_runtime::uncached(compute(3)).await, 3);
    assert_eq!(
        cache_runtime::with_outcome(compute(4)).await,
        (2, Some(CallOutcome::Hit))
    );
    assert_eq!(cache_runtime::with_outcome(async { 5 }).await, (5, None));
}

// From the review of the API (each seen failing before its fix).

#[tokio::test]
async fn reading_the_current_cache_leaves_the_request_for_the_call() {
    let cache = Cache::memory();
    cache
        .scope(async {
            set_price(11, 110);
            assert_eq!(price(11, false).await, 110);
            set_price(11, 111);
            let refreshed = cache_runtime::refresh(async {
                let _ = cache_runtime::stats();
                price_invalidate(&12, &false).await.unwrap();
                price(11, false).await
            })
            .await;
            assert_eq!(refreshed, 111);
            let (_, outcome) = cache_runtime::with_outcome(async {
                let _ = cache_runtime::current();
                price(11, false).await
            })
            .await;
            assert_eq!(outcome, Some(CallOutcome::Hit));
        })
        .await;
}

#[tokio::test]
async fn wrappers_compose_with_each_other_and_with_scopes() {
    let cache = Cache::memory();
    set_price(13, 130);
    assert_eq!(cache.scope(price(13, false)).await, 130);
    set_price(13, 131);
    // A scope inside a refresh: still a refresh, on the scope's cache.
    assert_eq!(
        cache_runtime::refresh(cache.scope(price(13, false))).await,
        131
    );
    set_price(13, 132);
    let (value, outcome) =
        cache_runtime::with_outcome(cache_runtime::refresh(cache.scope(price(13, false)))).await;
    assert_eq!((value, outcome), (132, Some(CallOutcome::Refreshed)));
    let (value, outcome) = cache
        .scope(cache_runtime::with_outcome(cache_runtime::with_outcome(
            price(13, false),
        )))
        .await;
    assert_eq!(
        (value.0, value.1, outcome),
        (132, Some(CallOutcome::Hit), Some(CallOutcome::Hit))
    );
}

#[tokio::test]
async fn api_keys_of_different_types_never_meet() {
    let cache = Cache::memory();
    cache
        .set("acl", &(1_u8, 42_u8), &true, MINUTE)
        .await
        .unwrap();
    assert_eq!(cache.get::<bool>("acl", "*").await.unwrap(), None);
    assert_eq!(cache.get::<bool>("acl", &Some(42_u8)).await.unwrap(), None);
    cache.set("acl", "", &false, MINUTE).await.unwrap();
    assert_eq!(cache.get::<bool>("acl", &0_u64).await.unwrap(), None);
    // Owned and borrowed strings are one key type, as for functions.
    assert_eq!(
        cache.get::<bool>("acl", &String::new()).await.unwrap(),
        Some(false)
    );
    assert_eq!(
        cache.get::<bool>("acl", &(1_u8, 42_u8)).await.unwrap(),
        Some(true)
    );
}

#[tokio::test]
async fn namespaces_from_request_data_do_not_grow_the_counters_without_bound() {
    let cache = Cache::memory();
    let n = cache_runtime::MAX_COUNTED_NAMESPACES + 500;
    for i in 0..n {
        let _ = cache.get::<u8>(&format!("tenant-{i}"), "k").await.unwrap();
    }
    let stats = cache.stats();
    assert_eq!(
        stats.namespaces.len(),
        cache_runtime::MAX_COUNTED_NAMESPACES + 1
    );
    assert_eq!(stats.namespace(cache_runtime::OVERFLOW).misses, 500);
    assert_eq!(stats.total().misses, n as u64);
}
