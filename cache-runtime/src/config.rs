//! Configuration from code and from the environment.
//!
//! The variables and their precedence are listed in the crate docs'
//! "Configuration" section.

#[cfg(feature = "redis")]
use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// The default Redis URL.
#[cfg(feature = "redis")]
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Reads one variable; unset and empty are the same.
pub(crate) fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A duration from the environment: `250ms`, `1s`, `1m30s`.
pub(crate) fn duration_var(name: &str) -> Result<Option<Duration>> {
    let Some(text) = var(name) else {
        return Ok(None);
    };
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| {
            Error::Config(format!(
                "{name}={text:?} is not a duration ({e}); write it with a unit, like \"250ms\" or \"2s\""
            ))
        })
}

/// A TTL from the environment: seconds (`300`) or a duration (`5m`).
pub(crate) fn ttl_var(name: &str) -> Result<Option<Duration>> {
    match var(name) {
        Some(text) if text.trim().bytes().all(|b| b.is_ascii_digit()) => text
            .trim()
            .parse()
            .map(|secs| Some(Duration::from_secs(secs)))
            .map_err(|_| Error::Config(format!("{name}={text:?} is too large"))),
        _ => duration_var(name),
    }
}

/// A duration, or `off` for none: `Some(None)` is `off`, `None` unset.
pub(crate) fn optional_duration_var(name: &str) -> Result<Option<Option<Duration>>> {
    match var(name) {
        Some(text) if text.trim().eq_ignore_ascii_case("off") => Ok(Some(None)),
        _ => Ok(duration_var(name)?.map(Some)),
    }
}

pub(crate) fn bool_var(name: &str) -> Result<Option<bool>> {
    let Some(text) = var(name) else {
        return Ok(None);
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" => Ok(Some(false)),
        _ => Err(Error::Config(format!(
            "{name}={text:?} is not a boolean; use true or false"
        ))),
    }
}

#[cfg(feature = "redis")]
/// How to reach Redis. Checked when built; never shows its password.
#[derive(Clone)]
pub struct RedisConfig {
    url: url::Url,
    /// A cluster's seed nodes (then `url` is the first of them).
    nodes: Option<Vec<url::Url>>,
    /// A Sentinel group (then `url` is the first sentinel).
    sentinel: Option<SentinelTarget>,
    pub(crate) replication: Option<Replication>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) fail_fast: bool,
    tcp_nodelay: bool,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) ping_interval: Option<Duration>,
    tls_root_cert: Option<Vec<u8>>,
}

/// The sentinels, the name they know the primary by, and the primary's
/// credentials (user, password).
#[cfg(feature = "redis")]
#[derive(Clone)]
pub(crate) struct SentinelTarget {
    pub(crate) sentinels: Vec<url::Url>,
    pub(crate) name: String,
    pub(crate) primary_auth: Option<(String, String)>,
}

/// How an invalidation waits for replicas: `WAIT replicas timeout` after
/// its writes, on the same connection.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replication {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
}

#[cfg(feature = "redis")]
impl Replication {
    /// `Ok` if enough replicas acknowledged the writes before the `WAIT`.
    pub(crate) fn check(&self, backend: &'static str, acknowledged: u32) -> Result<()> {
        if acknowledged >= self.replicas {
            return Ok(());
        }
        Err(Error::NotReplicated {
            backend,
            acknowledged,
            wanted: self.replicas,
            timeout: self.timeout,
        })
    }
}

/// The default [`RedisConfig::wait_for_replicas`] of a cluster: one replica,
/// within 100 ms.
#[cfg(feature = "cluster")]
pub const DEFAULT_CLUSTER_REPLICATION: (u32, Duration) = (1, Duration::from_millis(100));

/// The default idle time before TCP keepalive probes start: 15 s.
#[cfg(feature = "redis")]
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// The default interval of the liveness ping on an idle connection: 5 s.
#[cfg(feature = "redis")]
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);

/// Keepalive probes sent, `idle / 3` apart, before the kernel gives a silent
/// connection up.
#[cfg(feature = "redis")]
const KEEPALIVE_PROBES: u32 = 3;

#[cfg(feature = "redis")]
impl RedisConfig {
    /// Checks a URL: `redis://[user[:password]@]host[:port][/db]`, `rediss://`
    /// (TLS, with the `tls` feature) or `unix:///path/to/socket[?db=N]`.
    pub fn new(url: &str) -> Result<RedisConfig> {
        let url = parse_url(url)?;
        Ok(RedisConfig {
            url,
            nodes: None,
            sentinel: None,
            replication: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(250),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            fail_fast: false,
            tcp_nodelay: true,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            tls_root_cert: None,
        })
    }

