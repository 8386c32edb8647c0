//! Generic code: every instantiation has its own entries.
#![deny(warnings)]

use cache_runtime::cached;
use serde::Serialize;

struct Labels<Key>(std::marker::PhantomData<Key>);

impl<Key: Serialize + Send + Sync + 'static> Labels<Key> {
    /// No `self`: the key must be told to record `Self`.
    #[cached(namespace = "labels", key_self_type)]
    async fn label(key: Key) -> String {
        let _ = key;
        std::any::type_name::<Key>().to_owned()
    }

    /// A method: `Self` is in its key anyway.
    #[cached(namespace = "labels")]
    async fn count(&self) -> u64 {
        std::mem::size_of::<Key>() as u64
    }
}

/// A free generic function: its type parameters are in the key.
#[cached(namespace = "sizes")]
async fn size_of<T: 'static>() -> u64 {
    std::mem::size_of::<T>() as u64
}

/// A const parameter: its value is in the key.
#[cached(namespace = "sizes")]
async fn repeat<const N: usize>(c: char) -> String {
    std::iter::repeat_n(c, N).collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(cache_runtime::Cache::memory().scope(async {
        assert!(Labels::<u8>::label(5).await.contains("u8"));
        assert!(Labels::<u16>::label(5).await.contains("u16"));
        Labels::<u8>::label_invalidate(&5).await.unwrap();
        let labels = Labels::<u32>(std::marker::PhantomData);
        assert_eq!(labels.count().await, 4);
        Labels::<u32>::count_invalidate().await.unwrap();
        assert_eq!(size_of::<u8>().await, 1);
        assert_eq!(size_of::<u64>().await, 8);
        size_of_invalidate::<u64>().await.unwrap();
        assert_eq!(repeat::<3>('a').await, "aaa");
        assert_eq!(repeat::<2>('a').await, "aa");
        repeat_invalidate::<2>(&'a').await.unwrap();
    }));
}
