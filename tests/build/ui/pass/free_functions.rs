//! Free functions: every return shape and option.
#![deny(warnings)]

use cache_runtime::cached;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
pub struct DbError;

#[cached(namespace = "users", ttl = 60)]
pub async fn get_user(id: u64) -> Result<User, DbError> {
    if id == 0 {
        return Err(DbError);
    }
    let name = lookup_name(id).await?;
    Ok(User { id, name })
}

async fn lookup_name(id: u64) -> Result<String, DbError> {
    Ok(format!("user-{id}"))
}

#[cached(namespace = "users", ttl = "1h30m", version = 2)]
async fn find(name: String) -> Option<User> {
    (name != "nobody").then(|| User { id: 1, name })
}

#[cached(cache_none = true)]
async fn find_negative(id: u64) -> Option<u64> {
    (id > 0).then_some(id)
}

#[cached(cache_none)]
async fn find_flag(id: u64) -> Option<u64> {
    Some(id)
}

#[cached]
async fn plain(a: u8, b: (u16, String), c: Vec<Option<i64>>) -> String {
    format!("{a}{b:?}{c:?}")
}

#[cached(namespace = "io")]
async fn io_result(path: String) -> std::io::Result<Vec<u8>> {
    Ok(path.into_bytes())
}

// `?` converts the error with `From`, as it does without `#[cached]`.
#[cached]
async fn boxed_error(text: String) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    Ok(text.parse::<u64>()?)
}

#[cached(ttl = "10m")]
async fn no_arguments() -> u64 {
    42
}

#[cached(skip(_unused))]
async fn wildcard(_: std::sync::Mutex<u8>, id: u32, _unused: u8) -> u32 {
    id
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(get_user(1).await.unwrap().name, "user-1");
        assert!(get_user(0).await.is_err());
        assert!(find("nobody".into()).await.is_none());
        assert_eq!(find_negative(0).await, None);
        assert_eq!(find_flag(1).await, Some(1));
        assert_eq!(
            plain(1, (2, "x".into()), vec![None]).await,
            "1(2, \"x\")[None]"
        );
        assert_eq!(io_result("ab".into()).await.unwrap(), b"ab");
        assert_eq!(no_arguments().await, 42);
        assert!(boxed_error("x".into()).await.is_err());
        assert_eq!(boxed_error("3".into()).await.unwrap(), 3);
        assert_eq!(wildcard(std::sync::Mutex::new(0), 5, 9).await, 5);

        // Companions carry the function's visibility and key arguments.
        get_user_invalidate(&1).await.unwrap();
        find_invalidate(&"x".to_owned()).await.unwrap();
        no_arguments_invalidate().await.unwrap();
        wildcard_invalidate(&5).await.unwrap();
        let namespaces: [&str; 4] = [
            GET_USER_NAMESPACE,
            FIND_NAMESPACE,
            PLAIN_NAMESPACE,
            IO_RESULT_NAMESPACE,
        ];
        assert_eq!(namespaces, ["users", "users", "plain", "io"]);
        cache_runtime::invalidate_namespace(GET_USER_NAMESPACE)
            .await
            .unwrap();
    });
}
