//! The Sentinel backend against a real group (a primary, a replica, three
//! sentinels) started by each test: conformance, and the primary killed
//! under load: the failover is followed, no call fails or returns a wrong
//! or stale value, another process sees an invalidation made after it, and
//! nothing is sent to the old primary once it is back as a replica.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, RedisBackend, RedisConfig};
use cache_tests::redis_sentinel::{PRIMARY_NAME, SentinelGroup, StraySentinel};
use cache_tests::redis_server::RedisServer;
use common::load::{KEYS, Load, SENTINEL, check_final, start_load, stop_load, versioned};

fn config(group: &SentinelGroup) -> RedisConfig {
    RedisConfig::sentinel(group.sentinels(), PRIMARY_NAME).unwrap()
}

#[test]
fn a_sentinel_group_serves_as_one_redis() {
    let group = SentinelGroup::start();
    common::runtime().block_on(async {
        let backend = RedisBackend::connect(config(&group).fail_fast(true))
            .await
            .unwrap();
        cache_runtime::testing::conformance::run_all(Arc::new(backend), "conf").await;
    });
}

/// A sentinel that accepts connections and never answers (a partition, a
/// frozen host) does not delay finding the primary: a majority answered.
#[test]
fn a_silent_sentinel_does_not_delay_finding_the_primary() {
    let group = SentinelGroup::start();
    // Connections complete in the kernel's backlog; nothing ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut sentinels = group.sentinels();
    sentinels.push(silent.local_addr().unwrap().to_string());
    // Waiting for the silent one, discovery took a second.
    let config = RedisConfig::sentinel(sentinels, PRIMARY_NAME)
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .response_timeout(Duration::from_secs(2))
        .fail_fast(true);
    common::runtime().block_on(async {
        let started = Instant::now();
        let backend = RedisBackend::connect(config).await.unwrap();
        let took = started.elapsed();
        println!("found the primary in {took:?}");
        assert!(
            took < Duration::from_millis(500),
            "finding the primary took {took:?} with 3 of 4 sentinels answering"
        );
        cache_runtime::Backend::ping(&backend).await.unwrap();
    });
}

#[cache_runtime::cached(namespace = "majority", ttl = 60)]
async fn tripled(id: u64) -> u64 {
    id * 3
}

/// A sentinel that names another primary than the others do, listed
/// first: the majority is believed, and nothing is written to the node the
/// stray one names (a minority cut off with an old primary would name it).
#[test]
fn a_sentinel_that_disagrees_with_the_majority_is_not_believed() {
    let group = SentinelGroup::start();
    let other = RedisServer::start();
    let stray = StraySentinel::start(other.port());
    let mut sentinels = vec![stray.address()];
    sentinels.extend(group.sentinels());
    let config = RedisConfig::sentinel(sentinels, PRIMARY_NAME).unwrap();
    let cache = Cache::builder().redis(config).build().unwrap();
    common::runtime().block_on(cache.scope(async {
        for id in 0..20 {
            assert_eq!(tripled(id).await, id * 3);
        }
        let (value, outcome) = cache_runtime::with_outcome(tripled(1)).await;
        assert_eq!(
            (value, outcome),
            (3, Some(cache_runtime::CallOutcome::Hit)),
            "the group's primary serves"
        );
    }));
    let dbsize = |server: &RedisServer| -> u64 { server.cli(&["DBSIZE"]).trim().parse().unwrap() };
    assert_eq!(
        dbsize(&other),
        0,
        "written to the node a stray sentinel named"
    );
    assert!(dbsize(group.server(group.primary_port())) > 0);
}

