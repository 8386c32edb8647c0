//! The model's world: the functions under test, the source of truth their
//! bodies read, and what the model records about every body run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use cache_runtime::{Cache, cached};
use serde::{Deserialize, Serialize};

use crate::common::Gate;

/// Keys per function.
pub(crate) const KEYS: u8 = 4;

/// The functions under test: every return shape, two value types of one
/// layout, two instantiations of one generic function, two namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum F {
    /// `-> Versioned`, namespace `model-a`, TTL jitter 50 %.
    Plain,
    /// `-> Result<Versioned, String>`, `model-a`; `Err` when told to fail.
    Fallible,
    /// `-> Other` (the same layout as `Versioned`), `model-a`.
    Other,
    /// `Gen::<A>::get`, `model-a`.
    GenA,
    /// `Gen::<B>::get`, `model-a`.
    GenB,
    /// `-> Option<Versioned>`, `model-b`; `None` for every third version,
    /// cached for one second (`none_ttl`).
    Maybe,
    /// `-> Versioned` with a TTL of one second, `model-b`.
    Short,
    /// `-> Result<Versioned, String>` with a TTL of one second and
    /// `stale_if_error`, `model-b`; `Err` when told to fail.
    Stale,
}

pub(crate) const ALL: [F; 8] = [
    F::Plain,
    F::Fallible,
    F::Other,
    F::GenA,
    F::GenB,
    F::Maybe,
    F::Short,
    F::Stale,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ns {
    A,
    B,
}

impl Ns {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ns::A => PLAIN_NAMESPACE,
            Ns::B => MAYBE_NAMESPACE,
        }
    }
}

impl F {
    pub(crate) fn namespace(self) -> Ns {
        match self {
            F::Maybe | F::Short | F::Stale => Ns::B,
            _ => Ns::A,
        }
    }

    /// Whether a successful call's value is always cached (the must-hit
    /// rule applies): not `Maybe` (its `None`s expire after a second) nor
    /// `Short` and `Stale` (they may expire under a slow machine).
    pub(crate) fn always_cached(self) -> bool {
        !matches!(self, F::Maybe | F::Short | F::Stale)
    }

    /// Whether the function may return `Err` (when told to fail).
    pub(crate) fn fallible(self) -> bool {
        matches!(self, F::Fallible | F::Stale)
    }
}

/// What a body does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Behaviour {
    #[default]
    Normal,
    /// `Fallible` and `Stale` return `Err`; the others behave normally.
    Fail,
    /// Panics.
    Panic,
    /// Reads the truth, then waits at its key's gate.
    Slow,
}

/// A value as every function computes it: who computed it, for which key,
/// from which version of the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Versioned {
    pub(crate) f: u8,
    pub(crate) key: u8,
    pub(crate) version: u64,
}

/// Another value type, with the same wire layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Other {
    pub(crate) f: u8,
    pub(crate) key: u8,
    pub(crate) version: u64,
}

/// One sequence's world. Bodies find it in [`WORLD`].
#[derive(Default)]
pub(crate) struct World {
    /// The truth: a version per namespace and key.
    versions: [[AtomicU64; KEYS as usize]; 2],
    behaviour: Mutex<HashMap<(F, u8), Behaviour>>,
    runs: Mutex<HashMap<(F, u8), u64>>,
    running: Mutex<HashMap<(F, u8), u32>>,
    /// The most bodies of one key seen running at once.
    pub(crate) max_running: Mutex<HashMap<(F, u8), u32>>,
    gates: Mutex<HashMap<(F, u8), Arc<Gate>>>,
}

tokio::task_local! {
    /// The world of the sequence a call belongs to: task-local, so that
    /// sequences running at once (the memory and the Redis tests) never see
    /// each other's truth.
    static WORLD: Arc<World>;
}

/// The world of the sequence this call belongs to.
pub(crate) fn world() -> Arc<World> {
    WORLD.with(Arc::clone)
}

fn slot(ns: Ns) -> usize {
    match ns {
        Ns::A => 0,
        Ns::B => 1,
    }
}

impl World {
    pub(crate) fn version(&self, ns: Ns, key: u8) -> u64 {
        self.versions[slot(ns)][usize::from(key)].load(SeqCst)
    }

    /// A write of the truth: the new version.
    pub(crate) fn bump(&self, ns: Ns, key: u8) -> u64 {
        self.versions[slot(ns)][usize::from(key)].fetch_add(1, SeqCst) + 1
    }

