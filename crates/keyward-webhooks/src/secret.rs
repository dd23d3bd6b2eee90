//! Signing secrets and the master key they are derived from.
//!
//! keyward never stores an endpoint's signing secret. It stores a random
//! salt per endpoint (and per rotation), and derives the secret when it needs
//! it: `HMAC-SHA256(master, "keyward webhook signing secret v1\0{endpoint_id}\0{salt}")`
//! ([`SigningSecret::derive`]). The master key lives outside the database
//! (a key file or the environment); [`master_key_id`] is a fingerprint of it
//! that keyward stores, so a node configured with another master key notices
//! instead of sending signatures no receiver can check.
//!
//! A secret is shown to the user once, as Standard Webhooks prints it:
//! `whsec_` followed by the standard base64 of the key bytes
//! ([`SigningSecret::to_whsec`]).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use keyward_core::secret::{Entropy, EntropyError};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The prefix Standard Webhooks gives symmetric secrets.
pub const WHSEC_PREFIX: &str = "whsec_";

/// Bounds of a symmetric secret, from the Standard Webhooks spec: at least
/// 24 bytes (192 bits), at most 64 (512 bits).
const MIN_SECRET_LEN: usize = 24;
const MAX_SECRET_LEN: usize = 64;

/// A master key is at least 32 bytes; the upper bound only refuses files
/// that are clearly not a key.
pub const MIN_MASTER_LEN: usize = 32;
const MAX_MASTER_LEN: usize = 4096;

/// HMAC-SHA256 of the concatenated `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length (longer ones are hashed first), so
    // `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The HMAC key of one endpoint (Standard Webhooks `v1`). Prints
/// `<redacted>`, and is zeroized on drop.
#[derive(Clone)]
pub struct SigningSecret {
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    /// The 32-byte secret of endpoint `endpoint_id` for the stored `salt`:
    /// HMAC-SHA256(master, `"keyward webhook signing secret v1\0{endpoint_id}\0{salt}"`).
    ///
    /// The NUL separators keep `("a", "b\0c")` and `("a\0b", "c")` apart as
    /// long as ids and salts have no NUL, which keyward's never do.
    pub fn derive(master: &[u8], endpoint_id: &str, salt: &str) -> SigningSecret {
        let key = hmac_sha256(
            master,
            &[
                b"keyward webhook signing secret v1\0",
                endpoint_id.as_bytes(),
                b"\0",
                salt.as_bytes(),
            ],
        );
        let secret = SigningSecret {
            key: Zeroizing::new(key.to_vec()),
        };
        let mut key = key;
        zeroize::Zeroize::zeroize(&mut key);
        secret
    }

    /// Parses a secret as Standard Webhooks prints it: `whsec_` + standard
    /// base64 (the prefix is optional, padding too). The decoded key must be
    /// 24 to 64 bytes long, as the spec requires.
    pub fn from_whsec(text: &str) -> Result<SigningSecret, SecretError> {
        let b64 = text.strip_prefix(WHSEC_PREFIX).unwrap_or(text);
        let key = Zeroizing::new(
            STANDARD
                .decode(b64)
                .or_else(|_| STANDARD_NO_PAD.decode(b64))
                .map_err(|_| SecretError::NotBase64)?,
        );
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&key.len()) {
            return Err(SecretError::Length { len: key.len() });
        }
        Ok(SigningSecret { key })
    }

    /// `whsec_` + the standard base64 of the key: the one form shown to the
    /// user (zeroized when dropped).
    pub fn to_whsec(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(WHSEC_PREFIX.len() + 44));
        s.push_str(WHSEC_PREFIX);
        STANDARD.encode_string(self.key.as_slice(), &mut s);
        s
    }

    /// The raw HMAC key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

