//! The backend conformance suite: what every [`Backend`] must do for the cache
//! to keep its guarantees on top of it. The built-in backends run it in this
//! project's tests; a third-party backend runs it in its own:
//!
//! ```no_run
//! # async fn example() {
//! use std::sync::Arc;
//! use cache_runtime::{Backend, MemoryBackend};
//!
//! let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new()); // yours here
//! cache_runtime::testing::conformance::run_all(backend, "conformance").await;
//! # }
//! ```
//!
//! Each check panics with a message naming the rule it found broken. They
//! need a Tokio runtime with timers (the TTL check sleeps 1.5 s), and a fresh
//! key prefix per run, since they write real keys.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::backend::{
    Backend, Generation, LeaseState, LeaseToken, PutCondition, PutOutcome, Stored, Version,
};
use crate::key::{CacheKey, KeyArgs, Namespace};

/// Runs every check, through `Arc<dyn Backend>` as the cache uses it.
pub async fn run_all(backend: Arc<dyn Backend>, prefix: &str) {
    let b = &*backend;
    empty_reads_find_nothing(b, prefix).await;
    a_shard_state_is_created_once(b, prefix).await;
    a_put_stores_when_nothing_changed(b, prefix).await;
    a_put_is_refused_when_the_entry_changed(b, prefix).await;
    a_put_is_refused_after_an_invalidation(b, prefix).await;
    a_put_is_refused_after_a_bump(b, prefix).await;
    a_bump_changes_only_the_given_shards(b, prefix).await;
    of_concurrent_puts_from_one_read_one_stores(backend.clone(), prefix).await;
    entries_expire_after_their_ttl(b, prefix).await;
    leases_have_one_holder(b, prefix).await;
    b.ping().await.expect("ping");
    assert!(!b.name().is_empty(), "a backend has a name");
}

/// A key of the suite: one namespace per check, so checks never meet.
pub fn key(prefix: &str, check: &str, arg: &str) -> CacheKey {
    let mut args = KeyArgs::new();
    args.push(arg);
    let namespace = Namespace::new(format!("conf-{check}")).expect("a valid namespace");
    CacheKey::new(prefix, &namespace, "conformance.f", 0, args).expect("a valid key")
}

fn entry(text: &str) -> Stored {
    Stored {
        version: Version::random(),
        bytes: Bytes::from(text.to_owned()),
    }
}

const TTL: Duration = Duration::from_secs(60);

async fn empty_reads_find_nothing(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "empty", "a");
    let lookup = b.get(&k).await.expect("get");
    assert_eq!(lookup.entry, None, "a key never written has no entry");
    assert_eq!(lookup.shard, None, "a shard never used has no state");
}

async fn a_shard_state_is_created_once(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "shard", "a");
    let first = b.shard(k.shard()).await.expect("shard");
    assert_ne!(first.generation, Generation(0), "generation 0 is reserved");
    assert_eq!(
        b.shard(k.shard()).await.unwrap(),
        first,
        "shard() created twice"
    );
    assert_eq!(
        b.get(&k).await.unwrap().shard,
        Some(first),
        "get() missed the state"
    );
}

