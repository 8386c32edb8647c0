//! Regression tests for the Redis backend's edges (issue 10): TTLs of shard
//! states, eviction of what a store is conditioned on, keys of another Redis
//! type, and a call without a Tokio runtime. Each test starts its own
//! `redis-server`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, CircuitConfig, RedisConfig, cached};
use cache_tests::redis_server::RedisServer;
use common::{Runs, Source, Truth};

fn cache_at(url: &str) -> Cache {
    Cache::builder()
        .redis(RedisConfig::new(url).unwrap())
        .build()
        .unwrap()
}

/// The keys in Redis matching `pattern`.
fn keys(server: &RedisServer, pattern: &str) -> Vec<String> {
    let out = server.cli(&["--scan", "--pattern", pattern]);
    let mut keys: Vec<String> = out.lines().map(str::to_owned).collect();
    keys.sort();
    keys
}

fn ttl(server: &RedisServer, key: &str) -> i64 {
    server.cli(&["TTL", key]).trim().parse().unwrap()
}

// 9. The generation TTL (7 days) was refreshed only on create, bump and
// store: longer function TTLs were silently capped.

#[cached(namespace = "long-lived", ttl = "30days")]
async fn long_lived(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn a_shard_state_outlives_an_entry_with_a_long_ttl() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url());
    cache.scope(long_lived(1)).await;
    let [entry] = &keys(&server, "cache:{long-lived:*}:*long_lived*")[..] else {
        panic!("one entry expected")
    };
    let shard = format!("{}:gen", &entry[..=entry.find('}').unwrap()]);
    let thirty_days = 30 * 24 * 3600;
    // The default jitter takes up to 10 % off.
    let entry_ttl = ttl(&server, entry);
    assert!(
        (thirty_days * 9 / 10 - 60..=thirty_days).contains(&entry_ttl),
        "{entry_ttl}"
    );
    assert!(
        ttl(&server, &shard) >= ttl(&server, entry),
        "the shard state ({} s) would expire before its entry ({} s)",
        ttl(&server, &shard),
        ttl(&server, entry)
    );
}

// 14. A lost tombstone let a pre-invalidation value back in; eviction can
// remove any key, the state a store is conditioned on included.

static EVICT: std::sync::LazyLock<Source> = std::sync::LazyLock::new(Source::default);

#[cached(namespace = "evicted", ttl = 60)]
async fn evicted(id: u64) -> u64 {
    EVICT.read(id == 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_shard_state_never_lets_an_old_value_in() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url());
    let slow = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(evicted(1)).await })
    };
    EVICT.gate.wait_reached(1).await;
    EVICT.write(1);
    cache.scope(evicted_invalidate(&1)).await.unwrap();
    // Redis evicts what the invalidation left (maxmemory-policy allkeys-lru):
    // first under the entry's own key, then the shard's state as well.
    let entry_key = keys(&server, "cache:{evicted:*}:*evicted*");
    for key in &entry_key {
        server.cli(&["DEL", key]);
    }
    EVICT.gate.open();
    assert_eq!(slow.await.unwrap(), 0);
    assert_eq!(
        cache.scope(evicted(1)).await,
        1,
        "the value computed before the invalidation was stored"
    );

    cache.scope(evicted_invalidate(&1)).await.unwrap();
    EVICT.gate.close();
    let slow = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(evicted(1)).await })
    };
    EVICT.gate.wait_reached(3).await;
    EVICT.write(2);
    cache.scope(evicted_invalidate(&1)).await.unwrap();
    for key in keys(&server, "cache:{evicted:*") {
        server.cli(&["DEL", &key]);
    }
    EVICT.gate.open();
    assert_eq!(slow.await.unwrap(), 1);
    assert_eq!(
        cache.scope(evicted(1)).await,
        2,
        "stored with its shard state evicted"
    );
}

/// The same under real eviction: a Redis of 1 MB with `allkeys-lru`, filled
/// by other traffic, under the ground-truth check of invalidations.
static TRUTH: std::sync::LazyLock<Truth> = std::sync::LazyLock::new(|| Truth::new(20));

