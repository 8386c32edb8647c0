use cache_runtime::cached;

#[cached(ttl = "ten minutes")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
