//! The Redis backend: one multiplexed connection per process through redis-rs'
//! `ConnectionManager`, which pipelines concurrent requests from all tasks over
//! it and reconnects with capped exponential backoff; a connection that goes
//! silent without breaking is replaced ([`connection`]).
//!
//! Commands per operation:
//!
//! | operation | commands | round trips |
//! | --- | --- | --- |
//! | hit or miss lookup | `MGET entry gen` | 1 |
//! | create a missing shard state | `EVALSHA` of [`scripts::SHARD`] | 1 |
//! | store after a miss | `EVALSHA` of [`scripts::PUT`] | 1 |
//! | invalidate one entry | `EVALSHA` of [`scripts::INVALIDATE`] | 1 |
//! | invalidate a namespace | 16 × `SET gen <random>:0 EX <ttl>`, pipelined | 1 |
//!
//! Entry and shard state share a hash tag, so each multi-key command stays in
//! one slot and the layout works unchanged on Redis Cluster. No operation
//! scans. Needs Redis 6.0 or newer (`SET .. KEEPTTL`).

use std::fmt;
use std::sync::Arc;
#[cfg(feature = "tls")]
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionLike;

use super::{
    Backend, Generation, LeaseState, LeaseToken, Lookup, NodeHealth, PutCondition, PutOutcome,
    ShardState, Stored, Version,
};
use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::key::CacheKey;

#[cfg(feature = "cluster")]
mod cluster;
mod connection;
mod scripts;
#[cfg(feature = "sentinel")]
mod sentinel;

use self::connection::{Connection, Open, Single};
use crate::config::Replication;

const NAME: &str = "redis";

/// How long a shard state lives at least after it was created or bumped;
/// each store extends it to outlive the entry it stores. A lost shard state
/// only costs misses.
const SHARD_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The length of the version an entry's value starts with.
const VERSION_LEN: usize = 8;

/// A Redis (or Valkey) backend: one server, a Redis Cluster (feature
/// `cluster`), or the primary of a Sentinel group (feature `sentinel`).
///
/// Built from a [`RedisConfig`]. Connecting is lazy unless
/// [`RedisConfig::fail_fast`] is set: a service starts while Redis is down and
/// its cached calls run uncached until Redis answers.
#[derive(Clone)]
pub struct RedisBackend {
    transport: Transport,
    scripts: Arc<Scripts>,
    response_timeout: Duration,
    replication: Option<Replication>,
    /// Replica waits sent and not answered yet: they queue on the writes
    /// connection, each holding it up to the wait timeout, and each
    /// request's timeout allows for those ahead of it.
    waiting: Arc<AtomicU32>,
    tcp_keepalive: Option<Duration>,
    ping_interval: Option<Duration>,
    description: String,
}

/// Where requests go.
#[derive(Clone)]
enum Transport {
    /// One server. Invalidations that wait for replicas go on a connection
    /// of their own: a `WAIT` holds up every request behind it on its
    /// connection, and hits must not queue behind it.
    Single {
        reads: Arc<Connection<Single>>,
        writes: Arc<Connection<Single>>,
    },
    #[cfg(feature = "cluster")]
    Cluster(Arc<cluster::Cluster>),
    #[cfg(feature = "sentinel")]
    Sentinel(Arc<sentinel::Sentinel>),
}

