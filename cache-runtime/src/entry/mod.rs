//! The envelope every stored value travels in: a fixed header that says which
//! codec, schema and shard generation wrote the value, then its payload.
//!
//! ```text
//! offset  size  field
//! 0       1     magic 0xCA
//! 1       1     envelope version (2)
//! 2       1     codec id
//! 3       1     flags: bit 0 "kept past its TTL" (`stale_if_error`); the
//!               others reserved, 0
//! 4       8     schema fingerprint of the value type (LE)
//! 12      8     generation of the shard the value was computed under (LE)
//! 20      8     written at, Unix milliseconds (LE), the writer's clock
//! 28      4     TTL in seconds (LE)
//! 32      ..    payload
//! ```
//!
//! Nothing here is trusted on read: a header that does not parse, a codec or
//! fingerprint that is not the reader's, or a payload that does not decode
//! within its bounds ([`bounded`]) makes the entry a miss. Expiry is left to
//! the backend, whose clock is the only one all readers share: comparing the
//! writer's clock with a reader's would turn skew into misses. The exception
//! is an entry of a function with `stale_if_error`, which the backend keeps
//! past its TTL: it says so in its flags, and every reader (with the option
//! or not, such as an older build of the function) reads its expiry from the
//! header (decision 0020).

mod bounded;
pub(crate) mod codec;
mod fingerprint;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use self::codec::CodecKind;
#[cfg(any(test, feature = "testing"))]
pub(crate) use self::fingerprint::fingerprint;
pub(crate) use self::fingerprint::{TypeInfo, type_info};
use crate::backend::Generation;
use crate::error::{Error, Result};

/// Length of the fixed header.
pub(crate) const HEADER_LEN: usize = 32;
const MAGIC: u8 = 0xCA;
const VERSION: u8 = 2;
/// Flag: the backend keeps the entry past its TTL; the header's TTL decides.
const KEPT: u8 = 0x01;

/// What a header says about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) codec: u8,
    pub(crate) fingerprint: u64,
    pub(crate) generation: Generation,
    pub(crate) written_at_ms: u64,
    pub(crate) ttl_secs: u32,
    /// Kept past its TTL (`stale_if_error`).
    pub(crate) kept: bool,
}

impl Header {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(Error::Decode(format!(
                "entry of {} bytes is shorter than its header",
                bytes.len()
            )));
        };
        if header[0] != MAGIC || header[1] != VERSION {
            return Err(Error::Decode(format!(
                "not an entry of this format (magic {:#04x}, version {})",
                header[0], header[1]
            )));
        }
        if header[3] & !KEPT != 0 {
            return Err(Error::Decode(format!(
                "unknown entry flags {:#04x}",
                header[3]
            )));
        }
        let u64_at = |at: usize| {
            let mut le = [0; 8];
            le.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(le)
        };
        let mut ttl = [0; 4];
        ttl.copy_from_slice(&header[28..32]);
        Ok(Header {
            codec: header[2],
            fingerprint: u64_at(4),
            generation: Generation(u64_at(12)),
            written_at_ms: u64_at(20),
            ttl_secs: u32::from_le_bytes(ttl),
            kept: header[3] & KEPT != 0,
        })
    }

    /// Whether the entry's own TTL is over at `now_ms` (Unix ms, the
    /// reader's clock), counted from when it was written (the writer's
    /// clock). Hostile values saturate.
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        let ttl_ms = u64::from(self.ttl_secs).saturating_mul(1_000);
        self.written_at_ms.saturating_add(ttl_ms) <= now_ms
    }
}

/// Builds a value entry: header, then `value` encoded with `codec`.
///
/// `fingerprint` is the value type's [`fingerprint`]; `generation` the shard
/// generation the value was computed under; `kept` says the backend keeps
/// it past `ttl` (`stale_if_error`).
pub(crate) fn seal<T: Serialize + ?Sized>(
    codec: CodecKind,
    fingerprint: u64,
    generation: Generation,
    ttl: Duration,
    kept: bool,
    value: &T,
) -> Result<Bytes> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    let flags = if kept { KEPT } else { 0 };
    out.extend_from_slice(&[MAGIC, VERSION, codec.id(), flags]);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&generation.0.to_le_bytes());
    out.extend_from_slice(&now_ms().to_le_bytes());
    let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
    out.extend_from_slice(&ttl_secs.to_le_bytes());
    codec.encode(value, &mut out)?;
    Ok(Bytes::from(out))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a stored entry was not a hit.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// The shard moved to a new generation since it was written (or lost its
    /// generation): an ordinary miss.
    Stale,
    /// Another type, schema or codec wrote it: a miss, logged at debug level.
    Foreign,
    /// It cannot be read at all: a miss, logged as an error.
    Broken(Error),
    /// Kept past its TTL for `stale_if_error`, and past it: a miss, which a
    /// function with the option may return if its body fails.
    Expired,
}

/// Checks an entry read from the backend against what the reader expects
/// (its codec, its value type, and the shard's current generation) and
/// decodes its payload.
pub(crate) fn open<T: DeserializeOwned>(
    entry: &[u8],
    codec: CodecKind,
    fingerprint: u64,
    generation: Option<Generation>,
) -> std::result::Result<T, Rejection> {
    let header = Header::parse(entry).map_err(Rejection::Broken)?;
    if generation != Some(header.generation) {
        return Err(Rejection::Stale);
    }
    // After the schema check: an expired entry of another type is foreign,
    // never a stale value of this one.
    check_schema(&header, codec, fingerprint)?;
    if header.kept && header.expired(now_ms()) {
        return Err(Rejection::Expired);
    }
    decode(entry, codec)
}