#[cached(namespace = "truth", ttl = 60)]
async fn truth(key: usize) -> u64 {
    let version = TRUTH.versions[key].load(SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    version
}

#[cached(namespace = "filler", ttl = 60)]
async fn filler(id: u64) -> Vec<u8> {
    vec![(id % 251) as u8; 16 * 1024]
}

type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stale_reads_while_redis_evicts() {
    let server =
        RedisServer::start_with(&["--maxmemory", "1mb", "--maxmemory-policy", "allkeys-lru"]);
    let cache = cache_at(&server.url());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<Task> = Vec::new();
    let (c, halt) = (cache.clone(), stop.clone());
    tasks.push(Box::pin(async move {
        let mut n = 0usize;
        while !halt.load(SeqCst) {
            let key = n * 7 % 20;
            n += 1;
            TRUTH.write(key, c.scope(truth_invalidate(&key))).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }));
    for reader in 0..8usize {
        let (c, halt) = (cache.clone(), stop.clone());
        tasks.push(Box::pin(async move {
            let mut n = reader;
            while !halt.load(SeqCst) {
                let key = n * 13 % 20;
                n += 1;
                TRUTH.read(key, || c.scope(truth(key))).await;
            }
        }));
    }
    let (c, halt) = (cache.clone(), stop.clone());
    tasks.push(Box::pin(async move {
        let mut id = 0;
        while !halt.load(SeqCst) {
            c.scope(filler(id)).await;
            id += 1;
        }
    }));
    common::run_for(Duration::from_secs(3), tasks, &stop).await;
    let evicted: u64 = server
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let (reads, stale) = (TRUTH.reads.load(SeqCst), TRUTH.stale.load(SeqCst));
    println!("{reads} reads, {evicted} keys evicted, {stale} stale");
    assert!(
        evicted > 100,
        "Redis evicted only {evicted} keys: the test proved nothing"
    );
    assert_eq!(
        stale, 0,
        "reads after an invalidation returned saw an older version"
    );
}

// 16. A key of the wrong Redis type was never repaired: every call ran the
// body and no error was counted.

static TYPED_RUNS: std::sync::LazyLock<Runs> = std::sync::LazyLock::new(Default::default);

#[cached(namespace = "typed", ttl = 60)]
async fn typed(id: u64) -> u64 {
    TYPED_RUNS.record(id);
    id
}

#[tokio::test]
async fn a_key_of_another_redis_type_is_replaced() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url());
    cache.scope(typed(1)).await;
    let [entry] = &keys(&server, "cache:{typed:*}:*typed*")[..] else {
        panic!("one entry expected")
    };
    // Another program writes a hash where the entry is.
    server.cli(&["DEL", entry]);
    server.cli(&["HSET", entry, "field", "value"]);
    let runs = TYPED_RUNS.of(1);
    assert_eq!(cache.scope(typed(1)).await, 1);
    assert_eq!(TYPED_RUNS.of(1), runs + 1);
    assert_eq!(
        server.cli(&["TYPE", entry]).trim(),
        "string",
        "not replaced"
    );
    assert_eq!(cache.scope(typed(1)).await, 1);
    assert_eq!(TYPED_RUNS.of(1), runs + 1, "not a hit after the repair");
    assert_eq!(
        cache.stats().namespace("typed").errors,
        1,
        "the repair was not counted"
    );
}

// 17. Without a Tokio runtime, a Redis-backed call panicked ("there is no
// reactor running").

#[cached(namespace = "no-runtime", ttl = 60)]
async fn no_runtime(id: u64) -> u64 {
    id + 1
}

#[test]
fn a_redis_backed_call_outside_a_tokio_runtime_runs_uncached() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis(RedisConfig::new(&server.url()).unwrap())
        .circuit(CircuitConfig {
            threshold: 100,
            ..CircuitConfig::default()
        })
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(common::block_on(cache.scope(no_runtime(1))), 2);
    }
    let stats = cache.stats().namespace("no-runtime");
    assert_eq!((stats.hits, stats.misses), (0, 3));
    assert!(stats.errors >= 3, "{stats:?}");
}

// Found in review: shard states the scripts took for theirs and the backend
// did not (generation 0, leading zeros, more digits than a u64) failed every
// miss of the shard (and, through the circuit, every call), and an epoch at
// 2^53 stopped moving in Lua's doubles, so an invalidation no longer refused
// a racing store. Both sides now agree on what a state is, and anything else
// is replaced.

