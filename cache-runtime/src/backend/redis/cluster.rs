//! Redis Cluster: redis-rs' async cluster client, which keeps a connection
//! per primary, routes each command by its key's slot, follows `MOVED` and
//! `ASK` redirections and refreshes its slot map when the topology changes.
//!
//! What this module adds on top:
//!
//! - A circuit breaker per slot instead of one for the whole cache: a node
//!   that fails opens the circuits of the slots its calls touch, and calls
//!   whose keys live on the healthy nodes keep hitting (decision 0016).
//! - Two cluster connections: invalidations that `WAIT` for replicas go on
//!   their own, since a `WAIT` holds up every request behind it on its
//!   connection.
//! - The silent-connection handling of the single-node backend
//!   ([`super::connection`]), for the cluster connection as a whole:
//!   replaced in the background when a node leaves a request unanswered,
//!   every primary pinged each ping interval.
//!
//! An entry and its shard's generation share a hash tag, so every lookup,
//! store and entry invalidation is one command on one node. A namespace's 16
//! shards spread over the slots; [`by_slot`] groups their generation keys so
//! that a namespace invalidation sends one pipeline per slot, all at once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;

use super::connection::{Connection, Open};
use super::{NodeHealth, RequestKind, send};
use crate::circuit::{Circuit, CircuitConfig, Permit, Transition};
use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::observe::Throttle;

pub(super) const NAME: &str = "redis-cluster";

/// Slots in a Redis Cluster.
const SLOTS: usize = 16384;

/// At most one "slot circuit opened" warning per this period.
const WARN_PERIOD: Duration = Duration::from_secs(10);

/// Consecutive failures on one slot that open its circuit.
const SLOT_THRESHOLD: u32 = 5;

/// Opens cluster connections.
pub(super) struct ClusterOpen {
    client: redis::cluster::ClusterClient,
    config: redis::cluster::ClusterConfig,
    /// Bounds [`Open::connect`]: connecting to the seeds, one `CLUSTER
    /// SLOTS`, then connecting to the nodes it names, each connect bounded
    /// by the connect timeout.
    connect_within: Duration,
}

impl Open for ClusterOpen {
    type Handle = ClusterConnection;
    const NAME: &'static str = NAME;
    const SEVERAL_NODES: bool = true;

    fn open(&self) -> Result<ClusterConnection> {
        Ok(self
            .client
            .get_pending_async_connection_with_config(self.config.clone()))
    }

    async fn connect(&self) -> Result<ClusterConnection> {
        let connect = self
            .client
            .get_async_connection_with_config(self.config.clone());
        match tokio::time::timeout(self.connect_within, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(Error::backend(NAME, e)),
            Err(_) => Err(Error::backend(
                NAME,
                format!(
                    "could not connect to the cluster within {:?}",
                    self.connect_within
                ),
            )),
        }
    }

    /// `PING` on every primary: one silent node fails it.
    async fn probe(handle: &mut ClusterConnection) -> redis::RedisResult<()> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
        let every_primary = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::AllSucceeded),
        ));
        handle
            .route_command(redis::cmd("PING"), every_primary)
            .await
            .map(drop)
    }
}

pub(super) struct Cluster {
    reads: Arc<Connection<ClusterOpen>>,
    writes: Arc<Connection<ClusterOpen>>,
    slots: SlotCircuits,
}

