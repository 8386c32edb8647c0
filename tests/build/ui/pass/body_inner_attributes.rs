//! Inner attributes at the top of the body (`#![allow(...)]`) apply to the
//! function, as they do without `#[cached]`.
#![deny(warnings)]

use cache_runtime::cached;

#[cached]
async fn answer(id: u64) -> u64 {
    #![allow(unused_variables)]
    let unused = 1;
    id
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(answer(1).await, 1);
    });
}
