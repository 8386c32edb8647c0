//! The error type of a `Result` is never cached, so it may borrow: a
//! `&'static str` error is common in small programs.
#![deny(warnings)]

use cache_runtime::cached;

#[cached]
async fn static_str_error(id: u64) -> Result<u64, &'static str> {
    if id == 0 {
        return Err("no id 0");
    }
    Ok(id)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(static_str_error(0).await, Err("no id 0"));
        assert_eq!(static_str_error(1).await, Ok(1));
    });
}
