//! A call site: the static description of one `#[cached]` function that the
//! macro emits, and what the runtime derives from it once.
//!
//! A site's identity is its function's path as the compiler names it, read
//! from a marker function the macro nests inside it (`app::Repo<_>::get`):
//! functions of different modules, `impl` blocks or scopes differ there even
//! when the attribute, which sees only the function, cannot tell them apart.
//! The concrete types of each call (`Self`, type parameters, key arguments,
//! value) add a hash to the key, so every instantiation of generic code has
//! its own entries. What cannot be proven distinct is not cached: two sites
//! with one identity (both run uncached, loudly), and an associated function
//! of a generic `impl` that has no `self`, whose `Self` the key cannot see
//! (unless the attribute is told `key_self_type`).

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::call::Policy;
use crate::entry::{self, CodecKind, TypeInfo};
use crate::key::{self, CacheKey, Namespace};
use crate::observe::Counters;

/// One `#[cached]` function, as the macro describes it. Not public API.
#[derive(Debug)]
pub struct CallSite {
    namespace: &'static str,
    function: &'static str,
    marker: fn() -> &'static str,
    version: u32,
    ttl_secs: u64,
    none_ttl_secs: u64,
    jitter: u8,
    grace_secs: u64,
    lease: bool,
    companion: bool,
    self_type_in_key: bool,
    exact_types: usize,
    state: OnceLock<SiteState>,
}

#[derive(Debug)]
pub(crate) struct SiteState {
    pub(crate) namespace: Namespace,
    /// The function's path, as a key segment (`app.Repo.get`).
    pub(crate) function_id: String,
    claim: Arc<Claim>,
    /// Why this site cannot be cached, if it cannot.
    refusal: Option<&'static str>,
    /// The counters of the cache this site ran under last, tagged with that
    /// cache's id: spares the per-namespace map lookup on the hot path.
    counters: OnceLock<(u64, Arc<Counters>)>,
    /// The key segment of the first instantiation seen here; others (generic
    /// code) look theirs up in [`identities`].
    identity: OnceLock<Identity>,
    /// The value type of the first instantiation seen here.
    value: OnceLock<(TypeId, &'static TypeInfo)>,
}

/// The key segment of one instantiation of a site.
#[derive(Debug)]
pub(crate) struct Identity {
    types: Box<[&'static str]>,
    /// `:{function_id}:v{version}.{types}:`, the middle of every key.
    pub(crate) segment: String,
    /// Where the shard's hash of a key continues with its arguments.
    segment_hash: u64,
}

impl CallSite {
    /// Describes a site. `ttl_secs == 0` means the cache's default TTL;
    /// `none_ttl_secs == 0`, no TTL of its own for a cached `None`;
    /// `jitter == u8::MAX`, the cache's jitter; `grace_secs == 0`, no
    /// `stale_if_error`; `lease == false`, no
    /// leases even where the cache has them.
    /// `marker` names a function nested in the cached function (or its
    /// companion), whose path locates it. `companion` marks the site of a
    /// generated invalidation function, which shares the identity of the
    /// function it belongs to. `self_type_in_key` says the macro put `Self`
    /// among the call's types (methods, and `key_self_type`).
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)] // built by generated code only
    pub const fn new(
        namespace: &'static str,
        function: &'static str,
        marker: fn() -> &'static str,
        version: u32,
        ttl_secs: u64,
        none_ttl_secs: u64,
        jitter: u8,
        grace_secs: u64,
        lease: bool,
        companion: bool,
        self_type_in_key: bool,
        exact_types: usize,
    ) -> Self {
        CallSite {
            namespace,
            function,
            marker,
            version,
            ttl_secs,
            none_ttl_secs,
            jitter,
            grace_secs,
            lease,
            companion,
            self_type_in_key,
            exact_types,
            state: OnceLock::new(),
        }
    }

