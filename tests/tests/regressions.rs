//! Regression tests for the edges of G1-G6 found by the hardening review
//! (issue 10), on the in-memory backend and on backends that fail on purpose.
//! Each test is named after the bug it pins; the Redis-only ones live in
//! `redis.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Backend, Cache, CircuitConfig, MemoryBackend, cached};
use common::{Faulty, Gate, Mode, Op, Source, eventually};
use serde::{Deserialize, Serialize};

fn shared(backend: Arc<dyn Backend>) -> Cache {
    Cache::builder().shared_backend(backend).build().unwrap()
}

// 1. A cancelled half-open probe switched the cache off for good.

static PROBE_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "probe")]
async fn probed(id: u64) -> u64 {
    PROBE_RUNS.fetch_add(1, SeqCst);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_half_open_probe_does_not_switch_the_cache_off() {
    let backend = Arc::new(Faulty::new(Arc::new(MemoryBackend::new())));
    let cache = Cache::builder()
        .shared_backend(backend.clone())
        .circuit(CircuitConfig {
            threshold: 1,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(40),
        })
        .build()
        .unwrap();
    // Down: the circuit opens.
    backend.set_all(Mode::Fail);
    cache.scope(probed(1)).await;
    assert!(cache.health().await.circuit_open);
    // Frozen when the probe goes, and the probe's caller gives up (a request
    // timeout, a client that went away).
    backend.set_all(Mode::Hang);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cancelled = tokio::time::timeout(Duration::from_millis(30), cache.scope(probed(1))).await;
    assert!(cancelled.is_err(), "the probe was expected to hang");
    // Back: caching must resume by itself.
    backend.set_all(Mode::Pass);
    let hits = || cache.stats().namespace("probe").hits;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hits() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no hit after the backend came back: the cancelled probe left the circuit stuck"
        );
        cache.scope(probed(1)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = cache.health().await;
    assert!(health.healthy && !health.circuit_open, "{health:?}");
}

// 3. Generic code shared keys: the attribute cannot see an enclosing
// `impl<Key>`, and guessed "generic" from the shape of a type name.

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct UserId(u64);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct GroupId(u64);

struct Labels<Key>(std::marker::PhantomData<Key>);

impl<Key: Serialize + Send + Sync + 'static> Labels<Key> {
    #[cached(namespace = "labels")]
    async fn label(key: Key) -> String {
        let _ = key;
        std::any::type_name::<Key>()
            .rsplit("::")
            .next()
            .unwrap()
            .to_owned()
    }
}

#[tokio::test]
async fn generic_impls_never_share_keys() {
    Cache::memory()
        .scope(async {
            assert_eq!(Labels::<UserId>::label(UserId(5)).await, "UserId");
            assert_eq!(
                Labels::<GroupId>::label(GroupId(5)).await,
                "GroupId",
                "Labels<GroupId> got Labels<UserId>'s entry"
            );
            assert_eq!(Labels::<UserId>::label(UserId(5)).await, "UserId");
        })
        .await;
}

/// Two value types with one wire layout and different meanings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Celsius(f64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fahrenheit(f64);

trait Unit: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    fn of(reading: f64) -> Self;
}

impl Unit for Celsius {
    fn of(reading: f64) -> Self {
        Celsius(reading)
    }
}

impl Unit for Fahrenheit {
    fn of(reading: f64) -> Self {
        Fahrenheit(reading * 9.0 / 5.0 + 32.0)
    }
}

struct Sensor<Value>(std::marker::PhantomData<Value>);

static SENSOR_GATE: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(Gate::default);

