//! Benchmarks, side by side in one run: a hit, a miss, an invalidation and a
//! stampede, for a hand-written redis-rs lookup (the floor), our `#[cached]`,
//! and the `cached` crate; in memory against raw moka. Starts its own
//! `redis-server` and prints markdown tables.
//!
//! ```sh
//! cargo run --release -p cache-benches            # the full table (docs/benchmarks.md)
//! cargo run -p cache-benches -- --quick           # a smoke run, as CI does
//! cargo run --release -p cache-benches -- --section memory   # one table
//! ```
//!
//! Sections: `hit`, `miss`, `memory`, `invalidation`, `stampede`, `bytes`.

mod measure;
mod subjects;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, RedisConfig};
use cache_tests::redis_server::RedisServer;
use measure::{latency, mean_time, median, micros, nanos, on_worker, throughput};
use redis::AsyncCommands;
use subjects::{BODY_DELAY_MS, BODY_RUNS, HandWritten, REDIS_URL};

/// Keys preloaded for the hit benchmarks.
const KEYS: u64 = 1000;

struct Settings {
    latency_calls: usize,
    memory_calls: usize,
    throughput_for: Duration,
    concurrency: &'static [usize],
    invalidation_sizes: &'static [u64],
    stampede_callers: usize,
}

const FULL: Settings = Settings {
    latency_calls: 20_000,
    memory_calls: 1_000_000,
    throughput_for: Duration::from_secs(2),
    concurrency: &[1, 16, 64, 256],
    invalidation_sizes: &[10_000, 100_000, 1_000_000],
    stampede_callers: 1000,
};

const QUICK: Settings = Settings {
    latency_calls: 200,
    memory_calls: 2_000,
    throughput_for: Duration::from_millis(50),
    concurrency: &[1, 16],
    invalidation_sizes: &[1_000],
    stampede_callers: 100,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--section")
        .and_then(|i| args.get(i + 1).cloned());
    let run = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let s = if quick { &QUICK } else { &FULL };
    if !quick && cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for figures worth reading");
    }

    let server = RedisServer::start();
    let url = server.url();
    REDIS_URL.set(url.clone()).expect("set once");
    let client = redis::Client::open(url.as_str())?;
    let floor = HandWritten {
        connection: redis::aio::ConnectionManager::new(client).await?,
    };
    let ours_cache = Cache::builder()
        .redis(RedisConfig::new(&url)?)
        .connect()
        .await?;
    cache_runtime::install(ours_cache.clone()).map_err(|_| "installed twice")?;

    for id in 0..KEYS {
        floor.get(id).await?;
        subjects::ours(id).await?;
        subjects::cached_crate_redis(id).await?;
    }

    println!(
        "# Benchmarks ({})\n\nredis-server on 127.0.0.1, {} cores, {} calls per latency row, {:?} per throughput cell.\n",
        if quick {
            "quick smoke run: figures meaningless"
        } else {
            "full run"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        s.latency_calls,
        s.throughput_for,
    );

    if run("hit") {
        redis_hits(s, &floor).await;
    }
    if run("miss") {
        redis_misses(s, &floor).await;
    }
    if run("memory") {
        memory_hits(s).await;
    }
    if run("invalidation") {
        invalidation(s, &server, &ours_cache, &floor).await?;
    }
    if run("stampede") {
        stampede(s).await;
    }
    if run("bytes") {
        memory_usage(&floor).await?;
    }
    Ok(())
}

/// Repetitions of each throughput cell; the median is reported.
const REPEATS: usize = 3;

