//! Public identifiers: a short type prefix and 22 base62 characters
//! (≈131 random bits), e.g. `key_3fQ9…`. They are URL-safe, say what they
//! name, and are not secrets: they appear in logs, audit records and URLs.

use crate::base62::ALPHABET;
use crate::secret::{Entropy, EntropyError};

/// Number of random characters after the prefix.
pub const ID_BODY_LEN: usize = 22;

/// Makes a new id such as `key_…` or `ten_…` from `entropy`.
pub fn new_id(prefix: &str, entropy: &dyn Entropy) -> Result<String, EntropyError> {
    let mut out = String::with_capacity(prefix.len() + 1 + ID_BODY_LEN);
    out.push_str(prefix);
    out.push('_');
    push_base62(&mut out, ID_BODY_LEN, entropy)?;
    Ok(out)
}

/// Appends `n` uniformly distributed base62 characters, by rejection sampling
/// so that no symbol is more likely than another.
pub(crate) fn push_base62(
    out: &mut String,
    n: usize,
    entropy: &dyn Entropy,
) -> Result<(), EntropyError> {
    let mut pushed = 0;
    let mut buf = [0u8; 64];
    while pushed < n {
        entropy.fill(&mut buf)?;
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would bias the low symbols.
            if b < 248 && pushed < n {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
                pushed += 1;
            }
        }
    }
    Ok(())
}

/// Whether `s` looks like an id with this prefix (cheap shape check only).
pub fn has_shape(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| {
            body.len() == ID_BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::OsEntropy;

    #[test]
    fn ids_have_their_shape_and_differ() {
        let a = new_id("key", &OsEntropy).unwrap();
        let b = new_id("key", &OsEntropy).unwrap();
        assert!(has_shape(&a, "key"), "{a}");
        assert_ne!(a, b);
        assert!(!has_shape(&a, "ten"));
        assert!(!has_shape("key_short", "key"));
    }
}
