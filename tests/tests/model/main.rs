//! The model-based test: random sequences of operations against two caches
//! ("processes") sharing one backend, checked against a reference model.
//!
//! Operations: calls of seven cached functions (every return shape, two
//! value types of one layout, two instantiations of a generic function, two
//! namespaces, a jittered TTL, a cached `None` with a TTL of its own, a
//! short TTL with `stale_if_error`) on two caches that share leases alone, as stampedes, or mixed and concurrent; calls cancelled
//! after a few polls; writes (the truth bumped, then an entry or a namespace
//! invalidated, from either cache, also while a slow body computes from the
//! old truth); backend faults (errors, hangs cut short by the operation
//! timeout, per operation kind); evictions of entries and shard states;
//! bodies that fail or panic; time passing a TTL.
//!
//! Checked after every operation: a call returns a value of its own
//! function and key, never older than the last invalidation that returned
//! `Ok` before the call began (G1, G2, G3, in one process and across the
//! two); it panics only if its body was told to; nothing hangs (a bound of
//! 10 s per operation); bodies of one key never run concurrently in a
//! stampede; with nothing failing, a value once stored is a hit until
//! something touches it. At the end, with the faults healed, caching
//! resumes for every function and key (no stuck circuit or flight, G4).
//!
//! On the memory backend and on a real `redis-server`. proptest shrinks a
//! failing sequence to a short one.
//!
//! ```sh
//! cargo test -p cache-tests --test model                  # CI: 1,500 + 500 sequences
//! CACHE_MODEL_SCALE=100 cargo test --release -p cache-tests --test model
//! CACHE_MODEL_TRACE=1 ...                                  # print each operation as it runs
//! ```
//!
//! A failure prints the sequence as first seen failing, then the shortest
//! sequence shrinking found that still fails (concurrency can make the two
//! differ).

#[path = "../common/mod.rs"]
mod common;
mod world;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Backend, Cache, CircuitConfig, MemoryBackend, RedisBackend, RedisConfig};
use cache_tests::redis_server::RedisServer;
use common::{Faulty, Mode, Op as BackendOp};
use proptest::prelude::*;
use world::{ALL, Behaviour, F, KEYS, Returned, World};

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Op {
    Call(usize, F, u8),
    /// `n` concurrent calls of one key on one cache.
    Stampede(usize, F, u8, u8),
    /// Concurrent calls of several keys on both caches.
    Mixed(Vec<(usize, F, u8)>),
    /// A call dropped after this many turns of the scheduler.
    Cancelled(usize, F, u8, u8),
    /// The truth of a key written, then `f`'s entry or the namespace
    /// invalidated from a cache.
    Write {
        cache: usize,
        f: F,
        key: u8,
        namespace: bool,
    },
    /// The same while `f(key)` computes from the old truth on `reader`;
    /// then `late` more calls of it start on `reader`, after the
    /// invalidation returned, while the first still computes.
    WriteDuringMiss {
        reader: usize,
        writer: usize,
        f: F,
        key: u8,
        namespace: bool,
        late: u8,
    },
    Fault(usize, BackendOp, Mode),
    Heal,
    /// Evicts about one in `every` of the entries and shard states.
    Evict {
        every: u8,
        seed: u64,
    },
    Behave(F, u8, Behaviour),
    /// Sleeps past the short function's TTL.
    Expire,
}

fn function() -> impl Strategy<Value = F> {
    prop::sample::select(ALL.to_vec())
}

fn key() -> impl Strategy<Value = u8> {
    0..KEYS
}

fn cache() -> impl Strategy<Value = usize> {
    0..2usize
}