impl Cluster {
    pub(super) fn new(config: &RedisConfig) -> Result<Cluster> {
        let nodes = config.nodes().expect("a cluster configuration");
        let invalid = |e: redis::RedisError| {
            Error::Config(format!(
                "invalid Redis Cluster nodes {}: {e}",
                config.redacted_url()
            ))
        };
        let infos = nodes
            .iter()
            .map(|url| redis::IntoConnectionInfo::into_connection_info(url.as_str()))
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(invalid)?;
        // Retries inside redis-rs follow redirections and topology changes;
        // the response timeout around each request bounds them all.
        let min_wait = u64::try_from(config.backoff_base.as_millis()).unwrap_or(u64::MAX);
        let max_wait = u64::try_from(config.backoff_max.as_millis()).unwrap_or(u64::MAX);
        #[allow(unused_mut)] // without TLS nothing else is set
        let mut builder = ClusterClientBuilder::new(infos)
            .retries(5)
            .min_retry_wait(min_wait.min(10))
            .max_retry_wait(max_wait.min(100))
            .connection_timeout(config.connect_timeout)
            // A node that cannot be reached after three attempts is dropped
            // from the connections; its slots' next requests go to another
            // node, whose `MOVED` reply leads to the promoted replica. Without
            // it redis-rs retries the dead address for ever.
            .max_connection_attempts(std::num::NonZeroUsize::new(3).expect("not zero"))
            // Each attempt is bounded per connection (below), the whole
            // request by `send`.
            .overall_response_timeout(None)
            .tcp_settings(config.tcp_settings());
        #[cfg(feature = "tls")]
        if let Some(root) = config.root_cert() {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.to_vec()),
            });
        }
        let client = builder.build().map_err(invalid)?;
        // The writes connection's requests wait for replicas, one after the
        // other on each node: `send` bounds each by the waits queued ahead
        // of it, so no per-attempt timeout there.
        let connection = |response_timeout: Option<Duration>, ping_interval: Option<Duration>| {
            let mut cluster_config =
                redis::cluster::ClusterConfig::new().set_connection_timeout(config.connect_timeout);
            if let Some(timeout) = response_timeout {
                cluster_config = cluster_config.set_response_timeout(timeout);
            }
            Arc::new(Connection::new(
                ClusterOpen {
                    client: client.clone(),
                    config: cluster_config,
                    connect_within: config
                        .connect_timeout
                        .saturating_mul(2)
                        .saturating_add(config.response_timeout),
                },
                config.response_timeout,
                ping_interval,
            ))
        };
        Ok(Cluster {
            // The writes connection is not pinged: its pings would wait
            // behind the `WAIT`s, and time out on healthy nodes. Its
            // requests' own timeouts replace it.
            reads: connection(Some(config.response_timeout), config.ping_interval),
            writes: connection(None, None),
            slots: SlotCircuits::new(CircuitConfig {
                threshold: SLOT_THRESHOLD,
                base: config.backoff_base,
                cap: config.backoff_max,
            }),
        })
    }

    /// Runs one request: through its key's slot circuit if it has a key,
    /// on the writes connection if it waits for replicas.
    ///
    /// Only reads and stores report to the slot's circuit: a write that
    /// waits for replicas can time out behind other waits on a healthy node,
    /// and must not stop that node's hits. It is refused while the slot's
    /// circuit is open, as the others are.
    pub(super) async fn request(
        &self,
        key: Option<&str>,
        write: bool,
        timeout: Duration,
        cmd: impl RequestKind,
    ) -> Result<redis::Value> {
        let connection = if write { &self.writes } else { &self.reads };
        let Some(key) = key else {
            return send(connection, timeout, cmd).await;
        };
        let slot = slot(key.as_bytes());
        if write {
            if self.slots.is_open(slot) {
                return Err(Error::CircuitOpen { backend: NAME });
            }
            return send(connection, timeout, cmd).await;
        }
        let Some(permit) = self.slots.allow(slot) else {
            return Err(Error::CircuitOpen { backend: NAME });
        };
        let result = send(connection, timeout, cmd).await;
        let answered = result
            .as_ref()
            .map_or_else(Error::backend_answered, |_| true);
        self.slots.report(slot, permit, answered);
        result
    }

    /// The nodes as the cluster sees them: `CLUSTER NODES` from one node;
    /// `None` if none answered.
    pub(super) async fn nodes(&self, timeout: Duration) -> Option<NodeHealth> {
        let reply = self
            .request(
                None,
                false,
                timeout,
                redis::cmd("CLUSTER").arg("NODES").clone(),
            )
            .await
            .and_then(|value| {
                redis::from_redis_value::<String>(value).map_err(|e| Error::backend(NAME, e))
            });
        reply.ok().map(|text| parse_nodes(&text))
    }
}

/// Counts `CLUSTER NODES` lines: known nodes, and those not flagged as
/// failing (`fail`, `fail?`) or without an address, whose link is up.
fn parse_nodes(text: &str) -> NodeHealth {
    let mut known = 0;
    let mut answering = 0;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(flags) = fields.get(2) else {
            continue;
        };
        known += 1;
        let flagged = flags
            .split(',')
            .any(|flag| matches!(flag, "fail" | "fail?" | "noaddr" | "handshake"));
        let myself = flags.split(',').any(|flag| flag == "myself");
        let connected = fields.get(7) == Some(&"connected");
        if !flagged && (myself || connected) {
            answering += 1;
        }
    }
    NodeHealth::new(known, answering)
}

/// The slot of a key: the CRC16 of its hash tag (the text between the first
/// `{` and the next `}`, if not empty), else of the whole key.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tag) % SLOTS as u16
}