    /// `REDIS_URL` (default `redis://127.0.0.1:6379/0`) and the `CACHE_*`
    /// timeouts, backoff, fail-fast, keepalive and ping variables.
    ///
    /// With `REDIS_CLUSTER_NODES` set (feature `cluster`), a cluster
    /// configuration instead: see [`cluster`](Self::cluster), with
    /// `REDIS_USERNAME` and `REDIS_PASSWORD` for nodes given as `host:port`.
    /// `CACHE_WAIT_REPLICAS` and `CACHE_WAIT_TIMEOUT` set
    /// [`wait_for_replicas`](Self::wait_for_replicas).
    pub fn from_env() -> Result<RedisConfig> {
        let set: Vec<&str> = ["REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_SENTINELS"]
            .into_iter()
            .filter(|name| var(name).is_some())
            .collect();
        if set.len() > 1 {
            return Err(Error::Config(format!(
                "{} are all set; set one: REDIS_URL for one server, REDIS_CLUSTER_NODES for a \
                 cluster, REDIS_SENTINELS (with REDIS_SENTINEL_MASTER) for a Sentinel group",
                set.join(" and ")
            )));
        }
        let mut config = match (var("REDIS_CLUSTER_NODES"), var("REDIS_SENTINELS")) {
            (Some(nodes), _) => RedisConfig::cluster_from_env(&nodes)?,
            (None, Some(sentinels)) => RedisConfig::sentinel_from_env(&sentinels)?,
            (None, None) => {
                RedisConfig::new(var("REDIS_URL").as_deref().unwrap_or(DEFAULT_REDIS_URL))?
            }
        };
        let replicas = var("CACHE_WAIT_REPLICAS")
            .map(|text| {
                text.parse::<u32>().map_err(|_| {
                    Error::Config(format!(
                        "CACHE_WAIT_REPLICAS={text:?} is not a number of replicas; use 0, 1, 2..."
                    ))
                })
            })
            .transpose()?;
        let wait_timeout = duration_var("CACHE_WAIT_TIMEOUT")?;
        if replicas.is_some() || wait_timeout.is_some() {
            // A timeout alone changes the timeout of a wait that is on; it
            // turns none on.
            let (default_replicas, default_timeout) = config
                .replication
                .map_or((0, Duration::from_millis(100)), |r| (r.replicas, r.timeout));
            config = config.wait_for_replicas(
                replicas.unwrap_or(default_replicas),
                wait_timeout.unwrap_or(default_timeout),
            );
        }
        if let Some(d) = duration_var("CACHE_CONNECT_TIMEOUT")? {
            config = config.connect_timeout(d);
        }
        if let Some(d) = duration_var("CACHE_RESPONSE_TIMEOUT")? {
            config = config.response_timeout(d);
        }
        let base = duration_var("CACHE_BACKOFF_BASE")?.unwrap_or(config.backoff_base);
        let max = duration_var("CACHE_BACKOFF_MAX")?.unwrap_or(config.backoff_max);
        config = config.backoff(base, max);
        if let Some(fail_fast) = bool_var("CACHE_FAIL_FAST")? {
            config = config.fail_fast(fail_fast);
        }
        if let Some(keepalive) = optional_duration_var("CACHE_TCP_KEEPALIVE")? {
            config = config.tcp_keepalive(keepalive);
        }
        if let Some(interval) = optional_duration_var("CACHE_PING_INTERVAL")? {
            config = config.ping_interval(interval);
        }
        config.check()?;
        Ok(config)
    }

