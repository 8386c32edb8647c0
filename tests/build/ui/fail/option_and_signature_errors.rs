use cache_runtime::cached;

// Mistakes in the options and in the signature are all reported at once.
#[cached(ttl = 0, skip(pool))]
fn get_user(id: u64) {
    let _ = id;
}

fn main() {}
