use cache_runtime::cached;

#[cached(crate = "not a path")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
