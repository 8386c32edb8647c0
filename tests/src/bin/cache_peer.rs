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
    let cache = Cache::builder()
        .redis(config.fail_fast(true))
        .connect()
        .await?;
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
        ("invalidate", [id]) => lookup_invalidate(&id.parse()?).await?,
        ("invalidate-namespace", []) => {
            cache_runtime::invalidate_namespace(LOOKUP_NAMESPACE).await?
        }
        _ => return Err(format!("unknown command {command} {rest:?}").into()),
    }
    Ok(())
}