fn op() -> impl Strategy<Value = Op> {
    let backend_op = prop::sample::select(vec![
        BackendOp::Get,
        BackendOp::Shard,
        BackendOp::Put,
        BackendOp::Invalidate,
        BackendOp::Bump,
        BackendOp::Ping,
        BackendOp::Lease,
    ]);
    let mode = prop::sample::select(vec![Mode::Fail, Mode::Hang]);
    let behaviour =
        prop::sample::select(vec![Behaviour::Normal, Behaviour::Fail, Behaviour::Panic]);
    prop_oneof![
        30 => (cache(), function(), key()).prop_map(|(c, f, k)| Op::Call(c, f, k)),
        6 => (cache(), function(), key(), 2..12u8).prop_map(|(c, f, k, n)| Op::Stampede(c, f, k, n)),
        6 => prop::collection::vec((cache(), function(), key()), 2..8).prop_map(Op::Mixed),
        5 => (cache(), function(), key(), 0..6u8).prop_map(|(c, f, k, p)| Op::Cancelled(c, f, k, p)),
        10 => (cache(), function(), key(), any::<bool>())
            .prop_map(|(cache, f, key, namespace)| Op::Write { cache, f, key, namespace }),
        6 => (cache(), cache(), function(), key(), any::<bool>(), 0..3u8).prop_map(
            |(reader, writer, f, key, namespace, late)| Op::WriteDuringMiss { reader, writer, f, key, namespace, late }
        ),
        3 => (cache(), backend_op, mode).prop_map(|(c, o, m)| Op::Fault(c, o, m)),
        3 => Just(Op::Heal),
        2 => (1..4u8, any::<u64>()).prop_map(|(every, seed)| Op::Evict { every, seed }),
        3 => (function(), key(), behaviour).prop_map(|(f, k, b)| Op::Behave(f, k, b)),
        // Rare: each costs a second of sleep.
        1 => prop::bool::weighted(0.02).prop_map(|expire| if expire { Op::Expire } else { Op::Heal }),
    ]
}

/// Where the two caches keep their entries.
enum Shared {
    Memory(Arc<MemoryBackend>),
    Redis { url: String, prefix: String },
}

/// One sequence's state: the caches, the backend they share, and what the
/// model knows.
struct Run {
    caches: [Cache; 2],
    faulty: [Arc<Faulty>; 2],
    shared: Shared,
    world: Arc<World>,
    /// For each function and key, the version of the truth written before
    /// the last invalidation of it that returned `Ok`.
    floors: std::collections::HashMap<(F, u8), u64>,
    /// Keys whose value is stored and untouched since.
    stored: HashSet<(F, u8)>,
    /// A fault, an eviction or a cancellation happened: stores may have
    /// failed, so the must-hit rule is off.
    dirty: bool,
}

const OPERATION_TIMEOUT: Duration = Duration::from_millis(20);
/// Longer than anything but a hang.
const HANG: Duration = Duration::from_secs(10);

impl Run {
    fn new(shared: Shared) -> Run {
        let backend: Arc<dyn Backend> = match &shared {
            Shared::Memory(memory) => memory.clone(),
            Shared::Redis { url, .. } => Arc::new(
                RedisBackend::lazy(
                    RedisConfig::new(url)
                        .unwrap()
                        .response_timeout(Duration::from_millis(500)),
                )
                .unwrap(),
            ),
        };
        let second: Arc<dyn Backend> = match &shared {
            Shared::Memory(memory) => memory.clone(),
            // Each "process" has its own connection.
            Shared::Redis { url, .. } => {
                Arc::new(RedisBackend::lazy(RedisConfig::new(url).unwrap()).unwrap())
            }
        };
        let faulty = [
            Arc::new(Faulty::with_timeout(backend, OPERATION_TIMEOUT)),
            Arc::new(Faulty::with_timeout(second, OPERATION_TIMEOUT)),
        ];
        let prefix = match &shared {
            Shared::Memory(_) => "model".to_owned(),
            Shared::Redis { prefix, .. } => prefix.clone(),
        };
        let cache = |faulty: &Arc<Faulty>| {
            Cache::builder()
                .shared_backend(faulty.clone())
                .prefix(prefix.clone())
                .circuit(CircuitConfig {
                    threshold: 3,
                    base: Duration::from_millis(5),
                    cap: Duration::from_millis(20),
                })
                // One body per key across the two "processes"; a short
                // wait, so that a holder the model holds at a gate only
                // delays the other cache.
                .lease(Some(Duration::from_millis(500)))
                .lease_wait(Duration::from_secs(1))
                .build()
                .unwrap()
        };
        Run {
            caches: [cache(&faulty[0]), cache(&faulty[1])],
            faulty,
            shared,
            world: Arc::default(),
            floors: Default::default(),
            stored: Default::default(),
            dirty: false,
        }
    }

    fn floor(&self, f: F, key: u8) -> u64 {
        self.floors.get(&(f, key)).copied().unwrap_or(0)
    }