static POISON_RUNS: std::sync::LazyLock<Runs> = std::sync::LazyLock::new(Default::default);

#[cached(namespace = "poisoned", ttl = 60)]
async fn poisoned(id: u64) -> u64 {
    POISON_RUNS.record(id);
    id
}

#[tokio::test]
async fn shard_states_of_another_shape_are_replaced_not_failed_on() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url());
    for (id, foreign) in [
        (1, "0:0"),
        (2, "05:1"),
        (3, "5:01"),
        (4, "123456789012345678901234:0"),
        (5, "5:9007199254740992"),
    ] {
        for shard in 0..16 {
            server.cli(&[
                "SET",
                &format!("cache:{{poisoned:{shard:02x}}}:gen"),
                foreign,
            ]);
        }
        for _ in 0..3 {
            assert_eq!(cache.scope(poisoned(id)).await, id);
        }
        assert_eq!(
            POISON_RUNS.of(id),
            1,
            "{foreign}: no hit after the state was replaced"
        );
    }
    assert_eq!(cache.stats().namespace("poisoned").errors, 0);
}

static EPOCH: std::sync::LazyLock<Source> = std::sync::LazyLock::new(Source::default);

#[cached(namespace = "epochs", ttl = 60)]
async fn at_epoch(id: u64) -> u64 {
    EPOCH.read(id == 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_at_the_largest_epoch_still_refuses_a_racing_store() {
    let server = RedisServer::start();
    let (reader, writer) = (cache_at(&server.url()), cache_at(&server.url()));
    for (round, epoch) in ["999999999999999", "9007199254740992"]
        .into_iter()
        .enumerate()
    {
        let round = round as u64;
        // Cached, then its shard state set to the epoch under test.
        EPOCH.gate.open();
        writer.scope(at_epoch_invalidate(&1)).await.unwrap();
        assert_eq!(reader.scope(at_epoch(1)).await, 2 * round);
        let [entry] = &keys(&server, "cache:{epochs:*}:*at_epoch*")[..] else {
            panic!("one entry expected")
        };
        let gen_key = format!("{}:gen", &entry[..=entry.find('}').unwrap()]);
        let state = server.cli(&["GET", &gen_key]);
        let generation = state.trim().split(':').next().unwrap().to_owned();
        server.cli(&["SET", &gen_key, &format!("{generation}:{epoch}"), "KEEPTTL"]);
        // A slow miss reads the old truth; the write and its invalidation
        // return; the slow store must be refused.
        writer.scope(at_epoch_invalidate(&1)).await.unwrap();
        EPOCH.gate.close();
        let reached = EPOCH.gate.reached.load(SeqCst);
        let slow = {
            let reader = reader.clone();
            tokio::spawn(async move { reader.scope(at_epoch(1)).await })
        };
        EPOCH.gate.wait_reached(reached + 1).await;
        EPOCH.write(2 * round + 2);
        writer.scope(at_epoch_invalidate(&1)).await.unwrap();
        EPOCH.gate.open();
        assert_eq!(slow.await.unwrap(), 2 * round);
        assert_eq!(
            writer.scope(at_epoch(1)).await,
            2 * round + 2,
            "epoch {epoch}: the store that read before the invalidation landed"
        );
    }
}

// Found in review: an entry holding the empty string was never replaced (an
// empty version read as "no entry").

static EMPTY_RUNS: std::sync::LazyLock<Runs> = std::sync::LazyLock::new(Default::default);

#[cached(namespace = "emptied", ttl = 60)]
async fn emptied(id: u64) -> u64 {
    EMPTY_RUNS.record(id);
    id
}

#[tokio::test]
async fn an_empty_value_under_an_entry_key_is_replaced() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url());
    cache.scope(emptied(1)).await;
    let [entry] = &keys(&server, "cache:{emptied:*}:*emptied*")[..] else {
        panic!("one entry expected")
    };
    server.cli(&["SET", entry, ""]);
    for _ in 0..3 {
        assert_eq!(cache.scope(emptied(1)).await, 1);
    }
    assert_eq!(EMPTY_RUNS.of(1), 2, "the empty value was not replaced");
}
