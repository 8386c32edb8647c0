//! The quickstart on Redis: configuration from the environment, health, and a
//! cache shared across runs of the program.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo run -p cache-examples --example redis
//! ```
//!
//! Run it twice: the second run finds the first run's entry in Redis and does
//! not run the body. Without `REDIS_URL` it uses `redis://127.0.0.1:6379/0`.

use std::time::{Duration, Instant};

use cache_runtime::{Cache, RedisConfig, cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    day: String,
    orders: u64,
}

/// A slow aggregate query.
#[cached(namespace = "reports", ttl = "1h")]
async fn daily_report(day: &str) -> Result<Report, String> {
    println!("  (running the query for {day})");
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Report {
        day: day.to_owned(),
        orders: day.len() as u64 * 1000,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // REDIS_URL and the CACHE_* variables; settings made in code would win.
    let config = RedisConfig::from_env()?;
    println!("cache: Redis at {config}"); // the password, if any, prints as ***
    let cache = Cache::builder().redis(config).connect().await?;
    cache_runtime::install(cache.clone()).map_err(|_| "a cache was already installed")?;

    let health = cache_runtime::health().await;
    println!("health: {}", serde_json::to_string(&health)?);
    if !health.healthy {
        println!("Redis does not answer: calls run uncached (fail-open), and still return.");
    }

    for attempt in 1..=2 {
        let start = Instant::now();
        let report = daily_report("2026-11-22").await?;
        println!(
            "call {attempt}: {report:?} in {:.1} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
    }

    let stats = cache_runtime::stats().namespace(DAILY_REPORT_NAMESPACE);
    println!(
        "stats: {} hits, {} misses, {} errors",
        stats.hits, stats.misses, stats.errors
    );
    println!("keys: redis-cli --scan --pattern 'cache:{{reports:*'");

    // Flush in-flight writes before exiting.
    cache.close(Duration::from_secs(1)).await;
    Ok(())
}