impl<Value: Unit> Sensor<Value> {
    #[cached(namespace = "sensor")]
    async fn read(id: u64) -> Value {
        SENSOR_GATE.pass().await;
        Value::of(id as f64)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_another_value_type_gets_its_own_value() {
    let cache = Cache::memory();
    let celsius = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(Sensor::<Celsius>::read(100)).await })
    };
    SENSOR_GATE.wait_reached(1).await;
    let fahrenheit = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(Sensor::<Fahrenheit>::read(100)).await })
    };
    // Give the second call the time to queue behind the first, if it shares
    // its flight; then let both finish.
    eventually("the second call to miss", || {
        cache.stats().namespace("sensor").misses == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    SENSOR_GATE.open();
    assert_eq!(celsius.await.unwrap(), Celsius(100.0));
    assert_eq!(fahrenheit.await.unwrap(), Fahrenheit(212.0));
    assert_eq!(
        cache.scope(Sensor::<Fahrenheit>::read(100)).await,
        Fahrenheit(212.0)
    );
}

// 4. Methods of two `impl` blocks in one module with the same name collided;
// whichever ran second was uncached forever.

struct Orders;
struct Invoices;

static ORDER_RUNS: AtomicU32 = AtomicU32::new(0);
static INVOICE_RUNS: AtomicU32 = AtomicU32::new(0);

impl Orders {
    #[cached]
    async fn count() -> u64 {
        ORDER_RUNS.fetch_add(1, SeqCst);
        3
    }
}

impl Invoices {
    #[cached]
    async fn count() -> u64 {
        INVOICE_RUNS.fetch_add(1, SeqCst);
        4
    }
}

#[tokio::test]
async fn same_named_methods_of_two_impls_are_both_cached() {
    Cache::memory()
        .scope(async {
            for _ in 0..3 {
                assert_eq!(Orders::count().await, 3);
                assert_eq!(Invoices::count().await, 4);
            }
        })
        .await;
    assert_eq!(ORDER_RUNS.load(SeqCst), 1);
    assert_eq!(
        INVOICE_RUNS.load(SeqCst),
        1,
        "the second impl's method was not cached"
    );
}

// 5. Single-flight fell apart when the leader's store was refused or its
// result could not be shared: every waiter ran the body at once.

static STAMPEDE_RUNS: AtomicU32 = AtomicU32::new(0);
static STAMPEDE_GATE: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(Gate::default);

/// The first run waits at the gate; the others do not.
#[cached(namespace = "stampede-refused", ttl = 60)]
async fn hot(id: u64) -> u64 {
    if STAMPEDE_RUNS.fetch_add(1, SeqCst) == 0 {
        STAMPEDE_GATE.pass().await;
    }
    id * 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_recheck_the_shared_tier_when_another_process_stored_first() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let here = shared(backend.clone());
    let elsewhere = shared(backend);
    // The leader here misses and runs the body; 100 callers queue behind it.
    let leader = {
        let here = here.clone();
        tokio::spawn(async move { here.scope(hot(1)).await })
    };
    STAMPEDE_GATE.wait_reached(1).await;
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let here = here.clone();
            tokio::spawn(async move { here.scope(hot(1)).await })
        })
        .collect();
    eventually("the waiters to miss", || {
        here.stats().namespace("stampede-refused").misses == 101
    })
    .await;
    // Another process computes and stores first: the store here is refused.
    assert_eq!(elsewhere.scope(hot(1)).await, 10);
    STAMPEDE_GATE.open();
    assert_eq!(leader.await.unwrap(), 10);
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), 10);
    }
    assert_eq!(
        STAMPEDE_RUNS.load(SeqCst),
        2,
        "the body ran {} times for 101 callers here and 1 elsewhere",
        STAMPEDE_RUNS.load(SeqCst)
    );
}

static FAILING_IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
static FAILING_MAX: AtomicU32 = AtomicU32::new(0);
static FAILING_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "failing")]
async fn failing(id: u64) -> Result<u64, String> {
    let now = FAILING_IN_FLIGHT.fetch_add(1, SeqCst) + 1;
    FAILING_MAX.fetch_max(now, SeqCst);
    FAILING_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(2)).await;
    FAILING_IN_FLIGHT.fetch_sub(1, SeqCst);
    Err(format!("{id} is down"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_body_is_not_run_by_every_waiter_at_once() {
    let cache = Cache::memory();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.scope(failing(1)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), Err("1 is down".to_owned()));
    }
    assert_eq!(
        FAILING_RUNS.load(SeqCst),
        20,
        "every caller gets its own Err"
    );
    assert_eq!(
        FAILING_MAX.load(SeqCst),
        1,
        "several bodies of one key ran at once"
    );
}

