//! A real web service on the cache: an axum JSON API over SQLite whose reads
//! are `#[cached]` functions and whose writes invalidate them.
//!
//! Run it with the in-memory cache, or with Redis shared by several instances:
//!
//! ```sh
//! cargo run -p cache-examples --example web_service
//! REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_PATH=/tmp/users.db \
//!     cargo run -p cache-examples --example web_service
//! curl -i localhost:3000/users/1         # twice: x-cache: miss, then x-cache: hit
//! curl -X PUT localhost:3000/users/1 -H 'content-type: application/json' \
//!     -d '{"name": "Ada King", "email": "ada@example.com"}'
//! curl localhost:3000/health localhost:3000/stats
//! curl localhost:3000/metrics             # for Prometheus; a Grafana dashboard is in examples/grafana/
//! ```
//!
//! Configuration, from the environment:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `BIND_ADDR` | where to listen | `127.0.0.1:3000` |
//! | `DATABASE_PATH` | the SQLite file, shared safely by several instances | in memory |
//! | `REDIS_URL`, `CACHE_*` | the cache, see `cache_runtime`'s configuration table | in memory |
//! | `CACHE_PREFIX` | the key prefix | `web_service` |
//! | `RUST_LOG` | the log filter (logs go to stderr) | `info` |
//!
//! Once bound it prints one line to stdout, `listening on http://<addr>`, so a
//! script that asked for port 0 learns the real one. SIGTERM or Ctrl-C stops
//! it gracefully: no new connections, requests under way finish, retries of
//! failed invalidations are abandoned (and logged), cache writes under way are
//! flushed, exit status 0.
//!
//! The parts: [`db`] (SQLite), [`users`] (the cached reads and the
//! invalidating writes), [`retry`] (invalidations that failed, retried in the
//! background), [`metrics`] (the cache's metrics for Prometheus), [`routes`]
//! (HTTP), [`error`] (errors as responses).

pub mod db;
pub mod error;
pub mod metrics;
pub mod retry;
pub mod routes;
pub mod users;

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cache_runtime::Cache;
use tokio::sync::Notify;

use db::Db;
use metrics::MetricsExporter;

/// Where the service listens when `BIND_ADDR` is unset.
pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:3000";

/// The key prefix when `CACHE_PREFIX` is unset.
pub const DEFAULT_CACHE_PREFIX: &str = "web_service";

/// How long requests under way may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long cache writes under way may take to finish at shutdown.
const CACHE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The service's own settings (the cache reads its own from the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen (`BIND_ADDR`); port 0 picks a free port.
    pub bind_addr: String,
    /// The SQLite file (`DATABASE_PATH`); `None` for an in-memory database.
    pub database_path: Option<PathBuf>,
}

impl Config {
    /// Reads `BIND_ADDR` and `DATABASE_PATH`; unset and empty are the same.
    pub fn from_env() -> Config {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Config {
            bind_addr: var("BIND_ADDR").unwrap_or_else(|| DEFAULT_BIND_ADDR.to_owned()),
            database_path: var("DATABASE_PATH").map(PathBuf::from),
        }
    }
}

/// Runs the service until SIGTERM or Ctrl-C; what `main` calls.
///
/// Sets up logging, reads the configuration from the environment, and returns
/// failure if the service cannot start (bad configuration, database, address).
pub async fn run() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries only the "listening on" line.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match serve(Config::from_env()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the service with `config` and serves until a shutdown signal.
///
/// Installs the process-wide cache and metrics recorder, so it runs once per
/// process.
pub async fn serve(config: Config) -> Result<(), Box<dyn Error + Send + Sync>> {
    // Before the cache: it takes its metric handles from the recorder
    // installed when it is built, and would never report to a later one.
    let metrics = MetricsExporter::install();
    // Stopped when dropped: at the end, or on an early return below.
    let _upkeep = metrics.start_upkeep();
    let cache = install_cache().await?;
    // Dropped on an early return below, which stops the task as well.
    let (retries, retry_worker) = retry::start();
    let db = Db::open(config.database_path.as_deref())
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    match &config.database_path {
        Some(path) => tracing::info!(path = %path.display(), "database ready"),
        None => tracing::info!("database ready, in memory (set DATABASE_PATH to keep it)"),
    }

    // Before announcing the address: a signal that arrives after the
    // announcement must find its handler in place, or it kills the process.
    let signal = shutdown_signal().map_err(|e| format!("cannot listen for signals: {e}"))?;
    let listener = tokio::net::TcpListener::bind(&config.bind_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.bind_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);

    let stopping = Arc::new(Notify::new());
    let server = axum::serve(listener, routes::router(db, retries, metrics))
        .with_graceful_shutdown({
            let stopping = Arc::clone(&stopping);
            async move {
                let name = signal.await;
                tracing::info!(
                    signal = name,
                    "shutting down: finishing the requests under way"
                );
                stopping.notify_one();
            }
        });
    // A client that never finishes its request must not keep the process
    // alive forever: after the drain timeout, stop anyway.
    let drain_deadline = async {
        stopping.notified().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        served = server.into_future() => served?,
        () = drain_deadline => tracing::warn!(
            timeout = ?DRAIN_TIMEOUT,
            "requests still running after the drain timeout; stopping anyway"
        ),
    }

    // Requests that finished above may have queued retries; waiting for a
    // backend that is down would hang the shutdown, so they are abandoned.
    retry_worker.shutdown().await;
    // Only now: requests that finished above may have started cache writes.
    if !cache.close(CACHE_CLOSE_GRACE).await {
        tracing::warn!(
            grace = ?CACHE_CLOSE_GRACE,
            "cache writes still running at shutdown were abandoned"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Builds the cache from the environment and installs it as the process-wide
/// one, which the `#[cached]` functions use.
async fn install_cache() -> Result<Cache, Box<dyn Error + Send + Sync>> {
    // The prefix and metrics are set before the environment is read, so they
    // are the app's defaults: CACHE_PREFIX can still move two deployments
    // apart on one Redis, and CACHE_METRICS=false turns the metrics off.
    let builder = Cache::builder()
        .prefix(DEFAULT_CACHE_PREFIX)
        .metrics(true)
        .with_env()
        .map_err(|e| format!("cannot configure the cache: {e}"))?;
    // `connect` rather than `install`: it honours CACHE_FAIL_FAST. Without it
    // the service starts even if Redis is down, and calls run uncached.
    let cache = builder
        .connect()
        .await
        .map_err(|e| format!("cannot start the cache: {e}"))?;
    cache_runtime::install(cache.clone())
        .map_err(|_| "a cache was already installed in this process")?;
    tracing::info!(
        backend = cache.backend_name(),
        prefix = cache.prefix(),
        cache = ?cache,
        "cache ready"
    );
    let health = cache.health().await;
    if !health.healthy {
        tracing::warn!(
            backend = health.backend,
            "the cache backend does not answer; serving uncached until it does"
        );
    }
    Ok(cache)
}

/// Listens for SIGTERM and Ctrl-C (SIGINT) from now on; the returned future
/// resolves to the signal's name when one arrives.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

/// Listens for Ctrl-C; the returned future resolves when it arrives.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    Ok(async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C; stop the service another way");
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    })
}
