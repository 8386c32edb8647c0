use cache_runtime::cached;

#[cached(key_self_type)]
async fn count() -> u64 {
    0
}

fn main() {}
