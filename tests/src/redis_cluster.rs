//! A real Redis Cluster for one test: primaries with one replica each, every
//! node a `redis-server` on free ports in its own temporary directory, made a
//! cluster with `redis-cli --cluster create`, all stopped on drop.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::redis_server::{RedisServer, free_port};

/// How long a node may be unreachable before the others mark it failing:
/// short, so that a failover takes about two seconds.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// A cluster owned by one test.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One node as `CLUSTER NODES` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub failing: bool,
    /// A replica's primary (its id).
    pub replica_of: Option<String>,
    /// The slot ranges a primary serves.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Three primaries and three replicas.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(3, 1)
    }

    pub fn start_with(primaries: usize, replicas_each: usize) -> RedisCluster {
        let timeout = NODE_TIMEOUT.as_millis().to_string();
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas_each))
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &timeout,
                    "--cluster-port",
                    &bus,
                    // A replica that lost its primary may take over at once,
                    // however long it was cut off: the tests kill primaries.
                    "--cluster-replica-validity-factor",
                    "0",
                    // Slots of a dead primary with no replica left stay
                    // down, the others keep serving.
                    "--cluster-require-full-coverage",
                    "no",
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let out = create
            .args(["--cluster-replicas", &replicas_each.to_string()])
            .arg("--cluster-yes")
            .output()
            .expect("redis-cli runs (it ships with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }

    /// `host:port` of every node, for `RedisConfig::cluster`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect()
    }

    /// The nodes, as a comma-separated list (`REDIS_CLUSTER_NODES`).
    pub fn seed_list(&self) -> String {
        self.seeds().join(",")
    }

    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|node| node.port() == port)
            .expect("a node of this cluster")
    }

    pub fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|node| node.port() == port)
            .expect("a node of this cluster")
    }

    /// Nodes whose process runs.
    pub fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|node| node.pid().is_some())
    }

    /// The topology, as a running node sees it.
    pub fn topology(&self) -> Vec<NodeInfo> {
        let text = self
            .running()
            .next()
            .expect("a running node")
            .cli(&["CLUSTER", "NODES"]);
        parse_nodes(&text)
    }

    /// The primaries serving slots, as a running node sees them.
    pub fn primaries(&self) -> Vec<NodeInfo> {
        self.topology()
            .into_iter()
            .filter(|node| node.primary && !node.failing && !node.slots.is_empty())
            .collect()
    }

    /// The port of the primary serving `slot`.
    pub fn primary_of(&self, slot: u16) -> u16 {
        self.primaries()
            .into_iter()
            .find(|node| node.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|node| node.port)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// The ports of the replicas of the primary at `port`.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let topology = self.topology();
        let id = &topology
            .iter()
            .find(|node| node.port == port)
            .expect("a node of this cluster")
            .id;
        topology
            .iter()
            .filter(|node| node.replica_of.as_ref() == Some(id))
            .map(|node| node.port)
            .collect()
    }

    /// The slot of a key, from a node.
    pub fn slot_of(&self, key: &str) -> u16 {
        let node = self.running().next().expect("a running node");
        node.cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// Puts a [`Proxy`] in front of every node and makes each node announce
    /// its proxy's port, so that clients reach every node through its proxy
    /// (the seeds, the slot map and the redirections all name the proxies);
    /// the nodes still talk to each other on their bus ports directly.
    /// Waits until every node sees every other one at its proxy.
    ///
    /// Afterwards `CLUSTER NODES` names the proxies' ports: use
    /// [`Proxy::port`], not [`RedisServer::port`], with what it returns.
    pub fn behind_proxies(&self) -> Vec<Proxy> {
        let proxies: Vec<Proxy> = self
            .nodes
            .iter()
            .map(|node| {
                let proxy = Proxy::start(([127, 0, 0, 1], node.port()).into());
                node.cli(&[
                    "CONFIG",
                    "SET",
                    "cluster-announce-port",
                    &proxy.port().to_string(),
                ]);
                proxy
            })
            .collect();
        let announced: Vec<u16> = proxies.iter().map(Proxy::port).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.running().all(|node| {
                let mut ports: Vec<u16> = parse_nodes(&node.cli(&["CLUSTER", "NODES"]))
                    .iter()
                    .map(|info| info.port)
                    .collect();
                ports.sort_unstable();
                let mut want = announced.clone();
                want.sort_unstable();
                ports == want
            });
            if seen {
                return proxies;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes did not all learn the proxies' ports within 30 s: {:?}",
                self.topology()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs a node.
    pub fn kill(&mut self, port: u16) {
        self.node_mut(port).stop();
    }

    /// Waits until every running node reports `cluster_state:ok` and agrees
    /// that every slot is served by a primary that is not failing.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            // Every slot served, and every replica's link to its primary up
            // (until then a `WAIT` finds no replica).
            let ok = self.running().all(|node| {
                let info = node.cli(&["CLUSTER", "INFO"]);
                let replication = node.cli(&["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy within {within:?}: {:?}",
                self.topology()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sums the calls of each command over the running nodes'
    /// `INFO commandstats`, per node: `(port, command) -> calls`.
    pub fn command_calls(&self) -> HashMap<(u16, String), u64> {
        let mut calls = HashMap::new();
        for node in self.running() {
            for line in node.cli(&["INFO", "commandstats"]).lines() {
                let Some(rest) = line.strip_prefix("cmdstat_") else {
                    continue;
                };
                let Some((command, stats)) = rest.split_once(':') else {
                    continue;
                };
                let count = stats
                    .split(',')
                    .find_map(|field| field.strip_prefix("calls="))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                calls.insert((node.port(), command.to_owned()), count);
            }
        }
        calls
    }

    /// `CONFIG RESETSTAT` on every running node.
    pub fn reset_stats(&self) {
        for node in self.running() {
            node.cli(&["CONFIG", "RESETSTAT"]);
        }
    }

    /// Moves `slots` slots from one primary to another with
    /// `redis-cli --cluster reshard`, which migrates their keys.
    pub fn reshard(&self, from: &str, to: &str, slots: u32) {
        let seed = self.running().next().expect("a running node").port();
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{seed}")])
            .args(["--cluster-from", from, "--cluster-to", to])
            .args(["--cluster-slots", &slots.to_string()])
            .args(["--cluster-yes", "--cluster-pipeline", "10"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Parses `CLUSTER NODES`.
pub fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let address = fields[1].split('@').next()?;
            let port = address.rsplit_once(':')?.1.parse().ok()?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let slots = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => {
                        let slot = range.parse().ok()?;
                        Some((slot, slot))
                    }
                })
                .collect();
            Some(NodeInfo {
                id: fields[0].to_owned(),
                port,
                primary: flags.contains(&"master"),
                failing: flags.contains(&"fail") || flags.contains(&"fail?"),
                replica_of: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}