/// What a request is, for the transport: which connection it goes on, and
/// on a cluster which slot's circuit it passes.
#[derive(Clone, Copy)]
// One server needs no key: its requests all go to the same place.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
enum Route<'a> {
    /// A lookup or a store: on the connection hits use.
    Read(&'a str),
    /// An invalidation that waits for replicas: on the writes connection.
    /// The number is how many waits may be queued on it with this one's (a
    /// `WAIT` holds up what comes after it), itself included.
    Write(&'a str, u32),
    /// Not about a key (a ping).
    Any,
}

impl Route<'_> {
    #[cfg(feature = "cluster")]
    fn key(&self) -> Option<&str> {
        match *self {
            Route::Read(key) | Route::Write(key, _) => Some(key),
            Route::Any => None,
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = match self.transport {
            Transport::Single { .. } => "url",
            #[cfg(feature = "cluster")]
            Transport::Cluster(_) => "cluster_nodes",
            #[cfg(feature = "sentinel")]
            Transport::Sentinel(_) => "sentinels",
        };
        f.debug_struct("RedisBackend")
            .field(field, &self.description)
            .field("response_timeout", &self.response_timeout)
            .field("replication", &self.replication)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("ping_interval", &self.ping_interval)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Creates the backend. With `fail_fast`, also connects and pings, and fails
    /// if Redis does not answer within the connect timeout.
    pub async fn connect(config: RedisConfig) -> Result<RedisBackend> {
        let fail_fast = config.fail_fast;
        let backend = RedisBackend::lazy(config)?;
        if fail_fast {
            backend.ping().await.map_err(|e| {
                Error::Config(format!(
                    "fail-fast is set and Redis at {} does not answer: {e}",
                    backend.description
                ))
            })?;
        }
        Ok(backend)
    }

    /// Creates the backend without connecting; the first command connects.
    /// May be called outside a Tokio runtime: the connection is set up by the
    /// first command, which must run inside one (outside, commands fail and
    /// cached calls run uncached).
    pub fn lazy(config: RedisConfig) -> Result<RedisBackend> {
        config.check()?;
        config.warn_if_unprotected();
        #[cfg(feature = "tls")]
        install_crypto_provider();
        let description = config.redacted_url();
        let transport = match (config.nodes(), config.is_sentinel()) {
            #[cfg(feature = "sentinel")]
            (_, true) => Transport::Sentinel(Arc::new(sentinel::Sentinel::new(&config)?)),
            #[cfg(not(feature = "sentinel"))]
            (_, true) => unreachable!("Sentinel configurations need the `sentinel` feature"),
            (None, false) => {
                // Without waits, one connection serves all.
                let reads = Arc::new(single_connection(&config)?);
                let writes = match config.replication {
                    Some(_) => Arc::new(single_connection(&config)?),
                    None => Arc::clone(&reads),
                };
                Transport::Single { reads, writes }
            }
            #[cfg(feature = "cluster")]
            (Some(_), false) => Transport::Cluster(Arc::new(cluster::Cluster::new(&config)?)),
            #[cfg(not(feature = "cluster"))]
            (Some(_), false) => unreachable!("cluster configurations need the `cluster` feature"),
        };
        Ok(RedisBackend {
            transport,
            scripts: Arc::new(Scripts {
                shard: redis::Script::new(scripts::SHARD),
                put: redis::Script::new(scripts::PUT),
                invalidate: redis::Script::new(scripts::INVALIDATE),
                lease: redis::Script::new(scripts::LEASE),
                renew_lease: redis::Script::new(scripts::RENEW_LEASE),
                release_lease: redis::Script::new(scripts::RELEASE_LEASE),
                abandon_lease: redis::Script::new(scripts::ABANDON_LEASE),
            }),
            response_timeout: config.response_timeout,
            replication: config.replication,
            waiting: Arc::new(AtomicU32::new(0)),
            tcp_keepalive: config.tcp_keepalive,
            ping_interval: config.ping_interval,
            description,
        })
    }

    /// Runs one request and converts its reply.
    async fn request<T: redis::FromRedisValue>(
        &self,
        route: Route<'_>,
        cmd: impl RequestKind,
    ) -> Result<T> {
        let value = self.request_value(route, cmd).await?;
        redis::from_redis_value(value).map_err(|e| Error::backend(self.name(), e))
    }

    /// Runs one request with the response timeout (see [`send`]).
    async fn request_value(&self, route: Route<'_>, cmd: impl RequestKind) -> Result<redis::Value> {
        match &self.transport {
            Transport::Single { reads, writes } => {
                let connection = match route {
                    Route::Write(..) => writes,
                    Route::Read(_) | Route::Any => reads,
                };
                send(connection, self.timeout_for(route), cmd).await
            }
            #[cfg(feature = "cluster")]
            Transport::Cluster(cluster) => {
                cluster
                    .request(
                        route.key(),
                        matches!(route, Route::Write(..)),
                        self.timeout_for(route),
                        cmd,
                    )
                    .await
            }
            #[cfg(feature = "sentinel")]
            Transport::Sentinel(sentinel) => {
                sentinel
                    .request(
                        matches!(route, Route::Write(..)),
                        self.timeout_for(route),
                        cmd,
                    )
                    .await
            }
        }
    }

    /// The response timeout, and for a request that waits for replicas the
    /// wait on top.
    fn timeout_for(&self, route: Route<'_>) -> Duration {
        match (route, &self.replication) {
            (Route::Write(_, waits), Some(replication)) => self
                .response_timeout
                .saturating_add(replication.timeout.saturating_mul(waits)),
            _ => self.response_timeout,
        }
    }
}

/// Counts waits from when they are sent until they are answered or
/// abandoned (dropped with the request).
struct Waiting<'a> {
    count: &'a AtomicU32,
    own: u32,
    total: u32,
}

impl<'a> Waiting<'a> {
    fn start(count: &'a AtomicU32, own: u32) -> Waiting<'a> {
        let total = count.fetch_add(own, Relaxed).saturating_add(own);
        Waiting { count, own, total }
    }

    /// The waits that may be queued with this request's, its own included.
    fn ahead_and_own(&self) -> u32 {
        self.total
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(self.own, Relaxed);
    }
}

/// The single-node connection.
fn single_connection(config: &RedisConfig) -> Result<Connection<Single>> {
    Ok(Connection::new(
        Single {
            client: config.client()?,
            config: manager_config(config),
        },
        config.response_timeout,
        config.ping_interval,
    ))
}

/// A one-server connection manager's settings. No response timeout in the
/// manager: `send` bounds each request as a whole (including waits on a
/// reconnect), and a second timer per request costs throughput under
/// concurrency.
fn manager_config(config: &RedisConfig) -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(None)
        .set_min_delay(config.backoff_base)
        .set_exponent_base(2.0)
        .set_max_delay(config.backoff_max)
        .set_number_of_retries(config.reconnect_attempts())
}

/// Runs one request on `connection` within `timeout`, which bounds the
/// whole wait (a request may also wait for a reconnect), so a call never
/// pays more. A request left unanswered replaces the connection.
async fn send<O: Open>(
    connection: &Arc<Connection<O>>,
    timeout: Duration,
    cmd: impl RequestKind,
) -> Result<redis::Value> {
    send_raw(connection, timeout, cmd)
        .await
        .map_err(|failure| failure.into_error(O::NAME))
}

/// Why a request failed, for a transport that acts on it (Sentinel).
#[cfg_attr(not(feature = "sentinel"), allow(dead_code))]
enum Failure {
    /// Not inside a Tokio runtime.
    NoRuntime,
    /// No connection could be had.
    Open(Error),
    /// redis-rs' error: from the server, or the connection's.
    Redis(redis::RedisError),
    /// No answer within this.
    Timeout(Duration),
}

impl Failure {
    fn into_error(self, backend: &'static str) -> Error {
        match self {
            Failure::NoRuntime => Error::backend(
                backend,
                "the Redis backend needs a Tokio runtime (with I/O and timers); \
                 cached calls outside one run uncached",
            ),
            Failure::Open(e) => e,
            Failure::Redis(e) => Error::backend(backend, e),
            Failure::Timeout(timeout) => Error::backend(
                backend,
                format!("no answer within the response timeout ({timeout:?})"),
            ),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoRuntime => f.write_str("no Tokio runtime"),
            Failure::Open(e) => write!(f, "{e}"),
            Failure::Redis(e) => write!(f, "{e}"),
            Failure::Timeout(timeout) => write!(f, "no answer within {timeout:?}"),
        }
    }
}

/// [`send`], with the failure as it happened.
async fn send_raw<O: Open>(
    connection: &Arc<Connection<O>>,
    timeout: Duration,
    cmd: impl RequestKind,
) -> std::result::Result<redis::Value, Failure> {
    // redis-rs panics outside a Tokio runtime; a cached call must not.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Failure::NoRuntime);
    }
    let connection::Leased { mut handle, id } = connection.get().map_err(Failure::Open)?;
    let fut = async move { cmd.run(&mut handle).await };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(value)) => {
            connection.answered();
            Ok(value)
        }
        Ok(Err(e)) => {
            // A cluster connection's own per-attempt timeout. (On one
            // node, the manager's connect timeout: its own reconnects,
            // with their backoff, handle that.)
            if O::SEVERAL_NODES && e.is_timeout() {
                connection.timed_out(id);
            }
            Err(Failure::Redis(e))
        }
        Err(_) => {
            // The connection may have gone silent: the next request
            // goes to a new one.
            connection.timed_out(id);
            Err(Failure::Timeout(timeout))
        }
    }
}

