//! The quickstart: a cached function on the in-memory cache, no setup needed.
//!
//! Run it with `cargo run -p cache-examples --example quickstart`.
//! It shows a miss, a hit, an entry invalidation, a namespace invalidation and
//! the counters.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::cached;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// How many times the "database" was queried.
static QUERIES: AtomicU32 = AtomicU32::new(0);

/// Loads a user from a slow "database".
#[cached(namespace = "users", ttl = "10m")]
async fn get_user(id: u64) -> Result<User, String> {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    match id {
        0 => Err("no user 0".to_owned()),
        id => Ok(User {
            id,
            name: format!("user-{id}"),
        }),
    }
}

async fn timed(label: &str, id: u64) {
    let before = QUERIES.load(Ordering::Relaxed);
    let start = std::time::Instant::now();
    let user = get_user(id).await;
    let ran = QUERIES.load(Ordering::Relaxed) - before;
    println!(
        "{label:<34} get_user({id}) = {user:?}  [{:>7.2} ms, body ran {ran}x]",
        start.elapsed().as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() -> Result<(), cache_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    timed("first call (miss):", 1).await;
    timed("second call (hit):", 1).await;
    timed("errors are not cached:", 0).await;
    timed("errors are not cached (again):", 0).await;

    get_user_invalidate(&1).await?;
    timed("after get_user_invalidate(&1):", 1).await;
    timed("and then (hit):", 1).await;

    cache_runtime::invalidate_namespace(GET_USER_NAMESPACE).await?;
    timed("after invalidate_namespace(users):", 1).await;

    let stats = cache_runtime::stats().namespace(GET_USER_NAMESPACE);
    println!(
        "\nstats for `{GET_USER_NAMESPACE}`: {} hits, {} misses, {} errors",
        stats.hits, stats.misses, stats.errors
    );
    Ok(())
}
