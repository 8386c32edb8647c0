//! One subject's hit path, called in a loop on one thread: the workload to run
//! under `valgrind --tool=callgrind`, which counts instructions and so gives
//! the same figure on a busy machine as on a quiet one.
//!
//! Every instruction of the process counts, including the runtime's I/O driver
//! and redis-rs' connection task, which do part of each hit's work outside the
//! caller's own poll. Setup is cancelled out by running twice with different
//! call counts: instructions per hit = (I(n2) - I(n1)) / (n2 - n1).
//! `benches/callgrind.sh` does exactly that for every subject.
//!
//! ```sh
//! cargo build --release -p cache-benches --bin hit_path
//! valgrind --tool=callgrind --callgrind-out-file=ours.cg target/release/hit_path ours 20000
//! callgrind_annotate ours.cg | head -40
//! ```
//!
//! Subjects: `floor`, `floor-generation`, `ours`, `cached` (Redis); `moka`,
//! `ours-memory`, `cached-memory` (in memory).

// Shared with the main harness; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../subjects.rs"]
mod subjects;

use cache_runtime::{Cache, RedisConfig};
use cache_tests::redis_server::RedisServer;
use subjects::{HandWritten, REDIS_URL};

/// Keys the loop cycles through, all preloaded.
const KEYS: u64 = 100;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let subject = args.next().unwrap_or_default();
    let calls: u64 = args.next().map_or(Ok(10_000), |n| n.parse())?;

    // Memory subjects need no server.
    match subject.as_str() {
        "moka" => {
            let moka = moka::future::Cache::new(1000);
            for id in 0..KEYS {
                moka.insert(id, subjects::load(id)).await;
            }
            hits_moka(&moka, calls).await;
            return Ok(());
        }
        "ours-memory" => {
            Cache::memory()
                .scope(async {
                    warm_ours().await;
                    hits_ours(calls).await;
                })
                .await;
            return Ok(());
        }
        "cached-memory" => {
            for id in 0..KEYS {
                subjects::cached_crate_memory(id).await?;
            }
            hits_cached_memory(calls).await;
            return Ok(());
        }
        _ => {}
    }

    let server = RedisServer::start();
    let url = server.url();
    REDIS_URL.set(url.clone()).expect("set once");
    let floor = HandWritten::connect(&url).await?;
    match subject.as_str() {
        "floor" => {
            floor.preload(0..KEYS).await?;
            hits_floor(&floor, calls, false).await;
        }
        "floor-generation" => {
            floor.preload(0..KEYS).await?;
            hits_floor(&floor, calls, true).await;
        }
        "ours" => {
            let cache = Cache::builder()
                .redis(RedisConfig::new(&url)?)
                .connect()
                .await?;
            cache
                .scope(async {
                    warm_ours().await;
                    hits_ours(calls).await;
                })
                .await;
        }
        "cached" => {
            for id in 0..KEYS {
                subjects::cached_crate_redis(id).await?;
            }
            hits_cached_redis(calls).await;
        }
        other => {
            return Err(format!(
                "unknown subject {other:?}; use floor, floor-generation, ours, cached, moka, ours-memory or cached-memory"
            )
            .into());
        }
    }
    Ok(())
}

async fn warm_ours() {
    for id in 0..KEYS {
        subjects::ours(id).await.expect("a value");
    }
}

async fn hits_floor(floor: &HandWritten, calls: u64, with_generation: bool) {
    for i in 0..calls {
        let item = if with_generation {
            floor.get_with_generation(i % KEYS).await
        } else {
            floor.get(i % KEYS).await
        };
        std::hint::black_box(item.expect("a hit"));
    }
}

async fn hits_ours(calls: u64) {
    for i in 0..calls {
        std::hint::black_box(subjects::ours(i % KEYS).await.expect("a hit"));
    }
}

async fn hits_cached_redis(calls: u64) {
    for i in 0..calls {
        std::hint::black_box(subjects::cached_crate_redis(i % KEYS).await.expect("a hit"));
    }
}

async fn hits_moka(moka: &moka::future::Cache<u64, subjects::Item>, calls: u64) {
    for i in 0..calls {
        std::hint::black_box(moka.get(&(i % KEYS)).await.expect("a hit"));
    }
}

async fn hits_cached_memory(calls: u64) {
    for i in 0..calls {
        std::hint::black_box(
            subjects::cached_crate_memory(i % KEYS)
                .await
                .expect("a hit"),
        );
    }
}