/// A command or pipeline, run on the shared connection.
trait RequestKind: Send + 'static {
    fn run<C: ConnectionLike + Send>(
        self,
        connection: &mut C,
    ) -> impl Future<Output = redis::RedisResult<redis::Value>> + Send;
}

impl RequestKind for redis::Cmd {
    async fn run<C: ConnectionLike + Send>(
        self,
        connection: &mut C,
    ) -> redis::RedisResult<redis::Value> {
        self.query_async(connection).await
    }
}

impl RequestKind for redis::Pipeline {
    async fn run<C: ConnectionLike + Send>(
        self,
        connection: &mut C,
    ) -> redis::RedisResult<redis::Value> {
        self.query_async(connection).await
    }
}

/// The backend's scripts, loaded on first use.
struct Scripts {
    shard: redis::Script,
    put: redis::Script,
    invalidate: redis::Script,
    lease: redis::Script,
    renew_lease: redis::Script,
    release_lease: redis::Script,
    abandon_lease: redis::Script,
}

/// Which script a [`ScriptCall`] runs.
#[derive(Clone, Copy)]
enum ScriptName {
    Shard,
    Put,
    Invalidate,
    Lease,
    RenewLease,
    ReleaseLease,
    AbandonLease,
}

/// A script invocation: `EVALSHA`; if Redis does not know the script (after
/// a restart or `SCRIPT FLUSH`), redis-rs loads it and sends `EVALSHA` again.
struct ScriptCall {
    scripts: Arc<Scripts>,
    name: ScriptName,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl RequestKind for ScriptCall {
    async fn run<C: ConnectionLike + Send>(
        self,
        connection: &mut C,
    ) -> redis::RedisResult<redis::Value> {
        let ScriptCall {
            scripts,
            name,
            keys,
            args,
        } = self;
        let script = match name {
            ScriptName::Shard => &scripts.shard,
            ScriptName::Put => &scripts.put,
            ScriptName::Invalidate => &scripts.invalidate,
            ScriptName::Lease => &scripts.lease,
            ScriptName::RenewLease => &scripts.renew_lease,
            ScriptName::ReleaseLease => &scripts.release_lease,
            ScriptName::AbandonLease => &scripts.abandon_lease,
        };
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        invocation.invoke_async(connection).await
    }
}

/// Appended to a shard to name its generation key.
const GENERATION_SUFFIX: &str = ":gen";

/// The key of a shard's generation: `{shard}:gen`.
fn generation_key(shard: &str) -> String {
    let mut key = String::with_capacity(shard.len() + GENERATION_SUFFIX.len());
    key.push_str(shard);
    key.push_str(GENERATION_SUFFIX);
    key
}

/// Appended to an entry's key to name its lease. `|` is in no key the
/// cache writes otherwise (names and prefixes exclude it; arguments are
/// escaped), so a lease key is never an entry's; and the entry's hash tag
/// keeps the lease in the entry's slot.
const LEASE_SUFFIX: &str = "|lease";

/// The key of an entry's lease: `{entry}|lease`.
fn lease_key(key: &CacheKey) -> String {
    let mut lease = String::with_capacity(key.as_str().len() + LEASE_SUFFIX.len());
    lease.push_str(key.as_str());
    lease.push_str(LEASE_SUFFIX);
    lease
}

/// A lease's TTL as the scripts take it: whole milliseconds, at least one.
fn lease_millis(ttl: Duration) -> Vec<u8> {
    ttl.as_millis()
        .clamp(1, u128::from(u64::MAX))
        .to_string()
        .into_bytes()
}

/// The generation key of a shard as a command argument, written straight into
/// the command: the lookup builds no string for it.
struct GenerationKey<'a>(&'a str);

