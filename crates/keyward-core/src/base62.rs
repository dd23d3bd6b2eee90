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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_and_encodes() {
        assert_eq!(encode_fixed(0, 6), "000000");
        assert_eq!(encode_fixed(61, 6), "00000z");
        assert_eq!(encode_fixed(62, 6), "000010");
        assert_eq!(encode_fixed(u64::from(u32::MAX), 6), "4gfFC3");
    }
}
