//! The Redis backend against real `redis-server`s, each test with its own:
//! conformance, the one-round-trip hit, TTLs on every key, broken entries,
//! authentication, ACLs, database isolation, cross-process invalidation, and
//! Redis dying or freezing mid-run (G4).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, RedisBackend, RedisConfig, cached};
use cache_tests::redis_server::RedisServer;
use common::peer_with_env;
use serde::{Deserialize, Serialize};

fn cache_at(url: &str) -> Cache {
    Cache::builder()
        .redis(RedisConfig::new(url).unwrap())
        .build()
        .unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn item(id: u64) -> Item {
    Item {
        id,
        name: format!("item-{id}"),
        tags: vec!["a".into(), "b".into()],
    }
}

static ITEM_RUNS: std::sync::LazyLock<common::Runs> = std::sync::LazyLock::new(Default::default);

#[cached(namespace = "items", ttl = 60)]
async fn get_item(id: u64) -> Result<Item, String> {
    ITEM_RUNS.record(id);
    Ok(item(id))
}

#[tokio::test]
async fn redis_backend_conforms() {
    let server = RedisServer::start();
    let backend = RedisBackend::connect(RedisConfig::new(&server.url()).unwrap())
        .await
        .unwrap();
    cache_runtime::testing::conformance::run_all(Arc::new(backend), "conf").await;
}

/// `tcp_nodelay(false)` only changes how commands are packed into segments:
/// the same suite, over a socket with Nagle's algorithm on.
#[tokio::test]
async fn redis_backend_conforms_with_nagle() {
    let server = RedisServer::start();
    let config = RedisConfig::new(&server.url()).unwrap().tcp_nodelay(false);
    assert!(format!("{config:?}").contains("tcp_nodelay: false"));
    let backend = RedisBackend::connect(config).await.unwrap();
    cache_runtime::testing::conformance::run_all(Arc::new(backend), "conf").await;
}

fn command_calls(server: &RedisServer) -> Vec<(String, u64)> {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "info" && !name.starts_with("config"))
        .collect()
}

