// The attribute has an error: only that error is reported, not a second one
// for the callers of its companions, which still exist.
use cache_runtime::cached;

#[cached(namespace = "users", tll = 60)]
async fn get_user(id: u64) -> u64 {
    id
}

async fn writer() -> Result<(), cache_runtime::Error> {
    get_user_invalidate(&7).await?;
    cache_runtime::invalidate_namespace(GET_USER_NAMESPACE).await
}

fn main() {
    let _ = writer;
}
