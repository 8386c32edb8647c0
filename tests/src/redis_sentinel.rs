//! A real Sentinel group for one test: a primary, a replica and three
//! sentinels, each a `redis-server` on free ports in its own temporary
//! directory, stopped on drop. The sentinels fail the primary over one
//! second after it stops answering.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::{RedisServer, free_port};

/// The name the sentinels know the primary by.
pub const PRIMARY_NAME: &str = "cache-primary";

/// How long the primary may be unreachable before the sentinels fail it over.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// A group owned by one test.
pub struct SentinelGroup {
    /// The first primary and the first replica, by their original roles.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

struct SentinelProcess {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SentinelGroup {
    pub fn start() -> SentinelGroup {
        let primary = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
        wait_for(Duration::from_secs(20), "the replica to sync", || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let sentinels = (0..3)
            .map(|_| SentinelProcess::start(primary.port()))
            .collect();
        let group = SentinelGroup {
            servers: vec![primary, replica],
            sentinels,
        };
        // Every sentinel knows the replica and the other sentinels.
        wait_for(
            Duration::from_secs(30),
            "the sentinels to see each other",
            || {
                group.sentinels.iter().all(|s| {
                    let info = sentinel_cli(s.port, &["SENTINEL", "MASTER", PRIMARY_NAME]);
                    field(&info, "num-other-sentinels") == Some("2")
                        && field(&info, "num-slaves") == Some("1")
                })
            },
        );
        group
    }

    /// The sentinels, `host:port`, for `RedisConfig::sentinel`.
    pub fn sentinels(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The port of the node the sentinels name as the primary.
    pub fn primary_port(&self) -> u16 {
        let reply = sentinel_cli(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", PRIMARY_NAME],
        );
        reply
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .expect("the sentinels name a primary")
    }

    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .expect("a server of this group")
    }

    pub fn server_mut(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .expect("a server of this group")
    }

    /// Waits until every sentinel names `port` as the primary and that node
    /// says it is one.
    pub fn wait_for_primary(&self, port: u16, within: Duration) {
        wait_for(within, "the failover", || {
            self.sentinels.iter().all(|s| {
                sentinel_cli(
                    s.port,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", PRIMARY_NAME],
                )
                .lines()
                .nth(1)
                .is_some_and(|p| p.trim() == port.to_string())
            }) && self.server(port).cli(&["ROLE"]).starts_with("master")
        });
    }
}

/// A sentinel of its own, monitoring another server under the same name
/// [`PRIMARY_NAME`]: a sentinel that disagrees with a group's (cut off with
/// an old primary, or misconfigured). Stopped on drop.
pub struct StraySentinel(SentinelProcess);

impl StraySentinel {
    /// Monitors the server at `primary_port`.
    pub fn start(primary_port: u16) -> StraySentinel {
        StraySentinel(SentinelProcess::start(primary_port))
    }

    /// `host:port`, for `RedisConfig::sentinel`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }
}

impl SentinelGroup {
    /// Waits until the node at `port` is a replica that has synced with its
    /// primary (until then the primary's `WAIT` counts no replica).
    pub fn wait_for_replica(&self, port: u16, within: Duration) {
        wait_for(within, "the old primary to become a synced replica", || {
            let info = self.server(port).cli(&["INFO", "replication"]);
            info.contains("role:slave") && info.contains("master_link_status:up")
        });
    }
}

impl SentinelProcess {
    fn start(primary_port: u16) -> SentinelProcess {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
                     sentinel monitor {PRIMARY_NAME} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {PRIMARY_NAME} {}\n\
                     sentinel failover-timeout {PRIMARY_NAME} 5000\n\
                     sentinel parallel-syncs {PRIMARY_NAME} 1\n",
                    dir.path().display(),
                    dir.path().join("sentinel.log").display(),
                    DOWN_AFTER.as_millis(),
                ),
            )
            .expect("the sentinel's configuration");
            let child = match Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server was not found on PATH; the Sentinel tests need it. \
                     Install it with `sudo apt-get install redis-server`"
                ),
                Err(e) => panic!("cannot run redis-server --sentinel: {e}"),
            };
            let mut sentinel = SentinelProcess {
                child,
                port,
                _dir: tempfile::tempdir().expect("a temporary directory"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if sentinel.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    sentinel._dir = dir;
                    return sentinel;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!(
            "redis-server --sentinel did not start; see {}",
            dir.path().display()
        );
    }
}

fn sentinel_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A field of a `SENTINEL MASTER` reply (name and value on their own lines).
fn field<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = reply.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name {
            return lines.next().map(str::trim);
        }
    }
    None
}

fn wait_for(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
