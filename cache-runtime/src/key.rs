//! Key derivation: from a function's identity and its key arguments to the string
//! a backend stores the entry under.
//!
//! Layout of a cached function's keys:
//! `{prefix}:{{namespace}:{shard}}:{function}:v{version}.{types}:{args}`, for
//! example `cache:{users:0a}:app.get_user:v0.5e1f0c2a9b3d:%05alice`. The part
//! in braces is a Redis Cluster hash tag: an entry and the state of its shard
//! (`{prefix}:{{namespace}:{shard}}:gen`) always live in the same slot, while
//! the 16 shards of a namespace spread over the cluster.
//!
//! `{function}` is the function's path as the compiler names it (`app.db.get_user`,
//! `app.Repo.by_name`, `app.Labels<_>.label`), so functions in different
//! modules, `impl` blocks or nested scopes never share keys. `{types}` is a
//! hash of the concrete types the call was instantiated with (`Self`, the
//! function's type parameters, the key arguments' and the value's types), so
//! two instantiations of generic code never share keys either. See
//! `docs/decisions/0009-function-identity.md`.
//!
//! Injectivity, which keeps one argument from reading another's entry, rests on
//! three facts: namespaces, prefixes and function ids cannot contain `:` or
//! braces; the arguments are encoded with bincode, which length-prefixes every
//! variable-sized value, so distinct tuples of one type encode to distinct bytes;
//! and those bytes are escaped (`%XX` for anything outside `[A-Za-z0-9_.-]`), which
//! is itself injective. Encodings longer than [`INLINE_ARGS_MAX`] are replaced by
//! `#` and their BLAKE3 hash, a cryptographic hash because arguments may be chosen
//! by an attacker. See `docs/decisions/0003-key-layout.md`.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};

/// The number of generation shards per namespace. Part of the key format: changing
/// it orphans every existing entry (they become misses, never wrong values).
pub const SHARDS: u8 = 16;

/// Escaped argument strings up to this length appear in the key as they are;
/// longer ones are hashed.
pub const INLINE_ARGS_MAX: usize = 160;

const NAME_MAX: usize = 64;

/// The invalidation unit: every key of a namespace can be invalidated at once.
///
/// A namespace is 1 to 64 characters from `[A-Za-z0-9_.-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Cow<'static, str>);

impl Namespace {
    /// Checks and wraps a namespace name.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Self> {
        let name = name.into();
        check_name("namespace", &name, false)?;
        Ok(Namespace(name))
    }

    /// For names the `#[cached]` macro has already checked at compile time.
    pub(crate) const fn from_checked(name: &'static str) -> Self {
        Namespace(Cow::Borrowed(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a namespace (or, with `allow_colon`, a key prefix).
pub(crate) fn check_name(what: &'static str, name: &str, allow_colon: bool) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > NAME_MAX {
        Some("it is longer than 64 bytes")
    } else if !name
        .bytes()
        .all(|b| is_plain(b) || (allow_colon && b == b':'))
    {
        Some(if allow_colon {
            "only ASCII letters, digits, `_`, `.`, `-` and `:` are allowed"
        } else {
            "only ASCII letters, digits, `_`, `.` and `-` are allowed"
        })
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            what,
            value: name.to_owned(),
            reason,
        }),
    }
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Collects a function's key arguments, in order, as bytes.
///
/// Used by the code `#[cached]` generates; each argument is encoded with bincode
/// (whatever the value codec), so keys do not change with the codec.
#[derive(Debug, Default)]
pub struct KeyArgs {
    bytes: ArgBytes,
    error: Option<Error>,
}

impl KeyArgs {
    /// Starts an empty argument list.
    pub fn new() -> Self {
        KeyArgs::default()
    }

    /// Appends one argument.
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = bincode::serde::encode_into_std_write(
            value,
            &mut self.bytes,
            bincode::config::standard(),
        ) {
            self.error = Some(Error::Encode {
                what: "key arguments",
                codec: "bincode",
                message: e.to_string(),
            });
        }
    }

    /// The encoded arguments, or the first encoding error.
    pub(crate) fn finish(self) -> Result<ArgBytes> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.bytes),
        }
    }
}

/// Encoded key arguments: in place up to [`ArgBytes::INLINE`] bytes (ids,
/// short strings: most keys), on the heap beyond. Every call builds one, and
/// an allocation and its free cost a hit about 140 instructions.
#[derive(Debug, Default)]
pub(crate) struct ArgBytes {
    inline: [u8; ArgBytes::INLINE],
    len: usize,
    /// Used once the arguments outgrow `inline`; then it holds them all.
    heap: Vec<u8>,
}

impl ArgBytes {
    const INLINE: usize = 32;

