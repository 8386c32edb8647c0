//! Bodies written on one line, as in `async fn answer() -> u32 { 42 }`: the
//! generated code must not trip `unused_braces` (or any other lint) on them.
#![deny(warnings)]

use cache_runtime::cached;

// `rustfmt::skip` keeps the bodies on one line, which is the point of the case.
#[rustfmt::skip]
#[cached]
async fn answer() -> u32 { 42 }

#[rustfmt::skip]
#[cached(ttl = 60)]
async fn double(n: u32) -> Option<u32> { n.checked_mul(2) }

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(answer().await, 42);
        assert_eq!(double(2).await, Some(4));
    });
}
