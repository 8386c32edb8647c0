//! Decoding bounded by the bytes actually present.
//!
//! A cache entry's payload comes from a shared backend: another program,
//! another release or an attacker who can reach Redis may have written it. The
//! codecs check every length against the remaining input before they *read*,
//! but bincode 2 allocates an owned `String` or `Vec<u8>` of the declared
//! length before it reads it, so ten bytes declaring a terabyte string abort
//! the process (an allocation failure is not a panic). And no format can stop
//! a hostile sequence length from making serde preallocate up to its own cap,
//! a sequence of zero-sized elements from looping for as long as its declared
//! length, or a deeply nested value from overflowing the stack.
//!
//! [`Bounded`] wraps a format's `Deserializer` and every deserializer, visitor
//! and access it hands out, and enforces, for a payload of `n` bytes:
//!
//! - owned strings and byte buffers are read as borrowed slices first, so
//!   nothing is allocated for bytes that are not there;
//! - at most `n + SLACK` elements in all the sequences and maps whose length
//!   the input declares (not the fields of structs, tuples and arrays, whose
//!   length the type fixes). A collection's size hint *reserves* its share of
//!   that allowance until the collection ends, so the preallocations of all
//!   the collections open at once (one per level of a nested value) add up to
//!   at most as many elements as the payload has bytes;
//! - at most [`MAX_DEPTH`] nested values, on a stack that is grown (with
//!   `stacker`) when a deep value runs low on it, so that no nesting within
//!   the limit overflows a thread's stack, whatever the type's frame sizes.
//!
//! Well-formed values of ordinary types never reach these bounds: every
//! element of a collection takes at least one byte, except elements that
//! encode to nothing (`()`, unit structs), whose long sequences are refused.
//! See `docs/decisions/0008-bounded-decoding.md`.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How deeply values may nest: enough for any data model.
pub(crate) const MAX_DEPTH: u32 = 128;

/// Elements allowed beyond one per payload byte.
const SLACK: usize = 64;

/// Every this many levels, the decoder checks that the stack has this much
/// left, and continues on a new segment of this size if not.
const STACK_CHECK_EVERY: u32 = 8;
const STACK_RED_ZONE: usize = 256 * 1024;
const STACK_SEGMENT: usize = 2 * 1024 * 1024;

/// What is left of a payload's allowance, shared by every wrapper of one decode.
#[derive(Debug)]
pub(crate) struct Budget {
    elements: Cell<usize>,
    depth: Cell<u32>,
}

impl Budget {
    /// The allowance of a payload of `len` bytes.
    pub(crate) fn for_payload(len: usize) -> Budget {
        Budget {
            elements: Cell::new(len.saturating_add(SLACK)),
            depth: Cell::new(0),
        }
    }

    fn take_element<E: de::Error>(&self) -> Result<(), E> {
        match self.elements.get().checked_sub(1) {
            Some(left) => {
                self.elements.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "more collection elements than the payload has bytes",
            )),
        }
    }

    /// Reserves up to `wanted` elements for one collection.
    fn reserve(&self, wanted: usize) -> usize {
        let reserved = wanted.min(self.elements.get());
        self.elements.set(self.elements.get() - reserved);
        reserved
    }

    fn give_back(&self, reserved: usize) {
        self.elements.set(self.elements.get() + reserved);
    }

    /// Enters one level of nesting; the guard leaves it.
    fn enter<E: de::Error>(&self) -> Result<Level<'_>, E> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "the value nests deeper than {MAX_DEPTH} levels"
            )));
        }
        self.depth.set(depth);
        Ok(Level(self))
    }
}

struct Level<'b>(&'b Budget);

impl Level<'_> {
    /// Runs `decode` one level down, on a fresh stack segment if this level
    /// is deep and the stack runs low.
    fn descend<R>(&self, decode: impl FnOnce() -> R) -> R {
        if self.0.depth.get().is_multiple_of(STACK_CHECK_EVERY) {
            stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, decode)
        } else {
            decode()
        }
    }
}

impl Drop for Level<'_> {
    fn drop(&mut self) {
        self.0.depth.set(self.0.depth.get() - 1);
    }
}

/// A seed that deserializes `T` through [`Bounded`]: what a codec hands to
/// its format, so that the whole value is decoded within `budget`.
pub(crate) struct BoundedSeed<'b, T> {
    pub(crate) budget: &'b Budget,
    pub(crate) marker: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for BoundedSeed<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize(Bounded {
            inner: deserializer,
            budget: self.budget,
        })
    }
}

/// A `Deserializer` that keeps its inner one within a [`Budget`].
pub(crate) struct Bounded<'b, D> {
    pub(crate) inner: D,
    pub(crate) budget: &'b Budget,
}

