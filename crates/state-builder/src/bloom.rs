//! Guava-compatible bloom filters for materialized segments (docs/resolver.md, "Segment bitsets and bloom filters").
//!
//! A materialized-segment criterion whose name has a bloom filter is answered locally, without a
//! materialization store, so tests can cover materialized segments with plain states.

use confidence_resolver::proto::confidence::flags::admin::v1::resolver_state;

use crate::hash::murmur3;

/// The only strategy the resolver understands (Guava `MURMUR128_MITZ_64`).
pub const STRATEGY_MURMUR128_MITZ_64: i32 = 1;

/// A bloom filter under construction.
#[derive(Clone, Debug, PartialEq)]
pub struct BloomFilter {
    name: String,
    words: Vec<u64>,
    hash_functions: u32,
    strategy: i32,
}

impl BloomFilter {
    /// An empty filter with at least `bit_count` bits (rounded up to 64, as Guava stores
    /// `long`s) and `hash_functions` probes per unit.
    pub fn new(materialized_segment: impl Into<String>, bit_count: u64, hash_functions: u32) -> Self {
        BloomFilter {
            name: materialized_segment.into(),
            words: vec![0; bit_count.max(1).div_ceil(64) as usize],
            hash_functions,
            strategy: STRATEGY_MURMUR128_MITZ_64,
        }
    }

    /// A filter holding `units`, sized like Guava's `BloomFilter.create(n, fpp)`.
    pub fn from_units<S: AsRef<str>>(
        materialized_segment: impl Into<String>,
        units: impl IntoIterator<Item = S>,
        false_positive_rate: f64,
    ) -> Self {
        let units: Vec<S> = units.into_iter().collect();
        let n = units.len().max(1) as f64;
        let p = false_positive_rate.clamp(f64::MIN_POSITIVE, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let bits = ((-n * p.ln()) / (ln2 * ln2)).max(64.0) as u64;
        let k = ((bits as f64 / n) * ln2).round().max(1.0) as u32;
        let mut filter = Self::new(materialized_segment, bits, k);
        for u in &units {
            filter.insert(u.as_ref());
        }
        filter
    }

    /// Overrides the strategy number; anything but 1 makes the resolver drop the filter.
    pub fn with_strategy(mut self, strategy: i32) -> Self {
        self.strategy = strategy;
        self
    }

    /// Number of bits (`bit_count` on the wire).
    pub fn bit_count(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    /// The materialized segment this filter answers for.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn probes(&self, unit: &str) -> impl Iterator<Item = u64> {
        let (h1, h2) = murmur3(unit);
        let (h1, h2) = (h1 as i64, h2 as i64);
        let bits = self.bit_count();
        (0..i64::from(self.hash_functions))
            .map(move |i| ((h1.wrapping_add(h2.wrapping_mul(i)) & i64::MAX) as u64) % bits)
    }

    /// Adds a unit (targeting-key value).
    pub fn insert(&mut self, unit: &str) {
        let probes: Vec<u64> = self.probes(unit).collect();
        for j in probes {
            if let Some(w) = self.words.get_mut((j / 64) as usize) {
                *w |= 1 << (j % 64);
            }
        }
    }

    /// Whether the resolver would consider `unit` a member (false positives included).
    pub fn contains(&self, unit: &str) -> bool {
        self.probes(unit).all(|j| self.words.get((j / 64) as usize).is_some_and(|w| (w >> (j % 64)) & 1 == 1))
    }

    /// The `ResolverState.bloom_filters` entry: words serialised big-endian, like Guava.
    pub fn to_proto(&self) -> resolver_state::BloomFilter {
        resolver_state::BloomFilter {
            materialized_segment: self.name.clone(),
            data: self.words.iter().flat_map(|w| w.to_be_bytes()).collect(),
            hash_function_count: self.hash_functions as i32,
            bit_count: self.bit_count() as i64,
            strategy: self.strategy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_example() {
        let mut f = BloomFilter::new("m", 128, 3);
        f.insert("alice");
        let pb = f.to_proto();
        let mut expected = vec![0u8; 16];
        expected[2] = 0x04;
        expected[6] = 0x20;
        expected[9] = 0x01;
        assert_eq!(pb.data, expected);
        assert_eq!(pb.bit_count, 128);
        assert!(f.contains("alice"));
    }

    #[test]
    fn holds_its_units() {
        let units: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
        let f = BloomFilter::from_units("m", &units, 0.01);
        assert!(units.iter().all(|u| f.contains(u)));
        let false_positives = (0..1000).filter(|i| f.contains(&format!("other-{i}"))).count();
        assert!(false_positives < 50, "{false_positives}");
    }
}
