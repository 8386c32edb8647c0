use cache_runtime::cached;

#[cached]
async fn name(id: u64) -> &'static str {
    if id == 0 { "zero" } else { "other" }
}

fn main() {}
