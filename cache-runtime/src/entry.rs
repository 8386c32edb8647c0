//! The envelope every stored value travels in, and the schema fingerprint that
//! keeps an entry from decoding into a type that did not write it.
//!
//! ```text
//! offset  size  field
//! 0       1     magic 0xCA
//! 1       1     envelope version (1)
//! 2       1     codec id
//! 3       1     kind: 0 value, 1 tombstone
//! 4       8     schema fingerprint of the value type (LE)
//! 12      8     generation of the shard the entry was computed under (LE)
//! 20      8     stamp: random, unique per write (LE)
//! 28      8     written at, Unix milliseconds (LE)
//! 36      4     TTL in seconds (LE)
//! 40      ..    payload
//! ```
//!
//! The first [`HEADER_LEN`] bytes identify a write uniquely (the stamp), so a
//! conditional store compares them to decide whether the entry changed since it
//! was read. A tombstone is a header without payload, written by an entry
//! invalidation so that a store racing with it can see the change.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::CodecKind;
use crate::error::{Error, Result};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
const MAGIC: u8 = 0xCA;
const VERSION: u8 = 1;
const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;

/// A namespace shard's generation. Generations are random, never counters: a
/// generation that was lost (expired, evicted, flushed) and recreated can never
/// take a value it had before, so it can never revive entries it invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Generation(pub u64);

impl Generation {
    /// A fresh random generation.
    pub fn random() -> Self {
        // Zero is reserved for "written without a known generation".
        Generation(fastrand::u64(1..))
    }
}

/// What a header says about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) codec: u8,
    pub(crate) tombstone: bool,
    pub(crate) fingerprint: u64,
    pub(crate) generation: u64,
    pub(crate) written_at_ms: u64,
    pub(crate) ttl_secs: u32,
}

impl Header {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::Decode(format!(
                "entry of {} bytes is shorter than its header",
                bytes.len()
            )));
        }
        if bytes[0] != MAGIC || bytes[1] != VERSION {
            return Err(Error::Decode(format!(
                "not an entry of this format (magic {:#04x}, version {})",
                bytes[0], bytes[1]
            )));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Header {
            codec: bytes[2],
            tombstone: match bytes[3] {
                KIND_VALUE => false,
                KIND_TOMBSTONE => true,
                other => return Err(Error::Decode(format!("unknown entry kind {other}"))),
            },
            fingerprint: u64_at(4),
            generation: u64_at(12),
            written_at_ms: u64_at(28),
            ttl_secs: u32::from_le_bytes(bytes[36..40].try_into().expect("4 bytes")),
        })
    }

    /// Whether the entry outlived its own TTL (a backend that expires late must
    /// not serve it).
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        now_ms
            >= self
                .written_at_ms
                .saturating_add(u64::from(self.ttl_secs) * 1000)
    }
}

/// Writes a header for a new entry into `out`, which must be empty.
pub(crate) fn write_header(
    out: &mut Vec<u8>,
    codec: CodecKind,
    tombstone: bool,
    fingerprint: u64,
    generation: Generation,
    ttl: Duration,
) {
    debug_assert!(out.is_empty());
    out.extend_from_slice(&[
        MAGIC,
        VERSION,
        codec.id(),
        if tombstone {
            KIND_TOMBSTONE
        } else {
            KIND_VALUE
        },
    ]);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&generation.0.to_le_bytes());
    out.extend_from_slice(&fastrand::u64(..).to_le_bytes());
    out.extend_from_slice(&now_ms().to_le_bytes());
    let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
    out.extend_from_slice(&ttl_secs.to_le_bytes());
}

/// Builds a value entry: header, then `value` encoded with `codec`.
///
/// `fingerprint` is the value type's [`fingerprint`]; `generation` the shard
/// generation the value was computed under.
pub fn seal<T: Serialize + ?Sized>(
    codec: CodecKind,
    fingerprint: u64,
    generation: Generation,
    ttl: Duration,
    value: &T,
) -> Result<Bytes> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    write_header(&mut out, codec, false, fingerprint, generation, ttl);
    codec.encode(value, &mut out)?;
    Ok(Bytes::from(out))
}

/// A tombstone: what an entry invalidation leaves behind.
pub(crate) fn tombstone(codec: CodecKind, ttl: Duration) -> Bytes {
    let mut out = Vec::with_capacity(HEADER_LEN);
    write_header(&mut out, codec, true, 0, Generation(0), ttl);
    Bytes::from(out)
}

/// The bytes a conditional store compares: the header, or all of a shorter
/// (broken) entry.
pub fn identity(entry: &[u8]) -> &[u8] {
    &entry[..entry.len().min(HEADER_LEN)]
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a stored entry was not a hit.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// An invalidation left a tombstone, or the shard moved to a new generation,
    /// or the entry outlived its TTL: an ordinary miss.
    Stale,
    /// Another type, schema or codec wrote it: a miss, logged at debug level.
    Foreign,
    /// It cannot be read at all: a miss, logged as an error.
    Broken(Error),
}

