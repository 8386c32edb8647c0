use cache_runtime::cached;

#[cached(key_self = true)]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
