//! The backend conformance suite: what every [`Backend`] must do. Each backend's
//! test file calls [`run_all`] with a fresh backend (and a fresh key prefix).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_runtime::entry::{Generation, identity};
use cache_runtime::{Backend, CacheKey, Namespace, PutCondition, PutOutcome};

/// Runs every check, through `Arc<dyn Backend>` as the cache uses it.
pub async fn run_all(backend: Arc<dyn Backend>, prefix: &str) {
    empty_reads_find_nothing(&*backend, prefix).await;
    generation_is_created_once(&*backend, prefix).await;
    conditional_put_stores_when_nothing_changed(&*backend, prefix).await;
    conditional_put_refuses_a_changed_entry(&*backend, prefix).await;
    conditional_put_refuses_a_changed_generation(&*backend, prefix).await;
    bump_changes_only_the_given_shards(&*backend, prefix).await;
    entries_expire_after_their_ttl(&*backend, prefix).await;
    backend.ping().await.expect("ping");
    assert!(!backend.name().is_empty());
}

fn key(prefix: &str, test: &str, arg: &str) -> CacheKey {
    let mut args = cache_runtime::__private::KeyArgs::new();
    args.push(arg);
    let ns = Namespace::new(format!("conf-{test}")).unwrap();
    CacheKey::new(prefix, &ns, "conformance.f", 0, args).unwrap()
}

fn entry(text: &str) -> Bytes {
    // Entries are opaque to a backend, but conditional puts compare their first
    // 40 bytes; make them distinct there.
    Bytes::from(format!("{text:-<48}"))
}

const TTL: Duration = Duration::from_secs(60);

async fn empty_reads_find_nothing(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "empty", "a");
    let lookup = b.get(&k).await.unwrap();
    assert_eq!(lookup.entry, None);
    assert_eq!(lookup.generation, None);
}

async fn generation_is_created_once(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "gen", "a");
    let first = b.generation(k.shard()).await.unwrap();
    assert_eq!(b.generation(k.shard()).await.unwrap(), first);
    assert_eq!(b.get(&k).await.unwrap().generation, Some(first));
}

async fn conditional_put_stores_when_nothing_changed(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "put", "a");
    let generation = b.generation(k.shard()).await.unwrap();
    let cond = PutCondition {
        generation,
        previous: None,
    };
    assert_eq!(
        b.put(&k, entry("v1"), TTL, &cond).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(b.get(&k).await.unwrap().entry, Some(entry("v1")));

    // Replacing what was read works too.
    let cond = PutCondition {
        generation,
        previous: Some(Bytes::copy_from_slice(identity(&entry("v1")))),
    };
    assert_eq!(
        b.put(&k, entry("v2"), TTL, &cond).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(b.get(&k).await.unwrap().entry, Some(entry("v2")));
}

async fn conditional_put_refuses_a_changed_entry(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "cas", "a");
    let generation = b.generation(k.shard()).await.unwrap();
    // The reader saw nothing, then someone wrote (an invalidation's tombstone).
    b.set(&k, entry("tombstone"), TTL).await.unwrap();
    let saw_nothing = PutCondition {
        generation,
        previous: None,
    };
    assert_eq!(
        b.put(&k, entry("stale"), TTL, &saw_nothing).await.unwrap(),
        PutOutcome::EntryChanged
    );
    // The reader saw one entry, then it was replaced.
    let saw_old = PutCondition {
        generation,
        previous: Some(Bytes::copy_from_slice(identity(&entry("old")))),
    };
    assert_eq!(
        b.put(&k, entry("stale"), TTL, &saw_old).await.unwrap(),
        PutOutcome::EntryChanged
    );
    assert_eq!(b.get(&k).await.unwrap().entry, Some(entry("tombstone")));
}

async fn conditional_put_refuses_a_changed_generation(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "stale-gen", "a");
    let before = b.generation(k.shard()).await.unwrap();
    b.bump(&[k.shard().to_owned()]).await.unwrap();
    let cond = PutCondition {
        generation: before,
        previous: None,
    };
    assert_eq!(
        b.put(&k, entry("stale"), TTL, &cond).await.unwrap(),
        PutOutcome::GenerationChanged
    );
    assert_eq!(b.get(&k).await.unwrap().entry, None);
}

async fn bump_changes_only_the_given_shards(b: &dyn Backend, prefix: &str) {
    let a = key(prefix, "bump-a", "x");
    let other = key(prefix, "bump-b", "x");
    let a0 = b.generation(a.shard()).await.unwrap();
    let other0 = b.generation(other.shard()).await.unwrap();
    b.bump(&[a.shard().to_owned()]).await.unwrap();
    let a1 = b
        .get(&a)
        .await
        .unwrap()
        .generation
        .expect("a bumped shard has a generation");
    assert_ne!(a1, a0);
    assert_ne!(a1, Generation(0));
    assert_eq!(b.get(&other).await.unwrap().generation, Some(other0));
}

async fn entries_expire_after_their_ttl(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "ttl", "a");
    b.set(&k, entry("short"), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(b.get(&k).await.unwrap().entry.is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        b.get(&k).await.unwrap().entry,
        None,
        "an entry outlived its TTL"
    );
}
