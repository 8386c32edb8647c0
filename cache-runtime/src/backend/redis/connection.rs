//! The Redis backend's connection: one multiplexed connection through
//! redis-rs' `ConnectionManager`, which reconnects by itself when the
//! connection breaks (an I/O error, a close), and is replaced by a new one
//! when it goes silent without breaking.
//!
//! Silent connections: a NAT, a load balancer or a firewall that forgets a
//! connection drops its packets without a FIN or an RST, and a peer that
//! dies leaves no one to send either. The socket stays open; every request
//! on it waits for the response timeout, and the next one is sent on it
//! again, until TCP gives the connection up (hours when idle, about 15
//! minutes with data in flight on Linux). TCP keepalive and
//! `TCP_USER_TIMEOUT` ([`RedisConfig::tcp_keepalive`](crate::RedisConfig::tcp_keepalive))
//! shorten that where the packets are really dropped; this module covers
//! every case, a middlebox that keeps acknowledging included:
//!
//! - a request left unanswered for the response timeout replaces the
//!   connection it was sent on (once: concurrent timeouts on the same
//!   connection replace it once);
//! - a watchdog task pings a connection that answered nothing for the ping
//!   interval, so an idle one is replaced before a call needs it, and pings
//!   the replacement at once so that it is connected when a call comes.
//!
//! A cluster connection holds one connection per node, and redis-rs has no
//! way to replace one node's. So the whole cluster connection is replaced,
//! but in the background: a new one is opened and connected to every node
//! while requests go on on the old one, and takes over once it is ready
//! (a new cluster connection waits for every node, a frozen one for the
//! connect timeout: requests must not wait for it). At most one replacement
//! runs at a time, and they start at most once per [`REBUILD_SPACING`].
//! The watchdog pings every primary each interval, whether or not the
//! connection answered meanwhile: one silent node does not stop the others
//! from answering.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};

use crate::error::{Error, Result};
use crate::observe::Throttle;

/// How to open a connection: one node through a `ConnectionManager`, or a
/// whole cluster through a `ClusterConnection` (one connection per node).
pub(super) trait Open: Send + Sync + 'static {
    /// A cheap handle to the connection, cloned for each request.
    type Handle: ConnectionLike + Clone + Send + Sync + 'static;

    /// The backend's name, for logs.
    const NAME: &'static str;

    /// Whether the connection reaches several nodes (a cluster): then it is
    /// replaced in the background, by one [`connect`](Self::connect)ed
    /// first ([`Connection::timed_out`]).
    const SEVERAL_NODES: bool;

    /// Opens it lazily: nothing is sent until the first request, which
    /// must run inside a Tokio runtime.
    fn open(&self) -> Result<Self::Handle>;

    /// Opens it and waits until it is connected, within a bound of its own.
    fn connect(&self) -> impl Future<Output = Result<Self::Handle>> + Send {
        std::future::ready(self.open())
    }

    /// The watchdog's check that the connection answers: `PING`.
    fn probe(handle: &mut Self::Handle) -> impl Future<Output = redis::RedisResult<()>> + Send {
        async move { redis::cmd("PING").query_async::<()>(handle).await }
    }
}

/// One Redis server through redis-rs' `ConnectionManager`, which reconnects
/// with capped exponential backoff when the connection breaks.
pub(super) struct Single {
    pub(super) client: redis::Client,
    pub(super) config: ConnectionManagerConfig,
}

impl Open for Single {
    type Handle = ConnectionManager;
    const NAME: &'static str = super::NAME;
    const SEVERAL_NODES: bool = false;

    fn open(&self) -> Result<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            .map_err(|e| Error::backend(Self::NAME, e))
    }
}

/// At most one "connection replaced" warning per this period.
const WARN_PERIOD: Duration = Duration::from_secs(10);

/// Background replacements of a cluster connection start at most once per
/// this period: while a node stays frozen, each new connection's requests
/// to it time out too.
pub(super) const REBUILD_SPACING: Duration = Duration::from_secs(1);

/// A request's handle to the connection, and which connection it is.
pub(super) struct Leased<H> {
    pub(super) handle: H,
    pub(super) id: u64,
}