static ABSENT_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "absent")]
async fn absent(id: u64) -> Option<u64> {
    ABSENT_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    (id == 0).then_some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_a_none_they_all_waited_for() {
    let cache = Cache::memory();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.scope(absent(1)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), None);
    }
    assert!(
        ABSENT_RUNS.load(SeqCst) <= 2,
        "the body ran {} times for 50 concurrent callers",
        ABSENT_RUNS.load(SeqCst)
    );
}

// 6. After a failed store, followers were handed the leader's value, even
// when they started after another process's invalidation had returned.

static FRESH: std::sync::LazyLock<Source> = std::sync::LazyLock::new(Source::default);

#[cached(namespace = "fresh")]
async fn fresh(id: u64) -> u64 {
    FRESH.read(id == 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_after_an_invalidation_elsewhere_never_gets_an_older_value() {
    let inner: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let faulty = Arc::new(Faulty::new(inner.clone()));
    let here = shared(faulty.clone());
    let elsewhere = shared(inner);
    // Stores fail here (a timeout), reads work.
    faulty.set(Op::Put, Mode::Fail);

    let slow = {
        let here = here.clone();
        tokio::spawn(async move { here.scope(fresh(1)).await })
    };
    FRESH.gate.wait_reached(1).await;
    // The write and its invalidation, in another process; it returns.
    FRESH.write(2);
    elsewhere
        .invalidate_namespace(FRESH_NAMESPACE)
        .await
        .unwrap();
    // A call that starts now must not get the computation that began before.
    let late = {
        let here = here.clone();
        tokio::spawn(async move { here.scope(fresh(1)).await })
    };
    eventually("the late call to miss", || {
        here.stats().namespace("fresh").misses == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    FRESH.gate.open();
    assert_eq!(slow.await.unwrap(), 0);
    assert_eq!(
        late.await.unwrap(),
        2,
        "a call after the invalidation got the old value"
    );
}

// 7. A body slower than the tombstone's TTL stored a pre-invalidation value.

static SLOW: std::sync::LazyLock<Source> = std::sync::LazyLock::new(Source::default);

#[cached(namespace = "slow-body", ttl = 1)]
async fn slow_body(id: u64) -> u64 {
    SLOW.read(id == 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_ttl_never_stores_a_value_an_invalidation_ended() {
    let cache = Cache::memory();
    let slow = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(slow_body(1)).await })
    };
    SLOW.gate.wait_reached(1).await;
    SLOW.write(2);
    cache.scope(slow_body_invalidate(&1)).await.unwrap();
    // Longer than the function's TTL, so that a tombstone would be gone.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    SLOW.gate.open();
    assert_eq!(slow.await.unwrap(), 0);
    assert_eq!(
        cache.scope(slow_body(1)).await,
        2,
        "the slow body's value, computed before the invalidation, was stored"
    );
}

// 10. The memory backend forgot every generation after 65,536 of them, and
// tombstones of keys never cached took capacity.

static KEPT_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "kept")]
async fn kept(id: u64) -> u64 {
    KEPT_RUNS.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn invalidating_many_namespaces_does_not_flush_the_others() {
    let cache = Cache::memory();
    cache.scope(kept(1)).await;
    for i in 0..5_000 {
        cache
            .invalidate_namespace(&format!("other-{i}"))
            .await
            .unwrap();
    }
    cache.scope(kept(1)).await;
    assert_eq!(
        KEPT_RUNS.load(SeqCst),
        1,
        "other namespaces' invalidations flushed this one"
    );
}

#[cached(namespace = "room")]
async fn room(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn invalidating_keys_never_cached_takes_no_room() {
    let backend = Arc::new(MemoryBackend::builder().max_entries(1_000).build());
    let cache = shared(backend.clone());
    cache
        .scope(async {
            for id in 0..32 {
                room(id).await;
            }
            for id in 1_000..3_000 {
                room_invalidate(&id).await.unwrap();
            }
        })
        .await;
    backend.run_pending_tasks();
    assert!(
        backend.entry_count() <= 32,
        "{} entries held after invalidating 2,000 keys that were never cached",
        backend.entry_count()
    );
}

// 13. An entry invalidation was lost under concurrency in the default
// in-memory cache: the tombstone's plain insert raced the conditional store.

static TRUTH: std::sync::LazyLock<common::Truth> =
    std::sync::LazyLock::new(|| common::Truth::new(50));

#[cached(namespace = "truth")]
async fn truth(key: usize) -> u64 {
    let version = TRUTH.versions[key].load(SeqCst);
    tokio::task::yield_now().await;
    version
}

type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entry_invalidations_are_never_lost_under_concurrency() {
    let cache = Cache::memory();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = (0..2usize).map(|writer| -> Task {
        let (cache, stop) = (cache.clone(), stop.clone());
        Box::pin(async move {
            let mut n = writer;
            while !stop.load(SeqCst) {
                let key = n * 7 % 50;
                n += 1;
                TRUTH.write(key, cache.scope(truth_invalidate(&key))).await;
                tokio::task::yield_now().await;
            }
        })
    });
    let readers = (0..32usize).map(|reader| -> Task {
        let (cache, stop) = (cache.clone(), stop.clone());
        Box::pin(async move {
            let mut n = reader;
            while !stop.load(SeqCst) {
                let key = n * 13 % 50;
                n += 1;
                TRUTH.read(key, || cache.scope(truth(key))).await;
            }
        })
    });
    common::run_for(Duration::from_secs(2), writers.chain(readers), &stop).await;
    assert!(
        TRUTH.reads.load(SeqCst) > 1000,
        "too few reads to mean anything"
    );
    assert_eq!(
        TRUTH.stale.load(SeqCst),
        0,
        "reads that started after an invalidation returned saw an older version"
    );
}

// 14. A lost tombstone let a pre-invalidation value back in: a bounded cache
// evicted it while a slow reader computed.

static EVICT: std::sync::LazyLock<Source> = std::sync::LazyLock::new(Source::default);

#[cached(namespace = "evicted")]
async fn evicted(id: u64) -> u64 {
    match id {
        0 => EVICT.read(true).await,
        id => id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_tombstone_never_lets_an_old_value_in() {
    let backend = Arc::new(MemoryBackend::builder().max_entries(16).build());
    let cache = shared(backend.clone());
    let slow = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(evicted(0)).await })
    };
    EVICT.gate.wait_reached(1).await;
    EVICT.write(2);
    cache.scope(evicted_invalidate(&0)).await.unwrap();
    // Other traffic evicts whatever the invalidation left.
    cache
        .scope(async {
            for id in 1..200 {
                evicted(id).await;
            }
        })
        .await;
    backend.run_pending_tasks();
    EVICT.gate.open();
    assert_eq!(slow.await.unwrap(), 0);
    assert_eq!(
        cache.scope(evicted(0)).await,
        2,
        "the value computed before the invalidation was stored"
    );
}

// 17. Without a Tokio runtime, a Redis-backed call panicked, while
// memory-backed calls worked. (The Redis case is in `redis.rs`; this pins
// that the memory backend needs no runtime at all.)

#[cached(namespace = "no-runtime")]
async fn no_runtime(id: u64) -> u64 {
    id + 1
}

#[test]
fn a_memory_backed_call_needs_no_tokio_runtime() {
    let cache = Cache::memory();
    assert_eq!(common::block_on(cache.scope(no_runtime(1))), 2);
    assert_eq!(common::block_on(cache.scope(no_runtime(1))), 2);
    assert_eq!(cache.stats().namespace("no-runtime").hits, 1);
}

// 18. Values bincode cannot decode (serde `untagged`) errored on every call.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(u64),
    Text(String),
}

static LOOSE_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "loose")]
async fn loose(id: u64) -> Loose {
    LOOSE_RUNS.fetch_add(1, SeqCst);
    Loose::Number(id)
}

