use cache_runtime::cached;

pub struct Pool;

#[cached]
async fn get_user(pool: &Pool, id: u64) -> u64 {
    let _ = pool;
    id
}

fn main() {}
