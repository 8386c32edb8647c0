//! Redis Sentinel: one primary with replicas, watched by sentinels that
//! promote a replica when the primary fails. redis-rs finds the primary
//! (asking the sentinels, then checking with `ROLE` that the node it names
//! is a primary) but does not follow a failover; this module does:
//!
//! - A connection error, a timeout (of a request that had the whole
//!   response timeout) or a `READONLY` reply forgets the primary: no request
//!   goes to that node through its connections again until the sentinels
//!   name a primary again and it confirms its role. So a demoted primary is
//!   never written to. An idle backend whose primary died and restarted
//!   before any request failed can reconnect to it through the connection
//!   manager: the monitor's check bounds that to [`CHECK_INTERVAL`].
//! - A primary is believed when a majority of the configured sentinels name
//!   it (and it confirms its role), as Sentinel itself needs a majority to
//!   fail over: a sentinel cut off with an old primary on a minority side,
//!   or one monitoring another server under the same name, is outvoted.
//!   Without a majority, no primary is found and calls run uncached.
//! - A monitor task asks the sentinels every [`CHECK_INTERVAL`] which node is
//!   the primary, and forgets ours if a majority names another: one cut off
//!   from the sentinels (which promoted another) is left within that bound
//!   even if it still answers us.
//! - Finding the primary runs in a task of its own, retried with the
//!   reconnect backoff; requests wait for it at most their timeout, and run
//!   uncached meanwhile.
//!
//! Each primary found gets its own connections (and its own silent-
//! connection watchdog, [`super::connection`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::connection::{Connection, Single};
use super::{Failure, RequestKind, send_raw};
use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::observe::Throttle;

pub(super) const NAME: &str = "redis-sentinel";

/// How often the monitor asks a sentinel which node is the primary.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The longest pause between two searches for the primary.
pub(crate) const SEARCH_BACKOFF_CAP: Duration = Duration::from_millis(250);

/// At most one warning of each kind per this period.
const WARN_PERIOD: Duration = Duration::from_secs(10);

/// The primary in use.
struct Primary {
    /// `host:port`, as the sentinels name it.
    address: String,
    /// Counts the primaries found: a failure forgets the one it happened on.
    id: u64,
    reads: Arc<Connection<Single>>,
    writes: Arc<Connection<Single>>,
}

pub(super) struct Sentinel {
    /// The sentinels, all asked each time.
    sentinels: Vec<redis::Client>,
    name: String,
    /// How to reach a node the sentinels name: the scheme (`redis` or
    /// `rediss`), the primary's credentials, the TCP settings.
    node_scheme: &'static str,
    node_auth: redis::RedisConnectionInfo,
    node_tcp: redis::io::tcp::TcpSettings,
    manager: redis::aio::ConnectionManagerConfig,
    separate_writes: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    ping_interval: Option<Duration>,
    backoff: (Duration, Duration),
    current: RwLock<Option<Arc<Primary>>>,
    /// Bumped when a primary is found; requests waiting for one watch it.
    found: watch::Sender<u64>,
    next_id: AtomicU64,
    /// A search task runs.
    searching: Arc<AtomicBool>,
    /// The monitor task runs.
    monitoring: Arc<AtomicBool>,
    lost: Throttle,
    failing: Throttle,
    /// The last search's failure, for the requests that waited for it.
    last_error: Mutex<Option<String>>,
}

