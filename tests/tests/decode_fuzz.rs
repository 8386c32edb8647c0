//! Decoder fuzzing: random and mutated payloads behind valid headers, for
//! several value types, through every codec, read the way a hit reads an
//! entry. Each case must end in a value or a miss: no panic, no abort, and no
//! more allocation than a small multiple of the payload's length (counted by
//! a counting allocator around this binary's).
//!
//! ```sh
//! cargo test -p cache-tests --test decode_fuzz                         # CI: 60,000 cases
//! CACHE_FUZZ_CASES=1000000 cargo test --release -p cache-tests --test decode_fuzz -- --nocapture
//! CACHE_FUZZ_SEED=12345 cargo test -p cache-tests --test decode_fuzz  # replay a run
//! ```
//!
//! One test, so that nothing else allocates in the process while a case is
//! measured (the counts are the whole process's).

use std::alloc::System;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::time::Duration;

use bytes::Bytes;
use cache_runtime::testing::{self, HEADER_LEN};
use cache_runtime::{CodecKind, Generation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Created { id: u64 },
    Renamed(String, String),
    Tagged(Vec<Option<String>>),
    Deleted,
}

/// A recursive type: hostile bytes can nest it as deep as they are long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf(u8),
    Node(Vec<Tree>),
}

/// Values of each fuzzed type, to encode as seeds.
trait Sample: Serialize + DeserializeOwned + Debug + PartialEq + 'static {
    fn sample(rng: &mut fastrand::Rng) -> Self;
}

fn text(rng: &mut fastrand::Rng) -> String {
    let len = rng.usize(0..24);
    (0..len).map(|_| rng.char('\0'..'\u{2FF}')).collect()
}

impl Sample for String {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        text(rng)
    }
}

impl Sample for Vec<String> {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        (0..rng.usize(0..6)).map(|_| text(rng)).collect()
    }
}

impl Sample for User {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        User {
            id: rng.u64(..),
            name: text(rng),
            tags: Vec::<String>::sample(rng),
            score: rng.bool().then(|| rng.f64()),
        }
    }
}

impl Sample for BTreeMap<String, Vec<u32>> {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        (0..rng.usize(0..5))
            .map(|_| {
                (
                    text(rng),
                    (0..rng.usize(0..4)).map(|_| rng.u32(..)).collect(),
                )
            })
            .collect()
    }
}

impl Sample for HashMap<u64, String> {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        (0..rng.usize(0..5))
            .map(|_| (rng.u64(..), text(rng)))
            .collect()
    }
}

impl Sample for Event {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        match rng.u8(0..4) {
            0 => Event::Created { id: rng.u64(..) },
            1 => Event::Renamed(text(rng), text(rng)),
            2 => Event::Tagged(
                (0..rng.usize(0..4))
                    .map(|_| rng.bool().then(|| text(rng)))
                    .collect(),
            ),
            _ => Event::Deleted,
        }
    }
}

impl Sample for Option<Option<Option<Vec<u8>>>> {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        match rng.u8(0..4) {
            0 => None,
            1 => Some(None),
            2 => Some(Some(None)),
            _ => Some(Some(Some(
                (0..rng.usize(0..16)).map(|_| rng.u8(..)).collect(),
            ))),
        }
    }
}

impl Sample for Tree {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        fn grow(rng: &mut fastrand::Rng, depth: u32) -> Tree {
            if depth > 4 || rng.u8(0..3) == 0 {
                Tree::Leaf(rng.u8(..))
            } else {
                Tree::Node((0..rng.usize(0..4)).map(|_| grow(rng, depth + 1)).collect())
            }
        }
        grow(rng, 0)
    }
}

impl Sample for (u8, char, bool, i128) {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        (rng.u8(..), rng.char(..), rng.bool(), rng.i128(..))
    }
}

/// Elements that encode to nothing: a declared length is all there is.
impl Sample for Vec<()> {
    fn sample(rng: &mut fastrand::Rng) -> Self {
        vec![(); rng.usize(0..8)]
    }
}

/// What one type's run saw.
#[derive(Debug, Default)]
struct Seen {
    cases: u64,
    decoded: u64,
    /// The largest allocation, in bytes, per byte of payload (plus 64).
    worst_ratio: f64,
}

/// Bytes a case may allocate in all: 64 per payload byte, and 16 KiB.
fn allowance(payload: usize) -> usize {
    64 * (payload + 64) + 16 * 1024
}

