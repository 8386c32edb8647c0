//! `crate = "..."` for a renamed or re-exported runtime.
#![deny(warnings)]

mod deps {
    pub use cache_runtime as cache;
}

use cache_runtime as renamed;
use deps::cache as my_cache;

#[renamed::cached(crate = "renamed", namespace = "renamed")]
async fn renamed_fn(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[my_cache::cached(crate = "my_cache", ttl = 5)]
async fn answer() -> u32 {
    42
}

#[deps::cache::cached(crate = "crate::deps::cache")]
async fn nested(id: u8) -> u8 {
    id
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(answer().await, 42);
        assert_eq!(nested(3).await, 3);
        answer_invalidate().await.unwrap();
        assert_eq!(renamed_fn(1).await, Ok(1));
        renamed_fn_invalidate(&1).await.unwrap();
        renamed::invalidate_namespace(RENAMED_FN_NAMESPACE)
            .await
            .unwrap();
    });
}
