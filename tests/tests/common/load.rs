//! Calls and invalidations from 32 tasks against a ground truth, for the
//! tests that break a backend under load (cluster failover and reshard,
//! Sentinel failover): a key's true version is bumped before each
//! invalidation, readers check that no value older than the last
//! invalidation that returned `Ok` comes back, and that no value of another
//! key does.
#![allow(dead_code)] // each test binary uses a part

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CallOutcome, Error, cached};

/// The load tests' function: a key's true version, with the key, so that a
/// value of another key would show.
pub const KEYS: usize = 48;

/// One truth per load test: the tests of this file may run at once.
static TRUTHS: LazyLock<[super::Truth; 3]> = LazyLock::new(|| {
    [
        super::Truth::new(KEYS),
        super::Truth::new(KEYS),
        super::Truth::new(KEYS),
    ]
});

pub const FAILOVER: usize = 0;
pub const RESHARD: usize = 1;
pub const SENTINEL: usize = 2;

#[cached(namespace = "truth", ttl = 60)]
pub async fn versioned(run: usize, key: u64) -> (u64, u64) {
    (key, TRUTHS[run].versions[key as usize].load(SeqCst))
}

/// What a run under load saw.
pub struct Load {
    run: usize,
    pub calls: AtomicU64,
    pub hits: AtomicU64,
    pub uncached: AtomicU64,
    pub wrong_key: AtomicU64,
    pub slowest_ms: AtomicU64,
    pub invalidations_ok: AtomicU64,
    pub invalidations_unconfirmed: AtomicU64,
    pub invalidations_failed: AtomicU64,
    not_hit_since: Mutex<Option<Recovery>>,
}

/// Since a fault: when it was, the keys not hit since, and when the last
/// of them was.
type Recovery = (Instant, HashSet<u64>, Option<Instant>);

impl Load {
    pub fn new(run: usize) -> Load {
        Load {
            run,
            calls: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            uncached: AtomicU64::new(0),
            wrong_key: AtomicU64::new(0),
            slowest_ms: AtomicU64::new(0),
            invalidations_ok: AtomicU64::new(0),
            invalidations_unconfirmed: AtomicU64::new(0),
            invalidations_failed: AtomicU64::new(0),
            not_hit_since: Mutex::new(None),
        }
    }

    pub fn truth(&self) -> &'static super::Truth {
        &TRUTHS[self.run]
    }

    /// No value of another key, none older than an invalidation that
    /// returned `Ok`, and some invalidations did.
    pub fn assert_sound(&self) {
        assert_eq!(self.wrong_key.load(SeqCst), 0, "a value of another key");
        assert_eq!(
            self.truth().stale.load(SeqCst),
            0,
            "a value older than an invalidation"
        );
        assert!(self.invalidations_ok.load(SeqCst) > 0);
    }

    /// From now on, track which keys have been hit.
    pub fn mark(&self) {
        *self.not_hit_since.lock().unwrap() =
            Some((Instant::now(), (0..KEYS as u64).collect(), None));
    }

    /// How long after `mark` every key had been hit again.
    pub fn all_hit_after(&self) -> Option<Duration> {
        let guard = self.not_hit_since.lock().unwrap();
        let (since, _, done) = guard.as_ref()?;
        done.map(|done| done - *since)
    }

    fn hit(&self, key: u64) {
        let mut guard = self.not_hit_since.lock().unwrap();
        if let Some((_, keys, done)) = guard.as_mut()
            && keys.remove(&key)
            && keys.is_empty()
        {
            *done = Some(Instant::now());
        }
    }

    pub fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} calls, {} hits, {} uncached, {} wrong values, {} stale, slowest call {} ms; \
             invalidations: {} confirmed, {} not confirmed by a replica, {} failed; \
             every key hit again {:?} after the fault",
            self.calls.load(SeqCst),
            self.hits.load(SeqCst),
            self.uncached.load(SeqCst),
            self.wrong_key.load(SeqCst),
            self.truth().stale.load(SeqCst),
            self.slowest_ms.load(SeqCst),
            self.invalidations_ok.load(SeqCst),
            self.invalidations_unconfirmed.load(SeqCst),
            self.invalidations_failed.load(SeqCst),
            self.all_hit_after(),
        );
    }
}

/// Starts the load.
pub fn start_load(
    cache: &Cache,
    load: &Arc<Load>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    load_tasks(cache, load, stop)
        .into_iter()
        .map(tokio::spawn)
        .collect()
}

/// Stops the load and joins it, failing on a task that does not end
/// within a bound only a hang reaches.
pub async fn stop_load(tasks: Vec<tokio::task::JoinHandle<()>>, stop: &AtomicBool) {
    stop.store(true, SeqCst);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a task hung")
            .unwrap();
    }
}

/// 28 readers and 4 writers on `cache` until `stop`.
fn load_tasks(
    cache: &Cache,
    load: &Arc<Load>,
    stop: &Arc<AtomicBool>,
) -> Vec<impl Future<Output = ()> + Send + 'static> {
    let mut tasks = Vec::new();
    for task in 0..32u64 {
        let (cache, load, stop) = (cache.clone(), Arc::clone(load), Arc::clone(stop));
        tasks.push(async move {
            let mut rng = fastrand::Rng::with_seed(task);
            while !stop.load(SeqCst) {
                let key = rng.u64(..KEYS as u64);
                let (run, truth) = (load.run, load.truth());
                if task < 4 {
                    let result = Mutex::new(None);
                    truth
                        .write(key as usize, async {
                            let r = cache.scope(versioned_invalidate(&run, &key)).await;
                            let ok = r.is_ok();
                            *result.lock().unwrap() = Some(r);
                            if ok { Ok(()) } else { Err(Error::Closed) }
                        })
                        .await;
                    match result.into_inner().unwrap().expect("ran") {
                        Ok(()) => load.invalidations_ok.fetch_add(1, SeqCst),
                        Err(Error::NotReplicated { .. }) => {
                            load.invalidations_unconfirmed.fetch_add(1, SeqCst)
                        }
                        Err(_) => load.invalidations_failed.fetch_add(1, SeqCst),
                    };
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let start = Instant::now();
                truth
                    .read(key as usize, || async {
                        let ((seen_key, version), outcome) = cache
                            .scope(cache_runtime::with_outcome(versioned(run, key)))
                            .await;
                        if seen_key != key {
                            load.wrong_key.fetch_add(1, SeqCst);
                        }
                        match outcome {
                            Some(CallOutcome::Hit) => {
                                load.hits.fetch_add(1, SeqCst);
                                load.hit(key);
                            }
                            Some(CallOutcome::Uncached) => {
                                load.uncached.fetch_add(1, SeqCst);
                            }
                            _ => {}
                        }
                        version
                    })
                    .await;
                load.calls.fetch_add(1, SeqCst);
                load.slowest_ms
                    .fetch_max(start.elapsed().as_millis() as u64, SeqCst);
            }
        });
    }
    tasks
}

/// After a run: every key read once more, in a new cache (no flight or
/// process state): every invalidation that returned `Ok` is still final.
pub async fn check_final(cache: &Cache, run: usize) {
    for key in 0..KEYS as u64 {
        TRUTHS[run]
            .read(key as usize, || async {
                cache.scope(versioned(run, key)).await.1
            })
            .await;
    }
}
