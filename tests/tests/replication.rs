//! Invalidations that wait for replicas (`RedisConfig::wait_for_replicas`)
//! against a failover that loses writes: a primary, a replica that reaches
//! it through a proxy, and the proxy silenced, so that the replica stops
//! receiving while the primary goes on acknowledging. Then the primary dies
//! and the replica is promoted. Every invalidation that returned `Ok` must
//! hold on the promoted replica; one that the replica never got must not
//! have returned `Ok`.

mod common;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, Error, RedisConfig, cached};
use cache_tests::proxy::Proxy;
use cache_tests::redis_server::RedisServer;

const ROWS: usize = 3;

/// The rows' true versions.
static VERSIONS: LazyLock<[AtomicU64; ROWS]> = LazyLock::new(Default::default);

#[cached(namespace = "replicated", ttl = 600)]
async fn row(id: usize) -> (usize, u64) {
    (id, VERSIONS[id].load(SeqCst))
}

fn wait_for_link(replica: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_invalidation_that_returned_ok_survives_a_failover() {
    let mut primary = RedisServer::start();
    let proxy = Proxy::start(([127, 0, 0, 1], primary.port()).into());
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &proxy.port().to_string()]);
    wait_for_link(&replica);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = RedisConfig::new(&primary.url())
        .unwrap()
        .wait_for_replicas(1, Duration::from_millis(100));
    let cache = Cache::builder().redis(config).build().unwrap();

    // What each row's last invalidation returned.
    let mut last: [Option<Result<(), Error>>; ROWS] = Default::default();
    rt.block_on(async {
        for id in 0..ROWS {
            assert_eq!(cache.scope(row(id)).await, (id, 0));
        }
        // Row 0: invalidated while the replica listens.
        VERSIONS[0].fetch_add(1, SeqCst);
        last[0] = Some(cache.scope(row_invalidate(&0)).await);
        assert_eq!(cache.scope(row(0)).await, (0, 1));
    });
    assert!(matches!(last[0], Some(Ok(()))), "{:?}", last[0]);

    // The replica stops receiving; the primary does not know.
    proxy.silence();
    rt.block_on(async {
        // Row 1 by its entry, row 2 by the whole namespace.
        VERSIONS[1].fetch_add(1, SeqCst);
        last[1] = Some(cache.scope(row_invalidate(&1)).await);
        VERSIONS[2].fetch_add(1, SeqCst);
        last[2] = Some(cache.invalidate_namespace(ROW_NAMESPACE).await);
        // The primary applied them: this process sees them at once.
        assert_eq!(cache.scope(row(1)).await, (1, 1));
        assert_eq!(cache.scope(row(2)).await, (2, 1));
    });
    // Failover: the primary dies, the replica takes its place.
    primary.stop();
    replica.cli(&["REPLICAOF", "NO", "ONE"]);
    let promoted = Cache::builder()
        .redis(RedisConfig::new(&replica.url()).unwrap())
        .build()
        .unwrap();
    let seen: Vec<(usize, u64)> = rt.block_on(async { read_rows(&promoted).await });
    for id in 0..ROWS {
        let fresh = seen[id] == (id, VERSIONS[id].load(SeqCst));
        if matches!(last[id], Some(Ok(()))) {
            assert!(
                fresh,
                "row {id}: invalidated with Ok, then {:?} after the failover",
                seen[id]
            );
        }
    }
    // What the caller was told about the two the replica never got.
    for id in [1, 2] {
        assert!(
            matches!(
                last[id],
                Some(Err(Error::NotReplicated {
                    acknowledged: 0,
                    wanted: 1,
                    ..
                }))
            ),
            "row {id}: {:?}",
            last[id]
        );
    }
    // The fault is real: what the replica never got is lost, and a row whose
    // invalidation was not confirmed is served as it was before it.
    assert_eq!(seen[1], (1, 0), "the lost entry invalidation");
    assert_eq!(seen[2], (2, 0), "the lost namespace invalidation");
}

async fn read_rows(cache: &Cache) -> Vec<(usize, u64)> {
    let mut rows = Vec::new();
    for id in 0..ROWS {
        rows.push(cache.scope(row(id)).await);
    }
    rows
}
