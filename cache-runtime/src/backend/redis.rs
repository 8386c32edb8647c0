//! The Redis backend: one multiplexed connection per process through redis-rs'
//! `ConnectionManager`, which pipelines concurrent requests from all tasks over
//! it and reconnects with capped exponential backoff.
//!
//! Commands per operation:
//!
//! | operation | commands | round trips |
//! | --- | --- | --- |
//! | hit or miss lookup | `MGET entry gen` | 1 |
//! | create a missing generation | `SET gen <random> NX GET EX <ttl>` | 1 |
//! | store after a miss | `EVALSHA` of the conditional-store script | 1 |
//! | invalidate one entry | `SET entry <tombstone> PX <ttl>` | 1 |
//! | invalidate a namespace | 16 × `SET gen <random> EX <ttl>`, pipelined | 1 |
//!
//! Entry and generation share a hash tag, so each multi-key command stays in
//! one slot and the layout works unchanged on Redis Cluster. No operation scans.

use std::fmt;
use std::sync::Arc;
#[cfg(feature = "tls")]
use std::sync::Once;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;

use super::{Backend, Lookup, PutCondition, PutOutcome};
use crate::config::RedisConfig;
use crate::entry::{Generation, HEADER_LEN};
use crate::error::{Error, Result};
use crate::key::CacheKey;

const NAME: &str = "redis";

/// How long a generation key lives after it was last created, bumped or used
/// for a store. A lost generation only costs misses.
const GENERATION_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The conditional store. Refuses (1) if the shard's generation is not the one
/// the reader saw, (2) if the entry is not the one the reader saw (absent, or
/// the same first bytes: header and stamp); otherwise stores with a TTL and
/// keeps the generation alive.
const PUT_SCRIPT: &str = r"
local gen = redis.call('GET', KEYS[2])
if gen ~= ARGV[1] then return 1 end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[2] ~= '1' or redis.call('GETRANGE', KEYS[1], 0, tonumber(ARGV[6]) - 1) ~= ARGV[3] then
    return 2
  end
elseif ARGV[2] == '1' then
  return 2
end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 0
";

/// A Redis (or Valkey) backend.
///
/// Built from a [`RedisConfig`]. Connecting is lazy unless
/// [`RedisConfig::fail_fast`] is set: a service starts while Redis is down and
/// its cached calls run uncached until Redis answers.
#[derive(Clone)]
pub struct RedisBackend {
    connection: ConnectionManager,
    put_script: Arc<redis::Script>,
    response_timeout: Duration,
    description: String,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.description)
            .field("response_timeout", &self.response_timeout)
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
    /// Must be called inside a Tokio runtime.
    pub fn lazy(config: RedisConfig) -> Result<RedisBackend> {
        config.warn_if_unprotected();
        #[cfg(feature = "tls")]
        install_crypto_provider();
        let description = config.redacted_url();
        let client = config.client()?;
        // No response timeout in the manager: `request` bounds each request as a
        // whole (including waits on a reconnect), and a second timer per
        // request costs throughput under concurrency.
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(None)
            .set_min_delay(config.backoff_base)
            .set_exponent_base(2.0)
            .set_max_delay(config.backoff_max)
            .set_number_of_retries(config.reconnect_attempts());
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| Error::backend(NAME, redact(&e, &config)))?;
        Ok(RedisBackend {
            connection,
            put_script: Arc::new(redis::Script::new(PUT_SCRIPT)),
            response_timeout: config.response_timeout,
            description,
        })
    }

    /// Runs one request and converts its reply.
    async fn request<T: redis::FromRedisValue>(&self, cmd: impl RequestKind) -> Result<T> {
        let value = self.request_value(cmd).await?;
        redis::from_redis_value(value).map_err(|e| Error::backend(NAME, e))
    }

    /// Runs one request with the response timeout, which bounds the whole wait
    /// (a request may also wait for a reconnect), so a call never pays more.
    async fn request_value(&self, cmd: impl RequestKind) -> Result<redis::Value> {
        let mut connection = self.connection.clone();
        let fut = async move { cmd.run(&mut connection).await };
        match tokio::time::timeout(self.response_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::backend(NAME, e)),
            Err(_) => Err(Error::backend(
                NAME,
                format!(
                    "no answer within the response timeout ({:?})",
                    self.response_timeout
                ),
            )),
        }
    }
}

/// A command or pipeline, run on the shared connection.
trait RequestKind: Send + 'static {
    fn run(
        self,
        connection: &mut ConnectionManager,
    ) -> impl Future<Output = redis::RedisResult<redis::Value>> + Send;
}

impl RequestKind for redis::Cmd {
    async fn run(self, connection: &mut ConnectionManager) -> redis::RedisResult<redis::Value> {
        self.query_async(connection).await
    }
}

impl RequestKind for redis::Pipeline {
    async fn run(self, connection: &mut ConnectionManager) -> redis::RedisResult<redis::Value> {
        self.query_async(connection).await
    }
}

/// A script invocation: `EVALSHA`; if Redis does not know the script (after
/// a restart or `SCRIPT FLUSH`), redis-rs loads it and sends `EVALSHA` again.
struct ScriptCall(Arc<redis::Script>, Vec<Vec<u8>>, Vec<Vec<u8>>);

