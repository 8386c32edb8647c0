use cache_runtime::cached;

#[cached(ttl_jitter = "60%")]
async fn too_much(id: u64) -> u64 {
    id
}

#[cached(ttl_jitter = "ten percent")]
async fn unreadable(id: u64) -> u64 {
    id
}

#[cached(ttl_jitter = 20)]
async fn not_a_string(id: u64) -> u64 {
    id
}

#[cached(jitter = "10%")]
async fn misnamed(id: u64) -> u64 {
    id
}

fn main() {}
