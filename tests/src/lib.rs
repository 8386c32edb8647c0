//! Support for the integration tests and the benchmarks.
//!
//! The tests themselves live in `tests/`; the `cache_peer` binary in
//! `src/bin/` plays a second process.

#[cfg(doctest)]
mod guide;
pub mod proxy;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
