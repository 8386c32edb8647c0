use cache_runtime::cached;

struct Repo;

impl Repo {
    #[cached(skip(self))]
    async fn get(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