    /// A Redis Cluster, reached through these seed nodes (feature
    /// `cluster`): each `host:port`, or a URL `redis://[user:password@]host:port`
    /// (`rediss://` for TLS). All nodes take one form, one scheme and one set
    /// of credentials; the other nodes are found from the seeds. A cluster
    /// has database 0 only.
    ///
    /// Invalidations wait for one replica by default
    /// ([`DEFAULT_CLUSTER_REPLICATION`]; see
    /// [`wait_for_replicas`](Self::wait_for_replicas)).
    #[cfg(feature = "cluster")]
    pub fn cluster<I, S>(nodes: I) -> Result<RedisConfig>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        RedisConfig::cluster_with(nodes, None, false)
    }

    /// `REDIS_CLUSTER_NODES`, comma-separated, with the credentials of
    /// `REDIS_USERNAME` and `REDIS_PASSWORD`.
    fn cluster_from_env(nodes: &str) -> Result<RedisConfig> {
        #[cfg(feature = "cluster")]
        {
            let credentials = match (var("REDIS_USERNAME"), var("REDIS_PASSWORD")) {
                (None, None) => None,
                (user, password) => Some((user.unwrap_or_default(), password.unwrap_or_default())),
            };
            // A password may hold a comma: split, a piece of it would be
            // shown as a node of its own. With credentials in the list,
            // errors name nodes by their position only.
            let hide = nodes.contains('@');
            RedisConfig::cluster_with(nodes.split(','), credentials, hide).map_err(|e| match e {
                Error::Config(message) => Error::Config(format!("REDIS_CLUSTER_NODES: {message}")),
                other => other,
            })
        }
        #[cfg(not(feature = "cluster"))]
        {
            let _ = nodes;
            Err(Error::Config(
                "REDIS_CLUSTER_NODES is set but cache-runtime was built without its `cluster` feature"
                    .to_owned(),
            ))
        }
    }

    #[cfg(feature = "cluster")]
    fn cluster_with<I, S>(
        nodes: I,
        credentials: Option<(String, String)>,
        hide: bool,
    ) -> Result<RedisConfig>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = parse_nodes(nodes, credentials, hide)?;
        let mut config = RedisConfig::new(nodes[0].as_str())?;
        config.url = nodes[0].clone();
        config.nodes = Some(nodes);
        let (replicas, timeout) = DEFAULT_CLUSTER_REPLICATION;
        Ok(config.wait_for_replicas(replicas, timeout))
    }

    /// The cluster's seed nodes; `None` for one server.
    pub(crate) fn nodes(&self) -> Option<&[url::Url]> {
        self.nodes.as_deref()
    }

    /// A primary and its replicas found through Redis Sentinel (feature
    /// `sentinel`): the sentinels' addresses (each `host:port`, or a URL
    /// `redis://[user:password@]host:port` with the sentinels' own
    /// credentials; `rediss://` for TLS to the sentinels and the primary),
    /// and the name they monitor the primary under. The primary's
    /// credentials, if it has any, are set with
    /// [`primary_auth`](Self::primary_auth). Database 0.
    ///
    /// Requests go to the primary a majority of the listed sentinels name,
    /// after it confirmed its role: list every sentinel of the group. After a failover the new primary is found by itself: see
    /// the guide's Scaling out chapter for the bound. Invalidations wait for
    /// one replica by default, as on a cluster.
    #[cfg(feature = "sentinel")]
    pub fn sentinel<I, S>(sentinels: I, primary_name: &str) -> Result<RedisConfig>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        RedisConfig::sentinel_with(sentinels, primary_name, None, false)
    }

    #[cfg(feature = "sentinel")]
    fn sentinel_with<I, S>(
        sentinels: I,
        primary_name: &str,
        credentials: Option<(String, String)>,
        hide: bool,
    ) -> Result<RedisConfig>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let name = primary_name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(Error::Config(format!(
                "the Sentinel primary name {primary_name:?} is empty or holds spaces; \
                 give the name of `sentinel monitor <name> ...`"
            )));
        }
        let sentinels = parse_nodes(sentinels, credentials, hide).map_err(|e| match e {
            Error::Config(message) => Error::Config(message.replace("cluster node", "sentinel")),
            other => other,
        })?;
        let mut config = RedisConfig::new(sentinels[0].as_str())?;
        config.url = sentinels[0].clone();
        config.sentinel = Some(SentinelTarget {
            sentinels,
            name: name.to_owned(),
            primary_auth: None,
        });
        Ok(config.wait_for_replicas(1, Duration::from_millis(100)))
    }

    /// `REDIS_SENTINELS` (comma-separated), `REDIS_SENTINEL_MASTER`, the
    /// sentinels' `REDIS_SENTINEL_USERNAME`/`REDIS_SENTINEL_PASSWORD` and
    /// the primary's `REDIS_USERNAME`/`REDIS_PASSWORD`.
    fn sentinel_from_env(sentinels: &str) -> Result<RedisConfig> {
        #[cfg(feature = "sentinel")]
        {
            let Some(name) = var("REDIS_SENTINEL_MASTER") else {
                return Err(Error::Config(
                    "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not; set it to the \
                     name the sentinels monitor the primary under"
                        .to_owned(),
                ));
            };
            let credentials = |user: &str, password: &str| match (var(user), var(password)) {
                (None, None) => None,
                (user, password) => Some((user.unwrap_or_default(), password.unwrap_or_default())),
            };
            let hide = sentinels.contains('@');
            let mut config = RedisConfig::sentinel_with(
                sentinels.split(','),
                &name,
                credentials("REDIS_SENTINEL_USERNAME", "REDIS_SENTINEL_PASSWORD"),
                hide,
            )
            .map_err(|e| match e {
                Error::Config(message) => Error::Config(format!("REDIS_SENTINELS: {message}")),
                other => other,
            })?;
            if let Some((user, password)) = credentials("REDIS_USERNAME", "REDIS_PASSWORD") {
                config =
                    config.primary_auth((!user.is_empty()).then_some(user.as_str()), &password);
            }
            Ok(config)
        }
        #[cfg(not(feature = "sentinel"))]
        {
            let _ = sentinels;
            Err(Error::Config(
                "REDIS_SENTINELS is set but cache-runtime was built without its `sentinel` feature"
                    .to_owned(),
            ))
        }
    }

    /// The primary's user (`None`: the default user) and password, for a
    /// Sentinel configuration; the sentinels' own are in their addresses.
    /// No effect on other configurations.
    #[cfg(feature = "sentinel")]
    pub fn primary_auth(mut self, username: Option<&str>, password: &str) -> Self {
        if let Some(target) = &mut self.sentinel {
            target.primary_auth =
                Some((username.unwrap_or_default().to_owned(), password.to_owned()));
        }
        self
    }

    /// Whether this is a Sentinel configuration.
    pub(crate) fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// The sentinels, the primary's name and its credentials.
    #[cfg(feature = "sentinel")]
    pub(crate) fn sentinel_target(&self) -> Option<&SentinelTarget> {
        self.sentinel.as_ref()
    }

    /// Makes each invalidation wait until `replicas` replicas have its
    /// writes, at most `timeout` (Redis' `WAIT`, on a connection of its
    /// own so that hits never queue behind it). Redis replicates
    /// asynchronously: without the wait, a replica promoted after a
    /// failover may never have seen an invalidation the old primary
    /// acknowledged, and the entries it removed come back.
    ///
    /// When fewer replicas acknowledge in time, the invalidation returns
    /// [`Error::NotReplicated`]: it was applied on the primary and holds
    /// unless that primary fails before its replicas catch up. `0` turns
    /// the wait off. Default: off for one server, one replica within
    /// 100 ms for a cluster. `CACHE_WAIT_REPLICAS`, `CACHE_WAIT_TIMEOUT`.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replication = (replicas > 0).then_some(Replication { replicas, timeout });
        self
    }

    /// How long to wait for a connection. Default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a call waits for Redis before running uncached. Default 250 ms.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Reconnect delays: `base`, doubling, capped at `max`. Defaults 50 ms and
    /// 5 s. The cache's circuit breaker probes on the same schedule.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Fail at startup ([`CacheBuilder::connect`](crate::CacheBuilder::connect))
    /// if Redis does not answer. Default false: start and run uncached.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Sets `TCP_NODELAY` on the connection. Default true: each command leaves
    /// at once. With false, the kernel's Nagle algorithm holds small writes
    /// while an earlier one is unacknowledged and sends them together: on
    /// loopback or a same-host Redis under many concurrent calls that raises
    /// throughput (see `docs/benchmarks.md`), but across a network a held
    /// write can wait for a delayed acknowledgement (up to 40 ms on Linux).
    /// No effect on `unix://` sockets.
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.tcp_nodelay = nodelay;
        self
    }

    /// TCP keepalive on the connection: after `idle` without traffic the
    /// kernel probes the peer, three times `idle / 3` apart, and closes the
    /// connection if none is answered; on Linux `TCP_USER_TIMEOUT` gives the
    /// same bound to data that is sent and never acknowledged. A connection
    /// whose peer vanished (a NAT or load balancer that forgot it, a host
    /// that died without a reset) is then given up in about `2 × idle`, not
    /// in hours (idle) or about 15 minutes (unacknowledged data). Default
    /// 15 s; `None` leaves the system's settings. No effect on `unix://`
    /// sockets.
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle;
        self
    }

    /// The liveness ping: a connection that had no answer for `interval` is
    /// sent a `PING`, and a connection that leaves a request or a ping
    /// unanswered for the response timeout is replaced by a new one. A
    /// connection that went silent without closing is so replaced within
    /// `interval` plus the response timeout when idle, and within the
    /// response timeout when busy. Default 5 s; `None` turns the idle ping
    /// off (a busy connection is still replaced on a timeout).
    ///
    /// On a Redis Cluster every primary is pinged each `interval`, busy or
    /// not (the other nodes' answers say nothing of one node's), and the
    /// cluster connection is replaced in the background: requests go on on
    /// the old one until the new one has connected to every node.
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Trusts this CA certificate (PEM) for `rediss://`, instead of the
    /// system's roots. For private CAs and self-signed certificates.
    #[cfg(feature = "tls")]
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// The URL with its password replaced by `***`: the one after `user:`,
    /// and the `pass` query parameter of a `unix://` URL.
    ///
    /// For a cluster, its seed nodes so redacted, comma-separated.
    ///
    /// For a Sentinel group, `<name>@` and its sentinels.
    pub fn redacted_url(&self) -> String {
        let list = |urls: &[url::Url]| {
            urls.iter()
                .map(|url| redact_input(url.as_str()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match (&self.nodes, &self.sentinel) {
            (Some(nodes), _) => list(nodes),
            (None, Some(target)) => format!("{}@{}", target.name, list(&target.sentinels)),
            (None, None) => redact_input(self.url.as_str()),
        }
    }

    /// The response timeout.
    pub fn response_timeout_value(&self) -> Duration {
        self.response_timeout
    }

    /// The password, from `user:password@` or a `unix://` URL's `pass`.
    pub(crate) fn password(&self) -> Option<String> {
        let from_query = || {
            self.url
                .query_pairs()
                .find(|(k, _)| k == PASS_PARAM)
                .map(|(_, v)| v.into_owned())
        };
        self.url.password().map(str::to_owned).or_else(from_query)
    }

    pub(crate) fn check(&self) -> Result<()> {
        const MAX_REDIS_DURATION: Duration = Duration::from_secs(24 * 3600);
        for (name, d) in [
            ("connect timeout", Some(self.connect_timeout)),
            ("response timeout", Some(self.response_timeout)),
            ("backoff base", Some(self.backoff_base)),
            ("TCP keepalive", self.tcp_keepalive),
            ("ping interval", self.ping_interval),
            ("replica wait timeout", self.replication.map(|r| r.timeout)),
            ("backoff cap", Some(self.backoff_max)),
        ]
        .into_iter()
        .filter_map(|(name, d)| Some((name, d?)))
        {
            if d.is_zero() {
                return Err(Error::Config(format!(
                    "the Redis {name} must be greater than zero"
                )));
            }
            // Past this a duration means "never", which none of these may;
            // and the sums and deadlines made of them stay far from overflow.
            if d > MAX_REDIS_DURATION {
                return Err(Error::Config(format!(
                    "the Redis {name} must be at most a day, not {d:?}"
                )));
            }
        }
        if self.backoff_max < self.backoff_base {
            return Err(Error::Config(format!(
                "the Redis backoff cap ({:?}) is below its base ({:?})",
                self.backoff_max, self.backoff_base
            )));
        }
        Ok(())
    }

    /// Retries needed for the backoff to reach its cap, and a few more.
    pub(crate) fn reconnect_attempts(&self) -> usize {
        let ratio = self.backoff_max.as_secs_f64() / self.backoff_base.as_secs_f64().max(1e-9);
        (ratio.log2().ceil().max(0.0) as usize) + 4
    }

    pub(crate) fn client(&self) -> Result<redis::Client> {
        self.check()?;
        let mut info =
            redis::IntoConnectionInfo::into_connection_info(self.url.as_str()).map_err(|e| {
                Error::Config(format!("invalid Redis URL {}: {e}", self.redacted_url()))
            })?;
        info = info.set_tcp_settings(self.tcp_settings());
        let client = match &self.tls_root_cert {
            #[cfg(feature = "tls")]
            Some(root) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root.clone()),
                },
            ),
            _ => redis::Client::open(info),
        };
        client.map_err(|e| Error::Config(format!("invalid Redis URL {}: {e}", self.redacted_url())))
    }

    #[cfg(all(any(feature = "cluster", feature = "sentinel"), feature = "tls"))]
    pub(crate) fn root_cert(&self) -> Option<&[u8]> {
        self.tls_root_cert.as_deref()
    }

    pub(crate) fn tcp_settings(&self) -> redis::io::tcp::TcpSettings {
        use redis::io::tcp::socket2::TcpKeepalive;
        let settings = redis::io::tcp::TcpSettings::default().set_nodelay(self.tcp_nodelay);
        let Some(idle) = self.tcp_keepalive else {
            return settings;
        };
        let keepalive = TcpKeepalive::new().with_time(idle);
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        let settings = settings.set_user_timeout(idle * 2);
        #[cfg(not(any(target_os = "openbsd", target_os = "redox", target_os = "solaris")))]
        let keepalive = keepalive.with_interval(idle / KEEPALIVE_PROBES);
        #[cfg(not(any(
            target_os = "openbsd",
            target_os = "redox",
            target_os = "solaris",
            target_os = "windows"
        )))]
        let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
        settings.set_keepalive(keepalive)
    }

    /// Warns once per process when connecting without a password while the
    /// environment says production.
    pub(crate) fn warn_if_unprotected(&self) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        let production = ["APP_ENV", "ENVIRONMENT", "RUST_ENV", "ENV"]
            .iter()
            .filter_map(|name| var(name).map(|v| (name, v)))
            .find(|(_, v)| matches!(v.to_ascii_lowercase().as_str(), "production" | "prod"));
        if let Some((name, value)) = production
            && self.password().is_none()
            && self.url.scheme() != "unix"
        {
            WARNED.call_once(|| {
                tracing::warn!(
                    url = %self.redacted_url(),
                    "{name}={value} but Redis is used without a password; set one in REDIS_URL (redis://:password@host)"
                );
            });
        }
    }
}