#[tokio::test]
async fn a_value_type_that_cannot_round_trip_runs_uncached_with_one_error() {
    let cache = Cache::memory();
    for _ in 0..5 {
        assert_eq!(cache.scope(loose(1)).await, Loose::Number(1));
    }
    assert_eq!(LOOSE_RUNS.load(SeqCst), 5);
    let stats = cache.stats().namespace("loose");
    assert_eq!(
        (stats.hits, stats.misses, stats.errors),
        (0, 5, 1),
        "one error when the type is found not to round-trip, then plain misses"
    );
}

// 19. For generic and `impl Trait` key arguments the concrete type was part
// of the key, so invalidating with a `&str` missed an entry cached with a
// `String`.

static GREET_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "greet")]
async fn greet(name: impl Serialize + std::fmt::Display + Send) -> String {
    GREET_RUNS.fetch_add(1, SeqCst);
    format!("hello {name}")
}

#[tokio::test]
async fn str_like_key_arguments_share_their_entry() {
    Cache::memory()
        .scope(async {
            assert_eq!(greet(String::from("bob")).await, "hello bob");
            assert_eq!(greet("bob").await, "hello bob");
            assert_eq!(
                GREET_RUNS.load(SeqCst),
                1,
                "a &str missed the String's entry"
            );
            greet_invalidate(&"bob").await.unwrap();
            assert_eq!(greet(String::from("bob")).await, "hello bob");
            assert_eq!(
                GREET_RUNS.load(SeqCst),
                2,
                "the invalidation missed the entry"
            );
        })
        .await;
}