    pub(crate) fn behaviour(&self, f: F, key: u8) -> Behaviour {
        self.behaviour
            .lock()
            .unwrap()
            .get(&(f, key))
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn set_behaviour(&self, f: F, key: u8, behaviour: Behaviour) {
        self.behaviour.lock().unwrap().insert((f, key), behaviour);
    }

    pub(crate) fn runs(&self, f: F, key: u8) -> u64 {
        self.runs
            .lock()
            .unwrap()
            .get(&(f, key))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn gate(&self, f: F, key: u8) -> Arc<Gate> {
        self.gates
            .lock()
            .unwrap()
            .entry((f, key))
            .or_default()
            .clone()
    }

    fn enter(self: &Arc<Self>, f: F, key: u8) -> Running {
        *self.runs.lock().unwrap().entry((f, key)).or_default() += 1;
        let mut running = self.running.lock().unwrap();
        let now = running.entry((f, key)).or_default();
        *now += 1;
        let mut max = self.max_running.lock().unwrap();
        let max = max.entry((f, key)).or_default();
        *max = (*max).max(*now);
        Running(self.clone(), f, key)
    }
}

/// A body running; leaves in `Drop`, also when the body panics or its call
/// is cancelled.
struct Running(Arc<World>, F, u8);

impl Drop for Running {
    fn drop(&mut self) {
        *self
            .0
            .running
            .lock()
            .unwrap()
            .entry((self.1, self.2))
            .or_default() -= 1;
    }
}

/// How the message of a panic the model planned ends.
pub(crate) const PLANNED_PANIC: &str = ", as the model told it to";

/// What every body does: read the truth, as told.
async fn body(f: F, key: u8) -> Versioned {
    let world = world();
    let behaviour = world.behaviour(f, key);
    let _running = world.enter(f, key);
    if behaviour == Behaviour::Panic {
        panic!("the body of {f:?}({key}) panics{PLANNED_PANIC}");
    }
    let version = world.version(f.namespace(), key);
    if behaviour == Behaviour::Slow {
        world.gate(f, key).pass().await;
    }
    tokio::task::yield_now().await;
    Versioned {
        f: f as u8,
        key,
        version,
    }
}

#[cached(namespace = "model-a", ttl_jitter = "50%")]
async fn plain(key: u8) -> Versioned {
    body(F::Plain, key).await
}

#[cached(namespace = "model-a")]
async fn fallible(key: u8) -> Result<Versioned, String> {
    let value = body(F::Fallible, key).await;
    match world().behaviour(F::Fallible, key) {
        Behaviour::Fail => Err(format!("{key} failed")),
        _ => Ok(value),
    }
}

#[cached(namespace = "model-a")]
async fn other(key: u8) -> Other {
    let v = body(F::Other, key).await;
    Other {
        f: v.f,
        key: v.key,
        version: v.version,
    }
}

pub(crate) trait Tag: Send + Sync + 'static {
    const F: F;
}

pub(crate) struct A;
pub(crate) struct B;

impl Tag for A {
    const F: F = F::GenA;
}

impl Tag for B {
    const F: F = F::GenB;
}

pub(crate) struct Gen<T>(std::marker::PhantomData<T>);

impl<T: Tag> Gen<T> {
    #[cached(namespace = "model-a", key_self_type)]
    async fn get(key: u8) -> Versioned {
        body(T::F, key).await
    }
}

#[cached(namespace = "model-b", none_ttl = 1)]
async fn maybe(key: u8) -> Option<Versioned> {
    let value = body(F::Maybe, key).await;
    (!maybe_is_none(value.version)).then_some(value)
}

/// Whether `maybe` returns `None` at this version of the truth.
pub(crate) fn maybe_is_none(version: u64) -> bool {
    version % 3 == 2
}

#[cached(namespace = "model-b", ttl = 1)]
async fn short(key: u8) -> Versioned {
    body(F::Short, key).await
}

/// Expired entries stay 30 s more, returned when the body fails: never one
/// from before an invalidation (the checks of every value apply).
#[cached(namespace = "model-b", ttl = 1, stale_if_error = 30)]
async fn stale(key: u8) -> Result<Versioned, String> {
    let value = body(F::Stale, key).await;
    match world().behaviour(F::Stale, key) {
        Behaviour::Fail => Err(format!("{key} failed")),
        _ => Ok(value),
    }
}

/// What a call returned, made comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Returned {
    Value(Versioned),
    Err,
    None,
}

/// Calls `f(key)` under `cache`, in `world`.
pub(crate) async fn call(world: Arc<World>, cache: Cache, f: F, key: u8) -> Returned {
    let value = |v: Versioned| Returned::Value(v);
    let call = cache.scope(async move {
        match f {
            F::Plain => value(plain(key).await),
            F::Fallible => fallible(key).await.map_or(Returned::Err, value),
            F::Other => {
                let o = other(key).await;
                value(Versioned {
                    f: o.f,
                    key: o.key,
                    version: o.version,
                })
            }
            F::GenA => value(Gen::<A>::get(key).await),
            F::GenB => value(Gen::<B>::get(key).await),
            F::Maybe => maybe(key).await.map_or(Returned::None, value),
            F::Short => value(short(key).await),
            F::Stale => stale(key).await.map_or(Returned::Err, value),
        }
    });
    WORLD.scope(world, call).await
}

/// Invalidates the entry of `f(key)` under `cache`.
pub(crate) async fn invalidate(cache: &Cache, f: F, key: u8) -> cache_runtime::Result<()> {
    cache
        .scope(async {
            match f {
                F::Plain => plain_invalidate(&key).await,
                F::Fallible => fallible_invalidate(&key).await,
                F::Other => other_invalidate(&key).await,
                F::GenA => Gen::<A>::get_invalidate(&key).await,
                F::GenB => Gen::<B>::get_invalidate(&key).await,
                F::Maybe => maybe_invalidate(&key).await,
                F::Short => short_invalidate(&key).await,
                F::Stale => stale_invalidate(&key).await,
            }
        })
        .await
}
