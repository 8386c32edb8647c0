//! The `#[cached]` attribute of [`cache-runtime`]: a cache-aside wrapper for
//! async functions. Depend on `cache-runtime`, which re-exports the attribute
//! and runs the code it generates; this crate only expands it.
//!
//! ```
//! use cache_runtime::cached;
//!
//! #[cached(namespace = "greetings", ttl = 60)]
//! async fn greeting(name: &str) -> String {
//!     format!("Hello, {name}!") // runs on a miss only
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cache_runtime::Error> {
//! assert_eq!(greeting("Ada").await, "Hello, Ada!"); // miss: runs the body
//! assert_eq!(greeting("Ada").await, "Hello, Ada!"); // hit
//! greeting_invalidate("Ada").await?; // the generated companion
//! # Ok(())
//! # }
//! ```
//!
//! The options, the generated companions and the compile errors are described
//! on [`macro@cached`].
//!
//! The expansion runs in three steps, each with its own types: `attr` parses the
//! options as written, `spec` checks them against each other and the function,
//! `expand` generates code from the checked spec.
//!
//! [`cache-runtime`]: https://docs.rs/cache-runtime

#![deny(missing_docs)]

use proc_macro::TokenStream;

mod attr;
mod errors;
mod expand;
mod spec;

/// Caches the results of an async function: a cache-aside wrapper.
///
/// On each call the wrapper builds a key from the namespace, the function and
/// its key arguments, and looks it up in the current cache. On a hit it decodes
/// and returns the stored value without running the body. On a miss it runs the
/// body (once per key, however many calls miss together), stores the result
/// with its TTL, and returns it. A cache failure never fails the call: the body
/// runs and the failure is logged and counted.
///
/// ```
/// use cache_runtime::cached;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct User;
/// # #[derive(Debug)] struct DbError;
/// # async fn load_user(_: u64) -> Result<User, DbError> { Ok(User) }
///
/// #[cached(namespace = "users", ttl = "10m")]
/// async fn get_user(id: u64) -> Result<User, DbError> {
///     load_user(id).await
/// }
/// ```
///
/// # What can be cached
///
/// Free `async fn`s and `async fn`s in inherent `impl` blocks (with `&self`,
/// `&mut self`, `self` or no receiver). Not methods of a trait impl
/// (`impl Trait for Type`): the generated companions would not be members of
/// the trait; cache a free function or an inherent method and call it from
/// the trait method instead. Arguments may be references (`&str`, `&T`),
/// generic or `impl Trait`, as long as every argument in the key implements
/// `serde::Serialize`. The return type decides what is cached:
///
/// | returns | cached | not cached |
/// | --- | --- | --- |
/// | `Result<T, E>` | `Ok(T)` | `Err`: errors are retried on the next call |
/// | `Option<T>` | `Some(T)` | `None`, unless `cache_none = true` |
/// | any other `T` | every value | |
///
/// The cached `T` must implement `Serialize` and `DeserializeOwned`. The shape
/// is read from the written type: a type alias named `Result` (such as
/// `io::Result<T>` or `anyhow::Result<T>`) is a `Result`.
///
/// # What is generated
///
/// Next to the function, with its visibility:
///
/// - `<name>_invalidate(&key args..) -> Result<(), cache_runtime::Error>`:
///   invalidates the entry of one argument tuple. Key arguments are taken by
///   reference. In an `impl` block it is an associated function (a method if
///   `key_self` is set).
/// - `<NAME>_NAMESPACE: &str`: the namespace, for
///   `cache_runtime::invalidate_namespace(GET_USER_NAMESPACE)`.
///
/// The function's rustdoc gains a "Caching" section listing the namespace,
/// TTL, key arguments and these companions.
///
/// # Options
///
/// ## `namespace = "users"`
///
/// The invalidation unit, and part of every key. Several functions may share
/// one; `invalidate_namespace` then invalidates them all. 1 to 64 characters
/// from `[A-Za-z0-9_.-]`. Default: the function's name.
///
/// Equivalent code without `#[cached]`: every key starts with the namespace, and
/// invalidating it means finding and deleting all of them (a `SCAN` over a
/// prefix in hand-written Redis code). Here it is one generation bump per shard,
/// whatever the number of entries.
///
/// ## `ttl = 60` or `ttl = "10m"`
///
/// How long an entry lives: whole seconds, or a duration string (`"90s"`,
/// `"10m"`, `"1h30m"`, `"2days"`). At least one second, at most 365 days.
/// Default: the cache's
/// default TTL (five minutes unless configured with
/// `CacheBuilder::default_ttl`). Every entry has a TTL; there is no "forever".
///
/// Equivalent code without `#[cached]`: `SET key value EX 600` on every store.
///
/// ## `skip(pool, logger)`
///
/// Leaves arguments out of the key: connection pools, clients, loggers, trace
/// ids, anything that does not change the result. Skipped arguments need not be
/// `Serialize`. `self` is never in the key (see `key_self`); arguments named
/// `_` are left out automatically.
///
/// Equivalent code without `#[cached]`: building the key string from some of
/// the arguments only.
///
/// ## `version = 2`
///
/// Part of every key. Bump it when the meaning of the result changes without
/// its type changing (a fixed bug in the body, a new business rule): entries of
/// the old version are never read again and expire by their TTL. A change of
/// the value's type needs no bump: entries record a fingerprint of the type's
/// schema and a mismatch is a miss. Default 0.
///
/// Equivalent code without `#[cached]`: a `v2` segment in every key.
///
/// ## `cache_none = true`
///
/// For functions returning `Option<T>`: also cache `None` (negative caching),
/// so that lookups of missing things do not reach the database each time.
/// `cache_none` alone means `cache_none = true`. Default false.
///
/// Equivalent code without `#[cached]`: storing a "not found" marker and
/// checking for it on reads.
///
/// ## `key_self = true`
///
/// Puts `self` in the key, for methods whose result depends on the receiver's
/// state (`Self` must then be `Serialize`). The invalidation companion becomes
/// a method. Default false: `self` is typically a repository or a client. The
/// type of `self` is always in the key of a method, so methods of the same name
/// on different types never share entries.
///
/// ## `key_self_type`
///
/// For an associated function without `self` in a generic `impl<T>`: puts
/// the type of `Self` (`Labels<UserId>`) in the key. The attribute sees only
/// the function, not the `impl` around it, so it cannot tell `Labels<A>::f`
/// from `Labels<B>::f` unless their arguments or return types differ; the
/// runtime notices the generic `impl` and runs such a function uncached,
/// with an error in the log that names this option. Methods with a `self`
/// receiver, free functions and functions of non-generic `impl`s need
/// nothing: their key tells their instantiations apart already. Outside an
/// `impl` it is a compile error.
///
/// ```
/// use cache_runtime::cached;
///
/// struct Labels<K>(std::marker::PhantomData<K>);
///
/// impl<K: serde::Serialize + Send + Sync + 'static> Labels<K> {
///     #[cached(key_self_type)]
///     async fn count() -> u64 {
///         std::mem::size_of::<K>() as u64
///     }
/// }
/// ```
///
/// ## `crate = "path"`
///
/// Where the runtime crate is, when it is renamed in `Cargo.toml` or re-exported
/// by another crate. Default `::cache_runtime`.
///
/// ```
/// use cache_runtime as my_cache;
///
/// #[my_cache::cached(crate = "my_cache")]
/// async fn answer() -> u32 {
///     42
/// }
/// ```
///
/// # Keys
///
/// `{prefix}:{{namespace}:{shard}}:{path}:v{version}.{types}:{args}`, for
/// example `cache:{users:0a}:app.db.get_user:v0.5e1f0c2a9b3d:%07`. `{path}`
/// is the function's path as the compiler names it (`app.db.Repo.by_name`
/// for a method), so functions of different modules or `impl` blocks never
/// share keys. `{types}` is a hash of the call's concrete types (`Self` for
/// methods, type parameters, key arguments, value), so instantiations of
/// generic code never share keys either; references, `Box`/`Arc`/`Rc`/`Cow`
/// and `String` count as what they point to, so `f(String::from("a"))` and
/// `f_invalidate(&"a")` meet. Arguments are encoded with bincode and
/// escaped, or hashed with BLAKE3 when long, so distinct arguments never
/// share a key. `HashMap` arguments iterate in a random order, so they make
/// poor keys: use `BTreeMap`.
///
/// # Errors
///
/// Misuse is a compile error at the culprit: a non-async or `const fn`, an
/// unknown or duplicate option, a malformed TTL, `skip` of an argument that
/// does not exist, an argument or return type that is not serializable, a
/// return type that cannot be stored (`impl Trait`, references). The
/// companions are still generated, so that their callers see only the
/// attribute's error.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    cached_impl(args.into(), item.into()).into()
}

fn cached_impl(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mut errors = errors::Errors::default();
    let raw = attr::RawArgs::parse(args, &mut errors);
    let function: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[cached] goes on an `async fn` (a free function or a method in an `impl` block)",
            );
            let error = error.to_compile_error();
            return quote::quote! { #item #error };
        }
    };
    match spec::Spec::new(&raw, &function, &mut errors) {
        Some(spec) => expand::expand(&spec, &function),
        // Emit the function unchanged next to the errors, and its companions
        // as placeholders, so that the rest of the crate (and the IDE) still
        // sees them and only the attribute's errors are reported.
        None => {
            let errors = errors.to_compile_errors();
            let companions = expand::placeholder_companions(&raw, &function);
            quote::quote! { #function #companions #errors }
        }
    }
}
