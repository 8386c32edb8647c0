//! Freshness options (issue 13): `none_ttl`, a shorter TTL for a cached
//! `None`, and TTL jitter, cache-wide (`ttl_jitter`, `CACHE_TTL_JITTER`) and
//! per function. The TTLs are read back from a real Redis (`PTTL`), which
//! stores exactly what the cache asked for.

mod common;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CallOutcome, RedisConfig, cached, with_outcome};
use cache_tests::redis_server::RedisServer;
use common::Runs;

fn cache_at(server: &RedisServer, jitter: Option<u8>) -> Cache {
    let builder = Cache::builder().redis(RedisConfig::new(&server.url()).unwrap());
    match jitter {
        Some(percent) => builder.ttl_jitter(percent),
        None => builder,
    }
    .build()
    .unwrap()
}

/// The `PTTL` of every key of `function` in `namespace`, in milliseconds.
fn pttls(server: &RedisServer, namespace: &str, function: &str) -> Vec<i64> {
    let pattern = format!("cache:{{{namespace}:*}}:*{function}*");
    let mut out: Vec<i64> = server
        .cli(&["--scan", "--pattern", &pattern])
        .lines()
        .map(|key| server.cli(&["PTTL", key]).trim().parse().unwrap())
        .collect();
    out.sort_unstable();
    out
}

static RUNS: LazyLock<Runs> = LazyLock::new(Default::default);

/// `None` for 0: there is no user 0.
#[cached(namespace = "users", ttl = 600, none_ttl = 5)]
async fn find_user(id: u64) -> Option<String> {
    RUNS.record(id);
    (id != 0).then(|| format!("user {id}"))
}

#[cached(namespace = "accounts", ttl = 600, none_ttl = "5s")]
async fn load_account(id: u64) -> Result<Option<String>, String> {
    RUNS.record(1_000 + id);
    Ok((id != 0).then(|| format!("account {id}")))
}

#[tokio::test]
async fn a_cached_none_gets_its_own_ttl() {
    let server = RedisServer::start();
    let cache = cache_at(&server, Some(0));
    cache
        .scope(async {
            assert_eq!(find_user(0).await, None);
            assert_eq!(find_user(7).await.as_deref(), Some("user 7"));
            // Both are cached: the `None` too, which `Option` alone is not.
            assert_eq!(
                with_outcome(find_user(0)).await,
                (None, Some(CallOutcome::Hit))
            );
            assert_eq!(RUNS.of(0), 1);
            assert_eq!(with_outcome(find_user(7)).await.1, Some(CallOutcome::Hit));

            assert_eq!(load_account(0).await, Ok(None));
            assert_eq!(load_account(3).await, Ok(Some("account 3".to_owned())));
            assert_eq!(
                with_outcome(load_account(0)).await.1,
                Some(CallOutcome::Hit)
            );
            assert_eq!(RUNS.of(1_000), 1);
        })
        .await;
    for (namespace, function) in [("users", "find_user"), ("accounts", "load_account")] {
        let ttls = pttls(&server, namespace, function);
        assert_eq!(ttls.len(), 2, "{function}: {ttls:?}");
        assert!(
            (4_000..=5_000).contains(&ttls[0]),
            "{function}: the None's TTL is {} ms, not 5 s",
            ttls[0]
        );
        assert!(
            (599_000..=600_000).contains(&ttls[1]),
            "{function}: the value's TTL is {} ms, not 600 s",
            ttls[1]
        );
    }
}

#[tokio::test]
async fn a_none_expires_after_its_own_ttl_and_is_computed_again() {
    #[cached(namespace = "short-none", ttl = 600, none_ttl = 1)]
    async fn absent(id: u64) -> Option<u64> {
        RUNS.record(2_000 + id);
        None
    }
    let server = RedisServer::start();
    let cache = cache_at(&server, Some(0));
    cache
        .scope(async {
            assert_eq!(absent(1).await, None);
            assert_eq!(with_outcome(absent(1)).await.1, Some(CallOutcome::Hit));
            tokio::time::sleep(Duration::from_millis(1_300)).await;
            assert_eq!(with_outcome(absent(1)).await.1, Some(CallOutcome::Miss));
            assert_eq!(RUNS.of(2_001), 2);
        })
        .await;
}

#[cached(namespace = "spread", ttl = 100)]
async fn by_default(id: u64) -> u64 {
    id
}

#[cached(namespace = "spread", ttl = 100, ttl_jitter = "40%")]
async fn wide(id: u64) -> u64 {
    id
}

#[cached(namespace = "spread", ttl = 100, ttl_jitter = "0%")]
async fn exact(id: u64) -> u64 {
    id
}

const KEYS: u64 = 200;

