//! The example web service (`cache_examples::web_service`) as a binary of this
//! crate, so that tests/web_service.rs can spawn it with
//! `env!("CARGO_BIN_EXE_web_service")`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cache_examples::web_service::run().await
}
