use cache_runtime::cached;

#[cached]
async fn describe<T: std::fmt::Debug + Send + Sync>(value: T) -> String {
    format!("{value:?}")
}

fn main() {}