/// A fingerprint of the master key: the first 16 hex digits of
/// HMAC-SHA256(master, `"keyward webhook master key id"`). Stored by keyward
/// so that nodes configured with different master keys are detected; it
/// reveals nothing of the key.
pub fn master_key_id(master: &[u8]) -> String {
    let mac = hmac_sha256(master, &[b"keyward webhook master key id"]);
    hex(&mac[..8])
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The key from which every endpoint's signing secret is derived. At least
/// 32 bytes; prints `<redacted>`, and is zeroized on drop.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Reads a master key from text (a key file's contents or an environment
    /// variable). Surrounding whitespace is ignored; then the first rule that
    /// applies decides:
    ///
    /// 1. only hex digits: the bytes they spell, which needs an even number
    ///    and at least 64 of them (this is what [`MasterKey::to_file_text`]
    ///    writes);
    /// 2. standard base64 (padded or not) that decodes to at least 32 bytes:
    ///    the decoded bytes;
    /// 3. otherwise the text's own UTF-8 bytes, if there are at least 32.
    ///
    /// Anything shorter is refused: a short passphrase is not a key. Text of
    /// hex digits is always read as hex, so a key with a digit missing is
    /// refused rather than read as base64.
    pub fn from_text(text: &str) -> Result<MasterKey, SecretError> {
        let text = text.trim();
        if text.len() > MAX_MASTER_LEN * 2 {
            return Err(SecretError::MasterTooLong);
        }
        let bytes = if !text.is_empty() && text.bytes().all(|c| c.is_ascii_hexdigit()) {
            if text.len() < 2 * MIN_MASTER_LEN {
                return Err(SecretError::MasterTooShort);
            }
            Zeroizing::new(unhex(text).ok_or(SecretError::MasterOddHex)?)
        } else {
            STANDARD
                .decode(text)
                .or_else(|_| STANDARD_NO_PAD.decode(text))
                .ok()
                .map(Zeroizing::new)
                .filter(|b| b.len() >= MIN_MASTER_LEN)
                .unwrap_or_else(|| Zeroizing::new(text.as_bytes().to_vec()))
        };
        if bytes.len() < MIN_MASTER_LEN {
            return Err(SecretError::MasterTooShort);
        }
        if bytes.len() > MAX_MASTER_LEN {
            return Err(SecretError::MasterTooLong);
        }
        Ok(MasterKey { bytes })
    }

    /// 32 fresh random bytes.
    pub fn generate(entropy: &dyn Entropy) -> Result<MasterKey, EntropyError> {
        let mut bytes = Zeroizing::new(vec![0u8; MIN_MASTER_LEN]);
        entropy.fill(&mut bytes)?;
        Ok(MasterKey { bytes })
    }

    /// The text to write to a key file: the key in hex and a newline, which
    /// [`MasterKey::from_text`] reads back (rule 1).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(hex(&self.bytes));
        s.push('\n');
        s
    }

    /// The raw key, for [`SigningSecret::derive`] and [`master_key_id`].
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// This key's fingerprint ([`master_key_id`]).
    pub fn key_id(&self) -> String {
        master_key_id(&self.bytes)
    }

    /// The signing secret of an endpoint ([`SigningSecret::derive`]).
    pub fn signing_secret(&self, endpoint_id: &str, salt: &str) -> SigningSecret {
        SigningSecret::derive(&self.bytes, endpoint_id, salt)
    }
}

