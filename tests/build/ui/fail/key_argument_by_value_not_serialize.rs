use cache_runtime::cached;

pub struct UserId(pub u64);

// The common case: a key argument taken by value. The error belongs on `id`.
#[cached]
async fn get_user(id: UserId) -> u64 {
    id.0
}

fn main() {}
