//! Idempotent retries in the gateway (`[idempotency]`).
//!
//! A request carrying `Idempotency-Key` on one of `idempotency.methods` is
//! buffered (up to `idempotency.max_body_bytes`) and fingerprinted by method,
//! path with query, and body. Before it is forwarded, the key is *claimed* in
//! the store, scoped to the tenant and API key:
//!
//! - first use: claimed; forward, store the response, answer it;
//! - completed before, same fingerprint: replay the stored status, selected
//!   headers and body with `Idempotent-Replayed: true`;
//! - still in flight: 409 `idempotency_in_progress`;
//! - used for another request: 422 `idempotency_key_reused`;
//! - a new key while the API key holds `idempotency.max_records_per_key`
//!   records: the oldest completed ones (expired or abandoned first) make
//!   room; if every record is a request in flight, 429
//!   `idempotency_quota_exceeded` (nothing spent, nothing forwarded).
//!
//! The claim lives in the store, so exactly one upstream execution happens
//! per key across restarts and nodes. A claim whose request never finished
//! (keyward died) expires after `idempotency.lock_seconds`.

use axum::http::Method;
use sha2::{Digest, Sha256};

use keyward_http::error::ApiError;
use keyward_verify::credential::{header_text, HeaderSource};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_LEN: usize = 255;

/// The `Idempotency-Key` of a request, if present: a quoted (structured
/// field string) or bare value of 1 to 255 printable ASCII characters.
pub fn key_of<H: HeaderSource + ?Sized>(headers: &H) -> Result<Option<String>, ApiError> {
    let mut values = headers.values(HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidIdempotencyKey("must appear once"));
    }
    let raw = header_text(value)
        .ok_or(ApiError::InvalidIdempotencyKey("must be printable ASCII"))?
        .trim();
    let key = match raw.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .filter(|k| !k.contains(['"', '\\']))
            .ok_or(ApiError::InvalidIdempotencyKey(
                "is not a valid quoted string",
            ))?,
        None => raw,
    };
    if key.is_empty() {
        return Err(ApiError::InvalidIdempotencyKey("must not be empty"));
    }
    if key.len() > MAX_LEN {
        return Err(ApiError::InvalidIdempotencyKey(
            "must be at most 255 characters",
        ));
    }
    if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::InvalidIdempotencyKey("must be printable ASCII"));
    }
    Ok(Some(key.to_owned()))
}

/// Hex SHA-256 over method, path with query, and body.
pub(crate) fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    let digest = h.finalize();
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Where a key's records live: its tenant and the API key itself.
pub(crate) fn scope(tenant_id: Option<&str>, key_id: &str) -> String {
    format!("{}/{}", tenant_id.unwrap_or("-"), key_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn quoted_and_bare_keys_are_the_same_key() {
        assert_eq!(
            key_of(&headers(&["abc-1"])).unwrap().as_deref(),
            Some("abc-1")
        );
        assert_eq!(
            key_of(&headers(&["\"abc-1\""])).unwrap().as_deref(),
            Some("abc-1")
        );
        assert_eq!(key_of(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn bad_keys_are_refused() {
        let long = "k".repeat(256);
        for bad in ["", "\"\"", "\"abc", "\"a\\\"b\"", long.as_str()] {
            assert!(key_of(&headers(&[bad])).is_err(), "{bad:?}");
        }
        assert!(key_of(&headers(&["a", "b"])).is_err());
        assert!(key_of(&headers(&[&"k".repeat(255)])).is_ok());
    }

    #[test]
    fn fingerprints_tell_method_path_and_body_apart() {
        let a = fingerprint(&Method::POST, "/v1/calls", b"{}");
        assert_eq!(a, fingerprint(&Method::POST, "/v1/calls", b"{}"));
        assert_ne!(a, fingerprint(&Method::PATCH, "/v1/calls", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/calls?x=1", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/calls", b"{ }"));
    }
}