    fn extend(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() {
            if let Some(free) = self.inline.get_mut(self.len..self.len + bytes.len()) {
                free.copy_from_slice(bytes);
                self.len += bytes.len();
                return;
            }
            let mut heap = Vec::with_capacity((self.len + bytes.len()).max(2 * Self::INLINE));
            heap.extend_from_slice(&self.inline[..self.len]);
            self.heap = heap;
        }
        self.heap.extend_from_slice(bytes);
    }
}

impl std::ops::Deref for ArgBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

impl std::io::Write for ArgBytes {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.extend(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A fully derived key: the entry's key and the shard it belongs to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    text: String,
    /// `text[..shard_end]` is `{prefix}:{{namespace}:{shard}}`.
    shard_end: usize,
    namespace_start: usize,
    namespace_end: usize,
}

impl CacheKey {
    /// Derives the key of one entry, as a cached function with this identity
    /// and these arguments would.
    ///
    /// `function` is the function's id: no `:`, braces or whitespace.
    pub fn new(
        prefix: &str,
        namespace: &Namespace,
        function: &str,
        version: u32,
        args: KeyArgs,
    ) -> Result<CacheKey> {
        check_name("prefix", prefix, true)?;
        if function.is_empty()
            || function
                .chars()
                .any(|c| matches!(c, ':' | '{' | '}') || c.is_whitespace())
        {
            return Err(Error::InvalidName {
                what: "function id",
                value: function.to_owned(),
                reason: "it must be non-empty, without `:`, braces or whitespace",
            });
        }
        Ok(CacheKey::from_segment(
            prefix,
            namespace,
            &format!(":{function}:v{version}:"),
            &args.finish()?,
        ))
    }

    /// Builds the key from the part between shard and arguments (a call
    /// site's precomputed segment, `:{function}:v{version}.{types}:`); the
    /// hot path, so it avoids `format!`.
    pub(crate) fn from_segment(
        prefix: &str,
        namespace: &Namespace,
        segment: &str,
        args: &[u8],
    ) -> CacheKey {
        CacheKey::from_hashed_segment(prefix, namespace, segment, segment_hash(segment), args)
    }

    /// [`from_segment`](Self::from_segment) with the segment's
    /// [`segment_hash`] already computed (once per call site).
    pub(crate) fn from_hashed_segment(
        prefix: &str,
        namespace: &Namespace,
        segment: &str,
        segment_hash: u64,
        args: &[u8],
    ) -> CacheKey {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let shard = shard_of(segment_hash, args);
        let mut text = String::with_capacity(
            prefix.len() + namespace.as_str().len() + segment.len() + args.len() * 3 + 8,
        );
        text.push_str(prefix);
        text.push_str(":{");
        let namespace_start = text.len();
        text.push_str(namespace.as_str());
        let namespace_end = text.len();
        text.push(':');
        text.push(HEX[usize::from(shard >> 4)] as char);
        text.push(HEX[usize::from(shard & 0xF)] as char);
        text.push('}');
        let shard_end = text.len();
        text.push_str(segment);
        push_args(&mut text, args);
        CacheKey {
            text,
            shard_end,
            namespace_start,
            namespace_end,
        }
    }

    /// The entry's key, as stored in the backend.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The shard the entry belongs to: `{prefix}:{{namespace}:{shard}}`. A backend
    /// keeps the shard's generation under a key derived from this.
    pub fn shard(&self) -> &str {
        &self.text[..self.shard_end]
    }

    /// The namespace part of the key.
    pub fn namespace(&self) -> &str {
        &self.text[self.namespace_start..self.namespace_end]
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The shard keys of a namespace, in shard order.
pub(crate) fn namespace_shards(prefix: &str, namespace: &Namespace) -> Vec<String> {
    (0..SHARDS)
        .map(|shard| format!("{prefix}:{{{namespace}:{shard:02x}}}"))
        .collect()
}

/// FNV-1a over the function's segment and a separator: where the shard's
/// hash continues with the arguments. Computed once per call site.
pub(crate) fn segment_hash(segment: &str) -> u64 {
    fnv(
        0xcbf2_9ce4_8422_2325,
        segment.as_bytes().iter().chain(&[0xFF]),
    )
}

fn fnv<'a>(mut hash: u64, bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Picks the shard by FNV-1a over the function's segment and arguments.
/// Distribution only: a collision costs nothing but a shared shard state.
fn shard_of(segment_hash: u64, args: &[u8]) -> u8 {
    (fnv(segment_hash, args) % u64::from(SHARDS)) as u8
}

fn push_args(out: &mut String, args: &[u8]) {
    let escaped_len: usize = args.iter().map(|&b| if is_plain(b) { 1 } else { 3 }).sum();
    if escaped_len == args.len() {
        // Nothing to escape: plain bytes are ASCII.
        out.push_str(std::str::from_utf8(args).expect("plain bytes are ASCII"));
    } else if escaped_len <= INLINE_ARGS_MAX {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for &b in args {
            if is_plain(b) {
                out.push(b as char);
            } else {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xF)] as char);
            }
        }
    } else {
        // `#` is never produced by the escaping above, so hashed and inline
        // arguments cannot meet.
        out.push('#');
        out.push_str(blake3::hash(args).to_hex().as_str());
    }
}

