//! Shared pieces of the integration tests: a backend that fails on purpose,
//! gates, and small helpers. (The backend conformance suite ships with the
//! runtime: `cache_runtime::testing::conformance`.)

#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

pub mod load;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cache_runtime::{
    Backend, CacheKey, Error, LeaseState, LeaseToken, Lookup, PutCondition, PutOutcome, Result,
    ShardState, Stored,
};

/// Body runs counted per argument, so tests running in parallel on one cached
/// function (each with its own arguments) do not see each other's runs.
#[derive(Default)]
pub struct Runs(std::sync::Mutex<std::collections::HashMap<u64, u32>>);

impl Runs {
    pub fn record(&self, id: u64) {
        *self.0.lock().unwrap().entry(id).or_default() += 1;
    }

    pub fn of(&self, id: u64) -> u32 {
        self.0.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

/// The backend operations a [`Faulty`] backend can fail or hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    Shard,
    Put,
    Invalidate,
    Bump,
    Ping,
    /// Taking, renewing or releasing a lease.
    Lease,
}

/// What a [`Faulty`] backend does on an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Passes it to the inner backend.
    #[default]
    Pass,
    /// Fails it, as a refused connection would.
    Fail,
    /// Never answers until the mode changes (a frozen server).
    Hang,
    /// Answers after this long (a slow server).
    Delay(Duration),
}

/// A backend over a shared inner one (several `Faulty` over one inner
/// backend play several processes on one Redis) whose operations can be made
/// to fail or hang, one kind at a time.
#[derive(Debug)]
pub struct Faulty {
    pub inner: std::sync::Arc<dyn Backend>,
    modes: std::sync::Mutex<std::collections::HashMap<Op, Mode>>,
    changed: tokio::sync::Notify,
    pub calls: AtomicU64,
    puts: AtomicU64,
    gets: AtomicU64,
    /// What [`Backend::operation_timeout`] says: `None` by default, so that a
    /// hang lasts until the test lets it go.
    timeout: Option<Duration>,
}

impl Faulty {
    pub fn new(inner: std::sync::Arc<dyn Backend>) -> Faulty {
        Faulty {
            inner,
            modes: Default::default(),
            changed: tokio::sync::Notify::new(),
            calls: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            timeout: None,
        }
    }

    /// A backend whose operations the cache gives up on after `timeout`, as
    /// it gives up on a frozen Redis after the response timeout.
    pub fn with_timeout(inner: std::sync::Arc<dyn Backend>, timeout: Duration) -> Faulty {
        Faulty {
            timeout: Some(timeout),
            ..Faulty::new(inner)
        }
    }

    pub fn set(&self, op: Op, mode: Mode) {
        self.modes.lock().unwrap().insert(op, mode);
        self.changed.notify_waiters();
    }

    pub fn set_all(&self, mode: Mode) {
        for op in [
            Op::Get,
            Op::Shard,
            Op::Put,
            Op::Invalidate,
            Op::Bump,
            Op::Ping,
            Op::Lease,
        ] {
            self.set(op, mode);
        }
    }