/// Groups keys by slot, in the order their slots first appear.
pub(super) fn by_slot(keys: impl Iterator<Item = String>) -> Vec<Vec<String>> {
    let mut groups: Vec<(u16, Vec<String>)> = Vec::new();
    for key in keys {
        let slot = slot(key.as_bytes());
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(key),
            None => groups.push((slot, vec![key])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// A circuit per slot, made on the slot's first failure: a slot that never
/// failed costs one pointer and one atomic load per request.
struct SlotCircuits {
    config: CircuitConfig,
    circuits: Box<[OnceLock<Box<Circuit>>]>,
    opened: Throttle,
}

/// Leave to send a request on one slot.
enum SlotPermit<'a> {
    /// The slot never failed: it has no circuit yet.
    Untracked,
    Tracked(Permit<'a>),
}

impl SlotCircuits {
    fn new(config: CircuitConfig) -> SlotCircuits {
        SlotCircuits {
            config,
            circuits: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            opened: Throttle::new(WARN_PERIOD),
        }
    }

    /// Whether the slot's circuit is open now.
    fn is_open(&self, slot: u16) -> bool {
        self.circuits[usize::from(slot)]
            .get()
            .is_some_and(|circuit| circuit.is_open())
    }

    /// `None` while the slot's circuit is open.
    fn allow(&self, slot: u16) -> Option<SlotPermit<'_>> {
        match self.circuits[usize::from(slot)].get() {
            None => Some(SlotPermit::Untracked),
            Some(circuit) => circuit.allow().map(SlotPermit::Tracked),
        }
    }

    fn report(&self, slot: u16, permit: SlotPermit<'_>, ok: bool) {
        let transition = match (permit, ok) {
            (SlotPermit::Untracked, true) => Transition::None,
            (SlotPermit::Tracked(permit), true) => permit.success(),
            (SlotPermit::Tracked(permit), false) => permit.failure(),
            (SlotPermit::Untracked, false) => {
                // Sent before the slot had a circuit: counts while the
                // circuit is closed, and never takes an open one's probe.
                let circuit = self.circuits[usize::from(slot)]
                    .get_or_init(|| Box::new(Circuit::new(self.config)));
                match circuit.is_open() {
                    false => circuit.bypass().failure(),
                    true => Transition::None,
                }
            }
        };
        match transition {
            Transition::None => {}
            Transition::Opened(period) => {
                if let Some(suppressed) = self.opened.admit() {
                    tracing::warn!(
                        backend = NAME,
                        slot,
                        retry_in = ?period,
                        suppressed,
                        "Redis Cluster slot failing; its circuit is open: calls on its keys run \
                         uncached, calls on other slots go on"
                    );
                }
            }
            Transition::Closed => {
                tracing::debug!(backend = NAME, slot, "Redis Cluster slot answers again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_slots() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"), "an empty tag is no tag");
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(
            slot(b"cache:{users:0a}:gen"),
            slot(b"cache:{users:0a}:f.v1:x")
        );
    }

    #[test]
    fn keys_group_by_slot() {
        let keys = ["a:{x}:gen", "b:{y}:gen", "c:{x}:gen"].map(String::from);
        let groups = by_slot(keys.into_iter());
        assert_eq!(
            groups,
            vec![
                vec!["a:{x}:gen".to_owned(), "c:{x}:gen".to_owned()],
                vec!["b:{y}:gen".to_owned()]
            ]
        );
    }

    #[test]
    fn one_failing_slot_opens_only_its_circuit() {
        let slots = SlotCircuits::new(CircuitConfig {
            threshold: 2,
            base: Duration::from_secs(60),
            cap: Duration::from_secs(60),
        });
        for _ in 0..2 {
            let permit = slots.allow(7).expect("closed");
            slots.report(7, permit, false);
        }
        assert!(slots.allow(7).is_none(), "slot 7 is open");
        let permit = slots.allow(8).expect("slot 8 never failed");
        slots.report(8, permit, true);
        assert!(slots.circuits[8].get().is_none(), "no circuit made for it");
        // A failure between successes does not accumulate.
        let permit = slots.allow(9).unwrap();
        slots.report(9, permit, false);
        let permit = slots.allow(9).unwrap();
        slots.report(9, permit, true);
        let permit = slots.allow(9).unwrap();
        slots.report(9, permit, false);
        assert!(slots.allow(9).is_some());
    }

    #[test]
    fn cluster_nodes_are_counted() {
        let text = "\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 disconnected 10923-16383
6ec2 127.0.0.1:30005@31005 slave,fail? 67ed 0 1426238316232 5 connected
824f 127.0.0.1:30006@31006 slave 292f 0 1426238317741 6 connected
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(parse_nodes(text), NodeHealth::new(6, 4));
        assert_eq!(parse_nodes(""), NodeHealth::new(0, 0));
    }
}
