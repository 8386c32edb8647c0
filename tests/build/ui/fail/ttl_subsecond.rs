use cache_runtime::cached;

#[cached(ttl = "1500ms")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