impl Sentinel {
    pub(super) fn new(config: &RedisConfig) -> Result<Sentinel> {
        let target = config.sentinel_target().expect("a Sentinel configuration");
        let (sentinels, name, auth) = (&target.sentinels, &target.name, &target.primary_auth);
        let invalid = |e: redis::RedisError| {
            Error::Config(format!(
                "invalid Redis Sentinel configuration {}: {e}",
                config.redacted_url()
            ))
        };
        let infos = sentinels
            .iter()
            .map(|url| {
                redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map(|info| info.set_tcp_settings(config.tcp_settings()))
            })
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(invalid)?;
        let clients = infos
            .iter()
            .cloned()
            .map(redis::Client::open)
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(invalid)?;
        #[cfg(feature = "tls")]
        if config.root_cert().is_some() {
            return Err(Error::Config(
                "a CA certificate (tls_root_cert) is not supported with Sentinel yet; \
                 use certificates the system trusts"
                    .to_owned(),
            ));
        }
        let mut redis_info = redis::RedisConnectionInfo::default();
        if let Some((user, password)) = auth {
            if !user.is_empty() {
                redis_info = redis_info.set_username(user);
            }
            if !password.is_empty() {
                redis_info = redis_info.set_password(password);
            }
        }
        Ok(Sentinel {
            sentinels: clients,
            name: name.clone(),
            node_scheme: if sentinels[0].scheme() == "rediss" {
                "rediss"
            } else {
                "redis"
            },
            node_auth: redis_info,
            node_tcp: config.tcp_settings(),
            manager: super::manager_config(config),
            separate_writes: config.replication.is_some(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            ping_interval: config.ping_interval,
            backoff: (config.backoff_base, config.backoff_max),
            current: RwLock::new(None),
            found: watch::channel(0).0,
            next_id: AtomicU64::new(1),
            searching: Arc::new(AtomicBool::new(false)),
            monitoring: Arc::new(AtomicBool::new(false)),
            lost: Throttle::new(WARN_PERIOD),
            failing: Throttle::new(WARN_PERIOD),
            last_error: Mutex::new(None),
        })
    }

    fn current(&self) -> Option<Arc<Primary>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs one request on the primary, within `timeout` in all (finding
    /// the primary included).
    pub(super) async fn request(
        self: &Arc<Self>,
        write: bool,
        timeout: Duration,
        cmd: impl RequestKind,
    ) -> Result<redis::Value> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::backend(
                NAME,
                "the Redis backend needs a Tokio runtime (with I/O and timers); \
                 cached calls outside one run uncached",
            ));
        }
        self.monitor();
        let deadline = tokio::time::Instant::now() + timeout;
        let primary = match self.current() {
            Some(primary) => primary,
            None => self.wait_for_primary(deadline).await?,
        };
        let connection = if write {
            &primary.writes
        } else {
            &primary.reads
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let result = send_raw(connection, left, cmd).await;
        // A timeout counts only if the request had the whole response
        // timeout: one that waited for the search and was left a sliver
        // says nothing about the primary (found in review: a paused primary
        // was forgotten by every caller at once).
        let doubt = match &result {
            Err(Failure::Timeout(t)) => *t >= self.response_timeout,
            Err(failure) => failure.may_be_another_primary(),
            Ok(_) => false,
        };
        if let Err(failure) = &result
            && doubt
        {
            self.forget(primary.id, &failure.to_string());
        }
        result.map_err(|failure| failure.into_error(NAME))
    }

    /// Waits until a primary is known, at most until `deadline`, starting a
    /// search if none runs.
    async fn wait_for_primary(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<Primary>> {
        let mut found = self.found.subscribe();
        loop {
            if let Some(primary) = self.current() {
                return Ok(primary);
            }
            self.search();
            match tokio::time::timeout_at(deadline, found.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    let why = self
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                        .unwrap_or_else(|| "still asking the sentinels".to_owned());
                    return Err(Error::backend(
                        NAME,
                        format!("no primary for `{}` known yet: {why}", self.name),
                    ));
                }
            }
        }
    }

