use cache_runtime::cached;

// No `Err` to replace.
#[cached(ttl = 60, stale_if_error = "5m")]
async fn plain(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, stale_if_error = "5m")]
async fn maybe(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(ttl = 60, stale_if_error = 0)]
async fn zero(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[cached(ttl = 60, stale_if_error = "soon")]
async fn unreadable(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[cached(ttl = 60, result_fallback = true)]
async fn renamed(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