/// Why a secret or master key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the signing secret is not base64 (expected whsec_ followed by standard base64)")]
    NotBase64,
    #[error(
        "the signing secret is {len} bytes long; Standard Webhooks secrets are 24 to 64 bytes"
    )]
    Length { len: usize },
    #[error("the webhook master key is too short: it needs at least 32 bytes (64 hex digits)")]
    MasterTooShort,
    #[error("the webhook master key is too long: a key file holds one key of 32 to 4096 bytes")]
    MasterTooLong,
    #[error("the webhook master key is an odd number of hex digits")]
    MasterOddHex,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting;
    impl Entropy for Counting {
        fn fill(&self, dest: &mut [u8]) -> Result<(), EntropyError> {
            for (i, b) in dest.iter_mut().enumerate() {
                *b = i as u8;
            }
            Ok(())
        }
    }

    #[test]
    fn derive_depends_on_master_endpoint_and_salt() {
        let m = [7u8; 32];
        let a = SigningSecret::derive(&m, "ep_1", "salt1");
        assert_eq!(a.key().len(), 32);
        assert_eq!(a.key(), SigningSecret::derive(&m, "ep_1", "salt1").key());
        assert_ne!(a.key(), SigningSecret::derive(&m, "ep_2", "salt1").key());
        assert_ne!(a.key(), SigningSecret::derive(&m, "ep_1", "salt2").key());
        assert_ne!(
            a.key(),
            SigningSecret::derive(&[8u8; 32], "ep_1", "salt1").key()
        );
        // The separator keeps the two fields apart.
        assert_ne!(
            SigningSecret::derive(&m, "ep", "_1salt").key(),
            SigningSecret::derive(&m, "ep_1", "salt").key()
        );
    }

    #[test]
    fn derive_is_the_documented_hmac() {
        let m = b"0123456789abcdef0123456789abcdef";
        let expected = hmac_sha256(m, &[b"keyward webhook signing secret v1\0ep_1\0s"]);
        assert_eq!(SigningSecret::derive(m, "ep_1", "s").key(), expected);
    }

    #[test]
    fn whsec_round_trips_with_and_without_prefix() {
        let s = SigningSecret::derive(&[1u8; 32], "ep", "salt");
        let text = s.to_whsec();
        assert!(text.starts_with("whsec_"));
        assert_eq!(text.len(), 6 + 44);
        assert_eq!(SigningSecret::from_whsec(&text).unwrap().key(), s.key());
        assert_eq!(
            SigningSecret::from_whsec(&text[6..]).unwrap().key(),
            s.key()
        );
        // Unpadded base64 is accepted too.
        let unpadded = text.trim_end_matches('=');
        assert_eq!(SigningSecret::from_whsec(unpadded).unwrap().key(), s.key());
    }

    #[test]
    fn from_whsec_takes_the_spec_example_and_refuses_bad_input() {
        // The secret of the Standard Webhooks libraries' tests: 24 bytes.
        let s = SigningSecret::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(s.key().len(), 24);
        assert_eq!(
            SigningSecret::from_whsec("whsec_not base64!").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            SigningSecret::from_whsec("whsec_AAAA").unwrap_err(),
            SecretError::Length { len: 3 }
        );
        let long = STANDARD.encode([0u8; 65]);
        assert_eq!(
            SigningSecret::from_whsec(&long).unwrap_err(),
            SecretError::Length { len: 65 }
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = SigningSecret::derive(&[1u8; 32], "ep", "salt");
        let whsec = s.to_whsec();
        let dbg = format!("{s:?}");
        assert_eq!(dbg, "SigningSecret(<redacted>)");
        assert!(!dbg.contains(&whsec[6..]));
        let m = MasterKey::generate(&Counting).unwrap();
        assert_eq!(format!("{m:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn master_key_id_is_16_hex_and_stable() {
        let id = master_key_id(&[3u8; 32]);
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(id, master_key_id(&[3u8; 32]));
        assert_ne!(id, master_key_id(&[4u8; 32]));
        let expected = hmac_sha256(&[3u8; 32], &[b"keyward webhook master key id"]);
        assert_eq!(id, hex(&expected[..8]));
    }

    #[test]
    fn master_key_from_text_rules() {
        // 1. Hex, 64+ digits.
        let hex64 = "00".repeat(31) + "ff";
        let k = MasterKey::from_text(&format!("  {hex64}\n")).unwrap();
        assert_eq!(k.expose_bytes().len(), 32);
        assert_eq!(k.expose_bytes()[31], 0xff);
        let upper = "AB".repeat(32);
        assert_eq!(
            MasterKey::from_text(&upper).unwrap().expose_bytes(),
            &[0xab; 32]
        );
        // 2. Base64 of 32+ bytes.
        let b64 = STANDARD.encode([9u8; 32]);
        assert_eq!(
            MasterKey::from_text(&b64).unwrap().expose_bytes(),
            &[9u8; 32]
        );
        let b64 = STANDARD_NO_PAD.encode([9u8; 40]);
        assert_eq!(
            MasterKey::from_text(&b64).unwrap().expose_bytes(),
            &[9u8; 40]
        );
        // 3. Raw text of 32+ bytes.
        let raw = "correct horse battery staple, twice!";
        assert_eq!(
            MasterKey::from_text(raw).unwrap().expose_bytes(),
            raw.as_bytes()
        );
        // Too short in every form.
        assert_eq!(
            MasterKey::from_text("short passphrase").unwrap_err(),
            SecretError::MasterTooShort
        );
        assert_eq!(
            MasterKey::from_text(&"ab".repeat(31)).unwrap_err(),
            SecretError::MasterTooShort
        );
        assert_eq!(
            MasterKey::from_text(&"a".repeat(65)).unwrap_err(),
            SecretError::MasterOddHex
        );
        assert_eq!(
            MasterKey::from_text("").unwrap_err(),
            SecretError::MasterTooShort
        );
        assert_eq!(
            MasterKey::from_text(&"x".repeat(9000)).unwrap_err(),
            SecretError::MasterTooLong
        );
    }

    #[test]
    fn generated_master_key_round_trips_through_its_file_text() {
        let k = MasterKey::generate(&Counting).unwrap();
        assert_eq!(k.expose_bytes(), (0u8..32).collect::<Vec<_>>().as_slice());
        let text = k.to_file_text();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let back = MasterKey::from_text(&text).unwrap();
        assert_eq!(back.expose_bytes(), k.expose_bytes());
        assert_eq!(back.key_id(), k.key_id());
        assert_eq!(
            back.signing_secret("ep", "s").key(),
            SigningSecret::derive(k.expose_bytes(), "ep", "s").key()
        );
    }
}