/// Checks an entry against what the reader expects and decodes its payload.
pub(crate) fn open<T: DeserializeOwned>(
    entry: &[u8],
    codec: CodecKind,
    fingerprint: u64,
    generation: Option<Generation>,
) -> std::result::Result<T, Rejection> {
    let header = Header::parse(entry).map_err(Rejection::Broken)?;
    if header.tombstone
        || generation != Some(Generation(header.generation))
        || header.expired(now_ms())
    {
        return Err(Rejection::Stale);
    }
    if header.codec != codec.id() || header.fingerprint != fingerprint {
        return Err(Rejection::Foreign);
    }
    codec
        .decode(&entry[HEADER_LEN..])
        .map_err(Rejection::Broken)
}

/// The schema fingerprint of `T`: what an entry records so that only the
/// type (and layout) that wrote it decodes it.
///
/// The structure of `T` is traced through its `Deserialize` impl with
/// serde-reflection (field names, types and order, enum variants, recursively),
/// then hashed with BLAKE3. (The codec has its own header byte.) Types that cannot be traced
/// (those whose `Deserialize` needs a self-describing format or validates its
/// input) fall back to their type name; for those, a changed layout is still
/// caught by the codec's strict decode in most cases but not all, so bump
/// `version` when changing them.
pub fn fingerprint<T: DeserializeOwned>() -> u64 {
    let mut hasher = blake3::Hasher::new();
    let mut tracer = serde_reflection::Tracer::new(serde_reflection::TracerConfig::default());
    let traced = tracer
        .trace_simple_type::<T>()
        .and_then(|(format, _)| Ok((format, tracer.registry()?)));
    match traced {
        Ok((format, registry)) => {
            hasher.update(b"traced\0");
            // The formats are plain data; bincode gives a canonical byte string.
            let mut canonical = Vec::new();
            if CodecKind::Bincode
                .encode(&(format, registry), &mut canonical)
                .is_ok()
            {
                hasher.update(&canonical);
            }
        }
        Err(error) => {
            tracing::debug!(
                value_type = std::any::type_name::<T>(),
                %error,
                "cannot trace the value type's schema; fingerprinting by type name"
            );
            hasher.update(b"named\0");
            hasher.update(std::any::type_name::<T>().as_bytes());
        }
    }
    let hash = hasher.finalize();
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// [`fingerprint`], memoized per type, for generic cached functions
/// whose value type differs between instantiations.
pub(crate) fn fingerprint_cached<T: DeserializeOwned + 'static>() -> u64 {
    static FINGERPRINTS: OnceLock<RwLock<HashMap<TypeId, u64>>> = OnceLock::new();
    let map = FINGERPRINTS.get_or_init(Default::default);
    let id = TypeId::of::<T>();
    if let Some(&fp) = map.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return fp;
    }
    let fp = fingerprint::<T>();
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, fp);
    fp
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct V1 {
        id: u64,
        name: String,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct V2 {
        id: u64,
        name: String,
        email: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    enum Shape {
        Circle(f64),
        Square { side: u32 },
    }

    #[test]
    fn fingerprints_tell_schemas_apart() {
        assert_eq!(fingerprint::<V1>(), fingerprint::<V1>());
        assert_ne!(fingerprint::<V1>(), fingerprint::<V2>());
        assert_ne!(fingerprint::<u32>(), fingerprint::<u64>());
        assert_ne!(fingerprint::<Shape>(), fingerprint::<V1>());
        assert_eq!(fingerprint_cached::<Shape>(), fingerprint::<Shape>());
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let mut out = Vec::new();
        write_header(
            &mut out,
            CodecKind::Bincode,
            false,
            42,
            Generation(9),
            Duration::from_secs(60),
        );
        let h = Header::parse(&out).unwrap();
        assert_eq!(
            (h.fingerprint, h.generation, h.ttl_secs, h.tombstone),
            (42, 9, 60, false)
        );
        assert!(!h.expired(now_ms()));
        assert!(h.expired(now_ms() + 61_000));
        assert!(Header::parse(b"garbage").is_err());
        assert!(Header::parse(&[0u8; 64]).is_err());
    }

    #[test]
    fn open_checks_generation_and_schema() {
        let c = CodecKind::Bincode;
        let fp = fingerprint::<V1>();
        let mut out = Vec::new();
        write_header(
            &mut out,
            c,
            false,
            fp,
            Generation(5),
            Duration::from_secs(60),
        );
        c.encode(
            &V1 {
                id: 1,
                name: "x".into(),
            },
            &mut out,
        )
        .unwrap();
        assert!(open::<V1>(&out, c, fp, Some(Generation(5))).is_ok());
        assert!(matches!(
            open::<V1>(&out, c, fp, Some(Generation(6))),
            Err(Rejection::Stale)
        ));
        assert!(matches!(
            open::<V1>(&out, c, fp, None),
            Err(Rejection::Stale)
        ));
        assert!(matches!(
            open::<V1>(&out, c, fp ^ 1, Some(Generation(5))),
            Err(Rejection::Foreign)
        ));
        assert!(matches!(
            open::<V1>(&out[..10], c, fp, Some(Generation(5))),
            Err(Rejection::Broken(_))
        ));
    }
}