    /// Checks what one call returned, given the floor when it began.
    fn check(
        &self,
        f: F,
        key: u8,
        floor: u64,
        returned: &Result<Returned, tokio::task::JoinError>,
    ) {
        let returned = match returned {
            Ok(returned) => returned,
            Err(e) if e.is_panic() => {
                assert_eq!(
                    self.world.behaviour(f, key),
                    Behaviour::Panic,
                    "{f:?}({key}) panicked though its body was not told to"
                );
                return;
            }
            Err(e) => panic!("{f:?}({key}) did not finish: {e}"),
        };
        match *returned {
            Returned::Value(v) => {
                assert_eq!(
                    (v.f, v.key),
                    (f as u8, key),
                    "{f:?}({key}) returned another's value: {v:?}"
                );
                assert!(
                    v.version >= floor,
                    "{f:?}({key}) returned version {} though an invalidation after version {floor} had returned before the call",
                    v.version
                );
                assert!(
                    v.version <= self.world.version(f.namespace(), key),
                    "a version from the future"
                );
            }
            Returned::Err => assert!(f.fallible(), "{f:?}({key}) returned Err"),
            Returned::None => {
                assert_eq!(f, F::Maybe, "{f:?}({key}) returned None");
                // A cached `None` is as fresh as a value: it was computed
                // from a version no older than the floor.
                let now = self.world.version(f.namespace(), key);
                assert!(
                    (floor..=now).any(world::maybe_is_none),
                    "{f:?}({key}) returned None though no version from {floor} to {now} is None"
                );
            }
        }
    }

    /// Calls `f(key)` on `cache` in its own task (a panic stays in it).
    fn spawn(&self, cache: usize, f: F, key: u8) -> tokio::task::JoinHandle<Returned> {
        tokio::spawn(world::call(
            self.world.clone(),
            self.caches[cache].clone(),
            f,
            key,
        ))
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            &Op::Call(cache, f, key) => {
                let (floor, runs, errors) =
                    (self.floor(f, key), self.world.runs(f, key), self.errors());
                let returned = self.spawn(cache, f, key).await;
                self.check(f, key, floor, &returned);
                let ran = self.world.runs(f, key) > runs;
                // A cache failure on a busy machine (a slow answer past the
                // operation timeout) is a failure like any fault.
                self.dirty |= self.errors() > errors;
                if !self.dirty && self.world.behaviour(f, key) == Behaviour::Normal {
                    if self.stored.contains(&(f, key)) {
                        assert!(
                            !ran,
                            "{f:?}({key}) ran its body though its value was stored and untouched"
                        );
                    }
                    if f.always_cached() && matches!(returned, Ok(Returned::Value(_))) {
                        self.stored.insert((f, key));
                    }
                }
            }
            &Op::Stampede(cache, f, key, n) => {
                let (floor, runs, errors) =
                    (self.floor(f, key), self.world.runs(f, key), self.errors());
                self.world.max_running.lock().unwrap().remove(&(f, key));
                let calls: Vec<_> = (0..n).map(|_| self.spawn(cache, f, key)).collect();
                for call in calls {
                    let returned = call.await;
                    self.check(f, key, floor, &returned);
                }
                let max = self
                    .world
                    .max_running
                    .lock()
                    .unwrap()
                    .get(&(f, key))
                    .copied()
                    .unwrap_or(0);
                assert!(
                    max <= 1,
                    "{max} bodies of {f:?}({key}) ran at once in one process"
                );
                let ran = self.world.runs(f, key) - runs;
                self.dirty |= self.errors() > errors;
                let calm = !self.dirty && self.world.behaviour(f, key) == Behaviour::Normal;
                if calm && f.always_cached() {
                    assert!(
                        ran <= 1,
                        "{n} concurrent calls of {f:?}({key}) ran the body {ran} times"
                    );
                    self.stored.insert((f, key));
                }
            }
            Op::Mixed(calls) => {
                let floors: Vec<u64> = calls.iter().map(|&(_, f, k)| self.floor(f, k)).collect();
                let handles: Vec<_> = calls.iter().map(|&(c, f, k)| self.spawn(c, f, k)).collect();
                for ((&(_, f, key), floor), handle) in calls.iter().zip(floors).zip(handles) {
                    let returned = handle.await;
                    self.check(f, key, floor, &returned);
                }
            }
            &Op::Cancelled(cache, f, key, turns) => {
                let floor = self.floor(f, key);
                let call = world::call(self.world.clone(), self.caches[cache].clone(), f, key);
                let outcome = tokio::spawn(async move {
                    tokio::select! {
                        biased;
                        returned = call => Some(returned),
                        () = turns_pass(turns) => None,
                    }
                })
                .await;
                if let Ok(Some(returned)) = outcome {
                    self.check(f, key, floor, &Ok(returned));
                } else if let Err(e) = outcome {
                    self.check(f, key, floor, &Err(e));
                }
                self.dirty = true;
            }
            &Op::Write {
                cache,
                f,
                key,
                namespace,
            } => self.write(cache, f, key, namespace).await,
            &Op::WriteDuringMiss {
                reader,
                writer,
                f,
                key,
                namespace,
                late,
            } => {
                let previous = self.world.behaviour(f, key);
                let gate = self.world.gate(f, key);
                gate.close();
                let reached = gate.reached.load(SeqCst);
                self.world.set_behaviour(f, key, Behaviour::Slow);
                let floor = self.floor(f, key);
                let slow = self.spawn(reader, f, key);
                // A hit never reaches the body: then there is no race to run.
                let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
                while gate.reached.load(SeqCst) == reached && !slow.is_finished() {
                    if tokio::time::Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                self.write(writer, f, key, namespace).await;
                // Calls that start now may queue behind the slow one (a write
                // from the other cache does not detach its flight): none of
                // them may get its value. They are slow too, until the gate
                // opens: let them get under way first.
                let late_floor = self.floor(f, key);
                let late: Vec<_> = (0..late).map(|_| self.spawn(reader, f, key)).collect();
                tokio::time::sleep(Duration::from_millis(2)).await;
                gate.open();
                let returned = slow.await;
                self.check(f, key, floor, &returned);
                for call in late {
                    let returned = call.await;
                    self.check(f, key, late_floor, &returned);
                }
                self.world.set_behaviour(f, key, previous);
            }
            &Op::Fault(cache, op, mode) => {
                self.faulty[cache].set(op, mode);
                self.dirty = true;
            }
            Op::Heal => {
                for faulty in &self.faulty {
                    faulty.set_all(Mode::Pass);
                }
            }
            &Op::Evict { every, seed } => {
                self.evict(every, seed);
                self.stored.clear();
                self.dirty = true;
            }
            &Op::Behave(f, key, behaviour) => {
                self.world.set_behaviour(f, key, behaviour);
                self.stored.remove(&(f, key));
            }
            Op::Expire => {
                tokio::time::sleep(Duration::from_millis(1100)).await;
                self.stored
                    .retain(|(f, _)| !matches!(f, F::Short | F::Stale));
            }
        }
    }