/// The connection in use, and which one it is.
struct Current<H> {
    handle: H,
    /// Counts replacements: a timeout replaces the connection it happened
    /// on, not one that replaced it meanwhile.
    id: u64,
    /// Cleared when the runtime the connection was opened on shuts down:
    /// its tasks are gone with it, and the next request opens another.
    alive: Alive,
}

/// Whether the runtime a connection's tasks run on still runs: a task
/// spawned with the connection holds a guard that clears the flag when the
/// runtime drops the task, and ends when the connection is dropped.
struct Alive {
    flag: Arc<AtomicBool>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl<H: Clone> Current<H> {
    fn lease(&self) -> Leased<H> {
        Leased {
            handle: self.handle.clone(),
            id: self.id,
        }
    }
}

impl Alive {
    /// On the current runtime.
    fn spawn() -> Alive {
        let flag = Arc::new(AtomicBool::new(true));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let guard = Running(Arc::clone(&flag));
        tokio::spawn(async move {
            let _guard = guard;
            let _ = stopped.await;
        });
        Alive { flag, _stop: stop }
    }

    fn get(&self) -> bool {
        self.flag.load(Relaxed)
    }
}

pub(super) struct Connection<O: Open> {
    /// Set up by the first command: redis-rs spawns its tasks then, on the
    /// runtime that command runs on.
    current: RwLock<Option<Current<O::Handle>>>,
    opener: O,
    response_timeout: Duration,
    ping_interval: Option<Duration>,
    /// Set by every reply; the watchdog clears it each interval, and pings
    /// when it finds it clear.
    answered: AtomicBool,
    /// Whether a watchdog task runs (cleared when it ends, also when its
    /// runtime shuts down: the next command starts another).
    watched: Arc<AtomicBool>,
    /// Whether a background replacement runs (several nodes only).
    rebuilding: Arc<AtomicBool>,
    replaced: Throttle,
}

impl<O: Open> Connection<O> {
    pub(super) fn new(
        opener: O,
        response_timeout: Duration,
        ping_interval: Option<Duration>,
    ) -> Connection<O> {
        Connection {
            current: RwLock::new(None),
            opener,
            response_timeout,
            ping_interval,
            answered: AtomicBool::new(false),
            watched: Arc::new(AtomicBool::new(false)),
            rebuilding: Arc::new(AtomicBool::new(false)),
            replaced: Throttle::new(WARN_PERIOD),
        }
    }

    /// The connection to send a request on; call inside a Tokio runtime.
    pub(super) fn get(self: &Arc<Self>) -> Result<Leased<O::Handle>> {
        if self.ping_interval.is_some() && !self.watched.load(Relaxed) {
            self.watch();
        }
        if let Some(current) = &*self.current.read().unwrap_or_else(|e| e.into_inner())
            && current.alive.get()
        {
            return Ok(current.lease());
        }
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = &*slot
            && current.alive.get()
        {
            return Ok(current.lease());
        }
        // None yet, or its runtime is gone.
        let id = slot.as_ref().map_or(0, |c| c.id + 1);
        let current = Current {
            handle: self.opener.open()?,
            id,
            alive: Alive::spawn(),
        };
        let leased = current.lease();
        *slot = Some(current);
        Ok(leased)
    }

    /// A reply came: the connection is alive.
    pub(super) fn answered(&self) {
        // Written only when it changes: a store on every reply would move
        // the cache line between cores on every hit.
        if !self.answered.load(Relaxed) {
            self.answered.store(true, Relaxed);
        }
    }

