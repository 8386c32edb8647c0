//! `pub` functions: companions keep the visibility and are usable from callers.
#![deny(warnings, missing_docs)]

/// The user store.
pub mod users {
    use cache_runtime::cached;
    use serde::{Deserialize, Serialize};

    /// A user.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct User {
        /// Its id.
        pub id: u64,
    }

    /// Loads a user.
    #[cached(namespace = "users", ttl = "10m")]
    pub async fn get_user(id: u64) -> Option<User> {
        Some(User { id })
    }

    /// Crate-visible.
    #[cached]
    pub(crate) async fn count(tag: &str) -> usize {
        tag.len()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let id = 7;
        assert_eq!(users::get_user(id).await.unwrap().id, 7);
        users::get_user_invalidate(&id).await.unwrap();
        cache_runtime::invalidate_namespace(users::GET_USER_NAMESPACE)
            .await
            .unwrap();
        assert_eq!(users::GET_USER_NAMESPACE, "users");
        assert_eq!(users::count("ab").await, 2);
        users::count_invalidate("ab").await.unwrap();
        let _: &str = users::COUNT_NAMESPACE;
    });
}