async fn redis_hits(s: &Settings, floor: &HandWritten) {
    println!("## 1. Redis hit\n");
    println!("| | p50 µs | p99 µs | mean µs | p50 vs floor |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let (n, f) = (s.latency_calls, floor.clone());
    let a = on_worker(async move {
        latency(n, |i| {
            let f = f.clone();
            async move {
                f.get(i % KEYS).await.expect("hit");
            }
        })
        .await
    })
    .await;
    let f = floor.clone();
    let a2 = on_worker(async move {
        latency(n, |i| {
            let f = f.clone();
            async move {
                f.get_with_generation(i % KEYS).await.expect("hit");
            }
        })
        .await
    })
    .await;
    let b = on_worker(latency(n, |i| async move {
        subjects::ours(i % KEYS).await.expect("hit");
    }))
    .await;
    let c = on_worker(latency(n, |i| async move {
        subjects::cached_crate_redis(i % KEYS).await.expect("hit");
    }))
    .await;
    for (name, l) in [
        ("(a) floor: redis-rs GET + bincode", &a),
        ("(a') floor + generation key in the same MGET", &a2),
        ("(b) `#[cached]` (ours)", &b),
        ("(c) `cached` 4.1 `concurrent_cached(redis)`", &c),
    ] {
        println!(
            "| {name} | {} | {} | {} | {:.2}x |",
            micros(l.p50),
            micros(l.p99),
            micros(l.mean),
            l.p50.as_secs_f64() / a.p50.as_secs_f64()
        );
    }

    println!(
        "\nThroughput, hits per second (median of {REPEATS} runs of {:?}, subjects interleaved):\n",
        s.throughput_for
    );
    let mut rates = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for &t in s.concurrency {
        let mut runs = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..REPEATS {
            let f = floor.clone();
            runs[0].push(
                throughput(t, s.throughput_for, move |i| {
                    let f = f.clone();
                    async move {
                        f.get(i % KEYS).await.expect("hit");
                    }
                })
                .await,
            );
            let f = floor.clone();
            runs[3].push(
                throughput(t, s.throughput_for, move |i| {
                    let f = f.clone();
                    async move {
                        f.get_with_generation(i % KEYS).await.expect("hit");
                    }
                })
                .await,
            );
            runs[1].push(
                throughput(t, s.throughput_for, |i| async move {
                    subjects::ours(i % KEYS).await.expect("hit");
                })
                .await,
            );
            runs[2].push(
                throughput(t, s.throughput_for, |i| async move {
                    subjects::cached_crate_redis(i % KEYS).await.expect("hit");
                })
                .await,
            );
        }
        for (rate, runs) in rates.iter_mut().zip(runs) {
            rate.push(median(runs));
        }
    }
    print!("| tasks |");
    for t in s.concurrency {
        print!(" {t} |");
    }
    print!("\n| --- |");
    for _ in s.concurrency {
        print!(" ---: |");
    }
    println!();
    for (name, row) in [
        ("(a) floor", &rates[0]),
        ("(a') floor + generation", &rates[3]),
        ("(b) ours", &rates[1]),
        ("(c) `cached`", &rates[2]),
    ] {
        print!("| {name} |");
        for (rate, floor_rate) in row.iter().zip(&rates[0]) {
            print!(" {rate:.0} ({:.2}x) |", rate / floor_rate);
        }
        println!();
    }
    println!();
}

async fn redis_misses(s: &Settings, floor: &HandWritten) {
    println!("## 2. Redis miss (get, body, set; trivial body)\n");
    println!("| | p50 µs | p99 µs | p50 vs floor |");
    println!("| --- | ---: | ---: | ---: |");
    // Fresh ids for every call: every call misses.
    let base = 10_000_000;
    let n = s.latency_calls / 4;
    let f = floor.clone();
    let a = on_worker(async move {
        latency(n, |i| {
            let f = f.clone();
            async move {
                f.get(base + i).await.expect("miss");
            }
        })
        .await
    })
    .await;
    let b = on_worker(latency(n, move |i| async move {
        subjects::ours(base + i).await.expect("miss");
    }))
    .await;
    let c = on_worker(latency(n, move |i| async move {
        subjects::cached_crate_redis(base + i).await.expect("miss");
    }))
    .await;
    for (name, l) in [("(a) floor", &a), ("(b) ours", &b), ("(c) `cached`", &c)] {
        println!(
            "| {name} | {} | {} | {:.2}x |",
            micros(l.p50),
            micros(l.p99),
            l.p50.as_secs_f64() / a.p50.as_secs_f64()
        );
    }
    println!();
}

async fn memory_hits(s: &Settings) {
    println!("## 3. In-memory hit\n");
    println!("| | ns per hit | vs raw moka |");
    println!("| --- | ---: | ---: |");
    let moka: moka::future::Cache<u64, subjects::Item> = moka::future::Cache::new(100_000);
    for id in 0..KEYS {
        moka.insert(id, subjects::load(id)).await;
    }
    let raw = mean_time(s.memory_calls, |i| {
        let moka = &moka;
        async move {
            std::hint::black_box(moka.get(&(i % KEYS)).await.expect("hit"));
        }
    })
    .await;
    let memory = Cache::memory();
    let ours = memory
        .scope(async {
            for id in 0..KEYS {
                subjects::ours(id).await.expect("load");
            }
            mean_time(s.memory_calls, |i| async move {
                std::hint::black_box(subjects::ours(i % KEYS).await.expect("hit"));
            })
            .await
        })
        .await;
    for id in 0..KEYS {
        subjects::cached_crate_memory(id).await.expect("load");
    }
    let cached = mean_time(s.memory_calls, |i| async move {
        std::hint::black_box(subjects::cached_crate_memory(i % KEYS).await.expect("hit"));
    })
    .await;
    for (name, d) in [
        ("raw moka `get` (clones the value)", raw),
        ("(b) ours, memory backend", ours),
        ("(c) `cached` 4.1 `#[cached]`", cached),
    ] {
        println!(
            "| {name} | {} | {:.2}x |",
            nanos(d),
            d.as_secs_f64() / raw.as_secs_f64()
        );
    }
    println!();
}

async fn invalidation(
    s: &Settings,
    server: &RedisServer,
    ours: &Cache,
    floor: &HandWritten,
) -> Result<(), Box<dyn std::error::Error>> {
    println!("## 4. Namespace invalidation\n");
    println!("| entries | ours (generation bump) | SCAN + UNLINK by prefix |");
    println!("| ---: | ---: | ---: |");
    for &n in s.invalidation_sizes {
        fill(server, n)?;
        let start = Instant::now();
        ours.invalidate_namespace("inv").await?;
        let bump = start.elapsed();

        let start = Instant::now();
        let deleted = scan_unlink(floor, "cache:{inv:*").await?;
        let scan = start.elapsed();
        // The n entries, and the 16 generation keys of the namespace.
        assert!(deleted >= n, "SCAN + UNLINK deleted {deleted} keys of {n}");
        println!(
            "| {n} | {:.3} ms | {:.1} ms |",
            bump.as_secs_f64() * 1e3,
            scan.as_secs_f64() * 1e3
        );
    }
    println!();
    Ok(())
}

/// Writes `n` entries into namespace `inv` with `redis-cli --pipe`.
fn fill(server: &RedisServer, n: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
    for id in 0..n {
        writeln!(
            stdin,
            "SET cache:{{inv:{:02x}}}:bench.filler:v0:{id} {:0>64} EX 3600",
            id % 16,
            id
        )?;
    }
    drop(stdin);
    child.wait()?;
    Ok(())
}

/// What hand-written wrappers (and `cached`'s clear) do: SCAN by pattern, UNLINK.
async fn scan_unlink(floor: &HandWritten, pattern: &str) -> redis::RedisResult<u64> {
    let mut connection = floor.connection.clone();
    let mut cursor = 0u64;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let n: u64 = connection.unlink(&keys).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

async fn stampede(s: &Settings) {
    println!(
        "## 5. Stampede: {} concurrent cold calls on one key, 20 ms body\n",
        s.stampede_callers
    );
    println!("| | body runs | total ms |");
    println!("| --- | ---: | ---: |");
    BODY_DELAY_MS.store(20, Ordering::SeqCst);
    for (name, id) in [("(b) ours", 20_000_000u64), ("(c) `cached`", 20_000_001)] {
        BODY_RUNS.store(0, Ordering::SeqCst);
        let start = Instant::now();
        let tasks: Vec<_> = (0..s.stampede_callers)
            .map(|_| {
                tokio::spawn(async move {
                    if id % 2 == 0 {
                        subjects::ours(id).await
                    } else {
                        subjects::cached_crate_redis(id).await
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("no panic").expect("a value");
        }
        println!(
            "| {name} | {} | {:.1} |",
            BODY_RUNS.load(Ordering::SeqCst),
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    BODY_DELAY_MS.store(0, Ordering::SeqCst);
    println!();
}

async fn memory_usage(floor: &HandWritten) -> redis::RedisResult<()> {
    println!("## 6. Memory per entry in Redis (`MEMORY USAGE`)\n");
    println!("| | key | bytes |");
    println!("| --- | --- | ---: |");
    let mut connection = floor.connection.clone();
    for (name, pattern) in [
        ("(a) floor", "raw:item:7"),
        ("(b) ours", "cache:{bench:*}:*.ours:v0:*"),
        ("(c) `cached`", "cached-redis-store:bench-cached-crate:*"),
    ] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut connection)
            .await?;
        let Some(key) = keys.into_iter().min_by_key(|k| k.len()) else {
            println!("| {name} | (none matched {pattern}) | |");
            continue;
        };
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        println!("| {name} | `{key}` | {bytes} |");
    }
    println!();
    Ok(())
}