impl redis::ToRedisArgs for GenerationKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write as _;
        let mut arg = out.writer_for_next_arg();
        // Writes into a Vec: cannot fail.
        let _ = arg.write_all(self.0.as_bytes());
        let _ = arg.write_all(GENERATION_SUFFIX.as_bytes());
    }
}

/// A canonical decimal `u64` of at most `max_digits` digits: no sign, no
/// leading zero.
fn parse_decimal(text: &[u8], max_digits: usize) -> Option<u64> {
    if text.is_empty() || text.len() > max_digits || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    let mut value: u64 = 0;
    for &b in text {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// A shard state as stored: `<generation>:<epoch>`, canonical decimal, the
/// generation not zero, the epoch at most [`scripts::MAX_EPOCH`]. Anything
/// else (another program's value, an older format) is no shard state; the
/// scripts decide the same way.
fn parse_shard(text: &[u8]) -> Option<ShardState> {
    let colon = text.iter().position(|&b| b == b':')?;
    let generation = parse_decimal(&text[..colon], 20).filter(|&g| g != 0)?;
    let epoch = parse_decimal(&text[colon + 1..], 15)?;
    Some(ShardState {
        generation: Generation(generation),
        epoch,
    })
}

/// A shard state as stored.
fn shard_text(state: ShardState) -> String {
    format!("{}:{}", state.generation.0, state.epoch)
}

/// An entry as stored: its version, then its bytes; a value too short to
/// hold a version (garbage) is all version and no bytes.
fn split_stored(value: Vec<u8>) -> Stored {
    if value.len() < VERSION_LEN {
        return Stored {
            version: Version::from_bytes(&value),
            bytes: Bytes::new(),
        };
    }
    let version = Version::from_bytes(&value[..VERSION_LEN]);
    Stored {
        version,
        bytes: Bytes::from(value).slice(VERSION_LEN..),
    }
}

/// The reply to `MGET entry gen`, taken apart without copying the entry.
fn parse_lookup(backend: &'static str, reply: redis::Value) -> Result<Lookup> {
    let unexpected =
        |what: &str| Error::backend(backend, format!("unexpected reply to MGET: {what}"));
    let redis::Value::Array(items) = reply else {
        return Err(unexpected("not an array"));
    };
    let [entry, shard]: [redis::Value; 2] = items
        .try_into()
        .map_err(|items: Vec<_>| unexpected(&format!("{} elements", items.len())))?;
    let entry = match entry {
        redis::Value::BulkString(bytes) => Some(split_stored(bytes)),
        redis::Value::Nil => None,
        _ => return Err(unexpected("an entry that is not a string")),
    };
    let shard = match shard {
        redis::Value::BulkString(text) => parse_shard(&text),
        _ => None,
    };
    Ok(Lookup { entry, shard })
}

impl RedisBackend {
    fn script(&self, name: ScriptName, keys: Vec<Vec<u8>>, args: Vec<Vec<u8>>) -> ScriptCall {
        ScriptCall {
            scripts: Arc::clone(&self.scripts),
            name,
            keys,
            args,
        }
    }
}

impl RedisBackend {
    /// The conditional store; with `lease`, giving up that lease in the same
    /// script.
    async fn store(
        &self,
        key: &CacheKey,
        entry: Stored,
        ttl: Duration,
        condition: &PutCondition,
        lease: Option<LeaseToken>,
    ) -> Result<PutOutcome> {
        let (seen, previous) = match condition.previous {
            Some(version) => (b"1".to_vec(), version.as_bytes().to_vec()),
            None => (b"0".to_vec(), Vec::new()),
        };
        let mut value = Vec::with_capacity(VERSION_LEN + entry.bytes.len());
        value.extend_from_slice(entry.version.as_bytes());
        value.extend_from_slice(&entry.bytes);
        let shard_ttl = ttl.as_secs().saturating_add(1).max(SHARD_TTL.as_secs());
        let mut keys = vec![
            key.as_str().into(),
            generation_key(key.shard()).into_bytes(),
        ];
        let mut args = vec![
            shard_text(condition.shard).into_bytes(),
            seen,
            previous,
            value,
            ttl.as_millis().max(1).to_string().into_bytes(),
            shard_ttl.to_string().into_bytes(),
        ];
        if let Some(token) = lease {
            keys.push(lease_key(key).into_bytes());
            args.push(token.0.to_string().into_bytes());
        }
        let call = self.script(ScriptName::Put, keys, args);
        let outcome: i64 = self.request(Route::Read(key.as_str()), call).await?;
        Ok(match outcome {
            0 => PutOutcome::Stored,
            1 => PutOutcome::GenerationChanged,
            3 => PutOutcome::StoredOverForeign,
            _ => PutOutcome::EntryChanged,
        })
    }

    /// A lease script's call on `key`'s lease, and the lease's key (which
    /// routes it): the token, and the TTL if the script sets one.
    fn lease_script(
        &self,
        name: ScriptName,
        key: &CacheKey,
        token: LeaseToken,
        ttl: Option<Duration>,
    ) -> (String, ScriptCall) {
        let lease = lease_key(key);
        let mut args = vec![token.0.to_string().into_bytes()];
        args.extend(ttl.map(lease_millis));
        let call = self.script(name, vec![lease.clone().into_bytes()], args);
        (lease, call)
    }

    /// Sends an invalidation's writes and, if the backend waits for
    /// replicas, a `WAIT` after them in the same pipeline (so on the same
    /// connection, right after them); checks its count.
    ///
    /// `waits` is how many such writes are sent at once (with this one): on
    /// a cluster their waits queue on each node's connection, and the
    /// timeout allows for all of them.
    async fn write_replicated(
        &self,
        key: &str,
        mut pipeline: redis::Pipeline,
        waits: u32,
    ) -> Result<()> {
        let Some(replication) = self.replication else {
            return self.request::<()>(Route::Read(key), pipeline).await;
        };
        pipeline
            .cmd("WAIT")
            .arg(replication.replicas)
            .arg(replication.timeout.as_millis().max(1) as u64);
        let queued = Waiting::start(&self.waiting, waits);
        let route = Route::Write(key, queued.ahead_and_own());
        let (acknowledged,): (u32,) = self.request(route, pipeline).await?;
        drop(queued);
        replication.check(self.name(), acknowledged)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        match self.transport {
            Transport::Single { .. } => NAME,
            #[cfg(feature = "cluster")]
            Transport::Cluster(_) => cluster::NAME,
            #[cfg(feature = "sentinel")]
            Transport::Sentinel(_) => sentinel::NAME,
        }
    }

    async fn get(&self, key: &CacheKey) -> Result<Lookup> {
        const MGET: &str = "MGET";
        let (key, shard) = (key.as_str(), key.shard());
        // Sized once: growing the buffer argument by argument reallocates.
        let mut cmd = redis::Cmd::with_capacity(
            3,
            MGET.len() + key.len() + shard.len() + GENERATION_SUFFIX.len(),
        );
        cmd.arg(MGET).arg(key).arg(GenerationKey(shard));
        parse_lookup(
            self.name(),
            self.request_value(Route::Read(key), cmd).await?,
        )
    }

    async fn shard(&self, shard: &str) -> Result<ShardState> {
        let key = generation_key(shard);
        let call = self.script(
            ScriptName::Shard,
            vec![key.clone().into_bytes()],
            vec![
                shard_text(ShardState::fresh()).into_bytes(),
                SHARD_TTL.as_secs().to_string().into_bytes(),
            ],
        );
        let text: Vec<u8> = self.request(Route::Read(&key), call).await?;
        parse_shard(&text).ok_or_else(|| {
            Error::backend(
                self.name(),
                "the shard state script returned something else",
            )
        })
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Stored,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome> {
        self.store(key, entry, ttl, condition, None).await
    }

    async fn put_releasing(
        &self,
        key: &CacheKey,
        entry: Stored,
        ttl: Duration,
        condition: &PutCondition,
        lease: LeaseToken,
    ) -> Result<PutOutcome> {
        self.store(key, entry, ttl, condition, Some(lease)).await
    }

    async fn invalidate(&self, key: &CacheKey) -> Result<()> {
        let keys = [
            key.as_str().as_bytes().to_vec(),
            generation_key(key.shard()).into_bytes(),
            lease_key(key).into_bytes(),
        ];
        let args = [
            shard_text(ShardState::fresh()).into_bytes(),
            SHARD_TTL.as_secs().to_string().into_bytes(),
            scripts::MAX_EPOCH.to_string().into_bytes(),
        ];
        if self.replication.is_none() {
            let call = self.script(ScriptName::Invalidate, keys.into(), args.into());
            return self.request::<()>(Route::Read(key.as_str()), call).await;
        }
        // `EVAL`, not `EVALSHA`: a pipeline cannot load a missing script
        // and run the rest again, and invalidations are rare enough to send
        // the script's text.
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("EVAL")
            .arg(scripts::INVALIDATE)
            .arg(keys.len())
            .arg(&keys[..])
            .arg(&args[..])
            .ignore();
        self.write_replicated(key.as_str(), pipeline, 1).await
    }

    async fn bump(&self, shards: &[String]) -> Result<()> {
        if shards.is_empty() {
            return Ok(());
        }
        // One pipeline per node on a cluster (per slot: a pipeline cannot
        // cross slots), all at once; one pipeline on a single server.
        let groups: Vec<Vec<String>> = match self.transport {
            #[cfg(feature = "cluster")]
            Transport::Cluster(_) => cluster::by_slot(shards.iter().map(|s| generation_key(s))),
            _ => vec![shards.iter().map(|s| generation_key(s)).collect()],
        };
        let waits = u32::try_from(groups.len()).unwrap_or(u32::MAX);
        let bumps = groups.iter().map(|keys| {
            let mut pipeline = redis::pipe();
            for key in keys {
                pipeline
                    .cmd("SET")
                    .arg(key)
                    .arg(shard_text(ShardState::fresh()))
                    .arg("EX")
                    .arg(SHARD_TTL.as_secs())
                    .ignore();
            }
            self.write_replicated(&keys[0], pipeline, waits)
        });
        // Every group is sent and answered, even when one fails: an error
        // then says which went wrong, and the rest are done.
        let results = futures_util::future::join_all(bumps).await;
        worst(results)
    }

    async fn ping(&self) -> Result<()> {
        self.request::<()>(Route::Any, redis::cmd("PING")).await
    }

    async fn lease(&self, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Result<LeaseState> {
        let (lease, call) = self.lease_script(ScriptName::Lease, key, token, Some(ttl));
        Ok(
            match self.request::<i64>(Route::Read(&lease), call).await? {
                1 => LeaseState::Taken,
                0 => LeaseState::Held,
                _ => LeaseState::Unsupported,
            },
        )
    }

    async fn renew_lease(&self, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Result<bool> {
        let (lease, call) = self.lease_script(ScriptName::RenewLease, key, token, Some(ttl));
        Ok(self.request::<i64>(Route::Read(&lease), call).await? == 1)
    }

    async fn release_lease(&self, key: &CacheKey, token: LeaseToken) -> Result<()> {
        let (lease, call) = self.lease_script(ScriptName::ReleaseLease, key, token, None);
        self.request::<()>(Route::Read(&lease), call).await
    }

    async fn abandon_lease(
        &self,
        key: &CacheKey,
        token: LeaseToken,
        pause: Duration,
    ) -> Result<()> {
        let (lease, call) = self.lease_script(ScriptName::AbandonLease, key, token, Some(pause));
        self.request::<()>(Route::Read(&lease), call).await
    }

    fn operation_timeout(&self) -> Option<Duration> {
        // `request` bounds every request by the response timeout.
        None
    }

    fn own_circuits(&self) -> bool {
        match self.transport {
            Transport::Single { .. } => false,
            #[cfg(feature = "cluster")]
            Transport::Cluster(_) => true,
            #[cfg(feature = "sentinel")]
            Transport::Sentinel(_) => false,
        }
    }

    async fn nodes(&self) -> Option<NodeHealth> {
        match &self.transport {
            Transport::Single { .. } => None,
            #[cfg(feature = "sentinel")]
            Transport::Sentinel(_) => None,
            #[cfg(feature = "cluster")]
            Transport::Cluster(cluster) => cluster.nodes(self.response_timeout).await,
        }
    }
}

/// The first error that is not a missing replica acknowledgement, else the
/// first error, else `Ok`.
fn worst(results: Vec<Result<()>>) -> Result<()> {
    let mut not_replicated = None;
    for result in results {
        match result {
            Ok(()) => {}
            Err(e @ Error::NotReplicated { .. }) => {
                not_replicated.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    not_replicated.map_or(Ok(()), Err)
}

/// rustls needs a process-wide crypto provider; install ring's once, unless the
/// application already installed one.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means one is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn shard_states_parse_from_decimal_only() {
        let state = |g, e| {
            Some(ShardState {
                generation: Generation(g),
                epoch: e,
            })
        };
        assert_eq!(parse_shard(b"42:0"), state(42, 0));
        let max = format!("{}:{}", u64::MAX, scripts::MAX_EPOCH);
        assert_eq!(
            parse_shard(max.as_bytes()),
            state(u64::MAX, scripts::MAX_EPOCH)
        );
        assert_eq!(
            parse_shard(b"7:999999999999999"),
            state(7, 999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"42",
            b"0:1",
            b":1",
            b"1:",
            b"18446744073709551616:0",
            b"-1:0",
            b"4 2:0",
            b"x:0",
            b"1:2:3",
            b"05:1",
            b"5:01",
            b"5:1000000000000000",
            b"5:9007199254740992",
        ] {
            assert_eq!(parse_shard(bad), None, "{bad:?}");
        }
        let fresh = ShardState::fresh();
        assert_eq!(parse_shard(shard_text(fresh).as_bytes()), Some(fresh));
    }

    #[test]
    fn generation_key_argument_is_the_generation_key() {
        let shard = "cache:{users:0a}";
        let mut written = redis::cmd("MGET");
        written.arg(GenerationKey(shard));
        let mut built = redis::cmd("MGET");
        built.arg(generation_key(shard));
        assert_eq!(written.get_packed_command(), built.get_packed_command());
        assert_eq!(generation_key(shard), "cache:{users:0a}:gen");
    }

    #[test]
    fn lookup_replies_are_taken_apart() {
        let reply = Value::Array(vec![
            Value::BulkString(b"12345678entry".to_vec()),
            Value::BulkString(b"7:3".to_vec()),
        ]);
        assert_eq!(
            parse_lookup(NAME, reply).unwrap(),
            Lookup {
                entry: Some(Stored {
                    version: Version::from_bytes(b"12345678"),
                    bytes: Bytes::from_static(b"entry"),
                }),
                shard: Some(ShardState {
                    generation: Generation(7),
                    epoch: 3
                }),
            }
        );
        let empty = Value::Array(vec![Value::Nil, Value::Nil]);
        assert_eq!(parse_lookup(NAME, empty).unwrap(), Lookup::default());
        // Garbage too short for a version: all version, no bytes (a miss
        // that the next store can still replace).
        let short = Value::Array(vec![Value::BulkString(b"x".to_vec()), Value::Nil]);
        let entry = parse_lookup(NAME, short).unwrap().entry.unwrap();
        assert_eq!(
            (entry.version.as_bytes(), entry.bytes.len()),
            (&b"x"[..], 0)
        );
        // A shard state that is not ours is none: the entry is then a miss,
        // never a hit under a guessed generation.
        let foreign = Value::Array(vec![Value::Nil, Value::Int(7)]);
        assert_eq!(parse_lookup(NAME, foreign).unwrap().shard, None);
        assert!(parse_lookup(NAME, Value::Array(vec![Value::Nil])).is_err());
        assert!(parse_lookup(NAME, Value::Okay).is_err());
        let not_a_string = Value::Array(vec![Value::Int(1), Value::Nil]);
        assert!(parse_lookup(NAME, not_a_string).is_err());
    }
}
