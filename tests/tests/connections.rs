//! Connections that die without closing (issue 11). A NAT, a cloud load
//! balancer or a firewall that forgets a connection drops its packets
//! without a FIN or an RST; the client's socket stays open. Here a TCP proxy
//! (`cache_tests::proxy`) plays that part: `silence` freezes every
//! connection open at the time, and new ones are forwarded.
//!
//! What must hold: no call fails or returns a wrong value (fail-open), and
//! calls get back to hits within the bound the guide states, not when TCP
//! gives up on the connection (about 15 minutes on Linux).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CallOutcome, RedisConfig, cached, with_outcome};
use cache_tests::proxy::Proxy;
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
            let mut calls = 0;
            loop {
                let (value, outcome) = with_outcome(doubled(1)).await;
                calls += 1;
                assert_eq!(value, 2);
                if outcome == Some(CallOutcome::Hit) {
                    break;
                }
                assert!(
                    silenced.elapsed() < NO_LATER_THAN,
                    "no hit in {:?} ({calls} calls) after the connection went silent",
                    silenced.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
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
            while proxy.accepted() <= before {
                assert!(
                    silenced.elapsed() < NO_LATER_THAN,
                    "the silent connection was not replaced in {:?}",
                    silenced.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            eprintln!(
                "replaced {:?} after the connection went silent",
                silenced.elapsed()
            );
            // Give the new connection its handshake, then the first call hits.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (value, outcome) = with_outcome(doubled(2)).await;
            assert_eq!((value, outcome), (4, Some(CallOutcome::Hit)));
        })
        .await;
}