impl RequestKind for ScriptCall {
    async fn run(self, connection: &mut ConnectionManager) -> redis::RedisResult<redis::Value> {
        let ScriptCall(script, keys, args) = self;
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

/// A generation as stored: the decimal digits of a `u64` (readable in
/// `redis-cli`). Anything else is no generation.
fn parse_generation(text: &[u8]) -> Option<Generation> {
    if text.is_empty() || text.len() > 20 {
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
    Some(Generation(value))
}

/// The reply to `MGET entry gen`, taken apart without copying the entry.
fn parse_lookup(reply: redis::Value) -> Result<Lookup> {
    let unexpected = |what: &str| Error::backend(NAME, format!("unexpected reply to MGET: {what}"));
    let redis::Value::Array(items) = reply else {
        return Err(unexpected("not an array"));
    };
    let [entry, generation]: [redis::Value; 2] = items
        .try_into()
        .map_err(|items: Vec<_>| unexpected(&format!("{} elements", items.len())))?;
    let entry = match entry {
        redis::Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        redis::Value::Nil => None,
        _ => return Err(unexpected("an entry that is not a string")),
    };
    let generation = match generation {
        redis::Value::BulkString(text) => parse_generation(&text),
        _ => None,
    };
    Ok(Lookup { entry, generation })
}

/// Error messages of redis-rs do not include passwords, but a URL in a parse
/// error could: never pass one through unredacted.
fn redact(error: &redis::RedisError, config: &RedisConfig) -> String {
    let message = error.to_string();
    match config.password() {
        Some(password) if !password.is_empty() => message.replace(&password, "***"),
        _ => message,
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
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
        parse_lookup(self.request_value(cmd).await?)
    }

    async fn generation(&self, shard: &str) -> Result<Generation> {
        let fresh = Generation::random();
        let mut cmd = redis::cmd("SET");
        cmd.arg(generation_key(shard))
            .arg(fresh.0)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(GENERATION_TTL.as_secs());
        let previous: Option<Vec<u8>> = self.request(cmd).await?;
        Ok(match previous {
            None => fresh,
            Some(previous) => parse_generation(&previous).ok_or_else(|| {
                Error::backend(
                    NAME,
                    format!("the generation key of {shard} does not hold a number"),
                )
            })?,
        })
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Bytes,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome> {
        let (seen, identity) = match &condition.previous {
            Some(previous) => (b"1".to_vec(), previous.to_vec()),
            None => (b"0".to_vec(), Vec::new()),
        };
        let call = ScriptCall(
            Arc::clone(&self.put_script),
            vec![
                key.as_str().into(),
                generation_key(key.shard()).into_bytes(),
            ],
            vec![
                condition.generation.0.to_string().into_bytes(),
                seen,
                identity,
                entry.to_vec(),
                ttl.as_millis().max(1).to_string().into_bytes(),
                HEADER_LEN.to_string().into_bytes(),
                GENERATION_TTL.as_secs().to_string().into_bytes(),
            ],
        );
        let outcome: i64 = self.request(call).await?;
        Ok(match outcome {
            0 => PutOutcome::Stored,
            1 => PutOutcome::GenerationChanged,
            _ => PutOutcome::EntryChanged,
        })
    }

    async fn set(&self, key: &CacheKey, entry: Bytes, ttl: Duration) -> Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key.as_str())
            .arg(entry.as_ref())
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.request::<()>(cmd).await
    }

    async fn bump(&self, shards: &[String]) -> Result<()> {
        let mut pipeline = redis::pipe();
        for shard in shards {
            pipeline
                .cmd("SET")
                .arg(generation_key(shard))
                .arg(Generation::random().0)
                .arg("EX")
                .arg(GENERATION_TTL.as_secs())
                .ignore();
        }
        self.request::<()>(pipeline).await
    }

    async fn ping(&self) -> Result<()> {
        self.request::<()>(redis::cmd("PING")).await
    }
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
    fn generations_parse_from_decimal_only() {
        assert_eq!(parse_generation(b"42"), Some(Generation(42)));
        assert_eq!(
            parse_generation(u64::MAX.to_string().as_bytes()),
            Some(Generation(u64::MAX))
        );
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"-1",
            b"4 2",
            b"x",
            b"0x10",
        ] {
            assert_eq!(parse_generation(bad), None, "{bad:?}");
        }
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
            Value::BulkString(b"entry".to_vec()),
            Value::BulkString(b"7".to_vec()),
        ]);
        assert_eq!(
            parse_lookup(reply).unwrap(),
            Lookup {
                entry: Some(Bytes::from_static(b"entry")),
                generation: Some(Generation(7)),
            }
        );
        let empty = Value::Array(vec![Value::Nil, Value::Nil]);
        assert_eq!(parse_lookup(empty).unwrap(), Lookup::default());
        // A generation that is not ours is no generation: the entry is then a
        // miss, never a hit under a guessed generation.
        let foreign = Value::Array(vec![Value::Nil, Value::Int(7)]);
        assert_eq!(parse_lookup(foreign).unwrap().generation, None);
        assert!(parse_lookup(Value::Array(vec![Value::Nil])).is_err());
        assert!(parse_lookup(Value::Okay).is_err());
        let not_a_string = Value::Array(vec![Value::Int(1), Value::Nil]);
        assert!(parse_lookup(not_a_string).is_err());
    }
}
