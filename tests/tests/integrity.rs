//! Never a wrong value (G1) and injective keys (G2): entries written by another
//! type, schema or codec, broken entries, and a property test over keys.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_runtime::testing;
use cache_runtime::{
    Backend, Cache, CacheKey, CodecKind, Generation, KeyArgs, MemoryBackend, Namespace, cached,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// The value type as an older release wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct ProfileV1 {
    id: u64,
    name: String,
}

/// The value type now: the same layout on the wire (u64, string), a different
/// meaning. bincode would decode a V1 entry into it without complaint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    email: String,
}

static PROFILE_RUNS: std::sync::LazyLock<common::Runs> = std::sync::LazyLock::new(Default::default);

#[cached(namespace = "profiles")]
async fn get_profile(id: u64) -> Profile {
    PROFILE_RUNS.record(id);
    Profile {
        id,
        email: format!("{id}@example.com"),
    }
}

/// A cache on its own memory backend, after one call of `get_profile(id)`:
/// the backend, the cache, and the key and generation of that call's entry.
async fn profile_entry(id: u64) -> (Arc<MemoryBackend>, Cache, String, Generation) {
    let backend = Arc::new(MemoryBackend::new());
    let cache = Cache::builder()
        .shared_backend(backend.clone())
        .build()
        .unwrap();
    cache.scope(get_profile(id)).await;
    let keys = backend.keys();
    let [key] = keys.as_slice() else {
        panic!("one call left {keys:?}")
    };
    let generation = backend.shard_of(key).expect("a shard state").generation;
    (backend.clone(), cache, key.clone(), generation)
}

fn profile(id: u64) -> Profile {
    Profile {
        id,
        email: format!("{id}@example.com"),
    }
}

#[tokio::test]
async fn an_entry_of_an_older_schema_is_a_miss_then_replaced() {
    let (backend, cache, key, generation) = profile_entry(7).await;
    // What the previous release left: a well-formed entry of ProfileV1 under the
    // very key the new release reads, in the current generation.
    let old = ProfileV1 {
        id: 7,
        name: "Mallory".into(),
    };
    let stale = testing::seal(CodecKind::Bincode, generation, TTL, &old).unwrap();
    backend.set_raw(&key, stale, TTL);

    let runs = PROFILE_RUNS.of(7);
    assert_eq!(
        cache.scope(get_profile(7)).await,
        profile(7),
        "decoded another schema"
    );
    assert_eq!(PROFILE_RUNS.of(7), runs + 1);
    // Repaired: the next call is a hit on the new schema.
    assert_eq!(cache.scope(get_profile(7)).await, profile(7));
    assert_eq!(PROFILE_RUNS.of(7), runs + 1);
    let stats = cache.stats().namespace("profiles");
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 2, 0));
}

const TTL: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_garbage_entry_is_a_miss_then_repaired() {
    let (backend, cache, key, _) = profile_entry(8).await;
    for garbage in [
        &b"garbage"[..],
        &[0xCA, 2, 1, 0][..],
        &[0xCAu8; 64][..],
        &[][..],
    ] {
        backend.set_raw(&key, Bytes::copy_from_slice(garbage), TTL);
        let runs = PROFILE_RUNS.of(8);
        assert_eq!(cache.scope(get_profile(8)).await, profile(8));
        assert_eq!(
            PROFILE_RUNS.of(8),
            runs + 1,
            "garbage {garbage:?} was a hit"
        );
        assert_eq!(cache.scope(get_profile(8)).await, profile(8));
        assert_eq!(
            PROFILE_RUNS.of(8),
            runs + 1,
            "garbage {garbage:?} was not repaired"
        );
    }
    // Broken entries are reported as errors; empty and short ones too.
    assert_eq!(cache.stats().namespace("profiles").errors, 4);
}

#[tokio::test]
async fn an_entry_of_another_codec_is_a_miss() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let bincode = Cache::builder()
        .shared_backend(backend.clone())
        .build()
        .unwrap();
    let postcard = Cache::builder()
        .shared_backend(backend)
        .codec(CodecKind::Postcard)
        .build()
        .unwrap();
    let runs = PROFILE_RUNS.of(9);
    assert_eq!(bincode.scope(get_profile(9)).await, profile(9));
    assert_eq!(postcard.scope(get_profile(9)).await, profile(9));
    assert_eq!(
        PROFILE_RUNS.of(9),
        runs + 2,
        "postcard read a bincode entry"
    );
    assert_eq!(postcard.scope(get_profile(9)).await, profile(9));
    assert_eq!(PROFILE_RUNS.of(9), runs + 2, "postcard did not cache");
}

#[tokio::test]
async fn a_stale_generation_is_a_miss() {
    let (backend, cache, key, generation) = profile_entry(10).await;
    let wrong = Generation(generation.0.wrapping_add(1));
    let stale = Profile {
        id: 10,
        email: "stale".into(),
    };
    let entry = testing::seal(CodecKind::Bincode, wrong, TTL, &stale).unwrap();
    backend.set_raw(&key, entry, TTL);
    assert_eq!(cache.scope(get_profile(10)).await, profile(10));
}

/// Strings that try to break out of their place in a key.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,8}",
        "[:*{}\\n%#\\\\ ]{0,8}",
        ".{0,16}",
        Just(String::new()),
        Just(":".into()),
        Just("a:b".into()),
        Just("%3A".into()),
        Just("{users:00}".into()),
        (0usize..3).prop_map(|n| "x".repeat(100 * 1024 + n)),
    ]
}

type Args = (String, Vec<String>, u64, Option<String>);

fn args() -> impl Strategy<Value = Args> {
    (
        hostile_string(),
        prop::collection::vec(hostile_string(), 0..3),
        prop_oneof![Just(0u64), Just(58), any::<u64>()],
        prop::option::of(hostile_string()),
    )
}

fn key_of(namespace: &str, args: &Args) -> CacheKey {
    let mut key_args = KeyArgs::new();
    key_args.push(&args.0);
    key_args.push(&args.1);
    key_args.push(&args.2);
    key_args.push(&args.3);
    CacheKey::new(
        "cache",
        &Namespace::new(namespace.to_owned()).unwrap(),
        "app.f",
        0,
        key_args,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn distinct_arguments_never_share_a_key(a in args(), b in args()) {
        prop_assume!(a != b);
        prop_assert_ne!(key_of("users", &a), key_of("users", &b));
    }

    #[test]
    fn no_argument_reaches_another_namespace(
        a in args(),
        b in args(),
        ns in "[a-z.-]{1,6}",
        other in "[a-z.-]{1,6}",
    ) {
        prop_assume!(ns != other);
        let key = key_of(&ns, &a);
        prop_assert_eq!(key.namespace(), ns.as_str());
        prop_assert_ne!(&key, &key_of(&other, &b));
        // Keys stay short enough for a backend, however long the arguments.
        prop_assert!(key.as_str().len() < 300);
    }
}

#[cached(namespace = "echo")]
async fn echo(a: String, b: Vec<String>) -> (String, Vec<String>) {
    (a, b)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same property end to end: every call returns its own arguments,
    /// whatever was cached before it.
    #[test]
    fn cached_calls_return_their_own_arguments(calls in prop::collection::vec((hostile_string(), prop::collection::vec(hostile_string(), 0..2)), 1..6)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(Cache::memory().scope(async {
            for (a, b) in calls.iter().chain(calls.iter()) {
                let got = echo(a.clone(), b.clone()).await;
                assert_eq!(&got, &(a.clone(), b.clone()));
            }
        }));
    }
}
