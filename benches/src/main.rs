//! Benchmarks, side by side in one run: a hit, a miss, an invalidation and a
//! stampede, for a hand-written redis-rs lookup (the floor), our `#[cached]`,
//! and the `cached` crate; in memory against raw moka. Starts its own
//! `redis-server`, prints markdown tables, and ends with the targets of
//! `docs/benchmarks.md`, met or not.
//!
//! ```sh
//! cargo run --release -p cache-benches            # the full table (docs/benchmarks.md)
//! cargo run -p cache-benches -- --quick           # a smoke run, as CI does
//! cargo run --release -p cache-benches -- --section memory   # one table
//! cargo run --release -p cache-benches -- --no-pin  # let the scheduler place threads
//! ```
//!
//! Sections: `hit`, `miss`, `memory`, `invalidation`, `stampede`, `bytes`,
//! `cluster` (a Redis Cluster of its own: 3 primaries, 3 replicas).
//!
//! The machine is shared and noisy, so subjects never run in long blocks one
//! after the other: latency is sampled in rounds that rotate the subjects, and
//! each throughput cell is the median of interleaved repetitions. On a
//! machine with two or more CPUs the full run pins `redis-server` to the last
//! CPU and the harness to the others (with `taskset`), as a client and a
//! server on separate machines would be: unpinned, the two migrate between
//! cores and single-task latency is bimodal from one run to the next.

mod cluster;
mod measure;
mod subjects;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, RedisConfig};
use cache_tests::redis_server::RedisServer;
use measure::{Latency, mean_time, median, micros, nanos, on_worker, throughput};
use redis::AsyncCommands;
use subjects::{BODY_DELAY_MS, BODY_RUNS, HandWritten, REDIS_URL};

/// Keys preloaded for the hit benchmarks.
const KEYS: u64 = 1000;
/// Latency is sampled in this many rounds, each subject once per round.
const ROUNDS: usize = 20;
/// Repetitions of each throughput cell; the median is reported.
const REPEATS: usize = 3;
/// The concurrency the throughput targets are read at.
const TARGET_TASKS: usize = 64;

struct Settings {
    latency_calls: usize,
    memory_calls: usize,
    throughput_for: Duration,
    concurrency: &'static [usize],
    invalidation_sizes: &'static [u64],
    stampede_callers: usize,
}

const FULL: Settings = Settings {
    latency_calls: 20_000,
    memory_calls: 1_000_000,
    throughput_for: Duration::from_secs(2),
    concurrency: &[1, 16, 64, 256],
    invalidation_sizes: &[10_000, 100_000, 1_000_000],
    stampede_callers: 1000,
};

const QUICK: Settings = Settings {
    latency_calls: 400,
    memory_calls: 2_000,
    throughput_for: Duration::from_millis(50),
    concurrency: &[1, 16],
    invalidation_sizes: &[1_000],
    stampede_callers: 100,
};

/// The ways of reading one value from Redis that the tables compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// (a) redis-rs `GET` + bincode, by hand.
    Floor,
    /// (a) on a connection with redis-rs' defaults: Nagle's algorithm on.
    FloorDefaults,
    /// (a') the floor, reading a generation key in the same `MGET`.
    FloorGeneration,
    /// (b) our `#[cached]`.
    Ours,
    /// (b) with `RedisConfig::tcp_nodelay(false)`: Nagle on, as in (c).
    OursDefaults,
    /// (b) with leases off (`CacheBuilder::lease(None)`): for the miss.
    OursNoLease,
    /// (c) the `cached` crate's `#[concurrent_cached]` on Redis.
    Cached,
}

/// One figure per subject, in [`Subject::ALL`] order.
#[derive(Debug, Clone, Copy)]
struct PerSubject<T>([T; Subject::ALL.len()]);

impl<T: Copy> PerSubject<T> {
    fn of(values: &[T]) -> Self {
        PerSubject(values.try_into().expect("one value per subject"))
    }

