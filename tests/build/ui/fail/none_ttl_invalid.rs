use cache_runtime::cached;

#[cached(none_ttl = 0)]
async fn zero(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(none_ttl = "5 fortnights")]
async fn unreadable(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(none_ttl = true)]
async fn not_a_ttl(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
