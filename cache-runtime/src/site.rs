//! A call site: the static description of one `#[cached]` function that the
//! macro emits, and what the runtime derives from it once.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::entry;
use crate::key::{self, Namespace};
use crate::stats::Counters;

/// One `#[cached]` function, as the macro describes it. Not public API.
#[derive(Debug)]
pub struct CallSite {
    namespace: &'static str,
    function: &'static str,
    module_path: &'static str,
    version: u32,
    ttl_secs: u64,
    companion: bool,
    state: OnceLock<SiteState>,
}

#[derive(Debug)]
pub(crate) struct SiteState {
    pub(crate) namespace: Namespace,
    pub(crate) function_id: String,
    /// `:{function_id}:v{version}:`, the middle of every key of this site.
    pub(crate) key_segment: String,
    /// The counters of the cache this site ran under last, tagged with that
    /// cache's address: spares the per-namespace map lookup on the hot path.
    counters: OnceLock<(u64, Arc<Counters>)>,
    /// Another site already uses the same namespace, function id and version:
    /// their keys could meet, so this one never touches the cache.
    pub(crate) bypass: bool,
    /// The fingerprint of the first value type seen here. A site in a generic
    /// function or impl sees several; the others use the global memo.
    fingerprint: OnceLock<(TypeId, u64)>,
}

impl CallSite {
    /// Describes a site. `ttl_secs == 0` means the cache's default TTL.
    /// `companion` marks the site of a generated invalidation function, which
    /// shares the identity of the function it belongs to.
    #[doc(hidden)]
    pub const fn new(
        namespace: &'static str,
        function: &'static str,
        module_path: &'static str,
        version: u32,
        ttl_secs: u64,
        companion: bool,
    ) -> Self {
        CallSite {
            namespace,
            function,
            module_path,
            version,
            ttl_secs,
            companion,
            state: OnceLock::new(),
        }
    }

    pub(crate) fn namespace(&self) -> &'static str {
        self.namespace
    }

    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn ttl(&self, default: Duration) -> Duration {
        if self.ttl_secs == 0 {
            default
        } else {
            Duration::from_secs(self.ttl_secs)
        }
    }

    pub(crate) fn state(&'static self) -> &'static SiteState {
        self.state.get_or_init(|| {
            let function_id = key::function_id(self.module_path, self.function);
            let bypass =
                !self.companion && !claim(self.namespace, &function_id, self.version, self);
            if bypass {
                tracing::error!(
                    namespace = self.namespace,
                    function = %function_id,
                    version = self.version,
                    "two cached functions share a namespace, name and version, so their keys could collide; \
                     this one will not be cached. Give one of them another `namespace` or `version`"
                );
            }
            SiteState {
                namespace: Namespace::from_checked(self.namespace),
                key_segment: key::function_segment(&function_id, self.version),
                counters: OnceLock::new(),
                function_id,
                bypass,
                fingerprint: OnceLock::new(),
            }
        })
    }

    /// The schema fingerprint of the value type.
    pub(crate) fn fingerprint<T: DeserializeOwned + 'static>(&'static self) -> u64 {
        let (type_id, fingerprint) = *self
            .state()
            .fingerprint
            .get_or_init(|| (TypeId::of::<T>(), entry::fingerprint::<T>()));
        if type_id == TypeId::of::<T>() {
            fingerprint
        } else {
            entry::fingerprint_cached::<T>()
        }
    }
}

impl SiteState {
    /// This site's counters in `cache`, borrowed when the site has them.
    pub(crate) fn counters(&self, cache: &Cache, namespace: &str) -> SiteCounters<'_> {
        let id = cache.id();
        let (owner, counters) = self
            .counters
            .get_or_init(|| (id, cache.counters(namespace)));
        if *owner == id {
            SiteCounters::Borrowed(counters)
        } else {
            SiteCounters::Owned(cache.counters(namespace))
        }
    }
}

/// A site's counters: borrowed from the site (no reference-count traffic on
/// the hot path) or, under another cache, looked up.
pub(crate) enum SiteCounters<'a> {
    Borrowed(&'a Counters),
    Owned(Arc<Counters>),
}

impl std::ops::Deref for SiteCounters<'_> {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        match self {
            SiteCounters::Borrowed(counters) => counters,
            SiteCounters::Owned(counters) => counters,
        }
    }
}

/// Registers a site's identity; false if another site holds it.
fn claim(namespace: &str, function_id: &str, version: u32, site: &'static CallSite) -> bool {
    type Claims = Mutex<HashMap<(String, String, u32), usize>>;
    static CLAIMS: OnceLock<Claims> = OnceLock::new();
    let mut claims = CLAIMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let address = std::ptr::from_ref(site) as usize;
    *claims
        .entry((namespace.to_owned(), function_id.to_owned(), version))
        .or_insert(address)
        == address
}
