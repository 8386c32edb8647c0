use cache_runtime::cached;

// A path that resolves, but not to the runtime crate.
#[cached(crate = "serde")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
