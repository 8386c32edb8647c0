use cache_runtime::cached;

#[cached(ttl = 60, namespace = "a", ttl = "1m")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
