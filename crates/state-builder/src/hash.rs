//! The resolver's hashing (docs/resolver.md, "Hashing and bucketing"), so tests can predict buckets and bitset positions
//! instead of hard-coding magic units.

/// Bits in a standard Confidence segment bitset.
pub const BITSET_BITS: u64 = 1_000_000;

/// `(h1, h2)` of MurmurHash3 x64/128 with seed 0 over the UTF-8 bytes of `key`.
pub fn murmur3(key: &str) -> (u64, u64) {
    let h = fastmurmur3::murmur3_x64_128(key.as_bytes(), 0);
    (h as u64, (h >> 64) as u64)
}

/// `(h1 >> 4) mod n`; `None` for `n == 0` (the resolver fails the request there).
pub fn bucket(key: &str, n: u64) -> Option<u64> {
    (murmur3(key).0 >> 4).checked_rem(n)
}

/// The account part used in the bitset salt: what follows `accounts/` up to the next `/`.
pub fn account_component(account_id: &str) -> &str {
    account_id.split('/').next().unwrap_or(account_id)
}

/// The bit of a segment bitset that decides whether `unit` is allocated.
pub fn bitset_position(account_id: &str, unit: &str) -> u64 {
    let key = format!("MegaSalt-{}|{unit}", account_component(account_id));
    bucket(&key, BITSET_BITS).unwrap_or(0)
}

/// The variant bucket of `unit` for a rule on `segment` (short id or `segments/<id>`).
pub fn variant_bucket(segment: &str, unit: &str, bucket_count: u64) -> Option<u64> {
    let id = segment.strip_prefix("segments/").unwrap_or(segment);
    let id = id.split('/').next().unwrap_or(id);
    bucket(&format!("{id}|{unit}"), bucket_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_worked_values() {
        assert_eq!(murmur3("MegaSalt-acme|alice"), (0xbda1c1b37d5220ec, 0xfbaf7a39805bae02));
        assert_eq!(bitset_position("acme", "alice"), 539_790);
        assert_eq!(bitset_position("acme", "42"), 552_247);
        assert_eq!(bitset_position("confidence-test", "roug"), 567_493);
        assert_eq!(variant_bucket("segments/abc123", "alice", 1000), Some(493));
        assert_eq!(variant_bucket("abc123", "bob", 1000), Some(182));
        assert_eq!(variant_bucket("abc123", "42", 100), Some(10));
        assert_eq!(bucket("x", 0), None);
        assert_eq!(murmur3(""), (0, 0));
    }
}
