use cache_runtime::cached;

#[cached(ttl = 60, none_ttl = 5, cache_none = false)]
async fn find(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
