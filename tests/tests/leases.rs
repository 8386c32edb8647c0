//! Leases (issue 13): one body per missed key across processes. Real
//! `redis-server`, real OS processes (`cache_peer`), and in one process two
//! caches on one Redis, which behave as two processes would.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_runtime::{Cache, CallOutcome, RedisConfig, cached, with_outcome};
use cache_tests::redis_server::RedisServer;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Starts `cache_peer` with these arguments, its stdout piped.
fn spawn_peer(url: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cache_peer"))
        .arg(url)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("cache_peer starts")
}

/// What a `stampede` peer printed: bodies run, the value, when it was done.
struct Stampede {
    runs: u32,
    value: String,
    done_ms: u64,
}

fn finish_stampede(child: Child) -> Stampede {
    let out = child.wait_with_output().expect("cache_peer ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a stampede peer failed: {stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("runs="))
        .unwrap_or_else(|| panic!("no result line in {stdout:?}"));
    let field = |name: &str| {
        line.split(' ')
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    // The value has a space ("<key> by <pid>"): everything between value= and done=.
    let value = line
        .split_once("value=")
        .and_then(|(_, rest)| rest.split_once(" done="))
        .map(|(value, _)| value.to_owned())
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    Stampede {
        runs: field("runs=").parse().unwrap(),
        value,
        done_ms: field("done=").parse().unwrap(),
    }
}

#[test]
fn four_processes_of_250_callers_run_a_cold_keys_body_once() {
    let server = RedisServer::start();
    let url = server.url();
    // Every process starts calling at the same moment, after all started.
    let start = (unix_ms() + 2_000).to_string();
    let peers: Vec<Child> = (0..4)
        .map(|_| spawn_peer(&url, &["stampede", "7", "250", "200", "5000", &start]))
        .collect();
    let results: Vec<Stampede> = peers.into_iter().map(finish_stampede).collect();
    let runs: u32 = results.iter().map(|r| r.runs).sum();
    assert_eq!(
        runs, 1,
        "4 processes x 250 callers ran the body {runs} times"
    );
    let value = &results[0].value;
    assert!(
        results.iter().all(|r| &r.value == value),
        "the processes saw different values"
    );
    let slowest = results.iter().map(|r| r.done_ms).max().unwrap();
    println!(
        "4 x 250 callers, 200 ms body: {runs} run, every caller done {} ms after the start",
        slowest.saturating_sub(start.parse::<u64>().unwrap())
    );
}

#[test]
fn a_killed_lease_holder_is_taken_over_within_the_lease_time() {
    const LEASE_MS: u64 = 1_000;
    const BODY_MS: u64 = 200;
    let server = RedisServer::start();
    let url = server.url();
    let lease = LEASE_MS.to_string();
    // The holder: its body never ends on its own.
    let mut holder = spawn_peer(&url, &["hold", "9", "600000", &lease]);
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "computing");
    // Two processes wait for it; it renewed the lease meanwhile.
    let start = unix_ms() + 1_000;
    let peers: Vec<Child> = (0..2)
        .map(|_| {
            spawn_peer(
                &url,
                &[
                    "stampede",
                    "9",
                    "50",
                    &BODY_MS.to_string(),
                    &lease,
                    &start.to_string(),
                ],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(
        start.saturating_sub(unix_ms()) + 1_500,
    ));
    let killed = unix_ms();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let results: Vec<Stampede> = peers.into_iter().map(finish_stampede).collect();
    let runs: u32 = results.iter().map(|r| r.runs).sum();
    assert_eq!(
        runs, 1,
        "after the holder died, {runs} processes ran the body"
    );
    assert_eq!(results[0].value, results[1].value);
    let after = results.iter().map(|r| r.done_ms).max().unwrap() - killed;
    println!(
        "holder killed: every caller done {after} ms later (lease {LEASE_MS} ms, body {BODY_MS} ms)"
    );
    // Without a takeover they would wait the lease wait (10 s). The margin
    // covers the last renewal, polling and a slow machine.
    assert!(
        after < LEASE_MS + BODY_MS + 2_000,
        "callers waited {after} ms after the holder died"
    );
}

/// Body runs per key: the tests of this file run in parallel in one
/// process, each on keys of its own.
static RUNS: LazyLock<common::Runs> = LazyLock::new(common::Runs::default);

/// A body that fails its first `fails` runs.
#[cached(namespace = "leases", ttl = 60, skip(fails, body_ms))]
async fn slow_or_failing(key: u32, fails: u32, body_ms: u64) -> Result<u32, String> {
    let run = RUNS.of(key.into());
    RUNS.record(key.into());
    tokio::time::sleep(Duration::from_millis(body_ms)).await;
    if run < fails {
        return Err(format!("run {run} failed"));
    }
    Ok(key * 10)
}

/// `slow_or_failing(key, ..)` on `cache`, in a task of its own.
fn spawn_on(
    cache: &Cache,
    key: u32,
    fails: u32,
    body_ms: u64,
) -> tokio::task::JoinHandle<Result<u32, String>> {
    let cache = cache.clone();
    tokio::spawn(async move { cache.scope(slow_or_failing(key, fails, body_ms)).await })
}

fn caches_on(server: &RedisServer) -> (Cache, Cache) {
    let cache = || {
        Cache::builder()
            .redis(RedisConfig::new(&server.url()).unwrap())
            .build()
            .unwrap()
    };
    (cache(), cache())
}

#[test]
fn a_holder_whose_body_fails_hands_the_lease_to_a_waiter_at_once() {
    let server = RedisServer::start();
    let (a, b) = caches_on(&server);
    let runtime = common::runtime();
    runtime.block_on(async {
        let holder = spawn_on(&a, 1, 1, 300);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let (waited, outcome) = b.scope(with_outcome(slow_or_failing(1, 1, 300))).await;
        assert_eq!(holder.await.unwrap(), Err("run 0 failed".to_owned()));
        assert_eq!(waited, Ok(10));
        assert_eq!(
            outcome,
            Some(CallOutcome::Miss),
            "the waiter ran the body itself"
        );
        assert_eq!(RUNS.of(1), 2);
        // It took over when the holder gave up (after ~200 ms more), not
        // after the default lease TTL of 5 s.
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(3),
            "the waiter took over after {elapsed:?}"
        );
    });
}

#[test]
fn a_waiter_in_another_cache_takes_the_holders_value_and_a_cancelled_holder_frees_the_lease() {
    let server = RedisServer::start();
    let (a, b) = caches_on(&server);
    let runtime = common::runtime();
    runtime.block_on(async {
        // A waiter takes the holder's value: one body run.
        let holder = spawn_on(&a, 2, 0, 300);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (value, outcome) = b.scope(with_outcome(slow_or_failing(2, 0, 300))).await;
        assert_eq!((value, outcome), (Ok(20), Some(CallOutcome::Coalesced)));
        assert_eq!(holder.await.unwrap(), Ok(20));
        assert_eq!(RUNS.of(2), 1);

        // A holder cancelled mid-body gives the lease up at once.
        let holder = spawn_on(&a, 3, 0, 60_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        holder.abort();
        let started = Instant::now();
        let value = b.scope(slow_or_failing(3, 0, 10)).await;
        assert_eq!(value, Ok(30));
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(2),
            "the lease of a cancelled holder kept a caller waiting {elapsed:?}"
        );
        let leases = server.cli(&["--scan", "--pattern", "*|lease"]);
        assert_eq!(leases.trim(), "", "a lease outlived its call");
    });
}

#[test]
fn a_foreign_value_at_a_lease_key_is_not_waited_on() {
    let server = RedisServer::start();
    let (a, _) = caches_on(&server);
    let runtime = common::runtime();
    runtime.block_on(async {
        // Learn the key, then plant another program's value at its lease.
        assert_eq!(a.scope(slow_or_failing(4, 0, 0)).await, Ok(40));
        let entry = server.cli(&["--scan", "--pattern", "cache:{leases:*}:*slow_or_failing*"]);
        let entry = entry.lines().next().expect("the entry").to_owned();
        server.cli(&["DEL", &entry]);
        server.cli(&["SET", &format!("{entry}|lease"), "not a token"]);
        let started = Instant::now();
        assert_eq!(a.scope(slow_or_failing(4, 0, 0)).await, Ok(40));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(RUNS.of(4), 2);
        // Another program's key is left alone.
        assert_eq!(
            server.cli(&["GET", &format!("{entry}|lease")]).trim(),
            "not a token"
        );
    });
}

#[test]
fn leases_are_off_for_a_shared_memory_backend_unless_asked_for() {
    let runtime = common::runtime();
    for (key, lease, expected_runs) in [(5, None, 2), (15, Some(Duration::from_secs(5)), 1)] {
        let backend = Arc::new(cache_runtime::MemoryBackend::new());
        let cache = || {
            let builder = Cache::builder().shared_backend(backend.clone());
            match lease {
                Some(ttl) => builder.lease(Some(ttl)),
                None => builder,
            }
            .build()
            .unwrap()
        };
        let (a, b) = (cache(), cache());
        runtime.block_on(async {
            let first = spawn_on(&a, key, 0, 300);
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(b.scope(slow_or_failing(key, 0, 300)).await, Ok(key * 10));
            assert_eq!(first.await.unwrap(), Ok(key * 10));
        });
        assert_eq!(RUNS.of(key.into()), expected_runs, "lease {lease:?}");
    }
}

#[test]
fn a_lease_ttl_out_of_bounds_is_refused() {
    for ttl in [Duration::from_millis(10), Duration::from_secs(7200)] {
        let error = Cache::builder().lease(Some(ttl)).build().unwrap_err();
        assert!(error.to_string().contains("lease TTL"), "{error}");
    }
}

#[test]
fn leases_are_on_for_redis_and_configured_from_the_environment() {
    let redis = [("REDIS_URL", "redis://127.0.0.1:1/0")];
    let (out, _) = common::peer_with_env(&["-", "env"], &redis);
    assert!(
        out.contains("lease: Some(LeaseConfig { ttl: 5s, wait: 10s })"),
        "{out}"
    );
    let (out, _) = common::peer_with_env(&["-", "env"], &[]);
    assert!(out.contains("lease: None"), "in memory: {out}");
    let (out, _) = common::peer_with_env(
        &["-", "env"],
        &[
            redis[0],
            ("CACHE_LEASE", "2s"),
            ("CACHE_LEASE_WAIT", "500ms"),
        ],
    );
    assert!(
        out.contains("lease: Some(LeaseConfig { ttl: 2s, wait: 500ms })"),
        "{out}"
    );
    let (out, _) = common::peer_with_env(&["-", "env"], &[redis[0], ("CACHE_LEASE", "off")]);
    assert!(out.contains("lease: None"), "{out}");
    for (name, value) in [
        ("CACHE_LEASE", "soon"),
        ("CACHE_LEASE", "1ms"),
        ("CACHE_LEASE_WAIT", "2h"),
    ] {
        let (out, err) = common::peer_with_env(&["-", "env"], &[redis[0], (name, value)]);
        assert!(out.is_empty(), "{name}={value}: {out}");
        assert!(
            err.to_lowercase().contains("lease"),
            "{name}={value}: {err}"
        );
    }
}

static UNLEASED_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "leases", ttl = 60, lease = false)]
async fn unleased(key: u32) -> u32 {
    UNLEASED_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    key
}

