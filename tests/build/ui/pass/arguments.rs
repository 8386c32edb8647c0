//! Reference, owned, generic and `impl Trait` arguments, skipped arguments, explicit
//! lifetimes, `mut` bindings, and generic return types.
#![deny(warnings)]

use cache_runtime::cached;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Filter {
    tag: String,
}

/// Not serializable: a connection pool.
pub struct Pool;

#[cached(skip(pool))]
async fn references(pool: &Pool, name: &str, filter: &Filter, ids: &[u32]) -> Vec<String> {
    let _ = pool;
    vec![format!("{name}:{}:{ids:?}", filter.tag)]
}

#[cached(skip(pool))]
async fn owned_skipped(pool: Pool, id: u64) -> u64 {
    drop(pool);
    id
}

#[cached]
async fn generic<T: Serialize + Send + Sync>(value: T, label: String) -> String {
    let _ = value;
    label
}

#[cached]
async fn impl_trait(value: impl Serialize + Send, n: u8) -> u8 {
    let _ = value;
    n
}

#[cached]
async fn generic_value<T: Serialize + DeserializeOwned + Default + Send + 'static>(id: u64) -> T {
    let _ = id;
    T::default()
}

#[cached]
async fn generic_ref<T: Serialize + Sync>(value: &T, times: u8) -> u8 {
    let _ = value;
    times
}

#[cached]
async fn lifetimes<'a, 'b>(prefix: &'a str, names: &'b [String], mut n: u32) -> String {
    n += 1;
    format!("{prefix}{names:?}{n}")
}

#[cached]
async fn where_clause<K>(key: K) -> bool
where
    K: Serialize + Send + Sync + PartialEq<u8>,
{
    key == 1
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let f = Filter { tag: "t".into() };
        assert_eq!(
            references(&Pool, "n", &f, &[1, 2]).await,
            vec!["n:t:[1, 2]".to_owned()]
        );
        references_invalidate("n", &f, &[1, 2]).await.unwrap();
        assert_eq!(owned_skipped(Pool, 2).await, 2);
        owned_skipped_invalidate(&2).await.unwrap();
        assert_eq!(generic(1u8, "a".into()).await, "a");
        assert_eq!(generic("s", "b".into()).await, "b");
        generic_invalidate(&1u8, &"a".to_owned()).await.unwrap();
        assert_eq!(impl_trait(vec![1], 3).await, 3);
        assert_eq!(generic_value::<u32>(1).await, 0);
        assert_eq!(generic_value::<String>(1).await, "");
        generic_value_invalidate::<u32>(&1).await.unwrap();
        assert!(where_clause(1u8).await);
        assert_eq!(generic_ref(&f, 4).await, 4);
        generic_ref_invalidate(&f, &4).await.unwrap();
        assert_eq!(lifetimes("p", &["a".to_owned()], 1).await, "p[\"a\"]2");
        lifetimes_invalidate("p", &["a".to_owned()], &1)
            .await
            .unwrap();
    });
}