#[tokio::test]
async fn a_hit_is_one_command_and_every_key_has_a_ttl() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url());
    cache
        .scope(async {
            let runs = ITEM_RUNS.of(1);
            assert_eq!(get_item(1).await, Ok(item(1)));
            assert_eq!(ITEM_RUNS.of(1), runs + 1);

            server.cli(&["CONFIG", "RESETSTAT"]);
            assert_eq!(get_item(1).await, Ok(item(1)));
            assert_eq!(ITEM_RUNS.of(1), runs + 1, "not a hit");
            assert_eq!(command_calls(&server), vec![("mget".to_owned(), 1)]);

            get_item(2).await.unwrap();
            get_item_invalidate(&2).await.unwrap();
            cache_runtime::invalidate_namespace("other").await.unwrap();
        })
        .await;

    let keys = server.cli(&["--scan"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(keys.len() >= 4, "{keys:?}");
    for key in keys {
        assert!(key.starts_with("cache:{"), "unreadable key {key}");
        let ttl: i64 = server.cli(&["TTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn garbage_written_with_redis_cli_is_a_miss_then_repaired() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url());
    cache.scope(get_item(3)).await.unwrap();
    let keys = server.cli(&["--scan", "--pattern", "cache:{items:*}:*get_item*"]);
    let key = keys.lines().next().expect("the entry's key").to_owned();
    server.cli(&["SET", &key, "garbage"]);

    let runs = ITEM_RUNS.of(3);
    assert_eq!(cache.scope(get_item(3)).await, Ok(item(3)));
    assert_eq!(ITEM_RUNS.of(3), runs + 1, "garbage was a hit");
    assert_eq!(cache.scope(get_item(3)).await, Ok(item(3)));
    assert_eq!(ITEM_RUNS.of(3), runs + 1, "not repaired");
    let stored = server.cli(&["GET", &key]);
    assert_ne!(stored.trim(), "garbage");
}

#[tokio::test]
async fn requirepass_authentication() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/0", server.port());
    let good = cache_at(&url);
    let runs = ITEM_RUNS.of(4);
    good.scope(get_item(4)).await.unwrap();
    good.scope(get_item(4)).await.unwrap();
    assert_eq!(ITEM_RUNS.of(4), runs + 1);
    assert!(good.health().await.healthy);

    // Without the password: every call still answers, uncached.
    let bad = cache_at(&server.url());
    assert_eq!(bad.scope(get_item(4)).await, Ok(item(4)));
    assert!(!bad.health().await.healthy);
    assert!(bad.stats().namespace("items").errors >= 1);
}

#[tokio::test]
async fn a_read_only_acl_user_still_gets_answers() {
    let server = RedisServer::start();
    server.cli(&[
        "ACL", "SETUSER", "reader", "on", ">readpw", "~*", "&*", "+@read", "+ping", "-@write",
    ]);
    let url = format!("redis://reader:readpw@127.0.0.1:{}/0", server.port());
    let cache = cache_at(&url);
    let runs = ITEM_RUNS.of(5);
    for _ in 0..3 {
        assert_eq!(cache.scope(get_item(5)).await, Ok(item(5)));
    }
    assert_eq!(
        ITEM_RUNS.of(5),
        runs + 3,
        "a store succeeded without write permission"
    );
    assert!(cache.stats().namespace("items").errors >= 1);
}

#[tokio::test]
async fn databases_are_isolated() {
    let server = RedisServer::start();
    let db0 = cache_at(&server.url_db(0));
    let db1 = cache_at(&server.url_db(1));
    let runs = ITEM_RUNS.of(6);
    db1.scope(get_item(6)).await.unwrap();
    db1.scope(get_item(6)).await.unwrap();
    assert_eq!(ITEM_RUNS.of(6), runs + 1);
    db0.scope(get_item(6)).await.unwrap();
    assert_eq!(ITEM_RUNS.of(6), runs + 2, "db 0 saw db 1's entry");
    assert_eq!(server.cli(&["-n", "0", "DBSIZE"]).trim(), "2");
    assert_eq!(server.cli(&["-n", "1", "DBSIZE"]).trim(), "2");
}

fn peer(server: &RedisServer, args: &[&str]) -> String {
    common::peer_at(&server.url(), args)
}

#[test]
fn invalidation_is_seen_by_other_processes() {
    let server = RedisServer::start();
    assert_eq!(peer(&server, &["get", "1", "old"]), "1=old ran");
    assert_eq!(
        peer(&server, &["get", "1", "new"]),
        "1=old hit",
        "another process did not hit"
    );
    peer(&server, &["invalidate", "1"]);
    assert_eq!(
        peer(&server, &["get", "1", "new"]),
        "1=new ran",
        "entry invalidation not seen"
    );
    assert_eq!(peer(&server, &["get", "1", "newer"]), "1=new hit");
    peer(&server, &["invalidate-namespace"]);
    assert_eq!(
        peer(&server, &["get", "1", "newer"]),
        "1=newer ran",
        "namespace invalidation not seen"
    );
}

fn outage_cache(url: &str, timeout: Duration) -> Cache {
    Cache::builder()
        .redis(
            RedisConfig::new(url)
                .unwrap()
                .response_timeout(timeout)
                .connect_timeout(timeout)
                .backoff(Duration::from_millis(50), Duration::from_millis(400)),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_then_restarted() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let cache = outage_cache(&server.url(), timeout);
    cache.scope(get_item(7)).await.unwrap();
    cache.scope(get_item(7)).await.unwrap();
    assert_eq!(cache.stats().namespace("items").hits, 1);

    server.stop();
    let start = Instant::now();
    for _ in 0..100 {
        assert_eq!(cache.scope(get_item(7)).await, Ok(item(7)));
    }
    let down = start.elapsed();
    println!("100 calls with Redis down: {down:?} (timeout {timeout:?})");
    // A behaviour bound, not a benchmark: paying the timeout on every call
    // would take 20 s.
    assert!(
        down < timeout * 100 / 4,
        "calls kept paying the timeout: {down:?}"
    );
    assert!(!cache.health().await.healthy);

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let hits_before = cache.stats().namespace("items").hits;
    while cache.stats().namespace("items").hits == hits_before {
        assert!(
            Instant::now() < deadline,
            "hits did not resume after the restart"
        );
        assert_eq!(cache.scope(get_item(7)).await, Ok(item(7)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cache.health().await.healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_costs_the_timeout_then_the_circuit_opens() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let cache = outage_cache(&server.url(), timeout);
    cache.scope(get_item(8)).await.unwrap();

    server.freeze();
    let mut slow = 0;
    let start = Instant::now();
    for _ in 0..30 {
        let call = Instant::now();
        assert_eq!(cache.scope(get_item(8)).await, Ok(item(8)));
        if call.elapsed() >= timeout / 2 {
            slow += 1;
        }
    }
    let total = start.elapsed();
    println!("30 calls with Redis frozen: {total:?}, {slow} paid the timeout");
    assert!(slow >= 1, "no call waited for the frozen server");
    assert!(
        slow <= 12,
        "{slow} of 30 calls paid the timeout: the circuit did not open"
    );
    assert!(cache.health().await.circuit_open);

    server.thaw();
    let deadline = Instant::now() + Duration::from_secs(10);
    let hits_before = cache.stats().namespace("items").hits;
    while cache.stats().namespace("items").hits == hits_before {
        assert!(
            Instant::now() < deadline,
            "caching did not resume after the thaw"
        );
        cache.scope(get_item(8)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_down_at_startup_the_service_starts() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let cache = outage_cache(&url, Duration::from_millis(200));
    assert_eq!(cache.scope(get_item(9)).await, Ok(item(9)));

    let err = Cache::builder()
        .redis(
            RedisConfig::new(&url)
                .unwrap()
                .fail_fast(true)
                .connect_timeout(Duration::from_millis(200)),
        )
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not answer"), "{err}");
}

#[tokio::test]
async fn namespace_invalidation_is_independent_of_size() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url());
    // Fill the namespace with 100,000 entries the way the runtime writes them.
    let entries = 100_000u64;
    let mut pipe = String::new();
    for id in 0..entries {
        pipe.push_str(&format!(
            "SET cache:{{items:{:02x}}}:filler:v0:{id} x EX 600\n",
            id % 16
        ));
    }
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pipe.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    cache.scope(get_item(10)).await.unwrap();
    let size: u64 = server.cli(&["DBSIZE"]).trim().parse().unwrap();
    assert!(size > entries, "{size}");

    server.cli(&["CONFIG", "RESETSTAT"]);
    let start = Instant::now();
    cache.invalidate_namespace("items").await.unwrap();
    let took = start.elapsed();
    println!("invalidate_namespace over {entries} entries: {took:?}");
    let calls = command_calls(&server);
    assert_eq!(
        calls,
        vec![("set".to_owned(), 16)],
        "invalidation must not scan"
    );

    let runs = ITEM_RUNS.of(10);
    cache.scope(get_item(10)).await.unwrap();
    assert_eq!(
        ITEM_RUNS.of(10),
        runs + 1,
        "the namespace was not invalidated"
    );
}

#[tokio::test]
async fn passwords_never_reach_logs_or_errors() {
    let server = RedisServer::start_with(&["--requirepass", "right-pw"]);
    let (captured, _guard) = common::capture_logs();

    let url = format!("redis://user:wrong-pw@127.0.0.1:{}/0", server.port());
    let config = RedisConfig::new(&url).unwrap();
    let cache = Cache::builder().redis(config.clone()).build().unwrap();
    for _ in 0..3 {
        assert_eq!(cache.scope(get_item(11)).await, Ok(item(11)));
    }
    let err = Cache::builder()
        .redis(config.clone().fail_fast(true))
        .connect()
        .await
        .unwrap_err();
    let logs = captured.text();
    assert!(
        logs.contains("cache read failed"),
        "nothing was logged: {logs}"
    );
    for shown in [
        logs,
        err.to_string(),
        format!("{err:?}"),
        format!("{config:?}"),
        format!("{cache:?}"),
    ] {
        assert!(!shown.contains("wrong-pw"), "password leaked: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_stores_then_runs_uncached() {
    let server = RedisServer::start();
    let redis = RedisBackend::connect(RedisConfig::new(&server.url()).unwrap())
        .await
        .unwrap();
    let backend = Arc::new(common::Faulty::new(Arc::new(redis)));
    let cache = Cache::builder()
        .shared_backend(backend.clone())
        .build()
        .unwrap();
    // A store under way when the server is told to stop: it hangs until let go.
    backend.set(common::Op::Put, common::Mode::Hang);
    let call = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(get_item(12)).await })
    };
    common::eventually("the store to start", || backend.puts_started() == 1).await;
    let closing = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.close(Duration::from_secs(10)).await })
    };
    // A generous bound that only catches a close that did not wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !closing.is_finished(),
        "close returned with a store under way"
    );
    backend.set(common::Op::Put, common::Mode::Pass);
    assert!(closing.await.unwrap(), "close gave up on the store");
    assert_eq!(call.await.unwrap(), Ok(item(12)));
    let keys = server.cli(&["--scan", "--pattern", "cache:{items:*}:*get_item*"]);
    assert_eq!(keys.lines().count(), 1, "the awaited store did not land");

    // Closed: calls run uncached.
    let runs = ITEM_RUNS.of(12);
    assert_eq!(cache.scope(get_item(12)).await, Ok(item(12)));
    assert_eq!(ITEM_RUNS.of(12), runs + 1, "a closed cache served a hit");
    assert!(!cache.health().await.healthy);

    // And a store that outlives the grace is given up on.
    let cache = Cache::builder()
        .shared_backend(backend.clone())
        .build()
        .unwrap();
    backend.set(common::Op::Put, common::Mode::Hang);
    let _hung = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(get_item(20)).await })
    };
    common::eventually("the second store to start", || backend.puts_started() == 2).await;
    assert!(!cache.close(Duration::from_millis(50)).await);
    backend.set(common::Op::Put, common::Mode::Pass);
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let (server, cert) = RedisServer::start_tls();
    let url = format!("rediss://localhost:{}/0", server.port());
    let cache = Cache::builder()
        .redis(RedisConfig::new(&url).unwrap().tls_root_cert(cert))
        .build()
        .unwrap();
    let runs = ITEM_RUNS.of(13);
    cache.scope(get_item(13)).await.unwrap();
    cache.scope(get_item(13)).await.unwrap();
    assert_eq!(ITEM_RUNS.of(13), runs + 1, "no hit over TLS");
    assert!(cache.health().await.healthy);

    // Without trusting the certificate, the connection is refused: uncached.
    let untrusted = cache_at(&url);
    assert_eq!(untrusted.scope(get_item(13)).await, Ok(item(13)));
    assert!(!untrusted.health().await.healthy);
}

