//! Standard Webhooks v1 signatures.
//!
//! The signed content is `{msg_id}.{timestamp}.{body}`, the signature the
//! standard base64 of its HMAC-SHA256 under the endpoint's secret, sent as
//! `v1,<base64>` in the `webhook-signature` header. During a secret rotation
//! keyward sends one signature per live secret, space-separated
//! ([`signature_header`]); a receiver accepts the message if any verifies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::SigningSecret;

fn mac(secret: &SigningSecret, msg_id: &str, timestamp: i64) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.key())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac
}

/// The `v1,<base64>` signature of one message under one secret.
///
/// `msg_id` must not contain `.` (the spec's rule against ambiguous signed
/// content); keyward's message ids never do.
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(secret, msg_id, timestamp);
    mac.update(body);
    let mut out = String::from("v1,");
    STANDARD.encode_string(mac.finalize().into_bytes(), &mut out);
    out
}

/// The `webhook-signature` header: one `v1,` signature per secret,
/// space-separated, in the order given (the newest secret first, by
/// keyward's convention).
pub fn signature_header(
    secrets: &[&SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether any `v1` signature in `header` is this message's under `secret`.
/// The comparison is constant-time; other versions and malformed entries are
/// skipped. The timestamp's freshness is the caller's to judge.
pub fn verify(
    header: &str,
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> bool {
    header.split(' ').any(|entry| {
        let Some(("v1", b64)) = entry.split_once(',') else {
            return false;
        };
        let Ok(sig) = STANDARD.decode(b64) else {
            return false;
        };
        let mut mac = mac(secret, msg_id, timestamp);
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector of `test_sign_function` in the Standard Webhooks Python
    // library's tests (standard-webhooks/standard-webhooks,
    // libraries/python/tests/test_webhooks.py).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_standard_webhooks_vector() {
        let secret = SigningSecret::from_whsec(SECRET).unwrap();
        assert_eq!(sign(&secret, MSG_ID, TIMESTAMP, BODY), EXPECTED);
        assert!(verify(EXPECTED, &secret, MSG_ID, TIMESTAMP, BODY));
    }

    #[test]
    fn verify_refuses_any_change() {
        let secret = SigningSecret::from_whsec(SECRET).unwrap();
        // The libraries' "invalid signature" case: the last character changed.
        let bad = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        assert!(!verify(bad, &secret, MSG_ID, TIMESTAMP, BODY));
        assert!(!verify(EXPECTED, &secret, "msg_other", TIMESTAMP, BODY));
        assert!(!verify(EXPECTED, &secret, MSG_ID, TIMESTAMP + 1, BODY));
        assert!(!verify(EXPECTED, &secret, MSG_ID, TIMESTAMP, b"{}"));
        let other = SigningSecret::derive(&[0u8; 32], "ep", "s");
        assert!(!verify(EXPECTED, &other, MSG_ID, TIMESTAMP, BODY));
        // Same bytes under another version tag do not count.
        let v2 = EXPECTED.replacen("v1,", "v2,", 1);
        assert!(!verify(&v2, &secret, MSG_ID, TIMESTAMP, BODY));
        assert!(!verify("", &secret, MSG_ID, TIMESTAMP, BODY));
        assert!(!verify("v1,", &secret, MSG_ID, TIMESTAMP, BODY));
        assert!(!verify("v1,!!!", &secret, MSG_ID, TIMESTAMP, BODY));
    }

    #[test]
    fn verify_finds_the_valid_one_among_several() {
        // The libraries' multi-signature case.
        let secret = SigningSecret::from_whsec(SECRET).unwrap();
        let header = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {EXPECTED} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
        );
        assert!(verify(&header, &secret, MSG_ID, TIMESTAMP, BODY));
    }

    #[test]
    fn header_carries_one_signature_per_secret_in_order() {
        let old = SigningSecret::from_whsec(SECRET).unwrap();
        let new = SigningSecret::derive(&[5u8; 32], "ep_1", "salt2");
        let header = signature_header(&[&new, &old], MSG_ID, TIMESTAMP, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&new, MSG_ID, TIMESTAMP, BODY));
        assert_eq!(parts[1], EXPECTED);
        assert!(verify(&header, &new, MSG_ID, TIMESTAMP, BODY));
        assert!(verify(&header, &old, MSG_ID, TIMESTAMP, BODY));
        assert_eq!(signature_header(&[], MSG_ID, TIMESTAMP, BODY), "");
    }
}
