//! The in-memory backend: the conformance suite, and its memory bound.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_runtime::testing::conformance;
use cache_runtime::{MemoryBackend, PutCondition, PutOutcome, Stored, Version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms() {
    conformance::run_all(Arc::new(MemoryBackend::new()), "mem").await;
}

/// Stores `n` entries of `size` bytes the way the cache does.
async fn fill(backend: &MemoryBackend, n: u32, size: usize) {
    use cache_runtime::Backend as _;
    for i in 0..n {
        let key = conformance::key("t", "bound", &i.to_string());
        let shard = backend.shard(key.shard()).await.unwrap();
        let entry = Stored {
            version: Version::random(),
            bytes: Bytes::from(vec![7u8; size]),
        };
        let condition = PutCondition {
            shard,
            previous: None,
        };
        let outcome = backend
            .put(&key, entry, Duration::from_secs(60), &condition)
            .await
            .unwrap();
        assert_eq!(outcome, PutOutcome::Stored);
    }
    backend.run_pending_tasks();
}

#[tokio::test]
async fn bounded_by_bytes() {
    let backend = MemoryBackend::builder().max_bytes(64 * 1024).build();
    fill(&backend, 1000, 1024).await;
    // 1000 entries of ~1 KiB do not fit in 64 KiB: most were evicted.
    assert!(
        backend.entry_count() <= 80,
        "{} entries held",
        backend.entry_count()
    );
}

#[tokio::test]
async fn bounded_by_entries() {
    let backend = MemoryBackend::builder().max_entries(10).build();
    fill(&backend, 500, 1).await;
    assert!(
        backend.entry_count() <= 10,
        "{} entries held",
        backend.entry_count()
    );
}
