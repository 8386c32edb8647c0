use cache_runtime::cached;

pub trait Load {
    fn load(&self, id: u64) -> impl Future<Output = u64> + Send;
}

pub struct Repo;

impl Load for Repo {
    #[cached]
    async fn load(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
