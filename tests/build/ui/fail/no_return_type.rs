use cache_runtime::cached;

#[cached]
async fn touch(id: u64) {
    let _ = id;
}

fn main() {}
