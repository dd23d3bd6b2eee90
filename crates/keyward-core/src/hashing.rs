//! A cheap hash for short values that callers do not choose freely (key
//! ids and tenant ids keyward makes itself, address fingerprints):
//! SipHash's defence against chosen collisions buys nothing there and costs
//! time on the hot path.

use std::hash::{BuildHasherDefault, Hasher};

/// A multiplicative hash that takes eight bytes a step (the scheme of
/// rustc's FxHash), finished with MurmurHash3's 64-bit mix so that every
/// bit of the result, the low ones maps and shards index by included,
/// depends on every input bit.
#[derive(Default)]
pub struct IdHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl IdHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.add(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// For `HashMap<_, _, IdHash>` and `IdHash::default().hash_one(…)`.
pub type IdHash = BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::IdHash;

    #[test]
    fn similar_ids_spread_over_shards() {
        let h = IdHash::default();
        let ids: Vec<String> = (0..6400).map(|i| format!("key_{i:020}")).collect();
        let mut per_shard = [0u32; 64];
        for id in &ids {
            per_shard[(h.hash_one(id) % 64) as usize] += 1;
        }
        // 100 each if perfectly even.
        assert!(
            per_shard.iter().all(|&n| n > 60 && n < 150),
            "{per_shard:?}"
        );
        let distinct: HashSet<u64> = ids.iter().map(|id| h.hash_one(id)).collect();
        assert_eq!(distinct.len(), ids.len());
        assert_ne!(h.hash_one("ab"), h.hash_one("ab\0"));
    }
}
