//! Base62 (`0-9A-Za-z`), the alphabet of key bodies and checksums: it survives
//! double-click selection, URLs and shell quoting unchanged.

/// The 62 symbols, in the order of their values.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether `b` is one of the 62 symbols.
pub fn is_symbol(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Encodes `value` as exactly `width` symbols, zero-padded on the left.
/// Digits above `width` are dropped, so callers pick a width that fits.
pub fn encode_fixed(mut value: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    // Every byte comes from ALPHABET, which is ASCII.
    out.into_iter().map(char::from).collect()
}

/// Decodes base62 symbols (most significant first); `None` on a non-symbol
/// or overflow.
pub fn decode(symbols: &[u8]) -> Option<u64> {
    symbols.iter().try_fold(0u64, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'a'..=b'z' => b - b'a' + 36,
            _ => return None,
        };
        acc.checked_mul(62)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_and_encodes() {
        assert_eq!(encode_fixed(0, 6), "000000");
        assert_eq!(encode_fixed(61, 6), "00000z");
        assert_eq!(encode_fixed(62, 6), "000010");
        assert_eq!(encode_fixed(u64::from(u32::MAX), 6), "4gfFC3");
        assert_eq!(decode(b"4gfFC3"), Some(u64::from(u32::MAX)));
        assert_eq!(decode(b"000010"), Some(62));
        assert_eq!(decode(b"00-0"), None);
    }
}