#[cfg(feature = "redis")]
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                match (&self.nodes, &self.sentinel) {
                    (Some(_), _) => "cluster_nodes",
                    (None, Some(_)) => "sentinels",
                    (None, None) => "url",
                },
                &self.redacted_url(),
            )
            .field(
                "primary_auth",
                &self
                    .sentinel
                    .as_ref()
                    .map(|t| t.primary_auth.as_ref().map(|_| "set")),
            )
            .field("replication", &self.replication)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("fail_fast", &self.fail_fast)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("ping_interval", &self.ping_interval)
            .field("tls_root_cert", &self.tls_root_cert.as_ref().map(|_| "set"))
            .finish()
    }
}

#[cfg(feature = "redis")]
impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_url())
    }
}

#[cfg(feature = "redis")]
/// Replaces the passwords in text that is meant to be a URL with `***`,
/// working on the raw text so that input which does not parse is redacted
/// as well as input which does: everything between the first `:` after
/// `scheme://` and the *last* `@` (a password may contain `@ : / ? # %`, a host
/// never contains `@`), and everything after a `pass=` query parameter (the
/// password of a `unix://` URL, its name possibly percent-encoded). Text
/// without `://` (a typo such as `redis:/:pw@host`) loses everything
/// between its first `:` and its last `@`. When in doubt it hides too much,
/// never too little.
fn redact_input(input: &str) -> String {
    let input = redact_pass_param(input);
    let Some(at) = input.rfind('@') else {
        return input;
    };
    let userinfo_start = match input.find("://") {
        Some(scheme_end) => scheme_end + 3,
        None => 0,
    };
    match input[userinfo_start..at].find(':') {
        Some(colon) => format!(
            "{}***{}",
            &input[..userinfo_start + colon + 1],
            &input[at..]
        ),
        None => input,
    }
}

