//! The same lookup written three ways, on Redis and in memory: by hand on
//! redis-rs (the floor), with our `#[cached]`, and with the `cached` crate.
//! All return the same value type.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached::AsyncRedisCache;
use cached::macros::concurrent_cached;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

/// The benchmarked value: an id, two strings and a `Vec<String>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) tags: Vec<String>,
}

/// The "database": cheap and deterministic, so the benchmark measures the cache.
pub(crate) fn load(id: u64) -> Item {
    Item {
        id,
        name: format!("user-{id}"),
        email: format!("user{id}@example.com"),
        tags: vec!["admin".into(), "beta".into(), "eu-west-1".into()],
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BenchError(pub String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// Body runs, for the stampede.
pub(crate) static BODY_RUNS: AtomicU32 = AtomicU32::new(0);
/// How long the body takes; zero except in the stampede.
pub(crate) static BODY_DELAY_MS: AtomicU32 = AtomicU32::new(0);
/// The Redis URL the `cached` crate's store connects to.
pub(crate) static REDIS_URL: OnceLock<String> = OnceLock::new();

async fn body(id: u64) -> Result<Item, BenchError> {
    BODY_RUNS.fetch_add(1, Ordering::Relaxed);
    let delay = BODY_DELAY_MS.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
    }
    Ok(load(id))
}

/// (a) The floor: what a developer writes by hand on one multiplexed
/// connection. `GET`, bincode decode; on a miss, the body and `SET EX`.
#[derive(Clone)]
pub(crate) struct HandWritten {
    /// With `TCP_NODELAY`, as our backend connects: the floor proper.
    pub(crate) connection: ConnectionManager,
    /// With redis-rs' defaults (Nagle's algorithm on), as the `cached` crate
    /// and most hand-written code connect. Only the harness opens it: with it
    /// open, callgrind counted about 400 more instructions per hit of ours
    /// (90 of the floor's), so the counting tools leave it closed.
    defaults: Option<ConnectionManager>,
}

impl HandWritten {
    /// The floor's connection, with `TCP_NODELAY`.
    pub(crate) async fn connect(url: &str) -> redis::RedisResult<HandWritten> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        Ok(HandWritten {
            connection: ConnectionManager::new(redis::Client::open(info)?).await?,
            defaults: None,
        })
    }

    /// Also opens the connection with redis-rs' defaults, for
    /// [`get_with_defaults`](Self::get_with_defaults).
    pub(crate) async fn with_defaults(mut self, url: &str) -> redis::RedisResult<HandWritten> {
        self.defaults = Some(ConnectionManager::new(redis::Client::open(url)?).await?);
        Ok(self)
    }

    /// Stores the values of `ids` by calling the floor (each a miss), and a
    /// generation like ours, so that (a') reads a reply of the same size.
    pub(crate) async fn preload(&self, ids: std::ops::Range<u64>) -> Result<(), BenchError> {
        let mut connection = self.connection.clone();
        let () = connection
            .set(GENERATION_KEY, u64::MAX / 3)
            .await
            .map_err(redis_error)?;
        for id in ids {
            self.get(id).await?;
        }
        Ok(())
    }

    pub(crate) fn key(id: u64) -> String {
        format!("raw:item:{id}")
    }

    pub(crate) async fn get(&self, id: u64) -> Result<Item, BenchError> {
        HandWritten::get_on(self.connection.clone(), id).await
    }

    /// [`get`](Self::get) on the connection with redis-rs' default settings.
    pub(crate) async fn get_with_defaults(&self, id: u64) -> Result<Item, BenchError> {
        let connection = self.defaults.clone().expect("opened by with_defaults");
        HandWritten::get_on(connection, id).await
    }

    /// The floor's lookup on any connection: one server's, or a cluster's.
    pub(crate) async fn get_on<C>(mut connection: C, id: u64) -> Result<Item, BenchError>
    where
        C: redis::aio::ConnectionLike + Send + Sync,
    {
        let key = HandWritten::key(id);
        let cached: Option<Vec<u8>> = connection.get(&key).await.map_err(redis_error)?;
        if let Some(bytes) = cached
            && let Ok((item, _)) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
        {
            return Ok(item);
        }
        let item = body(id).await?;
        let bytes = bincode::serde::encode_to_vec(&item, bincode::config::standard())
            .map_err(|e| BenchError(e.to_string()))?;
        let () = connection
            .set_ex(&key, bytes, 3600)
            .await
            .map_err(redis_error)?;
        Ok(item)
    }
}

/// The generation key (a') reads with every entry.
const GENERATION_KEY: &str = "raw:generation";

impl HandWritten {
    /// The floor plus what namespace invalidation needs on every hit: the
    /// entry and a generation key in one `MGET`. Only the read; it separates
    /// the price of the guarantee from the rest of ours.
    pub(crate) async fn get_with_generation(&self, id: u64) -> Result<Item, BenchError> {
        let mut connection = self.connection.clone();
        let (cached, generation): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("MGET")
            .arg(HandWritten::key(id))
            .arg(GENERATION_KEY)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        std::hint::black_box(generation);
        let bytes = cached.ok_or_else(|| BenchError("preloaded".into()))?;
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map(|(item, _)| item)
            .map_err(|e| BenchError(e.to_string()))
    }
}

fn redis_error(e: redis::RedisError) -> BenchError {
    BenchError(e.to_string())
}

/// (b) Ours, on whichever cache is current (Redis or memory).
#[cache_runtime::cached(namespace = "bench", ttl = 3600)]
pub(crate) async fn ours(id: u64) -> Result<Item, BenchError> {
    body(id).await
}

/// Our cache on a connection without `TCP_NODELAY`, as the `cached` crate and
/// redis-rs' defaults connect; set by the harness.
pub(crate) static OURS_ON_DEFAULTS: OnceLock<cache_runtime::Cache> = OnceLock::new();

/// (b) on [`OURS_ON_DEFAULTS`]: the same function, the socket of (c).
pub(crate) async fn ours_on_defaults(id: u64) -> Result<Item, BenchError> {
    let cache = OURS_ON_DEFAULTS.get().expect("set before the first call");
    cache.scope(ours(id)).await
}

pub(crate) static OURS_WITHOUT_LEASES: OnceLock<cache_runtime::Cache> = OnceLock::new();

/// (b) on [`OURS_WITHOUT_LEASES`]: the same function, no lease on a miss.
pub(crate) async fn ours_without_leases(id: u64) -> Result<Item, BenchError> {
    let cache = OURS_WITHOUT_LEASES
        .get()
        .expect("set before the first call");
    cache.scope(ours(id)).await
}

/// (c) The `cached` crate 4.1 on Redis.
#[concurrent_cached(
    map_error = r##"|e| BenchError(format!("{e:?}"))"##,
    ty = "cached::AsyncRedisCache<u64, Item>",
    create = r##" {
        AsyncRedisCache::builder("bench-cached-crate")
            .ttl(std::time::Duration::from_secs(3600))
            .connection_string(REDIS_URL.get().expect("set before the first call"))
            .build()
            .await
            .expect("the cached crate's Redis store")
    } "##
)]
pub(crate) async fn cached_crate_redis(id: u64) -> Result<Item, BenchError> {
    body(id).await
}

/// (c) The `cached` crate 4.1 in memory.
#[cached::macros::cached(max_size = 100_000)]
pub(crate) async fn cached_crate_memory(id: u64) -> Result<Item, BenchError> {
    body(id).await
}
