use cache_runtime::cached;

#[cached(version = -1)]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