/// One payload: a seed's encoding, mutated, or noise.
fn payload(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = match rng.u8(0..10) {
        0 => (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect(),
        _ => seeds[rng.usize(0..seeds.len())].clone(),
    };
    for _ in 0..rng.usize(0..4) {
        mutate(rng, &mut bytes, seeds);
    }
    bytes
}

/// Length prefixes the codecs read: bincode's varint (250 and below in one
/// byte; 251, 252, 253 then 2, 4, 8 bytes) and postcard's LEB128.
const HUGE_LENGTHS: &[&[u8]] = &[
    &[253, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
    &[253, 0, 0, 0, 0, 0, 1, 0, 0],
    &[252, 0xFF, 0xFF, 0xFF, 0x7F],
    &[252, 0, 0, 0, 1],
    &[251, 0xFF, 0xFF],
    &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
    &[0x80, 0x80, 0x80, 0x80, 0x04],
    &[250],
];

fn mutate(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let at = |rng: &mut fastrand::Rng, len: usize| rng.usize(0..=len);
    match rng.u8(0..8) {
        0 if !bytes.is_empty() => {
            let i = rng.usize(0..bytes.len());
            bytes[i] ^= 1 << rng.u8(0..8);
        }
        1 if !bytes.is_empty() => {
            let i = rng.usize(0..bytes.len());
            bytes[i] = rng.u8(..);
        }
        2 => {
            let i = at(rng, bytes.len());
            let huge = HUGE_LENGTHS[rng.usize(0..HUGE_LENGTHS.len())];
            let end = (i + huge.len()).min(bytes.len());
            bytes.splice(i..end, huge.iter().copied());
        }
        3 => bytes.truncate(at(rng, bytes.len())),
        4 => {
            let i = at(rng, bytes.len());
            bytes.insert(i, rng.u8(..));
        }
        5 if !bytes.is_empty() => {
            let i = rng.usize(0..bytes.len());
            bytes.remove(i);
        }
        6 => {
            let other = &seeds[rng.usize(0..seeds.len())];
            let i = at(rng, bytes.len());
            bytes.splice(i..i, other.iter().copied());
        }
        _ => bytes.extend((0..rng.usize(0..8)).map(|_| rng.u8(..))),
    }
}

/// Fuzzes one type through one codec for `cases` cases.
fn fuzz<T: Sample>(codec: CodecKind, cases: u64, rng: &mut fastrand::Rng) -> Seen {
    let generation = Generation(7);
    let ttl = Duration::from_secs(60);
    let mut seeds = Vec::new();
    let mut header = Vec::new();
    for _ in 0..32 {
        let value = T::sample(rng);
        let entry = testing::seal(codec, generation, ttl, &value).expect("seals");
        header = entry[..HEADER_LEN].to_vec();
        // A seed decodes back into itself: the fuzzer starts from valid ground.
        let back: T = testing::open(&entry, codec, generation).expect("a seed decodes");
        assert_eq!(back, value);
        seeds.push(entry[HEADER_LEN..].to_vec());
    }
    let mut seen = Seen::default();
    let mut entry = Vec::new();
    for _ in 0..cases {
        let payload = payload(rng, &seeds);
        entry.clear();
        entry.extend_from_slice(&header);
        entry.extend_from_slice(&payload);
        let entry = Bytes::copy_from_slice(&entry);
        let region = Region::new(ALLOCATOR);
        let result = std::panic::catch_unwind(|| testing::open::<T>(&entry, codec, generation));
        let change = region.change();
        let Ok(result) = result else {
            panic!(
                "decoding panicked: {} through {}, payload {payload:02x?}",
                std::any::type_name::<T>(),
                codec.name()
            );
        };
        let allocated = change.bytes_allocated + change.bytes_reallocated.max(0) as usize;
        assert!(
            allocated <= allowance(payload.len()),
            "decoding {} through {} allocated {allocated} bytes for a payload of {}: {payload:02x?}",
            std::any::type_name::<T>(),
            codec.name(),
            payload.len()
        );
        seen.cases += 1;
        seen.decoded += u64::from(result.is_ok());
        let ratio = allocated as f64 / (payload.len() + 64) as f64;
        seen.worst_ratio = seen.worst_ratio.max(ratio);
        drop(result);
    }
    seen
}

#[test]
fn hostile_payloads_are_misses_within_bounded_memory() {
    the_inputs_that_aborted_or_hung_are_misses();
    let per_run: u64 = std::env::var("CACHE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60_000)
        / 20;
    let seed = std::env::var("CACHE_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (CACHE_FUZZ_SEED={seed} replays this run)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut total = 0;
    for codec in [CodecKind::Bincode, CodecKind::Postcard] {
        let runs: [(&str, Seen); 10] = [
            ("String", fuzz::<String>(codec, per_run, &mut rng)),
            ("Vec<String>", fuzz::<Vec<String>>(codec, per_run, &mut rng)),
            ("User", fuzz::<User>(codec, per_run, &mut rng)),
            (
                "BTreeMap",
                fuzz::<BTreeMap<String, Vec<u32>>>(codec, per_run, &mut rng),
            ),
            (
                "HashMap",
                fuzz::<HashMap<u64, String>>(codec, per_run, &mut rng),
            ),
            ("Event", fuzz::<Event>(codec, per_run, &mut rng)),
            (
                "Option^3",
                fuzz::<Option<Option<Option<Vec<u8>>>>>(codec, per_run, &mut rng),
            ),
            ("Tree", fuzz::<Tree>(codec, per_run, &mut rng)),
            (
                "tuple",
                fuzz::<(u8, char, bool, i128)>(codec, per_run, &mut rng),
            ),
            ("Vec<()>", fuzz::<Vec<()>>(codec, per_run, &mut rng)),
        ];
        for (name, seen) in runs {
            println!(
                "{:8} {name:12} {:>8} cases, {:>8} decoded, worst {:.1} bytes allocated per payload byte",
                codec.name(),
                seen.cases,
                seen.decoded,
                seen.worst_ratio
            );
            assert!(
                seen.decoded > 0,
                "{name}: nothing decoded, the mutations are too blunt"
            );
            total += seen.cases;
        }
    }
    println!("{total} cases, no panic, no abort, allocation within 64 x (payload + 64) + 16 KiB");
}

/// The bounds themselves, on the inputs that broke the decoders before.
fn the_inputs_that_aborted_or_hung_are_misses() {
    let codec = CodecKind::Bincode;
    let generation = Generation(7);
    let ttl = Duration::from_secs(60);
    let header =
        |value: &User| testing::seal(codec, generation, ttl, value).unwrap()[..HEADER_LEN].to_vec();
    let user = User::sample(&mut fastrand::Rng::with_seed(1));
    // id, then a name declared 2^40 bytes long: bincode allocated that much.
    let mut entry = header(&user);
    entry.extend_from_slice(&[7, 253, 0, 0, 0, 0, 0, 1, 0, 0]);
    let region = Region::new(ALLOCATOR);
    assert!(testing::open::<User>(&entry, codec, generation).is_err());
    assert!(region.change().bytes_allocated < 64 * 1024);

    // A hundred million zero-sized elements declared in five bytes.
    let empty: Vec<()> = Vec::new();
    let mut entry = testing::seal(codec, generation, ttl, &empty).unwrap()[..HEADER_LEN].to_vec();
    entry.extend_from_slice(&[252, 0, 0xE1, 0xF5, 0x05]);
    assert!(testing::open::<Vec<()>>(&entry, codec, generation).is_err());

    // A tree nested a hundred thousand levels deep: a stack overflow before.
    let leaf = Tree::Leaf(0);
    let mut entry = testing::seal(codec, generation, ttl, &leaf).unwrap()[..HEADER_LEN].to_vec();
    for _ in 0..100_000 {
        entry.extend_from_slice(&[1, 1]); // Node, one child
    }
    entry.extend_from_slice(&[0, 0]);
    let error = testing::open::<Tree>(&entry, codec, generation).unwrap_err();
    assert!(error.contains("deeper than 128"), "{error}");

    // Found in review: sixty nested collections, each declaring a million
    // elements, made each level preallocate on its own (1,400 times the
    // payload). The levels now share one allowance.
    for padding in [0, 40_000] {
        let mut entry =
            testing::seal(codec, generation, ttl, &leaf).unwrap()[..HEADER_LEN].to_vec();
        for _ in 0..60 {
            entry.extend_from_slice(&[1, 252]);
            entry.extend_from_slice(&1_000_000u32.to_le_bytes());
        }
        entry.push(9); // an unknown variant: the decode fails at the bottom
        entry.extend(std::iter::repeat_n(0u8, padding));
        let payload = entry.len() - HEADER_LEN;
        let region = Region::new(ALLOCATOR);
        assert!(testing::open::<Tree>(&entry, codec, generation).is_err());
        let allocated = region.change().bytes_allocated;
        assert!(
            allocated <= allowance(payload),
            "nested collections allocated {allocated} bytes for {payload}"
        );
    }

    // Found in review: a type with large frames overflowed a 2 MiB stack in
    // a debug build well within the depth limit. The stack grows instead.
    let deep = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let mut value = Wide::default();
            for _ in 0..60 {
                value = Wide {
                    kids: vec![value],
                    ..Wide::default()
                };
            }
            let entry = testing::seal(codec, generation, ttl, &value).unwrap();
            testing::open::<Wide>(&entry, codec, generation).map(|_| ())
        })
        .unwrap()
        .join()
        .expect("decoding a deep value of large frames overflowed the stack");
    assert!(deep.is_ok(), "{deep:?}");
}

/// A recursive type with large frames (2 KiB of arrays per level).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Wide {
    a: [u64; 32],
    b: [u64; 32],
    c: [u64; 32],
    d: [u64; 32],
    e: [u64; 32],
    f: [u64; 32],
    g: [u64; 32],
    h: [u64; 32],
    kids: Vec<Wide>,
}
