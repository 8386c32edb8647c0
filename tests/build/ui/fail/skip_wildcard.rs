use cache_runtime::cached;

#[cached(skip(_))]
async fn get_user(_: &str, id: u64) -> u64 {
    id
}

fn main() {}
