use cache_runtime::cached;

// `none_ttl` needs a `None` to cache.
#[cached(ttl = 60, none_ttl = 5)]
async fn count(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, none_ttl = 5)]
async fn checked(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