    fn get(&self, subject: Subject) -> T {
        let at = Subject::ALL.iter().position(|&s| s == subject);
        self.0[at.expect("every subject is in ALL")]
    }
}

impl Subject {
    const ALL: [Subject; 6] = [
        Subject::Floor,
        Subject::FloorDefaults,
        Subject::FloorGeneration,
        Subject::Ours,
        Subject::OursDefaults,
        Subject::Cached,
    ];

    fn label(self) -> &'static str {
        match self {
            Subject::Floor => "(a) floor: redis-rs GET + bincode",
            Subject::FloorDefaults => "(a) on redis-rs' default socket (Nagle on)",
            Subject::FloorGeneration => "(a') floor + a generation key in the same MGET",
            Subject::Ours => "(b) `#[cached]` (ours)",
            Subject::OursDefaults => "(b) with `tcp_nodelay(false)` (Nagle on)",
            Subject::OursNoLease => "(b) with leases off",
            Subject::Cached => "(c) `cached` 4.1 `concurrent_cached(redis)`",
        }
    }

    /// One call for `id`: a hit if `id` is preloaded, a miss otherwise
    /// (except for (a'), which only reads).
    async fn call(self, floor: &HandWritten, id: u64) {
        let item = match self {
            Subject::Floor => floor.get(id).await,
            Subject::FloorDefaults => floor.get_with_defaults(id).await,
            Subject::FloorGeneration => floor.get_with_generation(id).await,
            Subject::Ours => subjects::ours(id).await,
            Subject::OursDefaults => subjects::ours_on_defaults(id).await,
            Subject::OursNoLease => subjects::ours_without_leases(id).await,
            Subject::Cached => subjects::cached_crate_redis(id).await,
        };
        std::hint::black_box(item.expect("the benchmarked call failed"));
    }
}

/// What the targets are judged on; filled by the sections that ran.
#[derive(Default)]
struct Findings {
    /// p50 single-task hit latency, per subject.
    hit_p50: Option<PerSubject<Duration>>,
    /// Hit throughput at [`TARGET_TASKS`] (or the highest concurrency run).
    hit_rate: Option<(usize, PerSubject<f64>)>,
    /// Nanoseconds per in-memory hit: raw moka, ours, `cached`.
    memory: Option<[Duration; 3]>,
    /// Invalidation time at the largest namespace measured.
    invalidation: Option<(u64, Duration)>,
    /// Body runs in the stampede: ours, `cached`.
    stampede_runs: Option<(u32, u32)>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--section")
        .and_then(|i| args.get(i + 1).cloned());
    let run = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let s = if quick { &QUICK } else { &FULL };
    if !quick && cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for figures worth reading");
    }

    let server = RedisServer::start();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let placement = if quick || args.iter().any(|a| a == "--no-pin") {
        "threads not pinned".to_string()
    } else {
        pin(&server, cores)
    };
    let url = server.url();
    REDIS_URL.set(url.clone()).expect("set once");
    let floor = HandWritten::connect(&url)
        .await?
        .with_defaults(&url)
        .await?;
    let ours_cache = Cache::builder()
        .redis(RedisConfig::new(&url)?)
        .connect()
        .await?;
    cache_runtime::install(ours_cache.clone()).map_err(|_| "installed twice")?;
    let on_defaults = Cache::builder()
        .redis(RedisConfig::new(&url)?.tcp_nodelay(false))
        .connect()
        .await?;
    subjects::OURS_ON_DEFAULTS
        .set(on_defaults)
        .map_err(|_| "set twice")?;
    // A prefix of its own: the miss rows call the same ids, and would hit
    // each other's entries.
    let without_leases = Cache::builder()
        .redis(RedisConfig::new(&url)?)
        .prefix("bench-no-lease")
        .lease(None)
        .connect()
        .await?;
    subjects::OURS_WITHOUT_LEASES
        .set(without_leases)
        .map_err(|_| "set twice")?;

    floor.preload(0..KEYS).await?;
    for id in 0..KEYS {
        subjects::ours(id).await?;
        subjects::cached_crate_redis(id).await?;
    }

    println!(
        "# Benchmarks ({})\n\nredis-server {} on 127.0.0.1, {} cores ({placement}), {} calls per latency row, {:?} per throughput cell.\n",
        if quick {
            "quick smoke run: figures meaningless"
        } else {
            "full run"
        },
        server
            .cli(&["INFO", "server"])
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim(),
        cores,
        s.latency_calls,
        s.throughput_for,
    );

    let mut findings = Findings::default();
    if run("hit") {
        redis_hits(s, &floor, &mut findings).await;
    }
    if run("miss") {
        redis_misses(s, &floor).await;
    }
    if run("memory") {
        memory_hits(s, &mut findings).await;
    }
    if run("invalidation") {
        invalidation(s, &server, &ours_cache, &floor, &mut findings).await?;
    }
    if run("stampede") {
        stampede(s, &floor, &mut findings).await;
    }
    if run("bytes") {
        memory_usage(&floor).await?;
    }
    if run("cluster") {
        cluster::run(&cluster::Settings {
            latency_calls: s.latency_calls,
            throughput_for: s.throughput_for,
            rounds: ROUNDS,
            repeats: REPEATS,
            keys: KEYS,
            server_cpu: (placement.starts_with("redis-server on CPU"))
                .then(|| (cores - 1).to_string()),
        })
        .await?;
    }
    targets(&findings);
    Ok(())
}