    /// Stores that reached this backend, answered or not.
    pub fn puts_started(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    /// Reads that reached this backend, answered or not.
    pub fn gets_started(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    async fn enter(&self, op: Op) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match op {
            Op::Put => self.puts.fetch_add(1, Ordering::SeqCst),
            Op::Get => self.gets.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        loop {
            let changed = self.changed.notified();
            let mode = self
                .modes
                .lock()
                .unwrap()
                .get(&op)
                .copied()
                .unwrap_or_default();
            match mode {
                Mode::Pass => return Ok(()),
                Mode::Fail => return Err(Error::backend("faulty", "connection refused (test)")),
                Mode::Hang => changed.await,
                Mode::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    return Ok(());
                }
            }
        }
    }
}

#[async_trait]
impl Backend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    async fn get(&self, key: &CacheKey) -> Result<Lookup> {
        self.enter(Op::Get).await?;
        self.inner.get(key).await
    }
    async fn shard(&self, shard: &str) -> Result<ShardState> {
        self.enter(Op::Shard).await?;
        self.inner.shard(shard).await
    }
    async fn put(
        &self,
        key: &CacheKey,
        entry: Stored,
        ttl: Duration,
        condition: &PutCondition,
    ) -> Result<PutOutcome> {
        self.enter(Op::Put).await?;
        self.inner.put(key, entry, ttl, condition).await
    }
    async fn invalidate(&self, key: &CacheKey) -> Result<()> {
        self.enter(Op::Invalidate).await?;
        self.inner.invalidate(key).await
    }
    async fn bump(&self, shards: &[String]) -> Result<()> {
        self.enter(Op::Bump).await?;
        self.inner.bump(shards).await
    }
    async fn ping(&self) -> Result<()> {
        self.enter(Op::Ping).await?;
        self.inner.ping().await
    }
    async fn lease(&self, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Result<LeaseState> {
        self.enter(Op::Lease).await?;
        self.inner.lease(key, token, ttl).await
    }
    async fn renew_lease(&self, key: &CacheKey, token: LeaseToken, ttl: Duration) -> Result<bool> {
        self.enter(Op::Lease).await?;
        self.inner.renew_lease(key, token, ttl).await
    }
    async fn release_lease(&self, key: &CacheKey, token: LeaseToken) -> Result<()> {
        self.enter(Op::Lease).await?;
        self.inner.release_lease(key, token).await
    }
    async fn abandon_lease(
        &self,
        key: &CacheKey,
        token: LeaseToken,
        pause: Duration,
    ) -> Result<()> {
        self.enter(Op::Lease).await?;
        self.inner.abandon_lease(key, token, pause).await
    }
    fn operation_timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// A `tracing` writer into a buffer, to read what was logged.
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A gate bodies wait at until it opens, and the count of bodies that reached it.
#[derive(Debug, Default)]
pub struct Gate {
    pub reached: std::sync::atomic::AtomicU32,
    is_open: AtomicBool,
    opened: tokio::sync::Notify,
}

impl Gate {
    /// A closed gate, for a `static`.
    pub const fn new_const() -> Gate {
        Gate {
            reached: std::sync::atomic::AtomicU32::new(0),
            is_open: AtomicBool::new(false),
            opened: tokio::sync::Notify::const_new(),
        }
    }

    pub async fn pass(&self) {
        let opened = self.opened.notified();
        self.reached.fetch_add(1, Ordering::SeqCst);
        if !self.is_open.load(Ordering::SeqCst) {
            opened.await;
        }
    }

    pub fn open(&self) {
        self.is_open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    pub fn close(&self) {
        self.is_open.store(false, Ordering::SeqCst);
    }

    /// Waits until `n` bodies reached the gate; panics after a generous
    /// deadline, which only a hang reaches.
    pub async fn wait_reached(&self, n: u32) {
        eventually("bodies to reach the gate", || {
            self.reached.load(Ordering::SeqCst) >= n
        })
        .await;
    }
}

/// Waits until `condition` holds, polling; panics after 10 s, a bound that
/// only catches hangs.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs a future to completion on the current thread without any Tokio
/// runtime, as a program on another executor would.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => return output,
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}

/// Captures what `tracing` logs on this thread (every level) until the guard
/// drops.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// A source of truth a cached body reads (a database row's version), and a
/// gate the body can wait at after reading it: a slow query that read before
/// a write.
#[derive(Debug, Default)]
pub struct Source {
    pub value: AtomicU64,
    pub gate: Gate,
}

impl Source {
    /// Reads the value; if `slow`, waits at the gate after reading it.
    pub async fn read(&self, slow: bool) -> u64 {
        let value = self.value.load(Ordering::SeqCst);
        if slow {
            self.gate.pass().await;
        }
        value
    }

    pub fn write(&self, value: u64) {
        self.value.store(value, Ordering::SeqCst);
    }
}

/// The ground-truth check of G3: writers bump a key's true version and then
/// invalidate it; readers record the version of the last invalidation that
/// returned before they start, call, and count a read that returns an older
/// version as stale. `read` is the cached function (it reads
/// `versions[key]`), `invalidate` its companion.
pub struct Truth {
    pub versions: Vec<AtomicU64>,
    floors: Vec<AtomicU64>,
    pub reads: AtomicU64,
    pub stale: AtomicU64,
}

impl Truth {
    pub fn new(keys: usize) -> Truth {
        Truth {
            versions: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            floors: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            reads: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    /// One write: bumps the version, invalidates, records the floor if the
    /// invalidation returned `Ok`.
    pub async fn write<F: Future<Output = Result<()>>>(&self, key: usize, invalidate: F) {
        let version = self.versions[key].fetch_add(1, Ordering::SeqCst) + 1;
        if invalidate.await.is_ok() {
            self.floors[key].fetch_max(version, Ordering::SeqCst);
        }
    }

    /// One read, checked.
    pub async fn read<F: Future<Output = u64>>(&self, key: usize, read: impl FnOnce() -> F) {
        let floor = self.floors[key].load(Ordering::SeqCst);
        let seen = read().await;
        self.reads.fetch_add(1, Ordering::SeqCst);
        if seen < floor {
            self.stale.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Runs `tasks` until `duration` has passed (they check `stop`), then joins
/// them, failing on a task that does not end within a bound only a hang
/// reaches.
pub async fn run_for<F>(duration: Duration, tasks: impl IntoIterator<Item = F>, stop: &AtomicBool)
where
    F: Future<Output = ()> + Send + 'static,
{
    let tasks: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a task hung")
            .unwrap();
    }
}

/// Runs `cache_peer` (a second process) with exactly these environment
/// variables; returns its stdout and stderr.
#[allow(dead_code)] // not every test binary runs peers
pub fn peer_with_env(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cache_peer"));
    cmd.args(args).env_clear();
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.output().expect("cache_peer runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cache_peer` against `url` and returns its output; fails the test
/// if it fails.
#[allow(dead_code)]
pub fn peer_at(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache_peer"))
        .arg(url)
        .args(args)
        .output()
        .expect("cache_peer runs");
    assert!(
        out.status.success(),
        "cache_peer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A multi-threaded runtime of two workers, for tests that block on it
/// between phases (start servers, kill them) instead of `#[tokio::test]`.
#[allow(dead_code)]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
