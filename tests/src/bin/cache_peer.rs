//! A second process for the cross-process tests: it shares a Redis with the
//! test and reads, or invalidates, the same cached function.
//!
//! ```text
//! (<redis-url> may be cluster=host:port,host:port: a Redis Cluster, or
//! sentinel=name@host:port,host:port: a Sentinel group)
//! cache_peer <redis-url> get <id> <db-value>   prints "<value> <ran|hit>"
//! cache_peer <redis-url> invalidate <id>
//! cache_peer <redis-url> invalidate-namespace
//! cache_peer - env [<prefix set in code>]      prints the cache built from the environment
//! cache_peer <redis-url> stampede <key> <callers> <body-ms> <lease-ms> <start-unix-ms>
//!     at the start time, <callers> concurrent calls of `slow(key)`; prints
//!     "runs=<bodies run here> value=<the one value seen> done=<unix ms of the last>"
//!     (several values seen is an error)
//! cache_peer <redis-url> hold <key> <body-ms> <lease-ms>
//!     one call of `slow(key)`; prints "computing" when its body starts
//! ```
//!
//! Logs (warnings and up) go to stderr.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use cache_runtime::{Cache, CacheBuilder, RedisConfig, cached};

static DB_VALUE: OnceLock<String> = OnceLock::new();
static RAN: AtomicBool = AtomicBool::new(false);

/// The function both processes cache. Its "database" is the command line.
#[cached(namespace = "peer", ttl = 60)]
pub async fn lookup(id: u64) -> String {
    RAN.store(true, Ordering::SeqCst);
    format!("{id}={}", DB_VALUE.get().map_or("", String::as_str))
}

static BODY_MS: OnceLock<u64> = OnceLock::new();
static SLOW_RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A slow body, for the lease tests: says when it starts, and which
/// process computed the value.
#[cached(namespace = "peer-stampede", ttl = 60)]
pub async fn slow(key: u64) -> String {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    println!("computing");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let body_ms = BODY_MS.get().copied().unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_millis(body_ms)).await;
    format!("{key} by {}", std::process::id())
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, command, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: cache_peer <redis-url> get|invalidate|invalidate-namespace|env|env-over ..."
                .into(),
        );
    };
    if command == "env" {
        // `env [prefix]`: the prefix set after the environment was read.
        let mut builder = CacheBuilder::from_env()?;
        if let [prefix] = rest {
            builder = builder.prefix(prefix.clone());
        }
        println!("{:?}", builder.build()?);
        return Ok(());
    }
    if command == "env-over" {
        // `env-over <prefix>`: the prefix set before, as the app's default.
        let [prefix] = rest else {
            return Err("usage: cache_peer - env-over <prefix>".into());
        };
        let builder = Cache::builder()
            .redis(RedisConfig::new("redis://127.0.0.1:1/0")?)
            .prefix(prefix.clone())
            .with_env()?;
        println!("{:?}", builder.build()?);
        return Ok(());
    }
    // `cluster=host:port,host:port`: a Redis Cluster.
    // `sentinel=name@host:port,host:port`: a Sentinel group.
    let config = if let Some(nodes) = url.strip_prefix("cluster=") {
        RedisConfig::cluster(nodes.split(','))?
    } else if let Some(group) = url.strip_prefix("sentinel=") {
        let (name, sentinels) = group.split_once('@').ok_or("sentinel=name@host:port,...")?;
        RedisConfig::sentinel(sentinels.split(','), name)?
    } else {
        RedisConfig::new(url)?
    };
    let mut builder = Cache::builder().redis(config.fail_fast(true));
    let lease_ms = match (command.as_str(), rest) {
        ("stampede", [_, _, _, lease_ms, _]) | ("hold", [_, _, lease_ms]) => Some(lease_ms),
        _ => None,
    };
    if let Some(lease_ms) = lease_ms {
        builder = builder.lease(Some(std::time::Duration::from_millis(lease_ms.parse()?)));
    }
    let cache = builder.connect().await?;
    cache_runtime::install(cache).map_err(|_| "a cache was already installed")?;
    match (command.as_str(), rest) {
        ("get", [id, db_value]) => {
            DB_VALUE.set(db_value.clone()).expect("set once");
            let value = lookup(id.parse()?).await;
            let ran = if RAN.load(Ordering::SeqCst) {
                "ran"
            } else {
                "hit"
            };
            println!("{value} {ran}");
        }
        ("stampede", [key, callers, body_ms, _, start]) => {
            BODY_MS.set(body_ms.parse()?).expect("set once");
            let (key, callers, start): (u64, usize, u64) =
                (key.parse()?, callers.parse()?, start.parse()?);
            let until = start.saturating_sub(unix_ms());
            tokio::time::sleep(std::time::Duration::from_millis(until)).await;
            let calls: Vec<_> = (0..callers).map(|_| tokio::spawn(slow(key))).collect();
            let mut values = std::collections::BTreeSet::new();
            for call in calls {
                values.insert(call.await?);
            }
            let done = unix_ms();
            let [value] = Vec::from_iter(values)
                .try_into()
                .map_err(|values| format!("the callers saw several values: {values:?}"))?;
            let runs = SLOW_RUNS.load(Ordering::SeqCst);
            println!("runs={runs} value={value} done={done}");
        }
        ("hold", [key, body_ms, _]) => {
            BODY_MS.set(body_ms.parse()?).expect("set once");
            let value = slow(key.parse()?).await;
            println!("{value}");
        }
        ("invalidate", [id]) => lookup_invalidate(&id.parse()?).await?,
        ("invalidate-namespace", []) => {
            cache_runtime::invalidate_namespace(LOOKUP_NAMESPACE).await?
        }
        _ => return Err(format!("unknown command {command} {rest:?}").into()),
    }
    Ok(())
}