// 9. `default_ttl` / `CACHE_DEFAULT_TTL` had no upper bound: an out-of-range
// `PX` made every store fail.

#[test]
fn an_out_of_range_default_ttl_is_refused_where_it_is_configured() {
    for ttl in [
        Duration::from_secs(366 * 24 * 3600),
        Duration::from_secs(u64::MAX / 4),
    ] {
        let err = Cache::builder().default_ttl(ttl).build().unwrap_err();
        assert!(err.to_string().contains("at most 365 days"), "{err}");
    }
    let longest = Cache::builder().default_ttl(cache_runtime::MAX_TTL).build();
    assert!(longest.is_ok());
}

// 11. Logs carried keys, and keys carry argument values (e-mails, tokens).

#[cached(namespace = "private")]
async fn by_email(email: &str) -> String {
    email.len().to_string()
}

#[tokio::test]
async fn logs_name_the_namespace_and_function_not_the_arguments() {
    let (captured, guard) = common::capture_logs();
    let backend = Arc::new(Faulty::new(Arc::new(MemoryBackend::new())));
    backend.set_all(Mode::Fail);
    let cache = shared(backend.clone());
    cache.scope(by_email("ada.secret@example.com")).await;
    let logs = captured.text();
    assert!(logs.contains("cache read failed"), "nothing logged: {logs}");
    assert!(
        logs.contains("private") && logs.contains("by_email"),
        "{logs}"
    );
    assert!(
        !logs.contains("secret"),
        "an argument reached the logs: {logs}"
    );

    // Opt in, for debugging: the key is logged.
    drop(guard);
    let (captured, _guard) = common::capture_logs();
    let cache = Cache::builder()
        .shared_backend(backend)
        .log_keys(true)
        .build()
        .unwrap();
    cache.scope(by_email("ada.secret@example.com")).await;
    assert!(captured.text().contains("secret"), "{}", captured.text());
}

// 12. `.circuit(c).redis(r)` silently replaced `c`'s periods with Redis's.

#[test]
fn an_explicit_circuit_wins_in_any_order() {
    let circuit = CircuitConfig {
        threshold: 2,
        base: Duration::from_secs(7),
        cap: Duration::from_secs(70),
    };
    let redis = || cache_runtime::RedisConfig::new("redis://127.0.0.1:1/0").unwrap();
    let before = Cache::builder()
        .circuit(circuit)
        .redis(redis())
        .build()
        .unwrap();
    let after = Cache::builder()
        .redis(redis())
        .circuit(circuit)
        .build()
        .unwrap();
    for cache in [before, after] {
        let shown = format!("{cache:?}");
        assert!(
            shown.contains("base: 7s") && shown.contains("cap: 70s"),
            "{shown}"
        );
    }
    // Without one, the circuit follows Redis's reconnect backoff.
    let redis = redis().backoff(Duration::from_millis(20), Duration::from_secs(2));
    let shown = format!("{:?}", Cache::builder().redis(redis).build().unwrap());
    assert!(
        shown.contains("base: 20ms") && shown.contains("cap: 2s"),
        "{shown}"
    );
}