/// The part of a cached function's keys between the shard and the
/// arguments: `:{function}:v{version}.{types}:`, `types` being a hash of the
/// names of the instantiation's types: `exact` ones as they are (`Self`,
/// type parameters, the value: `f::<Box<X>>` is not `f::<X>`), `arguments`
/// normalized (see [`normalize_type`]).
pub(crate) fn function_segment(
    function: &str,
    version: u32,
    exact: &[&str],
    arguments: &[&str],
) -> String {
    let mut hasher = blake3::Hasher::new();
    for name in exact {
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
    }
    // Separates the two lists: a type cannot move from one to the other.
    hasher.update(b"\x01");
    for name in arguments {
        hasher.update(normalize_type(name).as_bytes());
        hasher.update(b"\0");
    }
    let hash = hasher.finalize();
    let hex = hash.to_hex();
    format!(":{function}:v{version}.{}:", &hex.as_str()[..12])
}

/// A type name as a key argument's type contributes it: references and
/// smart pointers removed, owned and borrowed strings made one. Values of
/// these types serialize to the same bytes as what they point to, so
/// `f(String::from("a"))` and `f_invalidate(&"a")` meet on one entry.
pub(crate) fn normalize_type(name: &str) -> &str {
    let mut name = name.trim();
    loop {
        let before = name;
        name = name.strip_prefix("&mut ").unwrap_or(name);
        name = name.strip_prefix('&').unwrap_or(name);
        for wrapper in [
            "alloc::boxed::Box<",
            "alloc::sync::Arc<",
            "alloc::rc::Rc<",
            "alloc::borrow::Cow<",
        ] {
            if let Some(inner) = name.strip_prefix(wrapper).and_then(|n| n.strip_suffix('>')) {
                name = inner;
            }
        }
        if name == "alloc::string::String" {
            name = "str";
        }
        if name == before {
            return name;
        }
    }
}

/// The longest function id kept as it is; longer ones (generic impls of
/// long types) keep their last segment and a hash of the whole.
const FUNCTION_ID_MAX: usize = 96;

/// Turns a function's path, as `type_name` writes it (`app::db::Repo<_>::get`),
/// into a key segment: `app.db.Repo<_>.get`. `::` becomes `.`, the space
/// after a comma goes (`type_name` always writes one there), and anything
/// that could break the key's layout (`:`, braces, `%`, other whitespace,
/// non-ASCII) is escaped as `%XX`, which keeps ids injective.
pub(crate) fn function_id(path: &str) -> String {
    let mut id = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("::") {
            id.push('.');
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix(", ") {
            id.push(',');
            rest = after;
            continue;
        }
        rest = &rest[c.len_utf8()..];
        match c {
            ':' | '{' | '}' | '%' | ' ' => push_escaped(&mut id, c),
            c if c.is_ascii_graphic() => id.push(c),
            c => push_escaped(&mut id, c),
        }
    }
    if id.len() <= FUNCTION_ID_MAX {
        return id;
    }
    let last = id.rsplit('.').next().unwrap_or_default();
    let last = &last[..last.len().min(48)];
    let hash = blake3::hash(id.as_bytes());
    format!("{last}#{}", &hash.to_hex().as_str()[..16])
}