    pub(crate) fn namespace(&self) -> &'static str {
        self.namespace
    }

    /// How the function's calls store: its options over the cache's
    /// settings (a `ttl_secs` of 0 is the cache's default TTL, a jitter of
    /// `CACHE_JITTER` the cache's jitter).
    pub(crate) fn policy(&self, cache: &Cache) -> Policy {
        let secs = |secs: u64| (secs != 0).then(|| Duration::from_secs(secs));
        Policy {
            ttl: secs(self.ttl_secs).unwrap_or(cache.inner.default_ttl),
            none_ttl: secs(self.none_ttl_secs),
            jitter: if self.jitter == crate::call::CACHE_JITTER {
                cache.inner.ttl_jitter
            } else {
                self.jitter
            },
            lease: self.lease,
            grace: secs(self.grace_secs),
        }
    }

    /// The function's path: the marker's path, minus the marker and the
    /// function (or companion) it is nested in, plus the function's name.
    /// The `{{closure}}` segments of async bodies are left out: they add
    /// nothing to the identity of a named function.
    fn path(&self) -> String {
        let marker = (self.marker)().replace("::{{closure}}", "");
        let mut parts = marker.rsplitn(3, "::");
        let (_marker, _function) = (parts.next(), parts.next());
        match parts.next() {
            Some(parent) => format!("{parent}::{}", self.function),
            None => self.function.to_owned(),
        }
    }

    pub(crate) fn state(&'static self) -> &'static SiteState {
        self.state.get_or_init(|| {
            let path = self.path();
            let function_id = key::function_id(&path);
            let claim = claim(
                self.namespace,
                &function_id,
                self.version,
                self,
                self.companion,
            );
            let refusal = (!self.self_type_in_key && in_generic_impl(&path)).then_some(
                "it is an associated function of a generic `impl` without `self`, so its key \
                 cannot tell the impl's instantiations apart; add `key_self_type` to its \
                 #[cached(...)] to put `Self` in the key",
            );
            if let Some(reason) = refusal.filter(|_| !self.companion) {
                tracing::error!(
                    namespace = self.namespace,
                    function = %function_id,
                    "this cached function runs uncached: {reason}"
                );
            }
            SiteState {
                namespace: Namespace::from_checked(self.namespace),
                function_id,
                claim,
                refusal,
                counters: OnceLock::new(),
                identity: OnceLock::new(),
                value: OnceLock::new(),
            }
        })
    }

    /// The key segment of the instantiation whose types are `types`.
    pub(crate) fn identity(&'static self, types: &[&'static str]) -> &'static Identity {
        let state = self.state();
        let first = state.identity.get_or_init(|| self.new_identity(types));
        if same_types(&first.types, types) {
            return first;
        }
        type Identities = RwLock<HashMap<(usize, Vec<&'static str>), &'static Identity>>;
        static IDENTITIES: OnceLock<Identities> = OnceLock::new();
        let map = IDENTITIES.get_or_init(Default::default);
        let id = (std::ptr::from_ref(self) as usize, types.to_vec());
        if let Some(&identity) = map.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return identity;
        }
        let mut map = map.write().unwrap_or_else(|e| e.into_inner());
        // One per instantiation of generic code: bounded by the program.
        map.entry(id)
            .or_insert_with(|| Box::leak(Box::new(self.new_identity(types))))
    }

    /// The key of one call: `args` (encoded) of the instantiation whose
    /// types are `types`, under `prefix`.
    pub(crate) fn key(
        &'static self,
        prefix: &str,
        types: &[&'static str],
        args: &[u8],
    ) -> CacheKey {
        let identity = self.identity(types);
        let namespace = &self.state().namespace;
        CacheKey::from_hashed_segment(
            prefix,
            namespace,
            &identity.segment,
            identity.segment_hash,
            args,
        )
    }

    fn new_identity(&'static self, types: &[&'static str]) -> Identity {
        let state = self.state();
        let exact = self.exact_types.min(types.len());
        let segment = key::function_segment(
            &state.function_id,
            self.version,
            &types[..exact],
            &types[exact..],
        );
        Identity {
            types: types.into(),
            segment_hash: key::segment_hash(&segment),
            segment,
        }
    }

    /// What the runtime knows about the value type `T`.
    pub(crate) fn value_type<T: DeserializeOwned + 'static>(&'static self) -> &'static TypeInfo {
        let (type_id, info) = *self
            .state()
            .value
            .get_or_init(|| (TypeId::of::<T>(), entry::type_info::<T>()));
        if type_id == TypeId::of::<T>() {
            info
        } else {
            entry::type_info::<T>()
        }
    }
}

impl SiteState {
    /// Why calls of this site must not use the cache, if they must not.
    pub(crate) fn refusal(&self) -> Option<&'static str> {
        if self.claim.collided.load(Relaxed) {
            return Some("another cached function has the same namespace, path and version");
        }
        self.refusal
    }

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

/// Whether a value type cannot be cached with `codec` (found out by the
/// first store).
pub(crate) fn uncacheable(info: &TypeInfo, codec: CodecKind) -> bool {
    info.round_trips(codec) == Some(false)
}