// Found by the model-based test: an invalidation companion that ran before
// the function's first call claimed its identity, and the function then
// counted as a second function with that identity: uncached for good.

static CLAIMED_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "claimed")]
async fn claimed(id: u64) -> u64 {
    CLAIMED_RUNS.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn an_invalidation_before_the_first_call_leaves_caching_on() {
    let cache = Cache::memory();
    cache
        .scope(async {
            claimed_invalidate(&1).await.unwrap();
            claimed(1).await;
            claimed(1).await;
        })
        .await;
    assert_eq!(CLAIMED_RUNS.load(SeqCst), 1, "the function ran uncached");
}

// Cancellation as a habit: a call dropped at any of its await points leaves
// nothing behind (no flight, write counter, circuit probe or lock held).

/// A backend that yields once before every operation: each one is an await
/// point a caller can be dropped at.
#[derive(Debug)]
struct Yielding(MemoryBackend);

#[async_trait::async_trait]
impl Backend for Yielding {
    fn name(&self) -> &'static str {
        "yielding"
    }
    async fn get(
        &self,
        key: &cache_runtime::CacheKey,
    ) -> cache_runtime::Result<cache_runtime::Lookup> {
        tokio::task::yield_now().await;
        self.0.get(key).await
    }
    async fn shard(&self, shard: &str) -> cache_runtime::Result<cache_runtime::ShardState> {
        tokio::task::yield_now().await;
        self.0.shard(shard).await
    }
    async fn put(
        &self,
        key: &cache_runtime::CacheKey,
        entry: cache_runtime::Stored,
        ttl: Duration,
        condition: &cache_runtime::PutCondition,
    ) -> cache_runtime::Result<cache_runtime::PutOutcome> {
        tokio::task::yield_now().await;
        self.0.put(key, entry, ttl, condition).await
    }
    async fn invalidate(&self, key: &cache_runtime::CacheKey) -> cache_runtime::Result<()> {
        tokio::task::yield_now().await;
        self.0.invalidate(key).await
    }
    async fn bump(&self, shards: &[String]) -> cache_runtime::Result<()> {
        tokio::task::yield_now().await;
        self.0.bump(shards).await
    }
    async fn ping(&self) -> cache_runtime::Result<()> {
        Ok(())
    }
    fn operation_timeout(&self) -> Option<Duration> {
        None
    }
}

static STEPPED_RUNS: std::sync::LazyLock<common::Runs> = std::sync::LazyLock::new(Default::default);

#[cached(namespace = "stepped")]
async fn stepped(id: u64) -> u64 {
    STEPPED_RUNS.record(id);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    id
}

