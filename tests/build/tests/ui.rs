//! Compile-time behaviour of `#[cached]`, pinned with trybuild: every supported
//! shape compiles warning-free (`ui/pass`), every misuse is an error at the
//! culprit that says how to fix it (`ui/fail`, one file per error kind).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