    /// A write: the truth first, then the invalidation.
    async fn write(&mut self, cache: usize, f: F, key: u8, namespace: bool) {
        let ns = f.namespace();
        let version = self.world.bump(ns, key);
        let cache = &self.caches[cache];
        if namespace {
            let touched: Vec<(F, u8, u64)> = ALL
                .iter()
                .filter(|g| g.namespace() == ns)
                .flat_map(|&g| (0..KEYS).map(move |k| (g, k)))
                .map(|(g, k)| (g, k, self.world.version(ns, k)))
                .collect();
            if cache.invalidate_namespace(ns.name()).await.is_ok() {
                for (g, k, version) in touched {
                    let floor = self.floors.entry((g, k)).or_default();
                    *floor = (*floor).max(version);
                }
            }
            self.stored.retain(|(g, _)| g.namespace() != ns);
        } else {
            if world::invalidate(cache, f, key).await.is_ok() {
                let floor = self.floors.entry((f, key)).or_default();
                *floor = (*floor).max(version);
            }
            // The other functions of the namespace now hold an older
            // version of this key legitimately: nobody invalidated them.
            self.stored.retain(|(g, _)| g.namespace() != ns);
        }
    }

    /// Evicts entries and shard states, as a full memory cache or
    /// `maxmemory allkeys-lru` would.
    fn evict(&self, every: u8, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        match &self.shared {
            Shared::Memory(memory) => {
                for key in memory.keys() {
                    if rng.u8(0..every) == 0 {
                        memory.evict(&key);
                    }
                    if rng.u8(0..every) == 0 {
                        memory.evict(&key[..=key.find('}').unwrap()]);
                    }
                }
            }
            Shared::Redis { url, prefix } => {
                use redis::Commands as _;
                let mut connection = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let keys: Vec<String> = connection.keys(format!("{prefix}:*")).unwrap();
                for key in keys {
                    if rng.u8(0..every) == 0 {
                        let _: () = connection.del(&key).unwrap();
                    }
                }
            }
        }
    }

