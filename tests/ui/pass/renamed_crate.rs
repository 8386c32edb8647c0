//! `crate = "..."` for a renamed or re-exported runtime.
#![deny(warnings)]

mod deps {
    pub use cache_runtime as cache;
}

use deps::cache as my_cache;

#[my_cache::cached(crate = "my_cache", ttl = 5)]
async fn answer() -> u32 {
    42
}

#[deps::cache::cached(crate = "crate::deps::cache")]
async fn nested(id: u8) -> u8 {
    id
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        assert_eq!(answer().await, 42);
        assert_eq!(nested(3).await, 3);
        answer_invalidate().await.unwrap();
    });
}
