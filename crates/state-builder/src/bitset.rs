//! Segment bitsets (docs/resolver.md, "Segment bitsets and bloom filters"): which units of a segment are allocated.
//!
//! Bits are LSB-first within each byte and are shipped gzipped; the gzip stream is written
//! here with a plain 10-byte header because the resolver rejects optional header fields.

use std::ops::Range;

use confidence_resolver::proto::confidence::flags::admin::v1::resolver_state::{packed_bitset, PackedBitset};

use crate::hash::{bitset_position, BITSET_BITS};
use crate::rng::Rng;

/// How a segment's allocation is shipped in `ResolverState.bitsets`.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Bitset {
    /// No entry at all: every unit is allocated.
    #[default]
    Absent,
    /// An explicit `full_bitset = true` entry: every unit is allocated.
    Full,
    /// Raw bit bytes (LSB-first), gzipped when the state is built.
    Bits(Vec<u8>),
    /// Any oneof value verbatim, e.g. `FullBitset(false)` or broken gzip to test load failures.
    Raw(Option<packed_bitset::Bitset>),
}

impl Bitset {
    /// A 1,000,000-bit set where bit `i` is `f(i)`.
    pub fn from_fn(f: impl FnMut(u32) -> bool) -> Self {
        Self::from_fn_len(BITSET_BITS as u32, f)
    }

    /// A bitset of `len` bits (rounded up to whole bytes; padding bits are 0).
    /// Units hashing beyond the end count as not allocated.
    pub fn from_fn_len(len: u32, mut f: impl FnMut(u32) -> bool) -> Self {
        let mut bytes = vec![0u8; len.div_ceil(8) as usize];
        for i in 0..len {
            if f(i) {
                set_bit(&mut bytes, i);
            }
        }
        Bitset::Bits(bytes)
    }

    /// Bits inside any of `ranges` are set (ranges are clamped to 1,000,000).
    pub fn from_ranges(ranges: impl IntoIterator<Item = Range<u32>>) -> Self {
        let mut bytes = vec![0u8; (BITSET_BITS / 8) as usize];
        for r in ranges {
            for i in r.start..r.end.min(BITSET_BITS as u32) {
                set_bit(&mut bytes, i);
            }
        }
        Bitset::Bits(bytes)
    }

    /// The first `n` bits: since positions are hashes, about `n / 1,000,000` of all units.
    pub fn first(n: u32) -> Self {
        Self::from_ranges(std::iter::once(0..n))
    }

    /// A share (`0.0..=1.0`) of all units, as [`Bitset::first`].
    pub fn fraction(share: f64) -> Self {
        let n = (share.clamp(0.0, 1.0) * BITSET_BITS as f64).round() as u32;
        Self::first(n)
    }

    /// About `share` (`0.0..=1.0`) of all units, positions drawn at random from `seed`. Unlike
    /// [`Bitset::fraction`], sets from different seeds admit independent units (two 50% rollouts
    /// share about 25% of units, not 50%); one seed with a larger share keeps every unit of a
    /// smaller one, as widening a rollout should.
    pub fn sampled(seed: u64, share: f64) -> Self {
        let mut rng = Rng::new(seed);
        Self::from_fn(|_| rng.unit() < share)
    }

    /// Exactly the positions that `units` hash to for `account_id` (plus any collisions).
    pub fn for_units<S: AsRef<str>>(account_id: &str, units: impl IntoIterator<Item = S>) -> Self {
        let mut bytes = vec![0u8; (BITSET_BITS / 8) as usize];
        for u in units {
            set_bit(&mut bytes, bitset_position(account_id, u.as_ref()) as u32);
        }
        Bitset::Bits(bytes)
    }

    /// Whether a unit at `position` is allocated, as the resolver would decide. Raw gzipped
    /// bytes are not inspected (reported as not allocated).
    pub fn allows_position(&self, position: u64) -> bool {
        match self {
            Bitset::Absent | Bitset::Full => true,
            Bitset::Bits(bytes) => bytes.get((position / 8) as usize).is_some_and(|b| (b >> (position % 8)) & 1 == 1),
            Bitset::Raw(None) | Bitset::Raw(Some(packed_bitset::Bitset::FullBitset(true))) => true,
            Bitset::Raw(Some(_)) => false,
        }
    }

    /// The `ResolverState.bitsets` entry for `segment`, if any.
    pub fn to_packed(&self, segment: &str) -> Option<PackedBitset> {
        let bitset = match self {
            Bitset::Absent => return None,
            Bitset::Full => Some(packed_bitset::Bitset::FullBitset(true)),
            Bitset::Bits(bytes) => Some(packed_bitset::Bitset::GzippedBitset(gzip(bytes))),
            Bitset::Raw(raw) => raw.clone(),
        };
        Some(PackedBitset { segment: segment.to_string(), bitset })
    }
}

fn set_bit(bytes: &mut [u8], i: u32) {
    if let Some(b) = bytes.get_mut((i / 8) as usize) {
        *b |= 1 << (i % 8);
    }
}

/// A single-member gzip stream with no optional header fields (what the resolver accepts).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    // magic, deflate, no flags, mtime 0, no extra flags, OS "unknown".
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend(crc32fast::hash(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips_and_bits_are_lsb_first() {
        let Bitset::Bits(bytes) = Bitset::from_ranges([2..4, 5..6]) else {
            panic!("expected bits");
        };
        assert_eq!(bytes[0], 0x2C);
        assert_eq!(bytes.len(), 125_000);
        let z = gzip(&bytes);
        assert_eq!(&z[..4], &[0x1f, 0x8b, 8, 0]);
        let body = &z[10..z.len() - 8];
        let inflated = miniz_oxide::inflate::decompress_to_vec(body).unwrap();
        assert_eq!(inflated, bytes);
    }

    #[test]
    fn sampled_sets_nest_by_share_and_differ_by_seed() {
        let allowed = |b: &Bitset| (0..BITSET_BITS).filter(|&p| b.allows_position(p)).collect::<Vec<_>>();
        let (small, large, other) =
            (allowed(&Bitset::sampled(7, 0.1)), allowed(&Bitset::sampled(7, 0.3)), allowed(&Bitset::sampled(8, 0.3)));
        assert!((99_000..101_000).contains(&small.len()), "{}", small.len());
        assert!((299_000..301_000).contains(&large.len()), "{}", large.len());
        assert!(small.iter().all(|p| large.binary_search(p).is_ok()));
        let both = large.iter().filter(|p| other.binary_search(p).is_ok()).count();
        assert!((88_000..92_000).contains(&both), "{both} in two independent 30% sets");
    }

    #[test]
    fn for_units_allows_exactly_those_positions() {
        let b = Bitset::for_units("acme", ["alice"]);
        assert!(b.allows_position(539_790));
        assert!(!b.allows_position(539_791));
    }
}
