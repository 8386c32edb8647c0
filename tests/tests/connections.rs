//! Connections that die without closing (issue 11). A NAT, a cloud load
//! balancer or a firewall that forgets a connection drops its packets
//! without a FIN or an RST; the client's socket stays open. Here a TCP proxy
//! (`cache_tests::proxy`) plays that part: `silence` freezes every
//! connection open at the time, and new ones are forwarded.
//!
//! What must hold: no call fails or returns a wrong value (fail-open), and
//! calls get back to hits within the bound the guide states, not when TCP
//! gives up on the connection (about 15 minutes on Linux).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CallOutcome, RedisConfig, cached, with_outcome};
use cache_tests::proxy::Proxy;
use cache_tests::redis_cluster::RedisCluster;
use cache_tests::redis_server::RedisServer;

/// Far above the stated bounds, far below TCP's: only a cache that never
/// replaces the connection fails it.
const NO_LATER_THAN: Duration = Duration::from_secs(20);

#[cached(namespace = "silent", ttl = 600)]
async fn doubled(id: u64) -> u64 {
    id * 2
}

fn through_proxy(server: &RedisServer) -> (Proxy, RedisConfig) {
    let upstream: SocketAddr = ([127, 0, 0, 1], server.port()).into();
    let proxy = Proxy::start(upstream);
    let config = RedisConfig::new(&proxy.redis_url()).unwrap();
    (proxy, config)
}

/// Warms `id` and checks that it hits.
async fn warm(id: u64) {
    assert_eq!(doubled(id).await, id * 2);
    let (value, outcome) = with_outcome(doubled(id)).await;
    assert_eq!((value, outcome), (id * 2, Some(CallOutcome::Hit)));
}

/// Waits until `proxy` accepts a connection beyond the `before` it had
/// when it was silenced at `silenced`: the cache replaced the silent one.
/// Returns how long after the silence.
async fn replaced_after(proxy: &Proxy, before: usize, silenced: Instant) -> Duration {
    rounds_until(silenced, "a new connection", async || {
        proxy.accepted() > before
    })
    .await;
    silenced.elapsed()
}