/// Writes `KEYS` entries of each function on a cache with `jitter`;
/// returns when it started: the TTLs run down from then on.
async fn write_all(server: &RedisServer, jitter: Option<u8>) -> Instant {
    let started = Instant::now();
    let cache = cache_at(server, jitter);
    cache
        .scope(async {
            for id in 0..KEYS {
                by_default(id).await;
                wide(id).await;
                exact(id).await;
            }
        })
        .await;
    started
}

/// The milliseconds since `started`, and a little more: how far the TTLs
/// written since may have run down.
fn since(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap() + 100
}

/// Checks that `ttls` (ms) lie in `[low, high]` seconds and spread over it:
/// the lowest within the first tenth, the highest within the last, give or
/// take the `slack` ms the writes took.
fn assert_spread(ttls: &[i64], low: i64, high: i64, slack: i64, what: &str) {
    assert_eq!(ttls.len(), KEYS as usize, "{what}");
    let (min, max) = (ttls[0], ttls[ttls.len() - 1]);
    let (low, high) = (low * 1_000, high * 1_000);
    assert!(min >= low - slack && max <= high, "{what}: {min}..{max} ms");
    let tenth = (high - low) / 10;
    assert!(
        min < low + tenth && max > high - tenth - slack,
        "{what}: {min}..{max} ms do not spread over {low}..{high}"
    );
}

#[tokio::test]
async fn ttls_spread_as_configured_and_a_function_wins_over_the_cache() {
    // The default: up to 10 % off.
    let server = RedisServer::start();
    let started = write_all(&server, None).await;
    let ttls = |function| pttls(&server, "spread", function);
    let default = ttls("by_default");
    assert_spread(&default, 90, 100, since(started), "default");
    let wide_ttls = ttls("wide");
    assert_spread(&wide_ttls, 60, 100, since(started), "40 %");
    assert!(ttls("exact")[0] >= 100_000 - since(started), "0 %");

    // The cache's 30 %; the functions' own jitter still wins.
    let server = RedisServer::start();
    let started = write_all(&server, Some(30)).await;
    let ttls = |function| pttls(&server, "spread", function);
    let default = ttls("by_default");
    assert_spread(&default, 70, 100, since(started), "cache 30 %");
    let wide_ttls = ttls("wide");
    assert_spread(&wide_ttls, 60, 100, since(started), "40 % over 30 %");
    assert!(
        ttls("exact")[0] >= 100_000 - since(started),
        "0 % over 30 %"
    );

    // Off for the cache.
    let server = RedisServer::start();
    let started = write_all(&server, Some(0)).await;
    assert!(pttls(&server, "spread", "by_default")[0] >= 100_000 - since(started));
}

#[tokio::test]
async fn the_programmatic_api_is_jittered_too() {
    let server = RedisServer::start();
    let cache = cache_at(&server, Some(50));
    let started = Instant::now();
    for id in 0..KEYS {
        cache
            .set("api", &id, &id, Duration::from_secs(100))
            .await
            .unwrap();
    }
    let pattern = "cache:{api:*}:*";
    let mut ttls: Vec<i64> = server
        .cli(&["--scan", "--pattern", pattern])
        .lines()
        .filter(|key| !key.ends_with(":gen"))
        .map(|key| server.cli(&["PTTL", key]).trim().parse().unwrap())
        .collect();
    ttls.sort_unstable();
    assert_spread(&ttls, 50, 100, since(started), "set, 50 %");
}

#[test]
fn a_jitter_out_of_range_is_refused() {
    let err = Cache::builder()
        .ttl_jitter(51)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("from 0 to 50 percent, not 51"), "{err}");
}

/// Whether `quote`'s source is down, per id (tests run in parallel).
static FAILING: LazyLock<std::sync::Mutex<std::collections::HashSet<u64>>> =
    LazyLock::new(Default::default);

fn source_down(id: u64, down: bool) {
    let mut failing = FAILING.lock().unwrap();
    if down {
        failing.insert(id);
    } else {
        failing.remove(&id);
    }
}

/// A quote that lives 1 s; when its source fails, the last good one is
/// returned for 2 s more.
#[cached(namespace = "quotes", ttl = 1, ttl_jitter = "0%", stale_if_error = 2)]
async fn quote(id: u64) -> Result<String, String> {
    RUNS.record(2_000 + id);
    if FAILING.lock().unwrap().contains(&id) {
        return Err(format!("source down for {id}"));
    }
    Ok(format!("quote {id} #{}", RUNS.of(2_000 + id)))
}

/// The caches `stale_if_error` is tried on: memory, and a real Redis.
fn stale_caches() -> Vec<(Cache, Option<RedisServer>)> {
    let server = RedisServer::start();
    let redis = cache_at(&server, Some(0));
    vec![(Cache::memory(), None), (redis, Some(server))]
}

