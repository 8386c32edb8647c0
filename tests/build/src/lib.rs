//! Nothing but a home for the compile-time tests of `#[cached]`: the trybuild
//! cases in `ui/`, run by `tests/ui.rs`. They live in a package of their own,
//! apart from `cache-tests`, so that trybuild builds only the few crates the
//! cases use, not every dev-dependency of the behaviour tests.
