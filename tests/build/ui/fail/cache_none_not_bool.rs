use cache_runtime::cached;

#[cached(cache_none = "yes")]
async fn find(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