#[test]
fn configuration_precedence_is_code_then_environment_then_defaults() {
    let (defaults, _) = peer_with_env(&["-", "env"], &[]);
    assert!(defaults.contains("MemoryBackend"), "{defaults}");
    assert!(defaults.contains("prefix: \"cache\""), "{defaults}");
    assert!(defaults.contains("default_ttl: 300s"), "{defaults}");

    let env = [
        ("REDIS_URL", "redis://:pw-in-env@127.0.0.1:1/3"),
        ("CACHE_PREFIX", "from-env"),
        ("CACHE_DEFAULT_TTL", "90s"),
        ("CACHE_RESPONSE_TIMEOUT", "75ms"),
        ("CACHE_TCP_KEEPALIVE", "off"),
        ("CACHE_PING_INTERVAL", "2s"),
    ];
    let (defaults_redis, _) = peer_with_env(&["-", "env"], &env[..1]);
    assert!(
        defaults_redis.contains("tcp_keepalive: Some(15s)")
            && defaults_redis.contains("ping_interval: Some(5s)"),
        "{defaults_redis}"
    );
    let (from_env, _) = peer_with_env(&["-", "env"], &env);
    assert!(from_env.contains("RedisBackend"), "{from_env}");
    assert!(
        from_env.contains("redis://:***@127.0.0.1:1/3"),
        "{from_env}"
    );
    assert!(!from_env.contains("pw-in-env"), "{from_env}");
    assert!(from_env.contains("prefix: \"from-env\""), "{from_env}");
    assert!(from_env.contains("default_ttl: 90s"), "{from_env}");
    assert!(from_env.contains("response_timeout: 75ms"), "{from_env}");
    assert!(from_env.contains("tcp_keepalive: None"), "{from_env}");
    assert!(from_env.contains("ping_interval: Some(2s)"), "{from_env}");

    let (from_code, _) = peer_with_env(&["-", "env", "from-code"], &env);
    assert!(from_code.contains("prefix: \"from-code\""), "{from_code}");

    // Set before `with_env`, the code's settings are defaults the
    // environment overrides, variable by variable.
    let (app_default, _) = peer_with_env(&["-", "env-over", "app"], &[]);
    assert!(app_default.contains("prefix: \"app\""), "{app_default}");
    assert!(app_default.contains("RedisBackend"), "{app_default}");
    let overridden = [("CACHE_PREFIX", "from-env"), ("CACHE_BACKEND", "memory")];
    let (from_env_over, _) = peer_with_env(&["-", "env-over", "app"], &overridden);
    assert!(
        from_env_over.contains("prefix: \"from-env\""),
        "{from_env_over}"
    );
    assert!(from_env_over.contains("MemoryBackend"), "{from_env_over}");

    // A malformed URL is reported without its password, whichever part of
    // it the parser took for what.
    let (out, err) = peer_with_env(
        &["-", "env"],
        &[("REDIS_URL", "redis://:Zq1/Xy2@127.0.0.1:1/0")],
    );
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("invalid Redis URL"), "{err}");
    assert!(
        !err.contains("Zq1") && !err.contains("Xy2"),
        "password leaked: {err}"
    );

    let bad = [
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("CACHE_RESPONSE_TIMEOUT", "fast"),
    ];
    let (out, err) = peer_with_env(&["-", "env"], &bad);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("CACHE_RESPONSE_TIMEOUT=") && err.contains("is not a duration"),
        "{err}"
    );
    let zero = [
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("CACHE_PING_INTERVAL", "0s"),
    ];
    let (out, err) = peer_with_env(&["-", "env"], &zero);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("ping interval must be greater than zero"),
        "{err}"
    );
}

#[test]
fn production_without_a_password_warns_once() {
    let server = RedisServer::start();
    let url = server.url();
    let (out, err) = peer_with_env(&[&url, "get", "1", "x"], &[("APP_ENV", "production")]);
    assert!(out.contains("1=x"), "{out} {err}");
    assert_eq!(err.matches("without a password").count(), 1, "{err}");
    let (_, err) = peer_with_env(&[&url, "get", "1", "x"], &[("APP_ENV", "staging")]);
    assert!(!err.contains("without a password"), "{err}");
}
