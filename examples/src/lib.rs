//! Runnable examples; see `examples/*.rs`.
//!
//! The [`web_service`] module is a complete service on the cache (axum,
//! SQLite, Redis); `examples/web_service.rs` runs it.

#![warn(missing_docs)]

pub mod web_service;
