use cache_runtime::cached;

#[cached]
async fn parse(text: String) -> Result<u64, impl std::error::Error> {
    text.parse::<u64>()
}

fn main() {}