    /// With the faults healed and every body normal, each cache answers and
    /// caches again: nothing was left stuck.
    async fn recover(&mut self) {
        for faulty in &self.faulty {
            faulty.set_all(Mode::Pass);
        }
        // Only calls: the circuit must close by itself (a health check
        // would close it, and hide a circuit that cannot).
        for f in ALL.into_iter().filter(|f| f.always_cached()) {
            for key in 0..KEYS {
                self.world.set_behaviour(f, key, Behaviour::Normal);
                for cache in 0..2 {
                    let deadline = tokio::time::Instant::now() + RECOVERY;
                    loop {
                        let floor = self.floor(f, key);
                        let first = self.spawn(cache, f, key).await;
                        self.check(f, key, floor, &first);
                        let runs = self.world.runs(f, key);
                        let second = self.spawn(cache, f, key).await;
                        self.check(f, key, floor, &second);
                        if self.world.runs(f, key) == runs {
                            break;
                        }
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "caching did not resume for {f:?}({key}) on cache {cache} within {RECOVERY:?}: {:?}",
                            self.caches[cache].stats()
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
    }

    /// Cache failures (errors) counted so far, on both caches.
    fn errors(&self) -> u64 {
        self.caches.iter().map(|c| c.stats().total().errors).sum()
    }
}

/// How long caching may take to resume once the faults are healed: the
/// circuit's longest open period is 20 ms; the rest is slack for a busy
/// machine.
const RECOVERY: Duration = Duration::from_secs(2);

/// Completes after `n` turns of the scheduler.
async fn turns_pass(n: u8) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Runs one sequence; panics on the first violation.
async fn run(shared: Shared, ops: &[Op]) {
    let mut run = Run::new(shared);
    let trace = std::env::var_os("CACHE_MODEL_TRACE").is_some();
    for (i, op) in ops.iter().enumerate() {
        if trace {
            eprintln!("op {i}: {op:?}");
        }
        within(HANG, &format!("operation {i} ({op:?})"), run.apply(op)).await;
    }
    within(HANG * 6, "the recovery", run.recover()).await;
}

async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} hung"),
    }
}

/// A runtime per sequence: when a sequence fails, the tasks it leaves behind
/// die with its runtime instead of running into the next one (which
/// shrinking needs to see the same failure again).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Sequences per run: the CI count times `CACHE_MODEL_SCALE`.
fn cases(ci: u32) -> u32 {
    let scale: u32 = std::env::var("CACHE_MODEL_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    ci * scale
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failure shrinks by rerunning sequences; cap the time it takes.
        max_shrink_iters: 2_000,
        // A failure prints its sequences (below); nothing is written to disk.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Keeps the panics the model plans (bodies told to panic) out of the
/// output; every other panic is reported as usual.
fn quiet_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planned = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.ends_with(world::PLANNED_PANIC));
            if !planned {
                report(info);
            }
        }));
    });
}

/// Runs `cases` random sequences on fresh backends made by `shared`, and
/// reports a failure with the shrunk sequence that shows it.
fn check_sequences(cases: u32, shared: impl Fn() -> Shared) {
    quiet_planned_panics();
    let mut runner = proptest::test_runner::TestRunner::new(config(cases));
    let strategy = prop::collection::vec(op(), 1..32);
    let first = std::sync::atomic::AtomicBool::new(true);
    let result = runner.run(&strategy, |ops| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime().block_on(run(shared(), &ops));
        }));
        if let Err(panic) = outcome {
            // The sequence as first seen failing, before shrinking reruns
            // shorter ones (concurrency may make those fail otherwise).
            if first.swap(false, SeqCst) {
                eprintln!("first failing sequence: {ops:?}");
            }
            std::panic::resume_unwind(panic);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    println!("{cases} sequences, no violation");
}

#[test]
fn the_memory_backend_keeps_every_promise() {
    check_sequences(cases(1_500), || {
        Shared::Memory(Arc::new(MemoryBackend::new()))
    });
}

#[test]
fn two_caches_on_one_redis_keep_every_promise() {
    let server = RedisServer::start();
    let prefixes = AtomicU64::new(0);
    check_sequences(cases(500), || Shared::Redis {
        url: server.url(),
        prefix: format!("model{}", prefixes.fetch_add(1, SeqCst)),
    });
}
