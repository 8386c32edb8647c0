//! Schema fingerprints: what an entry records so that only the type (and
//! layout) that wrote it decodes it, and what the runtime learns once per
//! value type.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{OnceLock, RwLock};

use serde::de::DeserializeOwned;

use super::codec::CodecKind;

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
pub(crate) fn fingerprint<T: DeserializeOwned>() -> u64 {
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

/// What the runtime knows about one value type, found out once per process.
#[derive(Debug)]
pub(crate) struct TypeInfo {
    /// The type's [`fingerprint`].
    pub(crate) fingerprint: u64,
    /// Per codec id: whether a value survives encode-then-decode
    /// (`UNKNOWN` until the first store tries).
    round_trip: [AtomicU8; 4],
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

impl TypeInfo {
    /// Whether values of this type round-trip through `codec`; `None` until
    /// the first store found out.
    pub(crate) fn round_trips(&self, codec: CodecKind) -> Option<bool> {
        match self.slot(codec).load(Relaxed) {
            YES => Some(true),
            NO => Some(false),
            _ => None,
        }
    }

    /// Records what a store found; true for the first caller to record it
    /// (the one that reports it).
    pub(crate) fn record_round_trip(&self, codec: CodecKind, round_trips: bool) -> bool {
        let value = if round_trips { YES } else { NO };
        self.slot(codec)
            .compare_exchange(UNKNOWN, value, Relaxed, Relaxed)
            .is_ok()
    }

    fn slot(&self, codec: CodecKind) -> &AtomicU8 {
        &self.round_trip[usize::from(codec.id()) % 4]
    }
}

/// The [`TypeInfo`] of `T`, computed on first use and kept for the life of
/// the process (one per value type the program caches: bounded by its code).
pub(crate) fn type_info<T: DeserializeOwned + 'static>() -> &'static TypeInfo {
    static TYPES: OnceLock<RwLock<HashMap<TypeId, &'static TypeInfo>>> = OnceLock::new();
    let map = TYPES.get_or_init(Default::default);
    let id = TypeId::of::<T>();
    if let Some(&info) = map.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return info;
    }
    // Traced outside the lock: tracing runs the type's Deserialize impl.
    let fingerprint = fingerprint::<T>();
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    map.entry(id).or_insert_with(|| {
        Box::leak(Box::new(TypeInfo {
            fingerprint,
            round_trip: Default::default(),
        }))
    })
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
        assert_eq!(type_info::<Shape>().fingerprint, fingerprint::<Shape>());
        assert!(std::ptr::eq(type_info::<Shape>(), type_info::<Shape>()));
    }

    #[test]
    fn round_trips_are_recorded_once() {
        let info = type_info::<V2>();
        assert_eq!(info.round_trips(CodecKind::Bincode), None);
        assert!(info.record_round_trip(CodecKind::Bincode, false));
        assert!(!info.record_round_trip(CodecKind::Bincode, true));
        assert_eq!(info.round_trips(CodecKind::Bincode), Some(false));
    }
}