#[tokio::test]
async fn a_call_cancelled_at_any_await_point_leaves_nothing_stuck() {
    let noop = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(noop);
    let mut completed_at = None;
    for polls in 0..64u64 {
        let backend = Arc::new(Yielding(MemoryBackend::new()));
        let cache = Cache::builder()
            .shared_backend(backend)
            .circuit(CircuitConfig {
                threshold: 1,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(1),
            })
            .build()
            .unwrap();
        // A cold call polled `polls` times, then dropped (unless it is done).
        let id = polls;
        {
            let mut call = std::pin::pin!(cache.scope(stepped(id)));
            for _ in 0..polls {
                if call.as_mut().poll(&mut cx).is_ready() {
                    completed_at.get_or_insert(polls);
                    break;
                }
            }
        }
        // Nothing is stuck: the key computes, is stored, and then hits; the
        // cache closes without waiting for a store that will never end.
        let runs = STEPPED_RUNS.of(id);
        let again = tokio::time::timeout(Duration::from_secs(5), cache.scope(stepped(id)));
        assert_eq!(again.await.expect("hung after a cancellation"), id);
        assert_eq!(cache.scope(stepped(id)).await, id);
        assert!(
            STEPPED_RUNS.of(id) <= runs + 1,
            "dropped after {polls} polls: caching did not work afterwards"
        );
        assert!(
            cache.close(Duration::from_secs(1)).await,
            "a store counter leaked after {polls} polls"
        );
    }
    let completed_at = completed_at.expect("the call never completed: raise the poll count");
    assert!(
        completed_at > 4,
        "the call had too few await points to mean anything"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

/// Found in review: the element allowance counted the fields of structs,
/// tuples and arrays, so ordinary values with many small fields could not be
/// read back (and their functions ran uncached).
#[test]
fn values_with_many_small_fields_round_trip() {
    fn round_trip<
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
    >(
        value: T,
    ) {
        for codec in [
            cache_runtime::CodecKind::Bincode,
            cache_runtime::CodecKind::Postcard,
        ] {
            let entry = cache_runtime::testing::seal(
                codec,
                cache_runtime::Generation(7),
                Duration::from_secs(60),
                &value,
            )
            .unwrap();
            let back: T = cache_runtime::testing::open(&entry, codec, cache_runtime::Generation(7))
                .unwrap_or_else(|e| panic!("{}: {e}", codec.name()));
            assert_eq!(back, value);
        }
    }
    round_trip(
        (0..100)
            .map(|i| Point { x: i % 3, y: -1 })
            .collect::<Vec<_>>(),
    );
    round_trip((0..100).map(|i| (i as u8, i % 2 == 0)).collect::<Vec<_>>());
    round_trip(vec![[1u8, 2, 3, 255]; 1000]);
    round_trip(vec![((), (), [(); 8]); 10]);
}

// Found in review: the normalization meant for key arguments' types (a
// `&str` is a `String`) was applied to type parameters too, so
// `f::<Box<X>>` shared `f::<X>`'s entry and `f::<&str>` `f::<String>`'s.

#[cached(namespace = "sizes")]
async fn size_of_t<T: 'static>() -> usize {
    std::mem::size_of::<T>()
}

#[cached(namespace = "names")]
async fn name_of<T: 'static>() -> String {
    std::any::type_name::<T>().to_owned()
}

#[tokio::test]
async fn type_parameters_count_exactly() {
    Cache::memory()
        .scope(async {
            assert_eq!(size_of_t::<[u8; 64]>().await, 64);
            assert_eq!(size_of_t::<Box<[u8; 64]>>().await, 8);
            assert_eq!(size_of_t::<std::rc::Rc<[u8; 64]>>().await, 8);
            assert_eq!(name_of::<String>().await, "alloc::string::String");
            assert_eq!(name_of::<&'static str>().await, "&str");
        })
        .await;
}

// Found in review: while the backend failed, a caller queued behind another
// call of its key looked the key up again after it, paying a second
// timeout. A round after a failed read computes without reading.

static OUTAGE: std::sync::LazyLock<Source> = std::sync::LazyLock::new(Source::default);

#[cached(namespace = "outage")]
async fn during_outage(id: u64) -> u64 {
    OUTAGE.read(id == 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_pays_no_second_timeout_while_the_backend_fails() {
    let backend = Arc::new(Faulty::with_timeout(
        Arc::new(MemoryBackend::new()),
        Duration::from_millis(50),
    ));
    let cache = Cache::builder()
        .shared_backend(backend.clone())
        .circuit(CircuitConfig {
            threshold: 100,
            ..CircuitConfig::default()
        })
        .build()
        .unwrap();
    backend.set(Op::Get, Mode::Hang);
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(during_outage(1)).await })
    };
    OUTAGE.gate.wait_reached(1).await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(during_outage(1)).await })
    };
    eventually("the waiter to miss", || {
        cache.stats().namespace("outage").misses == 2
    })
    .await;
    OUTAGE.gate.open();
    assert_eq!(leader.await.unwrap(), 0);
    assert_eq!(waiter.await.unwrap(), 0);
    assert_eq!(
        backend.gets_started(),
        2,
        "the waiter read the failing backend twice"
    );
}