async fn a_put_stores_when_nothing_changed(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "put", "a");
    let shard = b.shard(k.shard()).await.unwrap();
    let v1 = entry("v1");
    let cond = PutCondition {
        shard,
        previous: None,
    };
    assert_eq!(
        b.put(&k, v1.clone(), TTL, &cond).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(
        b.get(&k).await.unwrap().entry,
        Some(v1.clone()),
        "put lost its entry"
    );

    // Replacing the entry that was read works too.
    let v2 = entry("v2");
    let cond = PutCondition {
        shard,
        previous: Some(v1.version),
    };
    assert_eq!(
        b.put(&k, v2.clone(), TTL, &cond).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(b.get(&k).await.unwrap().entry, Some(v2));
}

async fn a_put_is_refused_when_the_entry_changed(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "cas", "a");
    let shard = b.shard(k.shard()).await.unwrap();
    let saw_nothing = PutCondition {
        shard,
        previous: None,
    };
    let other = entry("another writer");
    assert_eq!(
        b.put(&k, other.clone(), TTL, &saw_nothing).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(
        b.put(&k, entry("stale"), TTL, &saw_nothing).await.unwrap(),
        PutOutcome::EntryChanged,
        "a put that saw no entry replaced one"
    );
    let saw_old = PutCondition {
        shard,
        previous: Some(Version::random()),
    };
    assert_eq!(
        b.put(&k, entry("stale"), TTL, &saw_old).await.unwrap(),
        PutOutcome::EntryChanged,
        "a put replaced an entry it did not see"
    );
    assert_eq!(b.get(&k).await.unwrap().entry, Some(other));
}

async fn a_put_is_refused_after_an_invalidation(b: &dyn Backend, prefix: &str) {
    // Saw no entry, then an invalidation: refused even though there is still
    // no entry (it may have removed one this value predates).
    let k = key(prefix, "inv", "absent");
    let shard = b.shard(k.shard()).await.unwrap();
    b.invalidate(&k).await.expect("invalidate");
    let after = b
        .get(&k)
        .await
        .unwrap()
        .shard
        .expect("invalidate keeps a shard state");
    assert_eq!(
        after.generation, shard.generation,
        "invalidate changed the generation"
    );
    assert_ne!(
        after.epoch, shard.epoch,
        "invalidate did not move the epoch"
    );
    let cond = PutCondition {
        shard,
        previous: None,
    };
    assert_eq!(
        b.put(&k, entry("stale"), TTL, &cond).await.unwrap(),
        PutOutcome::EntryChanged,
        "a put that read before an invalidation stored"
    );

    // Saw an entry, then an invalidation removed it.
    let k = key(prefix, "inv", "present");
    let shard = b.shard(k.shard()).await.unwrap();
    let old = entry("old");
    let fresh = PutCondition {
        shard,
        previous: None,
    };
    assert_eq!(
        b.put(&k, old.clone(), TTL, &fresh).await.unwrap(),
        PutOutcome::Stored
    );
    let shard = b.get(&k).await.unwrap().shard.unwrap();
    b.invalidate(&k).await.unwrap();
    assert_eq!(
        b.get(&k).await.unwrap().entry,
        None,
        "invalidate left the entry"
    );
    let saw_old = PutCondition {
        shard,
        previous: Some(old.version),
    };
    assert_eq!(
        b.put(&k, entry("stale"), TTL, &saw_old).await.unwrap(),
        PutOutcome::EntryChanged
    );

    // A shard without a state gets one.
    let k = key(prefix, "inv-new", "a");
    b.invalidate(&k).await.unwrap();
    assert!(
        b.get(&k).await.unwrap().shard.is_some(),
        "invalidate created no shard state"
    );
}

async fn a_put_is_refused_after_a_bump(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "bumped", "a");
    let before = b.shard(k.shard()).await.unwrap();
    b.bump(&[k.shard().to_owned()]).await.expect("bump");
    let cond = PutCondition {
        shard: before,
        previous: None,
    };
    assert_eq!(
        b.put(&k, entry("stale"), TTL, &cond).await.unwrap(),
        PutOutcome::GenerationChanged
    );
    assert_eq!(b.get(&k).await.unwrap().entry, None);
}

async fn a_bump_changes_only_the_given_shards(b: &dyn Backend, prefix: &str) {
    let a = key(prefix, "bump-a", "x");
    let other = key(prefix, "bump-b", "x");
    let a0 = b.shard(a.shard()).await.unwrap();
    let other0 = b.shard(other.shard()).await.unwrap();
    b.bump(&[a.shard().to_owned()]).await.unwrap();
    let a1 = b
        .get(&a)
        .await
        .unwrap()
        .shard
        .expect("a bumped shard has a state");
    assert_ne!(a1.generation, a0.generation, "bump kept the generation");
    assert_ne!(a1.generation, Generation(0));
    assert_eq!(
        b.get(&other).await.unwrap().shard,
        Some(other0),
        "bump reached another shard"
    );
}

async fn of_concurrent_puts_from_one_read_one_stores(b: Arc<dyn Backend>, prefix: &str) {
    let k = key(prefix, "race", "a");
    let shard = b.shard(k.shard()).await.unwrap();
    let cond = PutCondition {
        shard,
        previous: None,
    };
    let puts: Vec<_> = (0..16)
        .map(|i| {
            let (b, k, cond) = (b.clone(), k.clone(), cond.clone());
            tokio::spawn(async move { b.put(&k, entry(&format!("w{i}")), TTL, &cond).await })
        })
        .collect();
    let mut stored = 0;
    for put in puts {
        if put.await.expect("no panic").expect("put") == PutOutcome::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "a put's check and write are not atomic");
}