fn same_types(a: &[&'static str], b: &[&'static str]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            // The same type's name is usually the same string in memory.
            (x.as_ptr() == y.as_ptr() && x.len() == y.len()) || x == y
        })
}

/// Whether a function path (`app::Labels<_>::label`) runs through a generic
/// `impl`: the compiler writes the impl's type parameters as `_`, and its
/// const parameters by name, where a concrete impl has types and values.
fn in_generic_impl(path: &str) -> bool {
    // Primitive types, and the keywords `type_name` writes inside types
    // (`dyn T`, `*const T`, `&mut T`, `fn(u8)`, `unsafe extern "C" fn`,
    // `for<'a> fn`, `<X as T>`).
    const PRIMITIVES: &[&str] = &[
        "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32",
        "i64", "i128", "isize", "f32", "f64", "true", "false", "dyn", "mut", "const", "fn",
        "unsafe", "extern", "for", "impl", "as",
    ];
    let mut depth = 0usize;
    let mut token = String::new();
    let mut generic = false;
    let mut check = |token: &mut String| {
        let plain = !token.is_empty()
            && token.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !token.starts_with(|c: char| c.is_ascii_digit());
        if plain && (token == "_" || !PRIMITIVES.contains(&token.as_str())) {
            generic = true;
        }
        token.clear();
    };
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '<' => {
                depth += 1;
                token.clear();
            }
            '>' => {
                if depth > 0 {
                    check(&mut token);
                }
                depth = depth.saturating_sub(1);
            }
            ':' if chars.peek() == Some(&':') => {
                // A path inside the arguments: what follows names a type.
                chars.next();
                token.clear();
                token.push('.');
            }
            ',' | ' ' | '(' | ')' | '[' | ']' | ';' | '&' | '*' if depth > 0 => check(&mut token),
            '\'' if depth > 0 => token.push('\''),
            c if depth > 0 => token.push(c),
            _ => {}
        }
    }
    generic
}

/// A site's identity in the process: the function that owns it (0 until
/// the function itself, not a companion, first runs), and `collided` once a
/// second function claims it.
#[derive(Debug)]
struct Claim {
    owner: AtomicUsize,
    collided: AtomicBool,
}

/// Registers a site's identity. A second site with the same identity marks
/// it collided, which turns caching off for both (whichever ran first), and
/// says so. Companions share their function's identity and claim nothing.
fn claim(
    namespace: &str,
    function_id: &str,
    version: u32,
    site: &'static CallSite,
    companion: bool,
) -> Arc<Claim> {
    type Claims = Mutex<HashMap<(String, String, u32), Arc<Claim>>>;
    static CLAIMS: OnceLock<Claims> = OnceLock::new();
    let mut claims = CLAIMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let address = std::ptr::from_ref(site) as usize;
    let claim = claims
        .entry((namespace.to_owned(), function_id.to_owned(), version))
        .or_insert_with(|| {
            Arc::new(Claim {
                owner: AtomicUsize::new(0),
                collided: AtomicBool::new(false),
            })
        });
    let owner = match companion {
        true => address,
        false => match claim.owner.compare_exchange(0, address, Relaxed, Relaxed) {
            Ok(_) => address,
            Err(owner) => owner,
        },
    };
    if owner != address && !claim.collided.swap(true, Relaxed) {
        tracing::error!(
            namespace,
            function = function_id,
            version,
            "two cached functions have the same namespace, path and version, so their keys \
             could meet; neither is cached from now on. Give one of them another `namespace` \
             or `version`"
        );
    }
    Arc::clone(claim)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_impls_are_told_from_concrete_ones() {
        for generic in [
            "app::Labels<_>::label",
            "app::P<u8, _>::f",
            "app::C<N>::f",
            "app::B<_>::m::inner",
        ] {
            assert!(in_generic_impl(generic), "{generic}");
        }
        for concrete in [
            "app::get_user",
            "app::Repo::get",
            "app::L<'_>::f",
            "app::C<3>::f",
            "app::B<u8>::f",
            "app::P<alloc::vec::Vec<alloc::string::String>, (u8, &str)>::f",
            "app::A<[u8; 4], *const u8, &mut bool>::f",
            "<dyn app::T>::f",
            "app::F<fn(u8) -> u16>::f",
            "app::F<for<'a> fn(&'a str)>::f",
            "app::F<unsafe extern \"C\" fn()>::f",
        ] {
            assert!(!in_generic_impl(concrete), "{concrete}");
        }
    }
}
