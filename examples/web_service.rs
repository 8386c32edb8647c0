//! The web service of `cache_examples::web_service`: an axum API over SQLite,
//! cached in memory or in Redis (`REDIS_URL`). See that module's docs.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cache_examples::web_service::run().await
}