    /// Forgets primary `id` (if it is still the current one) and starts a
    /// search for the next.
    fn forget(self: &Arc<Self>, id: u64, why: &str) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_none_or(|p| p.id != id) {
            return;
        }
        let address = current
            .take()
            .map(|p| p.address.clone())
            .unwrap_or_default();
        drop(current);
        if let Some(suppressed) = self.lost.admit() {
            tracing::warn!(
                backend = NAME,
                primary = %address,
                suppressed,
                "the Redis primary failed ({why}); asking the sentinels for the primary again"
            );
        }
        self.search();
    }

    /// Starts the search task unless one runs.
    fn search(self: &Arc<Self>) {
        if self.searching.swap(true, Relaxed) {
            return;
        }
        let running = Running(Arc::clone(&self.searching));
        tokio::spawn(search(Arc::downgrade(self), running));
    }

    /// Starts the monitor task unless one runs.
    fn monitor(self: &Arc<Self>) {
        if self.monitoring.load(Relaxed) || self.monitoring.swap(true, Relaxed) {
            return;
        }
        let running = Running(Arc::clone(&self.monitoring));
        tokio::spawn(monitor(Arc::downgrade(self), running));
    }

    /// One attempt: the primary a majority of the sentinels name,
    /// confirmed by its `ROLE`.
    async fn find(&self) -> std::result::Result<(String, redis::Client), String> {
        let address = self.named_primary().await?;
        let client = self.node_client(&address)?;
        let limit = self.connect_timeout.saturating_add(self.response_timeout);
        let role = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("ROLE")
                .query_async::<redis::Role>(&mut connection)
                .await
        };
        match tokio::time::timeout(limit, role).await {
            Ok(Ok(redis::Role::Primary { .. })) => Ok((address, client)),
            Ok(Ok(_)) => Err(format!(
                "{address}, which the sentinels name as the primary, is not one (yet)"
            )),
            Ok(Err(e)) => Err(format!("the primary the sentinels name, {address}: {e}")),
            Err(_) => Err(format!(
                "the primary the sentinels name, {address}, did not answer within {limit:?}"
            )),
        }
    }

    /// The node a majority of the configured sentinels name as the primary,
    /// all asked at once, each within the connect and response timeouts. A
    /// sentinel that thinks the primary down names none.
    async fn named_primary(&self) -> std::result::Result<String, String> {
        let limit = self.connect_timeout.saturating_add(self.response_timeout);
        let ask = |client: &redis::Client| {
            let client = client.clone();
            let name = self.name.clone();
            async move {
                let ask = async {
                    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                    let reply: HashMap<String, String> = redis::cmd("SENTINEL")
                        .arg("MASTER")
                        .arg(&name)
                        .query_async(&mut connection)
                        .await
                        .ok()?;
                    named_by(&reply, &name)
                };
                tokio::time::timeout(limit, ask).await.ok().flatten()
            }
        };
        // Decided as soon as a majority agrees: a silent sentinel (the
        // partition this guards against) must not delay every discovery
        // and every monitor check by its timeout.
        let mut asking: futures_util::stream::FuturesUnordered<_> =
            self.sentinels.iter().map(ask).collect();
        let mut answers = Vec::with_capacity(self.sentinels.len());
        while let Some(answer) = futures_util::StreamExt::next(&mut asking).await {
            answers.push(answer);
            if let Ok(address) = majority(&answers, self.sentinels.len()) {
                return Ok(address);
            }
        }
        majority(&answers, self.sentinels.len())
    }

    /// A client for the node at `address` (`host:port`, as a sentinel names
    /// it), with the primary's credentials.
    fn node_client(&self, address: &str) -> std::result::Result<redis::Client, String> {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("the sentinels named `{address}`, not a host:port"))?;
        // An IPv6 address goes in brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let url = format!("{}://{host}:{port}", self.node_scheme);
        redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map(|info| {
                info.set_redis_settings(self.node_auth.clone())
                    .set_tcp_settings(self.node_tcp.clone())
            })
            .and_then(redis::Client::open)
            .map_err(|e| format!("the sentinels named `{address}`: {e}"))
    }

    fn install(&self, address: String, client: redis::Client) -> Arc<Primary> {
        let connection = || {
            Arc::new(Connection::new(
                Single {
                    client: client.clone(),
                    config: self.manager.clone(),
                },
                self.response_timeout,
                self.ping_interval,
            ))
        };
        let reads = connection();
        let writes = if self.separate_writes {
            connection()
        } else {
            Arc::clone(&reads)
        };
        let primary = Arc::new(Primary {
            address,
            id: self.next_id.fetch_add(1, Relaxed),
            reads,
            writes,
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&primary));
        self.found.send_modify(|n| *n += 1);
        primary
    }
}

/// Clears a "task runs" flag when the task ends, however it ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

/// Asks until a primary is found, with the reconnect backoff between
/// attempts; ends when one is, or when the backend is dropped.
async fn search(sentinel: Weak<Sentinel>, _running: Running) {
    let mut delay = None;
    loop {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let Some(sentinel) = sentinel.upgrade() else {
            return;
        };
        if sentinel.current().is_some() {
            return;
        }
        match sentinel.find().await {
            Ok((address, client)) => {
                tracing::info!(backend = NAME, primary = %address, "Redis primary found through the sentinels");
                sentinel.install(address, client);
                *sentinel
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                return;
            }
            Err(error) => {
                if let Some(suppressed) = sentinel.failing.admit() {
                    tracing::warn!(
                        backend = NAME,
                        %error,
                        suppressed,
                        "cannot find the Redis primary through the sentinels; calls run uncached"
                    );
                }
                *sentinel
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(error);
                // Capped low: during a failover the sentinels name the new
                // primary a moment after the old one stops answering, and
                // the search should see it soon after.
                let (base, cap) = sentinel.backoff;
                let cap = cap.min(SEARCH_BACKOFF_CAP);
                delay =
                    Some(delay.map_or(base.min(cap), |d: Duration| d.saturating_mul(2).min(cap)));
            }
        }
    }
}