/// Pins a process (all its threads) to `cpus`; false if `taskset` failed.
fn taskset(cpus: &str, pid: u32) -> bool {
    std::process::Command::new("taskset")
        .args(["--all-tasks", "--pid", "--cpu-list", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins `redis-server` to the last CPU and this process to the others, and
/// says what was done, for the table's header.
fn pin(server: &RedisServer, cpus: usize) -> String {
    if cpus < 2 {
        return "one CPU: threads not pinned".into();
    }
    let server_cpu = (cpus - 1).to_string();
    let harness_cpus = if cpus == 2 {
        "0".to_string()
    } else {
        format!("0-{}", cpus - 2)
    };
    let pinned = server.pid().is_some_and(|pid| taskset(&server_cpu, pid))
        && taskset(&harness_cpus, std::process::id());
    if pinned {
        format!("redis-server on CPU {server_cpu}, the harness on CPU {harness_cpus}")
    } else {
        eprintln!("warning: `taskset` failed or is missing (util-linux); threads not pinned");
        "threads not pinned: taskset failed".into()
    }
}

/// Single-task latency of each subject, sampled in rotating rounds.
async fn latencies(
    calls: usize,
    floor: &HandWritten,
    subjects: &[Subject],
    id_of: fn(u64) -> u64,
) -> Vec<Latency> {
    let mut samples = vec![Vec::with_capacity(calls); subjects.len()];
    let per_round = (calls / ROUNDS).max(1);
    for round in 0..ROUNDS {
        for k in 0..subjects.len() {
            let k = (k + round) % subjects.len();
            let (subject, floor) = (subjects[k], floor.clone());
            let offset = (round * per_round) as u64;
            let round_samples = on_worker(async move {
                measure::samples(per_round, |i| {
                    let floor = floor.clone();
                    async move { subject.call(&floor, id_of(offset + i)).await }
                })
                .await
            })
            .await;
            samples[k].extend(round_samples);
        }
    }
    samples.into_iter().map(Latency::of).collect()
}

async fn redis_hits(s: &Settings, floor: &HandWritten, findings: &mut Findings) {
    println!("## 1. Redis hit\n");
    println!("| | p50 µs | p99 µs | mean µs | p50 vs floor |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let all = latencies(s.latency_calls, floor, &Subject::ALL, |i| i % KEYS).await;
    for (subject, l) in Subject::ALL.iter().zip(&all) {
        println!(
            "| {} | {} | {} | {} | {:.2}x |",
            subject.label(),
            micros(l.p50),
            micros(l.p99),
            micros(l.mean),
            ratio(l.p50, all[0].p50)
        );
    }
    let p50: Vec<Duration> = all.iter().map(|l| l.p50).collect();
    findings.hit_p50 = Some(PerSubject::of(&p50));

    println!(
        "\nThroughput, hits per second (median of {REPEATS} runs of {:?}, subjects interleaved; ratio to the floor):\n",
        s.throughput_for
    );
    let mut rates = vec![Vec::new(); Subject::ALL.len()];
    for &tasks in s.concurrency {
        let mut runs = vec![Vec::new(); Subject::ALL.len()];
        for _ in 0..REPEATS {
            for (k, &subject) in Subject::ALL.iter().enumerate() {
                let floor = floor.clone();
                let rate = throughput(tasks, s.throughput_for, move |i| {
                    let floor = floor.clone();
                    async move { subject.call(&floor, i % KEYS).await }
                })
                .await;
                runs[k].push(rate);
            }
        }
        for (rate, runs) in rates.iter_mut().zip(runs) {
            rate.push(median(runs));
        }
    }
    print!("| tasks |");
    for t in s.concurrency {
        print!(" {t} |");
    }
    print!("\n| --- |");
    for _ in s.concurrency {
        print!(" ---: |");
    }
    println!();
    for (subject, row) in Subject::ALL.iter().zip(&rates) {
        print!("| {} |", subject.label());
        for (rate, floor_rate) in row.iter().zip(&rates[0]) {
            print!(" {rate:.0} ({:.2}x) |", rate / floor_rate);
        }
        println!();
    }
    println!();
    let at = s
        .concurrency
        .iter()
        .rposition(|&t| t <= TARGET_TASKS)
        .expect("a concurrency at most the target's");
    let at_target: Vec<f64> = rates.iter().map(|row| row[at]).collect();
    findings.hit_rate = Some((s.concurrency[at], PerSubject::of(&at_target)));
}

async fn redis_misses(s: &Settings, floor: &HandWritten) {
    println!("## 2. Redis miss (get, body, set; trivial body)\n");
    println!("| | p50 µs | p99 µs | p50 vs floor |");
    println!("| --- | ---: | ---: | ---: |");
    // Fresh ids for every call: every call misses.
    // Leases (on by default) cost a miss two more requests: take, release.
    let subjects = [
        Subject::Floor,
        Subject::Ours,
        Subject::OursNoLease,
        Subject::Cached,
    ];
    let all = latencies(s.latency_calls / 4, floor, &subjects, |i| 10_000_000 + i).await;
    for (subject, l) in subjects.iter().zip(&all) {
        println!(
            "| {} | {} | {} | {:.2}x |",
            subject.label(),
            micros(l.p50),
            micros(l.p99),
            ratio(l.p50, all[0].p50)
        );
    }
    println!();
}

async fn memory_hits(s: &Settings, findings: &mut Findings) {
    println!("## 3. In-memory hit\n");
    println!("| | ns per hit | vs raw moka |");
    println!("| --- | ---: | ---: |");
    let moka: moka::future::Cache<u64, subjects::Item> = moka::future::Cache::new(100_000);
    let memory = Cache::memory();
    for id in 0..KEYS {
        moka.insert(id, subjects::load(id)).await;
        memory.scope(subjects::ours(id)).await.expect("a value");
        subjects::cached_crate_memory(id).await.expect("a value");
    }
    // Rounds again, so that drift hits every subject alike.
    let per_round = s.memory_calls / ROUNDS;
    let mut totals = [Duration::ZERO; 3];
    for _ in 0..ROUNDS {
        totals[0] += mean_time(per_round, |i| {
            let moka = &moka;
            async move {
                std::hint::black_box(moka.get(&(i % KEYS)).await.expect("hit"));
            }
        })
        .await;
        totals[1] += memory
            .scope(mean_time(per_round, |i| async move {
                std::hint::black_box(subjects::ours(i % KEYS).await.expect("hit"));
            }))
            .await;
        totals[2] += mean_time(per_round, |i| async move {
            std::hint::black_box(subjects::cached_crate_memory(i % KEYS).await.expect("hit"));
        })
        .await;
    }
    let means = totals.map(|t| t / ROUNDS as u32);
    for (name, d) in [
        "raw moka `get` (clones the value)",
        "(b) ours, memory backend",
        "(c) `cached` 4.1 `#[cached]`",
    ]
    .iter()
    .zip(means)
    {
        println!("| {name} | {} | {:.2}x |", nanos(d), ratio(d, means[0]));
    }
    println!();
    findings.memory = Some(means);
}

async fn invalidation(
    s: &Settings,
    server: &RedisServer,
    ours: &Cache,
    floor: &HandWritten,
    findings: &mut Findings,
) -> Result<(), Box<dyn std::error::Error>> {
    println!("## 4. Namespace invalidation\n");
    println!("| entries | ours (generation bump) | SCAN + UNLINK by prefix |");
    println!("| ---: | ---: | ---: |");
    for &n in s.invalidation_sizes {
        fill(server, n)?;
        let start = Instant::now();
        ours.invalidate_namespace("inv").await?;
        let bump = start.elapsed();

        let start = Instant::now();
        let deleted = scan_unlink(floor, "cache:{inv:*").await?;
        let scan = start.elapsed();
        // The n entries, and the 16 generation keys of the namespace.
        assert!(deleted >= n, "SCAN + UNLINK deleted {deleted} keys of {n}");
        println!(
            "| {n} | {:.3} ms | {:.1} ms |",
            bump.as_secs_f64() * 1e3,
            scan.as_secs_f64() * 1e3
        );
        findings.invalidation = Some((n, bump));
    }
    println!();
    Ok(())
}

/// Writes `n` entries into namespace `inv` with `redis-cli --pipe`.
fn fill(server: &RedisServer, n: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
    for id in 0..n {
        writeln!(
            stdin,
            "SET cache:{{inv:{:02x}}}:bench.filler:v0:{id} {:0>64} EX 3600",
            id % 16,
            id
        )?;
    }
    drop(stdin);
    let status = child.wait()?;
    if !status.success() {
        return Err(std::io::Error::other(format!("redis-cli --pipe: {status}")));
    }
    Ok(())
}

/// What hand-written wrappers (and `cached`'s clear) do: SCAN by pattern, UNLINK.
async fn scan_unlink(floor: &HandWritten, pattern: &str) -> redis::RedisResult<u64> {
    let mut connection = floor.connection.clone();
    let mut cursor = 0u64;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let n: u64 = connection.unlink(&keys).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

async fn stampede(s: &Settings, floor: &HandWritten, findings: &mut Findings) {
    println!(
        "## 5. Stampede: {} concurrent cold calls on one key, 20 ms body\n",
        s.stampede_callers
    );
    println!("| | body runs | total ms |");
    println!("| --- | ---: | ---: |");
    BODY_DELAY_MS.store(20, Ordering::SeqCst);
    let mut runs = [0; 3];
    let subjects = [Subject::Floor, Subject::Ours, Subject::Cached];
    for (k, subject) in subjects.into_iter().enumerate() {
        // A key no subject has seen.
        let id = 20_000_000 + k as u64;
        BODY_RUNS.store(0, Ordering::SeqCst);
        let start = Instant::now();
        let tasks: Vec<_> = (0..s.stampede_callers)
            .map(|_| {
                let floor = floor.clone();
                tokio::spawn(async move { subject.call(&floor, id).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("no panic");
        }
        runs[k] = BODY_RUNS.load(Ordering::SeqCst);
        println!(
            "| {} | {} | {:.1} |",
            subject.label(),
            runs[k],
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    BODY_DELAY_MS.store(0, Ordering::SeqCst);
    println!();
    findings.stampede_runs = Some((runs[1], runs[2]));
}

async fn memory_usage(floor: &HandWritten) -> redis::RedisResult<()> {
    println!("## 6. Memory per entry in Redis (`MEMORY USAGE`)\n");
    println!("| | key | bytes |");
    println!("| --- | --- | ---: |");
    let mut connection = floor.connection.clone();
    for (name, pattern) in [
        ("(a) floor", "raw:item:7"),
        ("(b) ours", "cache:{bench:*}:*.ours:v0:*"),
        ("(c) `cached`", "cached-redis-store:bench-cached-crate:*"),
    ] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut connection)
            .await?;
        let Some(key) = keys.into_iter().min_by_key(|k| k.len()) else {
            println!("| {name} | (none matched {pattern}) | |");
            continue;
        };
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        println!("| {name} | `{key}` | {bytes} |");
    }
    println!();
    Ok(())
}

/// The goals of `docs/benchmarks.md`, judged on this run. Rows without a
/// goal are context for the row above them.
fn targets(f: &Findings) {
    let mut rows: Vec<(String, &str, f64, Option<bool>)> = Vec::new();
    if let Some((tasks, r)) = f.hit_rate {
        let ours = r.get(Subject::Ours);
        let (vs_floor, vs_generation, vs_cached) = (
            ours / r.get(Subject::Floor),
            ours / r.get(Subject::FloorGeneration),
            ours / r.get(Subject::Cached),
        );
        let same_socket = r.get(Subject::OursDefaults) / r.get(Subject::Cached);
        rows.push((
            format!("Redis hit throughput at {tasks} tasks, ours / floor"),
            ">= 0.90",
            vs_floor,
            Some(vs_floor >= 0.9),
        ));
        rows.push((
            format!("Redis hit throughput at {tasks} tasks, ours / (a')"),
            "",
            vs_generation,
            None,
        ));
        rows.push((
            format!("Redis hit throughput at {tasks} tasks, ours / `cached`"),
            ">= 1.20",
            vs_cached,
            Some(vs_cached >= 1.2),
        ));
        rows.push((
            format!("Redis hit throughput at {tasks} tasks, ours / `cached`, both Nagle on"),
            "",
            same_socket,
            None,
        ));
    }
    if let Some(p50) = f.hit_p50 {
        let ours = p50.get(Subject::Ours);
        let (vs_floor, vs_generation) = (
            ratio(ours, p50.get(Subject::Floor)),
            ratio(ours, p50.get(Subject::FloorGeneration)),
        );
        rows.push((
            "single-task Redis hit p50, ours / floor".to_owned(),
            "<= 1.10",
            vs_floor,
            Some(vs_floor <= 1.1),
        ));
        rows.push((
            "single-task Redis hit p50, ours / (a')".to_owned(),
            "",
            vs_generation,
            None,
        ));
    }
    if let Some(m) = f.memory {
        let (vs_moka, cached_vs_ours) = (ratio(m[1], m[0]), ratio(m[2], m[1]));
        rows.push((
            "in-memory hit, ours / raw moka".to_owned(),
            "<= 1.50",
            vs_moka,
            Some(vs_moka <= 1.5),
        ));
        rows.push((
            "in-memory hit, `cached` time / ours".to_owned(),
            ">= 1.20",
            cached_vs_ours,
            Some(cached_vs_ours >= 1.2),
        ));
    }
    if let Some((n, d)) = f.invalidation {
        let ms = d.as_secs_f64() * 1e3;
        rows.push((
            format!("namespace invalidation at {n} entries, ms"),
            "< 1",
            ms,
            Some(ms < 1.0),
        ));
    }
    if let Some((ours, cached)) = f.stampede_runs {
        rows.push((
            "stampede body runs, ours".to_owned(),
            "1",
            f64::from(ours),
            Some(ours == 1),
        ));
        rows.push((
            "stampede body runs, `cached`".to_owned(),
            "",
            f64::from(cached),
            None,
        ));
    }
    if rows.is_empty() {
        return;
    }
    println!("## Targets\n");
    println!("| target | goal | measured | met |");
    println!("| --- | --- | ---: | --- |");
    for (name, goal, value, met) in rows {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!("| {name} | {goal} | {value:.2} | {met} |");
    }
    println!();
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
