use cache_runtime::cached;

#[cached(namespace = "bad namespace", expire = 60, version = "two")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
