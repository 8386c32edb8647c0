//! Heap allocations per hit, counted with dhat: raw moka, our memory backend,
//! the hand-written Redis lookup and ours on Redis.
//!
//! ```sh
//! cargo run --release -p cache-benches --bin allocs
//! ```

// Shared with the main harness; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../subjects.rs"]
mod subjects;

use cache_runtime::{Cache, RedisConfig};
use cache_tests::redis_server::RedisServer;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CALLS: u64 = 1000;

/// Allocations (blocks) per call of `call`, after one warm-up call.
async fn per_call<F, Fut>(mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    call().await;
    let before = dhat::HeapStats::get().total_blocks;
    for _ in 0..CALLS {
        call().await;
    }
    (dhat::HeapStats::get().total_blocks - before) as f64 / CALLS as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _profiler = dhat::Profiler::builder().testing().build();
    println!("| hit path | allocations per hit |");
    println!("| --- | ---: |");

    let moka: moka::future::Cache<u64, subjects::Item> = moka::future::Cache::new(100);
    moka.insert(1, subjects::load(1)).await;
    let raw = per_call(|| async {
        std::hint::black_box(moka.get(&1).await);
    })
    .await;
    println!("| raw moka `get` (clones the value) | {raw:.1} |");

    let memory = Cache::memory();
    let ours_memory = memory
        .scope(per_call(|| async {
            std::hint::black_box(subjects::ours(1).await.ok());
        }))
        .await;
    println!("| (b) ours, memory backend | {ours_memory:.1} |");

    let server = RedisServer::start();
    let floor = subjects::HandWritten::connect(&server.url()).await?;
    let raw_redis = per_call(|| async {
        std::hint::black_box(floor.get(1).await.ok());
    })
    .await;
    println!("| (a) redis-rs GET + bincode | {raw_redis:.1} |");

    let redis = Cache::builder()
        .redis(RedisConfig::new(&server.url())?)
        .build()?;
    let ours_redis = redis
        .scope(per_call(|| async {
            std::hint::black_box(subjects::ours(1).await.ok());
        }))
        .await;
    println!("| (b) ours, Redis backend | {ours_redis:.1} |");
    Ok(())
}
