//! The user guide's Rust snippets, compiled and run as doctests of this crate.
//!
//! The guide (`docs/src/*.md`, an mdBook) is included here page by page, so
//! `cargo test -p cache-tests --doc` compiles every ```` ```rust ```` block in
//! it, runs those that are not `no_run`, and checks that `compile_fail` blocks
//! do not compile. A guide whose examples stopped compiling, or whose
//! assertions stopped holding, fails CI like any other test. (`mdbook test` is
//! not used: it would need every crate a snippet uses passed by hand.) Pages
//! without Rust snippets are not listed; the decision records are included by
//! the book as they are and hold no compiled snippets.

#[doc = include_str!("../../docs/src/introduction.md")]
mod introduction {}

#[doc = include_str!("../../docs/src/quickstart.md")]
mod quickstart {}

#[doc = include_str!("../../docs/src/attribute.md")]
mod attribute {}

#[doc = include_str!("../../docs/src/programmatic-api.md")]
mod programmatic_api {}

#[doc = include_str!("../../docs/src/keys-and-entries.md")]
mod keys_and_entries {}

#[doc = include_str!("../../docs/src/invalidation.md")]
mod invalidation {}

#[doc = include_str!("../../docs/src/freshness.md")]
mod freshness {}

#[doc = include_str!("../../docs/src/backends.md")]
mod backends {}

#[doc = include_str!("../../docs/src/configuration.md")]
mod configuration {}

#[doc = include_str!("../../docs/src/deployment.md")]
mod deployment {}

#[doc = include_str!("../../docs/src/scaling-out.md")]
mod scaling_out {}

#[doc = include_str!("../../docs/src/failure-behaviour.md")]
mod failure_behaviour {}

#[doc = include_str!("../../docs/src/observability.md")]
mod observability {}

#[doc = include_str!("../../docs/src/testing.md")]
mod testing {}

#[doc = include_str!("../../docs/src/migrating.md")]
mod migrating {}
