use cache_runtime::cached;

pub struct Repo;

impl Repo {
    #[cached(key_self = true)]
    async fn get(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
