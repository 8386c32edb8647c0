//! Codecs turn values into the payload of a cache entry and back.
//!
//! The codec is chosen once per [`Cache`](crate::Cache) and recorded in every
//! entry's header, so an entry written by one codec is never handed to another.
//! See `docs/decisions/0001-codec.md` for why bincode is the default and postcard
//! the alternative.

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

use super::bounded::{BoundedSeed, Budget};
use crate::error::{Error, Result};

/// A serialization format for cache payloads.
///
/// Implemented by [`Bincode`] and, with the `postcard` feature, [`Postcard`].
/// The methods are generic over the value type, so a `Cache` selects its codec
/// through [`CodecKind`] rather than holding a trait object.
pub trait Codec {
    /// The byte stored in each entry header. Unique per codec, never reused.
    const ID: u8;
    /// A short name for logs and errors.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()>;

    /// Decodes a value that must span all of `bytes`; trailing bytes are an error,
    /// because they mean the payload was written for another type.
    ///
    /// `bytes` are untrusted: decoding allocates at most in proportion to
    /// their length, and refuses values nested deeper than 128 levels (see
    /// `docs/decisions/0008-bounded-decoding.md`).
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T>;
}

/// bincode 2 through its serde API, with the standard configuration
/// (little endian, variable-length integers). The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl Codec for Bincode {
    const ID: u8 = 1;
    const NAME: &'static str = "bincode";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
        bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
            .map(drop)
            .map_err(|e| encode_error(Self::NAME, e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        let budget = Budget::for_payload(bytes.len());
        let seed = BoundedSeed::<T> {
            budget: &budget,
            marker: PhantomData,
        };
        let (value, read) =
            bincode::serde::seed_decode_from_slice(seed, bytes, bincode::config::standard())
                .map_err(|e| Error::Decode(format!("bincode: {e}")))?;
        if read != bytes.len() {
            return Err(trailing_bytes(bytes.len() - read));
        }
        Ok(value)
    }
}

/// postcard 1 (compact, stable wire format). Enabled by the `postcard` feature.
#[cfg(feature = "postcard")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

#[cfg(feature = "postcard")]
impl Codec for Postcard {
    const ID: u8 = 2;
    const NAME: &'static str = "postcard";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
        let encoded = postcard::to_extend(value, std::mem::take(out))
            .map_err(|e| encode_error(Self::NAME, e))?;
        *out = encoded;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        use serde::de::DeserializeSeed as _;
        let error = |e: postcard::Error| Error::Decode(format!("postcard: {e}"));
        let budget = Budget::for_payload(bytes.len());
        let seed = BoundedSeed::<T> {
            budget: &budget,
            marker: PhantomData,
        };
        let mut deserializer = postcard::Deserializer::from_bytes(bytes);
        let value = seed.deserialize(&mut deserializer).map_err(error)?;
        let rest = deserializer.finalize().map_err(error)?;
        if !rest.is_empty() {
            return Err(trailing_bytes(rest.len()));
        }
        Ok(value)
    }
}

/// Which codec a [`Cache`](crate::Cache) uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecKind {
    /// [`Bincode`], the default.
    #[default]
    Bincode,
    /// [`Postcard`].
    #[cfg(feature = "postcard")]
    Postcard,
}

impl CodecKind {
    /// The header byte of this codec.
    pub fn id(self) -> u8 {
        match self {
            CodecKind::Bincode => Bincode::ID,
            #[cfg(feature = "postcard")]
            CodecKind::Postcard => Postcard::ID,
        }
    }

    /// The codec's name.
    pub fn name(self) -> &'static str {
        match self {
            CodecKind::Bincode => Bincode::NAME,
            #[cfg(feature = "postcard")]
            CodecKind::Postcard => Postcard::NAME,
        }
    }

    pub(crate) fn encode<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        match self {
            CodecKind::Bincode => Bincode::encode(value, out),
            #[cfg(feature = "postcard")]
            CodecKind::Postcard => Postcard::encode(value, out),
        }
    }

    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        match self {
            CodecKind::Bincode => Bincode::decode(bytes),
            #[cfg(feature = "postcard")]
            CodecKind::Postcard => Postcard::decode(bytes),
        }
    }
}

fn encode_error(codec: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Encode {
        what: "value",
        codec,
        message: e.to_string(),
    }
}

fn trailing_bytes(n: usize) -> Error {
    Error::Decode(format!("{n} trailing bytes after the value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
    }

    fn round_trip(kind: CodecKind) {
        let user = User {
            id: 7,
            name: "ada".into(),
            tags: vec!["a".into(), "b:c".into()],
        };
        let mut out = vec![0xFF]; // encode appends
        kind.encode(&user, &mut out).unwrap();
        assert_eq!(out[0], 0xFF);
        assert_eq!(kind.decode::<User>(&out[1..]).unwrap(), user);
    }

    #[test]
    fn bincode_round_trips() {
        round_trip(CodecKind::Bincode);
    }

    #[cfg(feature = "postcard")]
    #[test]
    fn postcard_round_trips() {
        round_trip(CodecKind::Postcard);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut out = Vec::new();
        CodecKind::Bincode.encode(&(1u8, 2u8), &mut out).unwrap();
        let err = CodecKind::Bincode.decode::<u8>(&out).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }
}
