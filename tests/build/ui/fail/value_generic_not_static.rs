use cache_runtime::cached;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cached]
async fn load<T: Serialize + DeserializeOwned + Default>(id: u64) -> T {
    let _ = id;
    T::default()
}

fn main() {}
