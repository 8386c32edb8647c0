//! `none_ttl` on every shape that has a `None` to cache, `ttl_jitter`,
//! `lease`, and `stale_if_error`.

use cache_runtime::cached;

#[cached(namespace = "users", ttl = "10m", none_ttl = 30)]
async fn find_user(id: u64) -> Option<String> {
    (id != 0).then(|| format!("user {id}"))
}

#[cached(namespace = "users", ttl = 600, none_ttl = "30s")]
async fn load_user(id: u64) -> Result<Option<String>, String> {
    Ok((id != 0).then(|| format!("user {id}")))
}

#[cached(ttl = 60, none_ttl = 5, cache_none = true)]
async fn explicit(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(ttl = 60, ttl_jitter = "25%")]
async fn spread(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, ttl_jitter = "0%")]
async fn exact(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, lease = false)]
async fn cheap(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, lease)]
async fn leased(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, stale_if_error = "10m")]
async fn fallback(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[cached(ttl = "1m", stale_if_error = 30, none_ttl = 5)]
async fn fallback_maybe(id: u64) -> Result<Option<u64>, String> {
    Ok(Some(id))
}

fn main() {
    let _ = (find_user(1), load_user(1), explicit(1), spread(1), exact(1));
    let _ = (cheap(1), leased(1), fallback(1), fallback_maybe(1));
}
