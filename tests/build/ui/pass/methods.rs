//! Methods: `&self`, `&mut self`, `self`, no receiver, `-> Self`, `key_self`,
//! and methods of a generic `impl` block.
#![deny(warnings)]

use cache_runtime::cached;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub struct Repo {
    hits: u32,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
pub struct Tenant {
    id: u32,
}

impl Repo {
    #[cached(namespace = "repo")]
    pub async fn by_ref(&self, id: u64) -> Result<String, String> {
        Ok(format!("{id}/{}", self.hits))
    }

    #[cached(namespace = "repo")]
    async fn by_mut(&mut self, id: u64) -> u32 {
        self.hits += 1;
        id as u32 + self.hits
    }

    #[cached(namespace = "repo")]
    async fn associated(id: u64) -> Option<u64> {
        Some(id)
    }

    #[cached(namespace = "repo")]
    async fn consume(self, id: u64) -> u64 {
        id + u64::from(self.hits)
    }
}

/// A store generic over its value type: `T` comes from the `impl` block.
pub struct Store<T> {
    default: T,
}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Store<T> {
    #[cached]
    async fn get(&self, id: u64) -> Option<T> {
        let _ = id;
        Some(self.default.clone())
    }
}

impl Tenant {
    #[cached]
    async fn load(id: u32) -> Self {
        Tenant { id }
    }

    #[cached(key_self = true)]
    async fn quota(&self, resource: &str) -> u64 {
        u64::from(self.id) * resource.len() as u64
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut repo = Repo { hits: 0 };
        assert_eq!(repo.by_ref(1).await.unwrap(), "1/0");
        assert_eq!(repo.by_mut(1).await, 2);
        assert_eq!(Repo::associated(3).await, Some(3));
        Repo::by_ref_invalidate(&1).await.unwrap();
        Repo::by_mut_invalidate(&1).await.unwrap();
        Repo::associated_invalidate(&3).await.unwrap();
        assert_eq!(Repo::BY_REF_NAMESPACE, "repo");

        let tenant = Tenant { id: 2 };
        assert_eq!(tenant.quota("disk").await, 8);
        tenant.quota_invalidate("disk").await.unwrap();
        assert_eq!(Tenant::load(5).await, Tenant { id: 5 });
        Tenant::load_invalidate(&5).await.unwrap();

        assert_eq!(Repo { hits: 1 }.consume(1).await, 2);
        Repo::consume_invalidate(&1).await.unwrap();

        let numbers = Store { default: 7u32 };
        let names = Store {
            default: "x".to_owned(),
        };
        assert_eq!(numbers.get(1).await, Some(7));
        assert_eq!(names.get(1).await.as_deref(), Some("x"));
        Store::<u32>::get_invalidate(&1).await.unwrap();
    });
}