/// The primary SIGKILLed while 32 tasks call and invalidate.
#[test]
fn a_failover_is_followed_and_the_old_primary_never_used_again() {
    let mut group = SentinelGroup::start();
    let rt = common::runtime();
    let cache = Cache::builder().redis(config(&group)).build().unwrap();
    let load = Arc::new(Load::new(SENTINEL));
    let stop = Arc::new(AtomicBool::new(false));
    let old = group.primary_port();
    let new = group
        .servers
        .iter()
        .map(|s| s.port())
        .find(|&p| p != old)
        .unwrap();
    let (recovered, from_switch) = rt.block_on(async {
        for key in 0..KEYS as u64 {
            cache.scope(versioned(SENTINEL, key)).await;
        }
        let tasks = start_load(&cache, &load, &stop);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = Instant::now();
        load.mark();
        group.server_mut(old).stop();
        tokio::task::block_in_place(|| group.wait_for_primary(new, Duration::from_secs(30)));
        let switched = killed.elapsed();
        common::eventually("every key hits again after the failover", || {
            load.all_hit_after().is_some()
        })
        .await;
        let recovered = killed.elapsed();
        // The old primary comes back, empty: the sentinels make it a replica
        // of the new one. Nothing of ours may reach it from now on.
        tokio::task::block_in_place(|| {
            group.server_mut(old).restart();
            group.server(old).cli(&["CONFIG", "RESETSTAT"]);
            group.wait_for_replica(old, Duration::from_secs(30));
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop_load(tasks, &stop).await;
        load.report(&format!(
            "primary {old} killed; sentinels switched after {switched:?}, caching back after {recovered:?}"
        ));
        check_final(&cache, SENTINEL).await;
        (recovered, recovered.saturating_sub(switched))
    });
    load.assert_sound();
    // The stated bound: within a second (the monitor's check interval) of
    // the sentinels naming the new primary; wide margin for a loaded machine.
    assert!(
        from_switch < Duration::from_secs(5),
        "caching back {from_switch:?} after the switch"
    );
    assert!(recovered < Duration::from_secs(30));
    let ours: Vec<String> = group
        .server(old)
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|line| {
            [
                "cmdstat_mget:",
                "cmdstat_evalsha:",
                "cmdstat_eval:",
                "cmdstat_wait:",
            ]
            .iter()
            .any(|c| line.starts_with(c))
        })
        .map(str::to_owned)
        .collect();
    assert!(
        ours.is_empty(),
        "requests reached the old primary: {ours:?}"
    );

    // Another process sees an invalidation made after the failover.
    let url = format!("sentinel={PRIMARY_NAME}@{}", group.sentinels().join(","));
    assert_eq!(common::peer_at(&url, &["get", "9", "old"]), "9=old ran");
    assert_eq!(common::peer_at(&url, &["get", "9", "new"]), "9=old hit");
    common::peer_at(&url, &["invalidate", "9"]);
    assert_eq!(common::peer_at(&url, &["get", "9", "new"]), "9=new ran");
}

#[test]
fn a_sentinel_group_is_configured_from_the_environment_and_bad_input_is_named() {
    let env = [
        ("REDIS_SENTINELS", "10.0.0.1:26379,10.0.0.2:26379"),
        ("REDIS_SENTINEL_MASTER", "mymaster"),
        ("REDIS_PASSWORD", "primary-Pw1"),
        ("REDIS_SENTINEL_PASSWORD", "sentinel-Pw2"),
    ];
    let (out, err) = common::peer_with_env(&["-", "env"], &env);
    assert!(out.contains("RedisBackend"), "{out} {err}");
    assert!(
        out.contains(
            "sentinels: \"mymaster@redis://:***@10.0.0.1:26379,redis://:***@10.0.0.2:26379\""
        ),
        "{out}"
    );
    assert!(
        out.contains("replication: Some(Replication { replicas: 1, timeout: 100ms })"),
        "{out}"
    );
    for secret in ["primary-Pw1", "sentinel-Pw2"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{out} {err}"
        );
    }

    for (env, reason) in [
        (
            vec![("REDIS_SENTINELS", "10.0.0.1:26379")],
            "REDIS_SENTINEL_MASTER is not",
        ),
        (
            vec![
                ("REDIS_SENTINELS", "10.0.0.1"),
                ("REDIS_SENTINEL_MASTER", "m"),
            ],
            "has no port",
        ),
        (
            vec![
                ("REDIS_SENTINELS", "10.0.0.1:1"),
                ("REDIS_SENTINEL_MASTER", "two words"),
            ],
            "holds spaces",
        ),
        (
            // Two votes for one sentinel's answer.
            vec![
                ("REDIS_SENTINELS", "10.0.0.1:1,10.0.0.2:1,10.0.0.1:1"),
                ("REDIS_SENTINEL_MASTER", "m"),
            ],
            "sentinel `10.0.0.1:1` is listed twice",
        ),
        (
            vec![
                ("REDIS_SENTINELS", "10.0.0.1:1"),
                ("REDIS_URL", "redis://10.0.0.1"),
            ],
            "set one",
        ),
    ] {
        let (out, err) = common::peer_with_env(&["-", "env"], &env);
        assert!(out.is_empty(), "{env:?}: {out}");
        assert!(err.contains(reason), "{env:?}: {err}");
    }
}
