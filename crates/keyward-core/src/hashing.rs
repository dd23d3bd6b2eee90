//! A cheap hash for short values that callers do not choose freely (key
//! ids keyward makes itself, address fingerprints): SipHash's defence
//! against chosen collisions buys nothing there and costs time on the hot
//! path.

use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a, 64-bit.
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// For `HashMap<_, _, Fnv>` and `Fnv::default().hash_one(…)`.
pub type Fnv = BuildHasherDefault<Fnv1a>;
