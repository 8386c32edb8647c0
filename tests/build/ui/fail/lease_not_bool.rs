use cache_runtime::cached;

#[cached(namespace = "reports", lease = "off")]
async fn report(id: u64) -> u64 {
    id
}

fn main() {}