/// [`open`] without the generation and expiry checks, for an entry handed
/// over in process by a flight's leader, whose freshness the flight
/// established, or a stale value. The schema check is the same: a follower
/// is never handed another type's value.
pub(crate) fn open_shared<T: DeserializeOwned>(
    entry: &[u8],
    codec: CodecKind,
    fingerprint: u64,
) -> std::result::Result<T, Rejection> {
    let header = Header::parse(entry).map_err(Rejection::Broken)?;
    check_schema(&header, codec, fingerprint)?;
    decode(entry, codec)
}

fn check_schema(
    header: &Header,
    codec: CodecKind,
    fingerprint: u64,
) -> std::result::Result<(), Rejection> {
    if header.codec != codec.id() || header.fingerprint != fingerprint {
        return Err(Rejection::Foreign);
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(
    entry: &[u8],
    codec: CodecKind,
) -> std::result::Result<T, Rejection> {
    codec
        .decode(&entry[HEADER_LEN..])
        .map_err(Rejection::Broken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        id: u64,
        name: String,
    }

    fn sealed(generation: u64) -> Bytes {
        let value = V1 {
            id: 1,
            name: "x".into(),
        };
        let fp = fingerprint::<V1>();
        seal(
            CodecKind::Bincode,
            fp,
            Generation(generation),
            Duration::from_secs(60),
            false,
            &value,
        )
        .unwrap()
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let entry = sealed(9);
        let h = Header::parse(&entry).unwrap();
        assert_eq!(
            (h.fingerprint, h.generation, h.ttl_secs),
            (fingerprint::<V1>(), Generation(9), 60)
        );
        assert!(h.written_at_ms.abs_diff(now_ms()) < 60_000);
        assert!(Header::parse(b"garbage").is_err());
        assert!(Header::parse(&[0u8; 64]).is_err());
        let mut flagged = entry.to_vec();
        flagged[3] = 0x80;
        assert!(Header::parse(&flagged).is_err());
    }

    #[test]
    fn open_checks_generation_and_schema() {
        let c = CodecKind::Bincode;
        let fp = fingerprint::<V1>();
        let entry = sealed(5);
        assert!(open::<V1>(&entry, c, fp, Some(Generation(5))).is_ok());
        assert!(matches!(
            open::<V1>(&entry, c, fp, Some(Generation(6))),
            Err(Rejection::Stale)
        ));
        assert!(matches!(
            open::<V1>(&entry, c, fp, None),
            Err(Rejection::Stale)
        ));
        assert!(matches!(
            open::<V1>(&entry, c, fp ^ 1, Some(Generation(5))),
            Err(Rejection::Foreign)
        ));
        assert!(matches!(
            open_shared::<V1>(&entry, c, fp ^ 1),
            Err(Rejection::Foreign)
        ));
        assert!(matches!(
            open::<V1>(&entry[..10], c, fp, Some(Generation(5))),
            Err(Rejection::Broken(_))
        ));
    }

    /// An entry written with another clock is still a hit: expiry is the
    /// backend's job (clock skew between hosts must not cost hits).
    #[test]
    fn the_writers_clock_does_not_decide_expiry() {
        let mut entry = sealed(5).to_vec();
        let long_ago = now_ms() - 24 * 3600 * 1000;
        entry[20..28].copy_from_slice(&long_ago.to_le_bytes());
        let fp = fingerprint::<V1>();
        assert!(open::<V1>(&entry, CodecKind::Bincode, fp, Some(Generation(5))).is_ok());
    }

    /// An entry kept past its TTL says so, and every reader reads its
    /// expiry from the header; hostile values saturate; other flags are
    /// refused.
    #[test]
    fn a_kept_entry_expires_by_its_header() {
        let fp = fingerprint::<V1>();
        let c = CodecKind::Bincode;
        let value = V1 {
            id: 1,
            name: "x".into(),
        };
        let kept = |ttl| seal(c, fp, Generation(5), ttl, true, &value).unwrap();
        let fresh = kept(Duration::from_secs(60));
        let h = Header::parse(&fresh).unwrap();
        assert!(
            h.kept && !h.expired(h.written_at_ms + 59_999) && h.expired(h.written_at_ms + 60_000)
        );
        assert!(open::<V1>(&fresh, c, fp, Some(Generation(5))).is_ok());
        let mut old = fresh.to_vec();
        old[20..28].copy_from_slice(&(now_ms() - 61_000).to_le_bytes());
        assert!(matches!(
            open::<V1>(&old, c, fp, Some(Generation(5))),
            Err(Rejection::Expired)
        ));
        assert!(matches!(
            open::<V1>(&old, c, fp ^ 1, Some(Generation(5))),
            Err(Rejection::Foreign)
        ));
        assert!(matches!(
            open::<V1>(&old, c, fp, Some(Generation(6))),
            Err(Rejection::Stale)
        ));
        assert!(
            open_shared::<V1>(&old, c, fp).is_ok(),
            "a stale value still decodes"
        );
        let mut hostile = old.clone();
        hostile[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        hostile[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!Header::parse(&hostile).unwrap().expired(u64::MAX - 1));
        let mut flagged = fresh.to_vec();
        flagged[3] = 0x02;
        assert!(Header::parse(&flagged).is_err());
    }
}
