use cache_runtime::cached;

#[cached(namespace = "users", ttl_secs = 60)]
async fn get_user(id: u64) -> u64 {
    id
}

// On error the function is still emitted: this call compiles, so the only
// error is the one about the option.
fn main() {
    let _ = get_user(1);
}