#[test]
fn a_function_with_lease_false_runs_its_body_in_every_process() {
    let server = RedisServer::start();
    let (a, b) = caches_on(&server);
    common::runtime().block_on(async {
        let first = tokio::spawn({
            let a = a.clone();
            async move { a.scope(unleased(6)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (value, outcome) = b.scope(with_outcome(unleased(6))).await;
        assert_eq!((value, outcome), (6, Some(CallOutcome::Miss)));
        assert_eq!(first.await.unwrap(), 6);
    });
    assert_eq!(UNLEASED_RUNS.load(SeqCst), 2, "a lease was taken");
    let leases = server.cli(&["--scan", "--pattern", "*|lease"]);
    assert_eq!(leases.trim(), "");
}

/// A process that makes one call and exits (a CLI, a job) must not leave a
/// lease that keeps other processes waiting: the call gives it up before it
/// returns, not from a task that may never run.
#[test]
fn a_call_holds_no_lease_once_it_returned() {
    let server = RedisServer::start();
    let (a, _) = caches_on(&server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(a.scope(slow_or_failing(8, 0, 0))), Ok(80));
    drop(runtime);
    let leases = server.cli(&["--scan", "--pattern", "*|lease"]);
    assert_eq!(leases.trim(), "", "a lease outlived its call");
}

/// A body that returns `Err`: nothing is stored. Waiters in other processes
/// must then compute at once, not take the lease one after another, each
/// waiting for the one before (which would be slower than no leases).
#[test]
fn when_nothing_is_stored_the_other_processes_compute_at_once() {
    let server = RedisServer::start();
    let caches: Vec<Cache> = (0..6).map(|_| caches_on(&server).0).collect();
    let slowest = common::runtime().block_on(async {
        let started = Instant::now();
        let calls: Vec<_> = caches
            .iter()
            // Every run fails: 300 ms, then `Err`.
            .map(|cache| spawn_on(cache, 20, u32::MAX, 300))
            .collect();
        for call in calls {
            assert!(call.await.unwrap().is_err());
        }
        started.elapsed()
    });
    // One after another, six 300 ms bodies took 1.8 s; at once, about two.
    assert!(
        slowest < Duration::from_millis(1_300),
        "6 processes took {slowest:?} for a failing 300 ms body"
    );
}

/// Callers with deadlines shorter than the lease wait, behind a holder that
/// is stuck (alive, renewing): each leader is cancelled before its wait is
/// over, and the next must not start the wait over, or nobody ever gets a
/// value.
#[test]
fn callers_with_deadlines_get_a_value_while_a_holder_is_stuck() {
    let server = RedisServer::start();
    let stuck = caches_on(&server).0;
    let waiting = Cache::builder()
        .redis(RedisConfig::new(&server.url()).unwrap())
        .lease_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let served = common::runtime().block_on(async {
        let holder = spawn_on(&stuck, 21, 0, 600_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut callers = Vec::new();
        for _ in 0..30 {
            let cache = waiting.clone();
            callers.push(tokio::spawn(async move {
                let call = cache.scope(slow_or_failing(21, 0, 10));
                tokio::time::timeout(Duration::from_millis(600), call)
                    .await
                    .is_ok()
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut served = 0;
        for caller in callers {
            served += u32::from(caller.await.unwrap());
        }
        holder.abort();
        served
    });
    assert!(
        served >= 10,
        "{served} of 30 callers with 600 ms deadlines got a value behind a stuck holder"
    );
}

/// An invalidation ends the wait for a holder computing from before it.
#[test]
fn a_caller_after_an_invalidation_does_not_wait_for_the_stale_holder() {
    let server = RedisServer::start();
    let (a, b) = caches_on(&server);
    common::runtime().block_on(async {
        let holder = spawn_on(&a, 22, 0, 3_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.scope(slow_or_failing_invalidate(&22)).await.unwrap();
        let started = Instant::now();
        assert_eq!(b.scope(slow_or_failing(22, 0, 10)).await, Ok(220));
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(1),
            "a call after the invalidation waited {waited:?} for the holder from before it"
        );
        holder.abort();
    });
}

static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static GATED: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "leases-gated", ttl = 60)]
async fn gated(key: u32) -> u32 {
    GATED.fetch_add(1, SeqCst);
    GATE.acquire().await.unwrap().forget();
    key
}

/// A call on a Tokio runtime without timers gets its value (fail-open),
/// also while another cache holds the key's lease.
#[test]
fn a_waiter_on_a_runtime_without_timers_gets_its_value() {
    let backend = Arc::new(cache_runtime::MemoryBackend::new());
    let cache = || {
        Cache::builder()
            .shared_backend(backend.clone())
            .lease(Some(Duration::from_secs(5)))
            .build()
            .unwrap()
    };
    let (a, b) = (cache(), cache());
    let holder_runtime = common::runtime();
    let holder = holder_runtime.spawn(async move { a.scope(gated(1)).await });
    while GATED.load(SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let timerless = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // One for the holder, one for the call if it runs the body itself.
    GATE.add_permits(2);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        timerless.block_on(b.scope(gated(1)))
    }));
    assert_eq!(holder_runtime.block_on(holder).unwrap(), 1);
    assert_eq!(got.ok(), Some(1), "the call panicked without timers");
}
