use cache_runtime::cached;

#[cached(ttl = 5_000_000_000)]
async fn get_user(id: u64) -> u64 {
    id
}

#[cached(ttl = "400days")]
async fn get_group(id: u64) -> u64 {
    id
}

fn main() {}
