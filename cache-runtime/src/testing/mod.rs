//! Support for tests of code built on the cache and for authors of backends
//! (feature `testing`): the backend conformance suite, and the envelope as the
//! cache writes and reads it, for tests that plant entries of their own.
//! Nothing here belongs in production code paths.

pub mod conformance;

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Generation;
use crate::entry::{self, CodecKind, Rejection};
use crate::error::Result;

/// The schema fingerprint an entry of `T` records: a hash of `T`'s structure
/// as its `Deserialize` impl describes it (see `docs/decisions/0005-schema-fingerprint.md`).
pub fn fingerprint<T: DeserializeOwned>() -> u64 {
    entry::fingerprint::<T>()
}

/// The length of an entry's header; the payload follows it.
pub const HEADER_LEN: usize = entry::HEADER_LEN;

/// An entry of `value` as the cache stores one, computed under `generation`.
pub fn seal<T: Serialize + DeserializeOwned + 'static>(
    codec: CodecKind,
    generation: Generation,
    ttl: Duration,
    value: &T,
) -> Result<Bytes> {
    entry::seal(
        codec,
        entry::type_info::<T>().fingerprint,
        generation,
        ttl,
        false,
        value,
    )
}

/// Reads an entry as a hit does, with every check a hit makes: header,
/// generation, codec, schema, and decoding bounded by the bytes present.
/// `Err` says why the entry would be a miss.
pub fn open<T: DeserializeOwned + 'static>(
    bytes: &[u8],
    codec: CodecKind,
    generation: Generation,
) -> std::result::Result<T, String> {
    let fingerprint = entry::type_info::<T>().fingerprint;
    entry::open(bytes, codec, fingerprint, Some(generation)).map_err(|rejection| match rejection {
        Rejection::Stale => "stale: another generation".to_owned(),
        Rejection::Foreign => "foreign: another codec or schema".to_owned(),
        Rejection::Broken(error) => error.to_string(),
        Rejection::Expired => "expired: kept past its TTL, which is over".to_owned(),
    })
}
