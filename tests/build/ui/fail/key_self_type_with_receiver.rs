use cache_runtime::cached;

struct Repo;

impl Repo {
    #[cached(key_self_type)]
    async fn count(&self) -> u64 {
        0
    }
}

fn main() {}
