//! The in-memory backend: the conformance suite, and its memory bound.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_runtime::{Backend, CacheKey, MemoryBackend, Namespace};

#[tokio::test]
async fn memory_backend_conforms() {
    common::conformance::run_all(Arc::new(MemoryBackend::new()), "mem").await;
}

#[tokio::test]
async fn bounded_by_bytes() {
    let backend = MemoryBackend::builder().max_bytes(64 * 1024).build();
    let ns = Namespace::new("bound").unwrap();
    for i in 0..1000u32 {
        let mut args = cache_runtime::__private::KeyArgs::new();
        args.push(&i);
        let key = CacheKey::new("t", &ns, "f", 0, args).unwrap();
        backend
            .set(&key, Bytes::from(vec![7u8; 1024]), Duration::from_secs(60))
            .await
            .unwrap();
    }
    backend.run_pending_tasks().await;
    // 1000 entries of ~1 KiB do not fit in 64 KiB: most were evicted.
    assert!(
        backend.entry_count() <= 64,
        "{} entries held",
        backend.entry_count()
    );
}

#[tokio::test]
async fn bounded_by_entries() {
    let backend = MemoryBackend::builder().max_entries(10).build();
    let ns = Namespace::new("bound").unwrap();
    for i in 0..500u32 {
        let mut args = cache_runtime::__private::KeyArgs::new();
        args.push(&i);
        let key = CacheKey::new("t", &ns, "f", 0, args).unwrap();
        backend
            .set(&key, Bytes::from_static(b"x"), Duration::from_secs(60))
            .await
            .unwrap();
    }
    backend.run_pending_tasks().await;
    assert!(
        backend.entry_count() <= 10,
        "{} entries held",
        backend.entry_count()
    );
}