fn push_escaped(out: &mut String, c: char) {
    let mut buf = [0; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_bytes_are_the_same_in_place_and_on_the_heap() {
        // Every split of up to 100 bytes into a first write and the rest,
        // across the inline capacity, against a plain Vec.
        let all: Vec<u8> = (0..100u8).collect();
        for total in 0..all.len() {
            for first in 0..=total {
                let mut bytes = ArgBytes::default();
                std::io::Write::write_all(&mut bytes, &all[..first]).unwrap();
                std::io::Write::write_all(&mut bytes, &[]).unwrap();
                std::io::Write::write_all(&mut bytes, &all[first..total]).unwrap();
                assert_eq!(&*bytes, &all[..total], "{first} then {}", total - first);
            }
        }
        // Keys of arguments that fit and of arguments that do not.
        for text in ["", "short", &"long".repeat(40)] {
            let mut args = KeyArgs::new();
            args.push(&7_u64);
            args.push(text);
            let mut expected = Vec::new();
            for encoded in [
                bincode::serde::encode_to_vec(7_u64, bincode::config::standard()),
                bincode::serde::encode_to_vec(text, bincode::config::standard()),
            ] {
                expected.extend(encoded.unwrap());
            }
            assert_eq!(&*args.finish().unwrap(), &expected[..]);
        }
    }

    fn key(args: &[u8]) -> CacheKey {
        CacheKey::from_segment(
            "cache",
            &Namespace::new("users").unwrap(),
            ":app.get:v0:",
            args,
        )
    }

    #[test]
    fn layout_is_readable() {
        let mut args = KeyArgs::new();
        args.push("alice");
        let k = CacheKey::new(
            "cache",
            &Namespace::new("users").unwrap(),
            "app.get",
            0,
            args,
        )
        .unwrap();
        assert!(k.as_str().starts_with("cache:{users:"), "{k}");
        assert!(k.as_str().ends_with(":app.get:v0:%05alice"), "{k}");
        assert_eq!(k.namespace(), "users");
        assert_eq!(k.shard().len(), "cache:{users:00}".len());
        assert!(k.as_str().starts_with(k.shard()));
    }

    #[test]
    fn long_arguments_are_hashed() {
        let k = key(&[0u8; 1000]);
        let args = k.as_str().rsplit(':').next().unwrap();
        assert_eq!(args.len(), 1 + 64, "{k}");
        assert!(args.starts_with('#'));
    }

    #[test]
    fn names_are_checked() {
        assert!(Namespace::new("users.v2-x_y").is_ok());
        for bad in ["", "a:b", "a{b", "a b", "é", &"x".repeat(65)] {
            let err = Namespace::new(bad.to_owned()).unwrap_err();
            assert!(err.to_string().contains("invalid namespace"), "{err}");
        }
        assert!(check_name("prefix", "app:prod", true).is_ok());
        assert!(check_name("prefix", "app:{x}", true).is_err());
    }

    #[test]
    fn function_ids_are_paths_without_colons() {
        assert_eq!(function_id("app::db::get"), "app.db.get");
        assert_eq!(function_id("app::Repo<_>::get"), "app.Repo<_>.get");
        assert_eq!(
            function_id("app::P<alloc::vec::Vec<u8>, (u8, &str)>::f"),
            "app.P<alloc.vec.Vec<u8>,(u8,&str)>.f"
        );
        assert_eq!(function_id("<dyn app::T>::f"), "<dyn%20app.T>.f");
        assert_ne!(
            function_id("<a::Xas as b::T>::f"),
            function_id("<a::X as asb::T>::f")
        );
        assert_eq!(function_id("a:b{c}%é"), "a%3Ab%7Bc%7D%25%C3%A9");
        let long = format!("app::{}::f", "X".repeat(200));
        let id = function_id(&long);
        assert!(id.len() < FUNCTION_ID_MAX && id.starts_with("f#"), "{id}");
        assert_ne!(id, function_id(&format!("app::{}::f", "Y".repeat(200))));
        let ns = Namespace::new("n").unwrap();
        assert!(CacheKey::new("p", &ns, "a:b", 0, KeyArgs::new()).is_err());
        assert!(CacheKey::new("p{", &ns, "a", 0, KeyArgs::new()).is_err());
    }

    #[test]
    fn types_are_normalized_and_hashed() {
        assert_eq!(normalize_type("&alloc::string::String"), "str");
        assert_eq!(normalize_type("&&str"), "str");
        assert_eq!(normalize_type("alloc::borrow::Cow<str>"), "str");
        assert_eq!(
            normalize_type("alloc::sync::Arc<app::UserId>"),
            "app::UserId"
        );
        assert_eq!(normalize_type("&mut u64"), "u64");
        assert_eq!(normalize_type("alloc::vec::Vec<u8>"), "alloc::vec::Vec<u8>");
        let segment = |types: &[&str]| function_segment("app.f", 0, &["u64"], types);
        assert_eq!(
            segment(&["&str", "u64"]),
            segment(&["alloc::string::String", "u64"])
        );
        assert_ne!(segment(&["app::UserId"]), segment(&["app::GroupId"]));
        assert_ne!(segment(&["a", "bc"]), segment(&["ab", "c"]));
        assert!(
            segment(&["u64"]).starts_with(":app.f:v0."),
            "{}",
            segment(&["u64"])
        );
        // Type parameters and values count exactly.
        let exact = |types: &[&str]| function_segment("app.f", 0, types, &[]);
        assert_ne!(exact(&["alloc::boxed::Box<u8>"]), exact(&["u8"]));
        assert_ne!(exact(&["&str"]), exact(&["alloc::string::String"]));
        assert_ne!(
            function_segment("f", 0, &["a"], &[]),
            function_segment("f", 0, &[], &["a"])
        );
    }
}
