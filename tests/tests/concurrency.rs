//! Concurrency: single-flight (G5), a cancelled leader, and the cache-aside
//! invalidation race (G3), each driven deterministically with explicit gates
//! rather than sleeps where the order matters.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, MemoryBackend, cached};
use common::Gate;

static STAMPEDE_RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(namespace = "stampede")]
async fn stampede(id: u64) -> String {
    STAMPEDE_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    format!("v{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_cold_calls_run_the_body_once() {
    let cache = Cache::memory();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.scope(stampede(7)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "v7");
    }
    assert_eq!(STAMPEDE_RUNS.load(SeqCst), 1, "the body ran more than once");
    let stats = cache.stats().namespace("stampede");
    assert_eq!(stats.hits + stats.misses, 1000);
    assert_eq!(stats.errors, 0);
}

static LEADER_GATE: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(Gate::default);

#[cached(namespace = "leader")]
async fn gated(id: u64) -> u64 {
    LEADER_GATE.pass().await;
    id + 100
}

/// On one thread, so that when the follower's miss is counted it has also
/// queued on the flight: nothing awaits between the two, and no other thread
/// runs it half-way.
#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    let cache = Cache::memory();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(gated(1)).await })
    };
    LEADER_GATE.wait_reached(1).await;
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.scope(gated(1)).await })
    };
    // The follower queues behind the leader; then the leader is cancelled
    // mid-body.
    while cache.stats().namespace("leader").misses < 2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        LEADER_GATE.reached.load(SeqCst),
        1,
        "the follower did not wait"
    );
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());

    // The follower takes over and runs the body itself.
    LEADER_GATE.wait_reached(2).await;
    LEADER_GATE.open();
    assert_eq!(follower.await.unwrap(), 101);

    // And stored the value.
    assert_eq!(cache.scope(gated(1)).await, 101);
    assert_eq!(LEADER_GATE.reached.load(SeqCst), 2);
}

static RACE_GATE: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(Gate::default);
static RACE_DB: AtomicU32 = AtomicU32::new(1);

/// Reads the "database" before waiting at the gate: a slow query that started
/// before a write.
#[cached(namespace = "race")]
async fn race_read(id: u64) -> u32 {
    let value = RACE_DB.load(SeqCst);
    if id == 1 {
        RACE_GATE.pass().await;
    }
    value
}

/// The race: a reader misses and starts computing from the old data; a writer
/// updates the data and invalidates; the reader finishes. The old value must not
/// be stored, and must not be handed to a caller that came after the
/// invalidation. Run against an entry invalidation and a namespace
/// invalidation, from the same cache and from another one sharing the backend
/// (another process).
async fn race(invalidate: impl AsyncFnOnce(&Cache), writer_is_other_process: bool) {
    let backend: Arc<MemoryBackend> = Arc::new(MemoryBackend::new());
    let reader_cache = Cache::builder()
        .shared_backend(backend.clone())
        .build()
        .unwrap();
    let writer_cache = if writer_is_other_process {
        Cache::builder()
            .shared_backend(backend.clone())
            .build()
            .unwrap()
    } else {
        reader_cache.clone()
    };
    let reached = RACE_GATE.reached.load(SeqCst);
    RACE_GATE.close();
    RACE_DB.store(1, SeqCst);

    let slow_reader = {
        let cache = reader_cache.clone();
        tokio::spawn(async move { cache.scope(race_read(1)).await })
    };
    RACE_GATE.wait_reached(reached + 1).await;

    // The write, then the invalidation; it returns before the reader finishes.
    RACE_DB.store(2, SeqCst);
    invalidate(&writer_cache).await;

    // A caller after the invalidation must not get the stale computation's
    // result: in the same process it does not join it; in another process it
    // may wait for it, but is then told to compute its own.
    let late = {
        let cache = reader_cache.clone();
        tokio::spawn(async move { cache.scope(race_read(1)).await })
    };
    if !writer_is_other_process {
        // It computes its own (and reaches the gate); a caller that joined the
        // old flight would wait for it there forever, and this would time out.
        RACE_GATE.wait_reached(reached + 2).await;
    }

    RACE_GATE.open();
    assert_eq!(
        slow_reader.await.unwrap(),
        1,
        "the slow reader began before the write"
    );
    assert_eq!(
        late.await.unwrap(),
        2,
        "a call after the invalidation got the old value"
    );

    // Whatever was stored, no later call sees the old value, in either cache.
    assert_eq!(reader_cache.scope(race_read(1)).await, 2);
    assert_eq!(writer_cache.scope(race_read(1)).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_value_after_invalidations_racing_a_slow_miss() {
    // Sequential: the four cases share the gate.
    for other_process in [false, true] {
        race(
            async |cache: &Cache| cache.scope(race_read_invalidate(&1)).await.unwrap(),
            other_process,
        )
        .await;
        race(
            async |cache: &Cache| {
                cache
                    .invalidate_namespace(RACE_READ_NAMESPACE)
                    .await
                    .unwrap()
            },
            other_process,
        )
        .await;
    }
}