async fn entries_expire_after_their_ttl(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "ttl", "a");
    let shard = b.shard(k.shard()).await.unwrap();
    let cond = PutCondition {
        shard,
        previous: None,
    };
    b.put(&k, entry("short"), Duration::from_secs(1), &cond)
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

/// A backend without leases says so; one with leases gives a key's lease to
/// one token at a time, lets only that token renew or release it, and
/// frees it after its TTL.
async fn leases_have_one_holder(b: &dyn Backend, prefix: &str) {
    let key = key(prefix, "lease", "k");
    let (one, other) = (LeaseToken::random(), LeaseToken::random());
    let ttl = Duration::from_millis(600);
    match b.lease(&key, one, ttl).await.expect("lease") {
        LeaseState::Unsupported => return,
        LeaseState::Taken => {}
        held => panic!("a free lease was not taken but {held:?}"),
    }
    assert_eq!(
        b.lease(&key, other, ttl).await.expect("lease"),
        LeaseState::Held,
        "a held lease was given to a second token"
    );
    assert!(
        !b.renew_lease(&key, other, ttl).await.expect("renew"),
        "a token renewed a lease it does not hold"
    );
    b.release_lease(&key, other).await.expect("release");
    assert_eq!(
        b.lease(&key, other, ttl).await.expect("lease"),
        LeaseState::Held,
        "a token released a lease it does not hold"
    );
    b.release_lease(&key, one).await.expect("release");
    assert_eq!(
        b.lease(&key, other, ttl).await.expect("lease"),
        LeaseState::Taken,
        "a released lease was not free"
    );
    // Renewed twice past its first TTL, it is still held; unrenewed, it
    // expires.
    for _ in 0..2 {
        tokio::time::sleep(ttl / 2).await;
        assert!(
            b.renew_lease(&key, other, ttl).await.expect("renew"),
            "the holder could not renew its lease"
        );
    }
    assert_eq!(
        b.lease(&key, one, ttl).await.expect("lease"),
        LeaseState::Held,
        "a renewed lease expired"
    );
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert!(
        !b.renew_lease(&key, other, ttl).await.expect("renew"),
        "an expired lease was renewed"
    );
    assert_eq!(
        b.lease(&key, one, ttl).await.expect("lease"),
        LeaseState::Taken,
        "an expired lease was not free"
    );
    // A holder's store gives its lease up, whether it stored or not.
    let shard = b.shard(key.shard()).await.expect("shard");
    let fresh = PutCondition {
        shard,
        previous: None,
    };
    let outcome = b
        .put_releasing(&key, entry("leased"), TTL, &fresh, one)
        .await
        .expect("put");
    assert_eq!(outcome, PutOutcome::Stored, "a lease holder's store");
    assert_eq!(
        b.lease(&key, other, ttl).await.expect("lease"),
        LeaseState::Taken,
        "a store did not give its lease up"
    );
    let refused = b
        .put_releasing(&key, entry("late"), TTL, &fresh, other)
        .await
        .expect("put");
    assert_eq!(refused, PutOutcome::EntryChanged, "a late store was taken");
    assert_eq!(
        b.lease(&key, one, ttl).await.expect("lease"),
        LeaseState::Taken,
        "a refused store did not give its lease up"
    );
    // An invalidation frees the entry's lease.
    b.invalidate(&key).await.expect("invalidate");
    assert_eq!(
        b.lease(&key, other, ttl).await.expect("lease"),
        LeaseState::Taken,
        "an invalidation left the entry's lease held"
    );
    // Given up without a value: for the pause, nobody takes it (everyone
    // computes); then it is free. Only the holder can give it up.
    let pause = Duration::from_millis(400);
    b.abandon_lease(&key, one, pause).await.expect("abandon");
    assert_eq!(
        b.lease(&key, one, ttl).await.expect("lease"),
        LeaseState::Held,
        "a token gave up a lease it does not hold"
    );
    b.abandon_lease(&key, other, pause).await.expect("abandon");
    assert_eq!(
        b.lease(&key, one, ttl).await.expect("lease"),
        LeaseState::Unsupported,
        "a lease given up without a value was taken at once"
    );
    tokio::time::sleep(pause + Duration::from_millis(200)).await;
    assert_eq!(
        b.lease(&key, one, ttl).await.expect("lease"),
        LeaseState::Taken,
        "a lease given up without a value stayed unavailable"
    );
    b.release_lease(&key, one).await.expect("release");
}
