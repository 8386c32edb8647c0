//! Section 7: a Redis Cluster of three primaries and three replicas (started
//! here, like the single server): the hit against a hand-written redis-rs
//! cluster `GET` (the floor) and against ours on one server, and what a
//! namespace invalidation costs when it waits for a replica on each shard.

use std::time::{Duration, Instant};

use cache_runtime::{Cache, RedisConfig};
use cache_tests::redis_cluster::RedisCluster;
use redis::cluster_async::ClusterConnection;

use crate::measure::{self, Latency, median, micros, on_worker, throughput};
use crate::subjects::{self, HandWritten};

/// What the section is run with.
pub(crate) struct Settings {
    pub(crate) latency_calls: usize,
    pub(crate) throughput_for: Duration,
    pub(crate) rounds: usize,
    pub(crate) repeats: usize,
    pub(crate) keys: u64,
    /// The CPU the single server is pinned to: the cluster's nodes go there
    /// too, so that both are measured across the same CPUs.
    pub(crate) server_cpu: Option<String>,
}

/// One way of reading a value, in table order.
#[derive(Clone)]
enum Subject {
    /// redis-rs cluster `GET` + bincode, by hand.
    Floor(ClusterConnection),
    /// `#[cached]` on the cluster.
    Ours(Cache),
    /// `#[cached]` on one server (the process's global cache).
    OursSingle,
}

impl Subject {
    fn label(&self) -> &'static str {
        match self {
            Subject::Floor(_) => "(a) floor: redis-rs cluster GET + bincode",
            Subject::Ours(_) => "(b) `#[cached]` on the cluster",
            Subject::OursSingle => "(b) `#[cached]` on one server",
        }
    }

    async fn call(&self, id: u64) {
        let item = match self {
            Subject::Floor(connection) => HandWritten::get_on(connection.clone(), id).await,
            Subject::Ours(cache) => cache.scope(subjects::ours(id)).await,
            Subject::OursSingle => subjects::ours(id).await,
        };
        std::hint::black_box(item.expect("the benchmarked call failed"));
    }
}

pub(crate) async fn run(s: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await?;
    let placement = match &s.server_cpu {
        Some(cpu) => {
            let pinned = cluster
                .running()
                .filter_map(|node| node.pid())
                .all(|pid| crate::taskset(cpu, pid));
            if pinned {
                format!("every node on CPU {cpu}, as the single server")
            } else {
                "nodes not pinned: taskset failed".to_owned()
            }
        }
        None => "nodes not pinned".to_owned(),
    };
    println!(
        "## 7. Redis Cluster: 3 primaries, 3 replicas ({placement}; started in {:.1} s)\n",
        started.elapsed().as_secs_f64()
    );
    let client = redis::cluster::ClusterClient::builder(
        cluster.seeds().iter().map(|s| format!("redis://{s}")),
    )
    .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
    .build()?;
    let floor = client.get_async_connection().await?;
    let ours = Cache::builder()
        .redis(RedisConfig::cluster(cluster.seeds())?)
        .connect()
        .await?;
    let subjects = [
        Subject::Floor(floor),
        Subject::Ours(ours.clone()),
        Subject::OursSingle,
    ];
    // Preloaded: every call below is a hit.
    for subject in &subjects {
        for id in 0..s.keys {
            subject.call(id).await;
        }
    }

    println!("| | p50 µs | p99 µs | mean µs | p50 vs floor |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut samples = vec![Vec::new(); subjects.len()];
    let per_round = (s.latency_calls / s.rounds).max(1);
    for round in 0..s.rounds {
        for k in 0..subjects.len() {
            let k = (k + round) % subjects.len();
            let (subject, keys) = (subjects[k].clone(), s.keys);
            let offset = (round * per_round) as u64;
            let round_samples = on_worker(async move {
                measure::samples(per_round, |i| {
                    let subject = subject.clone();
                    async move { subject.call((offset + i) % keys).await }
                })
                .await
            })
            .await;
            samples[k].extend(round_samples);
        }
    }
    let latencies: Vec<Latency> = samples.into_iter().map(Latency::of).collect();
    for (subject, l) in subjects.iter().zip(&latencies) {
        println!(
            "| {} | {} | {} | {} | {:.2}x |",
            subject.label(),
            micros(l.p50),
            micros(l.p99),
            micros(l.mean),
            l.p50.as_secs_f64() / latencies[0].p50.as_secs_f64()
        );
    }

    let concurrency = [1, 64, 256];
    println!(
        "\nThroughput, hits per second (median of {} runs of {:?}, subjects interleaved; ratio to the floor):\n",
        s.repeats, s.throughput_for
    );
    println!("| tasks | 1 | 64 | 256 |\n| --- | ---: | ---: | ---: |");
    let mut rates = vec![Vec::new(); subjects.len()];
    for tasks in concurrency {
        let mut runs = vec![Vec::new(); subjects.len()];
        for _ in 0..s.repeats {
            for (k, subject) in subjects.iter().enumerate() {
                let (subject, keys) = (subject.clone(), s.keys);
                let rate = throughput(tasks, s.throughput_for, move |i| {
                    let subject = subject.clone();
                    async move { subject.call(i % keys).await }
                })
                .await;
                runs[k].push(rate);
            }
        }
        for (rate, runs) in rates.iter_mut().zip(runs) {
            rate.push(median(runs));
        }
    }
    for (subject, row) in subjects.iter().zip(&rates) {
        print!("| {} |", subject.label());
        for (rate, floor_rate) in row.iter().zip(&rates[0]) {
            print!(" {rate:.0} ({:.2}x) |", rate / floor_rate);
        }
        println!();
    }

    // The namespace's 16 shards on their slots: one pipeline per slot, a
    // WAIT for one replica in each.
    let mut times = Vec::new();
    for _ in 0..s.rounds {
        let start = Instant::now();
        ours.invalidate_namespace("bench-cluster").await?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "\nNamespace invalidation on the cluster (16 shards, each waiting for one replica): median {:.3} ms over {} runs.\n",
        median(times),
        s.rounds
    );
    drop(cluster);
    Ok(())
}