#[cfg(feature = "redis")]
/// The query parameter redis-rs reads a `unix://` URL's password from.
const PASS_PARAM: &str = "pass";

#[cfg(feature = "redis")]
/// Replaces everything after a `pass=` parameter with `***`: the password
/// runs to the next `&` in a well-formed URL, but an unencoded `&` or `#` in
/// it would leave a part of it in view. The parameter's name is compared
/// percent-decoded (`p%61ss=` is `pass=` to redis-rs).
fn redact_pass_param(input: &str) -> String {
    let Some(query) = input.find('?') else {
        return input.to_owned();
    };
    let mut start = query + 1;
    loop {
        let pair = &input[start..];
        let name_end = pair.find(['=', '&']).unwrap_or(pair.len());
        if pair[name_end..].starts_with('=') && percent_decoded(&pair[..name_end]) == PASS_PARAM {
            return format!("{}***", &input[..start + name_end + 1]);
        }
        match pair.find('&') {
            Some(amp) => start += amp + 1,
            None => return input.to_owned(),
        }
    }
}

#[cfg(feature = "redis")]
/// `%XX` sequences decoded; anything malformed kept as it is.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(feature = "redis")]
fn parse_url(input: &str) -> Result<url::Url> {
    let shown = redact_input(input.trim());
    let invalid = |reason: String| Error::Config(format!("invalid Redis URL `{shown}`: {reason}"));
    let url = url::Url::parse(input.trim()).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "redis" => {}
        "rediss" => {
            if cfg!(not(feature = "tls")) {
                return Err(invalid(
                    "rediss:// (TLS) needs the `tls` feature of cache-runtime".to_owned(),
                ));
            }
        }
        "unix" | "redis+unix" => {
            if url.path().is_empty() || url.path() == "/" {
                return Err(invalid(
                    "a unix:// URL needs the socket's path, as in unix:///run/redis.sock"
                        .to_owned(),
                ));
            }
            if let Some((_, db)) = url.query_pairs().find(|(k, _)| k == "db") {
                check_db(&db).map_err(invalid)?;
            }
            return Ok(url);
        }
        other => {
            return Err(invalid(format!(
                "unsupported scheme `{other}`; use redis://, rediss:// (TLS) or unix://"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            "no host; write it as redis://host:6379/0".to_owned(),
        ));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() {
        check_db(db).map_err(invalid)?;
    }
    Ok(url)
}

/// A cluster's seed nodes: `host:port` or URLs, all of one form, scheme
/// and set of credentials, database 0. With `hide`, errors name a node by
/// its position, never by its text. (A Sentinel group's sentinels, too.)
#[cfg(any(feature = "cluster", feature = "sentinel"))]
fn parse_nodes<I, S>(
    nodes: I,
    credentials: Option<(String, String)>,
    hide: bool,
) -> Result<Vec<url::Url>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut parsed: Vec<url::Url> = Vec::new();
    let mut bare = None;
    for (i, node) in nodes.into_iter().enumerate() {
        let node = node.as_ref().trim();
        let shown = if hide {
            format!("#{}", i + 1)
        } else {
            redact_input(node)
        };
        let parse = |text: &str| {
            parse_url(text).map_err(|e| match e {
                Error::Config(message) if hide => {
                    Error::Config(message.replace(&redact_input(text), &shown))
                }
                other => other,
            })
        };
        if node.is_empty() {
            return Err(Error::Config(format!(
                "cluster node {} is empty; list nodes as host:port,host:port",
                i + 1
            )));
        }
        let is_bare = !node.contains("://");
        if *bare.get_or_insert(is_bare) != is_bare {
            return Err(Error::Config(format!(
                "cluster node `{shown}` mixes forms: give every node as host:port, or every node as a URL"
            )));
        }
        let url = if is_bare {
            let (host, port) = node.rsplit_once(':').ok_or_else(|| {
                Error::Config(format!(
                    "cluster node `{shown}` has no port; write it as host:port"
                ))
            })?;
            if host.is_empty() || host.contains(['/', '@', '?', '#']) {
                return Err(Error::Config(format!(
                    "cluster node `{shown}` is not host:port"
                )));
            }
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(Error::Config(format!(
                    "cluster node `{shown}` has no valid port (1 to 65535)"
                )));
            }
            parse(&format!("redis://{node}"))?
        } else {
            parse(node)?
        };
        if url.scheme() != "redis" && url.scheme() != "rediss" {
            return Err(Error::Config(format!(
                "cluster node `{shown}`: a cluster is reached over TCP, redis:// or rediss://"
            )));
        }
        if url.port().is_none() && is_bare {
            return Err(Error::Config(format!("cluster node `{shown}` has no port")));
        }
        let db = url.path().trim_start_matches('/');
        if !db.is_empty() && db != "0" {
            return Err(Error::Config(format!(
                "cluster node `{shown}` names database {db}; a cluster has database 0 only"
            )));
        }
        if let Some(first) = parsed.first() {
            if first.scheme() != url.scheme() {
                return Err(Error::Config(format!(
                    "cluster node `{shown}` mixes schemes: every node must use {}://",
                    first.scheme()
                )));
            }
            if (first.username(), first.password()) != (url.username(), url.password()) {
                return Err(Error::Config(format!(
                    "cluster node `{shown}` has other credentials than the first node; \
                     every node must have the same user and password"
                )));
            }
        }
        // Twice the same sentinel would be two votes for one answer.
        let same = |p: &url::Url| {
            (p.host_str(), p.port_or_known_default())
                == (url.host_str(), url.port_or_known_default())
        };
        if parsed.iter().any(same) {
            return Err(Error::Config(format!(
                "cluster node `{shown}` is listed twice; list each node once"
            )));
        }
        parsed.push(url);
    }
    if parsed.is_empty() {
        return Err(Error::Config(
            "no cluster nodes given; list at least one as host:port".to_owned(),
        ));
    }
    if let Some((user, password)) = credentials {
        if parsed[0].password().is_some() || !parsed[0].username().is_empty() {
            return Err(Error::Config(
                "the credentials are given twice, in the node URLs and in REDIS_USERNAME/REDIS_PASSWORD; give them once"
                    .to_owned(),
            ));
        }
        for url in &mut parsed {
            // Cannot fail on a redis:// URL with a host.
            let _ = url.set_username(&user);
            let _ = url.set_password((!password.is_empty()).then_some(password.as_str()));
        }
    }
    Ok(parsed)
}