/// Every [`CHECK_INTERVAL`], forgets the primary if a majority of the
/// sentinels name another. Ends when the backend is dropped.
async fn monitor(sentinel: Weak<Sentinel>, _running: Running) {
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        let Some(sentinel) = sentinel.upgrade() else {
            return;
        };
        let Some(primary) = sentinel.current() else {
            // A failure between a search's install and its end finds the
            // search still running and starts none: start it here.
            sentinel.search();
            continue;
        };
        // Without a majority the primary is kept: its own failures forget
        // it, and its invalidations wait for a replica.
        if let Ok(named) = sentinel.named_primary().await
            && named != primary.address
        {
            sentinel.forget(
                primary.id,
                &format!("the sentinels name {named} as the primary now"),
            );
        }
    }
}

impl Failure {
    /// Whether the failure may mean that the node is no longer the primary:
    /// it is gone, silent, or refuses writes as a replica.
    fn may_be_another_primary(&self) -> bool {
        match self {
            Failure::Timeout(_) => true,
            Failure::NoRuntime | Failure::Open(_) => false,
            Failure::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                    || e.to_string().contains("READONLY")
            }
        }
    }
}

/// The primary a sentinel's `SENTINEL MASTER` reply names, `host:port`: none
/// if the reply is for another name or the sentinel thinks it down.
fn named_by(reply: &HashMap<String, String>, name: &str) -> Option<String> {
    let flags = reply.get("flags")?;
    let usable = reply.get("name").map(String::as_str) == Some(name)
        && flags.split(',').any(|flag| flag == "master")
        && !flags
            .split(',')
            .any(|flag| flag == "s_down" || flag == "o_down");
    let port: u16 = reply.get("port")?.parse().ok()?;
    let ip = reply.get("ip")?;
    usable.then(|| format!("{ip}:{port}"))
}

/// The address named by more than half of `configured` sentinels, from
/// their answers (`None`: no answer, or no usable primary).
fn majority(answers: &[Option<String>], configured: usize) -> std::result::Result<String, String> {
    let mut votes: Vec<(&str, usize)> = Vec::new();
    for address in answers.iter().flatten() {
        match votes.iter_mut().find(|(a, _)| *a == address) {
            Some((_, n)) => *n += 1,
            None => votes.push((address, 1)),
        }
    }
    let needed = configured / 2 + 1;
    if let Some((address, _)) = votes.iter().find(|(_, n)| *n >= needed) {
        return Ok((*address).to_owned());
    }
    let named = if votes.is_empty() {
        "none named one".to_owned()
    } else {
        votes
            .iter()
            .map(|(address, n)| format!("{n} named {address}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "no primary named by a majority ({needed} of {configured}) of the sentinels: {named}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(fields: &[(&str, &str)]) -> HashMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_reply_names_a_primary_only_when_usable() {
        let up = reply(&[
            ("name", "p"),
            ("ip", "10.0.0.1"),
            ("port", "6380"),
            ("flags", "master"),
        ]);
        assert_eq!(named_by(&up, "p").as_deref(), Some("10.0.0.1:6380"));
        assert_eq!(named_by(&up, "other"), None);
        let mut down = up.clone();
        down.insert("flags".into(), "master,s_down".into());
        assert_eq!(named_by(&down, "p"), None);
        let mut bad_port = up.clone();
        bad_port.insert("port".into(), "x".into());
        assert_eq!(named_by(&bad_port, "p"), None);
        let mut no_ip = up;
        no_ip.remove("ip");
        assert_eq!(named_by(&no_ip, "p"), None);
    }

    #[test]
    fn a_primary_needs_a_majority_of_the_configured_sentinels() {
        let a = || Some("a:1".to_owned());
        let b = || Some("b:1".to_owned());
        assert_eq!(majority(&[a(), a(), b()], 3), Ok("a:1".to_owned()));
        assert_eq!(majority(&[b(), a(), a(), a()], 4), Ok("a:1".to_owned()));
        // Two of four is no majority; one answer of three neither.
        let split = majority(&[a(), a(), b(), b()], 4).unwrap_err();
        assert!(
            split.contains("3 of 4") && split.contains("2 named a:1"),
            "{split}"
        );
        assert!(majority(&[a(), None, None], 3).is_err());
        assert_eq!(
            majority(&[None, None, None], 3).unwrap_err(),
            "no primary named by a majority (2 of 3) of the sentinels: none named one"
        );
    }
}