#[tokio::test]
async fn stale_if_error_returns_the_last_good_value_for_its_grace_then_the_error() {
    for (round, (cache, server)) in stale_caches().into_iter().enumerate() {
        let id = 10 + round as u64;
        cache
            .scope(async {
                assert_eq!(quote(id).await, Ok(format!("quote {id} #1")));
                // Within the TTL: a hit, the body does not run.
                let (hit, outcome) = with_outcome(quote(id)).await;
                assert_eq!(
                    (hit, outcome),
                    (Ok(format!("quote {id} #1")), Some(CallOutcome::Hit))
                );
                // Kept for TTL + grace.
                if let Some(server) = &server {
                    let kept = pttls(server, "quotes", "quote");
                    assert!((2_500..=3_000).contains(&kept[0]), "{kept:?} ms");
                }
                tokio::time::sleep(Duration::from_millis(1_100)).await;
                // Past the TTL, the source down: the last good value.
                source_down(id, true);
                let (stale, outcome) = with_outcome(quote(id)).await;
                assert_eq!(stale, Ok(format!("quote {id} #1")));
                assert_eq!(outcome, Some(CallOutcome::Stale));
                assert_eq!(RUNS.of(2_000 + id), 2, "the body ran and failed");
                // The source back: a fresh value, stored.
                source_down(id, false);
                assert_eq!(quote(id).await, Ok(format!("quote {id} #3")));
                assert_eq!(quote(id).await, Ok(format!("quote {id} #3")));
                // Past TTL + grace, the source down: the error passes.
                tokio::time::sleep(Duration::from_millis(3_100)).await;
                source_down(id, true);
                assert_eq!(quote(id).await, Err(format!("source down for {id}")));
                source_down(id, false);
            })
            .await;
    }
}

#[tokio::test]
async fn an_invalidation_ends_the_grace_of_stale_if_error() {
    for (round, (cache, _server)) in stale_caches().into_iter().enumerate() {
        let (entry, namespace) = (20 + round as u64, 30 + round as u64);
        cache
            .scope(async {
                assert!(quote(entry).await.is_ok());
                assert!(quote(namespace).await.is_ok());
                tokio::time::sleep(Duration::from_millis(1_100)).await;
                quote_invalidate(&entry).await.unwrap();
                source_down(entry, true);
                assert_eq!(
                    quote(entry).await,
                    Err(format!("source down for {entry}")),
                    "a value from before an entry invalidation was returned"
                );
                cache_runtime::invalidate_namespace(QUOTE_NAMESPACE)
                    .await
                    .unwrap();
                source_down(namespace, true);
                assert_eq!(
                    quote(namespace).await,
                    Err(format!("source down for {namespace}")),
                    "a value from before a namespace invalidation was returned"
                );
            })
            .await;
    }
}

/// Like `quote`, with a source that takes 300 ms to fail.
#[cached(namespace = "quotes", ttl = 1, ttl_jitter = "0%", stale_if_error = 30)]
async fn slow_quote(id: u64) -> Result<String, String> {
    RUNS.record(3_000 + id);
    if FAILING.lock().unwrap().contains(&id) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        return Err(format!("source down for {id}"));
    }
    Ok(format!("slow quote {id}"))
}

/// An invalidation that returns while the failing body runs: the call must
/// not return the value it invalidated.
#[tokio::test]
async fn an_invalidation_during_the_failing_body_is_not_undone() {
    for (round, (cache, _server)) in stale_caches().into_iter().enumerate() {
        let id = 40 + round as u64;
        cache
            .scope(async {
                assert!(slow_quote(id).await.is_ok());
                tokio::time::sleep(Duration::from_millis(1_100)).await;
                source_down(id, true);
                let call = tokio::spawn({
                    let cache = cache.clone();
                    async move { cache.scope(slow_quote(id)).await }
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                slow_quote_invalidate(&id).await.unwrap();
                assert_eq!(
                    call.await.unwrap(),
                    Err(format!("source down for {id}")),
                    "a value invalidated while the body ran was returned"
                );
            })
            .await;
    }
}

/// During an outage, concurrent callers of one key in a process get the
/// last good value together, not one after another behind each other's
/// failing body. (Callers that join while a round runs lead the next one:
/// two rounds at most, decision 0010.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_get_the_stale_value_together() {
    for (round, (cache, _server)) in stale_caches().into_iter().enumerate() {
        let id = 50 + round as u64;
        assert!(cache.scope(slow_quote(id)).await.is_ok());
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        source_down(id, true);
        let started = Instant::now();
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.scope(with_outcome(slow_quote(id))).await })
            })
            .collect();
        for call in calls {
            let (value, outcome) = call.await.unwrap();
            assert_eq!(value, Ok(format!("slow quote {id}")));
            assert_eq!(outcome, Some(CallOutcome::Stale));
        }
        let took = started.elapsed();
        let failed = RUNS.of(3_000 + id) - 1;
        // One failing body is 300 ms; eight in a row were 2.4 s.
        assert!(
            failed <= 2 && took < Duration::from_millis(1_500),
            "8 callers: {failed} failing runs, {took:?}"
        );
    }
}