#[cfg(feature = "redis")]
fn check_db(db: &str) -> std::result::Result<(), String> {
    // The value is not echoed: in a URL whose password holds a `/`, what
    // parses as the database is a piece of the password.
    match db.parse::<u32>() {
        Ok(_) => Ok(()),
        Err(_) => Err("the database must be a number, as in /0 or /1".to_owned()),
    }
}

#[cfg(feature = "redis")]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_urls() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis://localhost",
            "redis://:secret@cache.internal:6380/2",
            "redis://app:secret@cache.internal/1",
            "unix:///run/redis.sock",
            "unix:///run/redis.sock?db=3",
        ] {
            RedisConfig::new(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for (url, reason) in [
            ("http://localhost", "unsupported scheme `http`"),
            ("redis://localhost/abc", "database must be a number"),
            ("redis://localhost:notaport", "invalid port"),
            ("not a url", "relative URL"),
            ("unix://", "socket's path"),
            ("redis:///0", "no host"),
        ] {
            let err = RedisConfig::new(url).unwrap_err().to_string();
            assert!(err.contains(reason), "{url}: {err}");
        }
    }

    /// Every way a config shows its URL.
    fn shown(config: &RedisConfig) -> [String; 3] {
        [
            format!("{config:?}"),
            config.to_string(),
            config.redacted_url(),
        ]
    }

    #[test]
    fn passwords_never_show() {
        let config = RedisConfig::new("redis://app:hunter2@cache.internal:6380/1").unwrap();
        for shown in shown(&config) {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        let err = RedisConfig::new("redis://app:hunter2@cache.internal:xx/1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    /// Passwords with the characters a URL parser splits on, in URLs that
    /// parse and in URLs that do not: the error or the shown URL never holds
    /// any part of the password.
    #[test]
    fn passwords_with_url_delimiters_never_show() {
        // Parts of three characters that appear nowhere else in the URLs.
        for password in [
            "Zq1/Xy2",
            "Zq1@Xy2:Wv3/Ut4",
            "Zq1?Xy2",
            "Zq1#Xy2",
            "Zq1%zzXy2",
            "Zq1%40Xy2",
            "Zq1:Xy2@Wv3",
            "Zq1@Xy2/Wv3?Ut4#Sr5%",
            "Zq1&Xy2",
        ] {
            for url in [
                format!("redis://:{password}@127.0.0.1:6380/0"),
                format!("redis://app:{password}@cache.internal:6380/1"),
                format!("rediss://app:{password}@cache.internal/0"),
                format!("unix:///run/redis.sock?db=1&pass={password}"),
                format!("unix:///run/redis.sock?p%61ss={password}"),
                // Typos that do not parse as URLs at all.
                format!("redis:/:{password}@cache.internal:6379/0"),
                format!("redis:{password}@cache.internal"),
                format!("//:{password}@cache.internal:6379"),
            ] {
                let shown = match RedisConfig::new(&url) {
                    Ok(config) => shown(&config).join(" "),
                    Err(e) => format!("{e} {e:?}"),
                };
                for part in password.split(['/', '@', ':', '?', '#', '%', '&']) {
                    assert!(
                        part.len() < 3 || !shown.contains(part),
                        "{url}: `{part}` of the password shows in: {shown}"
                    );
                }
                assert!(shown.contains("***"), "{url}: {shown}");
            }
        }
    }

    #[test]
    fn unix_socket_passwords_never_show() {
        let config = RedisConfig::new("unix:///run/redis.sock?db=2&pass=hunter2").unwrap();
        assert_eq!(config.password().as_deref(), Some("hunter2"));
        for shown in shown(&config) {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("pass=***"), "{shown}");
            assert!(shown.contains("db=2"), "{shown}");
        }
        let err = RedisConfig::new("unix:///run/redis.sock?db=x&pass=hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("pass=***"), "{err}");
    }

    #[test]
    fn backoff_is_checked() {
        let config = RedisConfig::new("redis://localhost")
            .unwrap()
            .backoff(Duration::from_secs(2), Duration::from_secs(1));
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("below its base")
        );
    }

    #[test]
    fn durations_that_mean_never_are_refused() {
        let base = || RedisConfig::new("redis://localhost").unwrap();
        for config in [
            base().connect_timeout(Duration::MAX),
            base().response_timeout(Duration::from_secs(2 * 24 * 3600)),
            base().backoff(Duration::from_secs(1), Duration::MAX),
        ] {
            let error = config.check().unwrap_err().to_string();
            assert!(error.contains("at most a day"), "{error}");
        }
    }
}