/// Forwards `deserialize_*` methods, entering a level and wrapping the
/// visitor. `counted` says the input decides the length of what the visitor
/// may be handed (a sequence or map); `fixed` that the type does (a tuple,
/// a struct), which takes nothing from the element allowance.
macro_rules! forward {
    ($($kind:ident $method:ident $(($($arg:ident: $ty:ty),*))?;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($($arg: $ty,)*)? visitor: V) -> Result<V::Value, D::Error> {
            let level = self.budget.enter()?;
            let visitor = Wrap { inner: visitor, budget: self.budget, counted: forward!(@$kind) };
            level.descend(|| self.inner.$method($($($arg,)*)? visitor))
        }
    )*};
    (@counted) => { true };
    (@fixed) => { false };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, D> {
    type Error = D::Error;

    forward! {
        counted deserialize_any;
        counted deserialize_bool;
        counted deserialize_i8;
        counted deserialize_i16;
        counted deserialize_i32;
        counted deserialize_i64;
        counted deserialize_i128;
        counted deserialize_u8;
        counted deserialize_u16;
        counted deserialize_u32;
        counted deserialize_u64;
        counted deserialize_u128;
        counted deserialize_f32;
        counted deserialize_f64;
        counted deserialize_char;
        counted deserialize_str;
        counted deserialize_bytes;
        counted deserialize_option;
        counted deserialize_unit;
        counted deserialize_unit_struct(name: &'static str);
        counted deserialize_newtype_struct(name: &'static str);
        counted deserialize_seq;
        fixed deserialize_tuple(len: usize);
        fixed deserialize_tuple_struct(name: &'static str, len: usize);
        counted deserialize_map;
        fixed deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        counted deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        counted deserialize_identifier;
        counted deserialize_ignored_any;
    }

    // Owned strings and buffers are asked for as borrowed ones: the format
    // then checks the length against the input before anything is copied,
    // and the visitor copies only bytes that are there.
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_bytes(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor (or access) whose compound inputs (sequences, maps, enums,
/// nested values) are wrapped before the inner one sees them. `counted`: the
/// elements of a sequence or map this visitor is handed take from the
/// allowance (their number comes from the input).
struct Wrap<'b, V> {
    inner: V,
    budget: &'b Budget,
    counted: bool,
}

/// A sequence or map being read: its access, and the share of the element
/// allowance its size hint reserved (given back when it ends).
struct Collection<'b, A> {
    inner: A,
    budget: &'b Budget,
    counted: bool,
    /// `None` until the size hint is asked for.
    reserved: Cell<Option<usize>>,
}

impl<'b, A> Collection<'b, A> {
    fn new(inner: A, budget: &'b Budget, counted: bool) -> Self {
        Collection {
            inner,
            budget,
            counted,
            reserved: Cell::new(None),
        }
    }

    fn seed<S>(&self, inner: S) -> Seed<'b, S> {
        Seed {
            inner,
            budget: self.budget,
        }
    }

    /// The size hint, capped by (and reserved from) the allowance.
    fn hint(&self, hint: Option<usize>) -> Option<usize> {
        if !self.counted {
            return hint;
        }
        let hint = hint?;
        Some(match self.reserved.get() {
            Some(reserved) => reserved,
            None => {
                let reserved = self.budget.reserve(hint);
                self.reserved.set(Some(reserved));
                reserved
            }
        })
    }

    /// Counts one element read: from the reservation, else the allowance.
    fn take<E: de::Error>(&self) -> Result<(), E> {
        if !self.counted {
            return Ok(());
        }
        match self.reserved.get() {
            Some(reserved) if reserved > 0 => {
                self.reserved.set(Some(reserved - 1));
                Ok(())
            }
            _ => self.budget.take_element(),
        }
    }
}

impl<A> Drop for Collection<'_, A> {
    fn drop(&mut self) {
        if let Some(reserved) = self.reserved.get() {
            self.budget.give_back(reserved);
        }
    }
}

/// Forwards `visit_*` methods of plain values unchanged.
macro_rules! plain {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    plain! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Bounded {
            inner: d,
            budget: self.budget,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Bounded {
            inner: d,
            budget: self.budget,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_seq(Collection::new(seq, self.budget, self.counted))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_map(Collection::new(map, self.budget, self.counted))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Wrap {
            inner: data,
            budget: self.budget,
            counted: false,
        })
    }
}

/// A seed whose deserializer is wrapped.
struct Seed<'b, S> {
    inner: S,
    budget: &'b Budget,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Bounded {
            inner: d,
            budget: self.budget,
        })
    }
}

impl<'b, A> Wrap<'b, A> {
    fn seed<S>(&self, inner: S) -> Seed<'b, S> {
        Seed {
            inner,
            budget: self.budget,
        }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Collection<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let element = self.inner.next_element_seed(self.seed(seed))?;
        if element.is_some() {
            self.take()?;
        }
        Ok(element)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(self.inner.size_hint())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Collection<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = self.inner.next_key_seed(self.seed(seed))?;
        if key.is_some() {
            self.take()?;
        }
        Ok(key)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(self.seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(self.inner.size_hint())
    }
}

impl<'b, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<'b, A> {
    type Error = A::Error;
    type Variant = Wrap<'b, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let seed = self.seed(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Wrap {
                inner: variant,
                budget: self.budget,
                counted: false,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let level = self.budget.enter()?;
        let visitor = Wrap {
            inner: visitor,
            budget: self.budget,
            counted: false,
        };
        level.descend(|| self.inner.tuple_variant(len, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let level = self.budget.enter()?;
        let visitor = Wrap {
            inner: visitor,
            budget: self.budget,
            counted: false,
        };
        level.descend(|| self.inner.struct_variant(fields, visitor))
    }
}