/// Runs `round` every 10 ms until it returns true, and returns how many
/// rounds that took; fails if `what` has not happened [`NO_LATER_THAN`]
/// after the connection went silent at `silenced`.
async fn rounds_until(silenced: Instant, what: &str, mut round: impl AsyncFnMut() -> bool) -> u32 {
    let mut rounds = 0;
    loop {
        rounds += 1;
        if round().await {
            return rounds;
        }
        assert!(
            silenced.elapsed() < NO_LATER_THAN,
            "no {what} in {:?} ({rounds} rounds) after the connection went silent",
            silenced.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn calls_hit_again_soon_after_their_connection_went_silent() {
    let server = RedisServer::start();
    let (proxy, config) = through_proxy(&server);
    let cache = Cache::builder().redis(config).build().unwrap();
    cache
        .scope(async {
            warm(1).await;
            let before = proxy.accepted();
            proxy.silence();
            let silenced = Instant::now();
            // A service's calls go on; each is answered right, from the
            // body while the cache cannot be reached.
            let calls = rounds_until(silenced, "a hit", async || {
                let (value, outcome) = with_outcome(doubled(1)).await;
                assert_eq!(value, 2);
                outcome == Some(CallOutcome::Hit)
            })
            .await;
            eprintln!(
                "hits again {:?} after the connection went silent ({calls} calls)",
                silenced.elapsed()
            );
            assert!(
                proxy.accepted() > before,
                "a new connection serves the hits"
            );
        })
        .await;
}

#[tokio::test]
async fn an_idle_connection_that_went_silent_is_replaced_before_a_call_needs_it() {
    let server = RedisServer::start();
    let (proxy, config) = through_proxy(&server);
    let ping = Duration::from_millis(300);
    let cache = Cache::builder()
        .redis(config.ping_interval(Some(ping)))
        .build()
        .unwrap();
    cache
        .scope(async {
            warm(2).await;
            let before = proxy.accepted();
            proxy.silence();
            let silenced = Instant::now();
            // Idle: the cache notices on its own, and the connection it
            // opens instead is ready when the next call comes.
            let replaced = replaced_after(&proxy, before, silenced).await;
            eprintln!("replaced {replaced:?} after the connection went silent");
            // Give the new connection its handshake, then the first call hits.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (value, outcome) = with_outcome(doubled(2)).await;
            assert_eq!((value, outcome), (4, Some(CallOutcome::Hit)));
        })
        .await;
}

/// The ids the cluster tests call: enough for every primary to hold some.
const SPREAD: std::ops::Range<u64> = 0..48;

/// Calls every id of [`SPREAD`] once; returns how many hit. Every value
/// must be right, hit or not.
async fn call_spread() -> usize {
    let mut hits = 0;
    for id in SPREAD {
        let (value, outcome) = with_outcome(doubled(id)).await;
        assert_eq!(value, id * 2, "doubled({id})");
        hits += usize::from(outcome == Some(CallOutcome::Hit));
    }
    hits
}

/// A cluster whose nodes clients reach through proxies only, a cache on it
/// with `ping`, every id of [`SPREAD`] warmed, and the proxy of the primary
/// that will go silent.
fn cluster_behind_proxies(ping: Option<Duration>) -> (RedisCluster, Vec<Proxy>, Cache, u16) {
    let cluster = RedisCluster::start();
    let proxies = cluster.behind_proxies();
    let seeds: Vec<String> = proxies
        .iter()
        .map(|proxy| format!("127.0.0.1:{}", proxy.port()))
        .collect();
    let config = RedisConfig::cluster(seeds).unwrap().ping_interval(ping);
    let cache = Cache::builder().redis(config).build().unwrap();
    let silent = cluster.primaries()[0].port;
    (cluster, proxies, cache, silent)
}

/// Warms every id of [`SPREAD`], then silences `proxy`; returns the
/// connections it had accepted, and when.
async fn warm_spread_and_silence(proxy: &Proxy) -> (usize, Instant) {
    for id in SPREAD {
        warm(id).await;
    }
    let before = proxy.accepted();
    proxy.silence();
    (before, Instant::now())
}

fn proxy_at(proxies: &[Proxy], port: u16) -> &Proxy {
    proxies
        .iter()
        .find(|proxy| proxy.port() == port)
        .expect("the proxy of a node")
}

/// One primary's connection goes silent while calls run: the other
/// primaries' keys keep hitting, and its own hit again soon.
#[test]
fn cluster_calls_hit_again_soon_after_one_nodes_connection_went_silent() {
    let (_cluster, proxies, cache, silent) = cluster_behind_proxies(None);
    let proxy = proxy_at(&proxies, silent);
    common::runtime().block_on(cache.scope(async {
        let (before, silenced) = warm_spread_and_silence(proxy).await;
        let mut fewest = SPREAD.end as usize;
        let rounds = rounds_until(silenced, "every key hitting", async || {
            let hits = call_spread().await;
            fewest = fewest.min(hits);
            hits == SPREAD.end as usize
        })
        .await;
        eprintln!(
            "every key hits again {:?} after one node's connection went silent \
             ({rounds} rounds; fewest hits in a round: {fewest} of {})",
            silenced.elapsed(),
            SPREAD.end
        );
        assert!(
            fewest < SPREAD.end as usize,
            "the silent node's keys never missed: the test silenced nothing"
        );
        assert!(
            fewest > 0,
            "the other nodes' keys stopped hitting while one node was silent"
        );
        assert!(
            proxy.accepted() > before,
            "a new connection serves the silent node's keys"
        );
    }));
}

/// One primary's connection goes silent while nothing calls: the cache
/// replaces it on its own, and the next calls all hit.
#[test]
fn an_idle_cluster_connection_that_went_silent_is_replaced_before_a_call_needs_it() {
    let ping = Duration::from_millis(300);
    let (_cluster, proxies, cache, silent) = cluster_behind_proxies(Some(ping));
    let proxy = proxy_at(&proxies, silent);
    common::runtime().block_on(cache.scope(async {
        let (before, silenced) = warm_spread_and_silence(proxy).await;
        let replaced = replaced_after(proxy, before, silenced).await;
        eprintln!("replaced {replaced:?} after one node's connection went silent");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(call_spread().await, SPREAD.end as usize, "every call hits");
    }));
}