    /// Connection `id` left a request unanswered for the response timeout:
    /// replaces it with a new connection, unless that happened already.
    /// Requests still waiting on it time out as they would have; redis-rs
    /// closes it when the last of them is gone.
    /// Returns whether this call replaced it (a background replacement has
    /// not, yet).
    ///
    /// A connection to several nodes is replaced in the background
    /// ([`rebuild`](Self::rebuild)): the timeout may be one node's, and a
    /// new cluster connection waits for every node, a frozen one for the
    /// connect timeout; the healthy nodes' requests must not wait for it.
    pub(super) fn timed_out(self: &Arc<Self>, id: u64) -> bool {
        if O::SEVERAL_NODES {
            self.rebuild(id);
            return false;
        }
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|c| c.id != id) {
            return false;
        }
        let handle = match self.opener.open() {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(backend = O::NAME, %error, "cannot open a new Redis connection");
                return false;
            }
        };
        *slot = Some(Current {
            handle,
            id: id + 1,
            alive: Alive::spawn(),
        });
        drop(slot);
        self.warn_replaced();
        true
    }

    /// Connects a new connection on a task of its own and puts it in place
    /// of connection `id` when it is ready, unless `id` was replaced
    /// meanwhile. Nothing if a replacement runs or started less than
    /// [`REBUILD_SPACING`] ago. Call inside a Tokio runtime.
    fn rebuild(self: &Arc<Self>, id: u64) {
        // A late timeout of a connection already replaced asks for nothing:
        // it must not take the next rebuild from the current one.
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| c.id != id) {
            return;
        }
        drop(current);
        if self.rebuilding.swap(true, Relaxed) {
            return;
        }
        // Clears the flag however the task ends, its runtime's shutdown
        // included.
        let running = Running(Arc::clone(&self.rebuilding));
        let connection = Arc::clone(self);
        tokio::spawn(async move {
            let started = Instant::now();
            match connection.opener.connect().await {
                Ok(handle) => {
                    let mut slot = connection
                        .current
                        .write()
                        .unwrap_or_else(|e| e.into_inner());
                    if slot.as_ref().is_some_and(|c| c.id == id) {
                        *slot = Some(Current {
                            handle,
                            id: id + 1,
                            alive: Alive::spawn(),
                        });
                        drop(slot);
                        connection.warn_replaced();
                    }
                }
                Err(error) => {
                    tracing::warn!(backend = O::NAME, %error, "cannot open a new Redis connection");
                }
            }
            // The strong reference goes now; the flag stays set for the
            // rest of the spacing.
            drop(connection);
            tokio::time::sleep_until((started + REBUILD_SPACING).into()).await;
            drop(running);
        });
    }

    fn warn_replaced(&self) {
        if let Some(suppressed) = self.replaced.admit() {
            tracing::warn!(
                backend = O::NAME,
                response_timeout = ?self.response_timeout,
                suppressed,
                "the Redis connection left a request unanswered for the response timeout; \
                 replaced it with a new one"
            );
        }
    }

    /// Starts the watchdog on the current runtime, unless one runs.
    fn watch(self: &Arc<Self>) {
        let Some(interval) = self.ping_interval else {
            return;
        };
        if self.watched.swap(true, Relaxed) {
            return;
        }
        let running = Running(Arc::clone(&self.watched));
        tokio::spawn(watchdog(Arc::downgrade(self), interval, running));
    }

    /// Pings the current connection; a ping left unanswered replaces it.
    /// Returns whether it did.
    async fn ping_replaced(self: &Arc<Self>) -> bool {
        let Ok(Leased { mut handle, id }) = self.get() else {
            return false;
        };
        match tokio::time::timeout(self.response_timeout, O::probe(&mut handle)).await {
            Ok(Ok(())) => {
                self.answered();
                false
            }
            // An error reply, or a broken connection, which redis-rs
            // replaces by itself.
            Ok(Err(_)) => false,
            Err(_) => self.timed_out(id),
        }
    }
}

/// Clears the "watched" flag when the watchdog ends, however it ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

/// Each interval, pings the connection if it answered nothing since the
/// last one (a connection to several nodes: every time, since the others'
/// answers say nothing of one node's); after a replacement, pings the new
/// one at once, which connects it. Ends when the backend is dropped.
async fn watchdog<O: Open>(connection: Weak<Connection<O>>, interval: Duration, _running: Running) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(connection) = connection.upgrade() else {
            return;
        };
        if connection.answered.swap(false, Relaxed) && !O::SEVERAL_NODES {
            continue;
        }
        if connection.ping_replaced().await {
            connection.ping_replaced().await;
        }
    }
}
