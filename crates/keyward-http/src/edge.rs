//! The edge rules every front end applies to a request before routing it:
//! [`admit`] (exactly one `Host` on HTTP/1, the path in normal form) and the
//! request id ([`acceptable_request_id`], [`new_request_id`]). The general
//! path (the server's middleware) and the gateway's fast path both use
//! them, so they answer alike.

use crate::error::ApiError;

/// The front door of the general path, before routing: HTTP/1.1 requests
/// carry exactly one `Host` (RFC 9112 §3.2), and the path is rewritten to
/// its normal form ([`crate::path`]) so the router, the gateway's routes
/// and the upstream all see the one path that was authorised.
pub fn admit<B>(req: &mut axum::http::Request<B>) -> Result<(), ApiError> {
    use axum::http::{header::HOST, uri, Version};
    let version = req.version();
    if version == Version::HTTP_11 || version == Version::HTTP_10 {
        let mut hosts = req.headers().get_all(HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if version == Version::HTTP_11 => {
                return Err(ApiError::InvalidHost("is missing"))
            }
            (Some(_), Some(_)) => return Err(ApiError::InvalidHost("appears more than once")),
            _ => {}
        }
    }
    let normal = match crate::path::normalize(req.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
        Ok(std::borrow::Cow::Owned(p)) => p,
        Err(e) => return Err(ApiError::InvalidPath(e)),
    };
    let target = match req.uri().query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        uri::PathAndQuery::try_from(target)
            .map_err(|_| ApiError::InvalidPath(crate::path::PathError::BadEscape))?,
    );
    *req.uri_mut() = axum::http::Uri::from_parts(parts)
        .map_err(|_| ApiError::InvalidPath(crate::path::PathError::BadEscape))?;
    Ok(())
}

/// A client's `X-Request-Id` is kept if it is short printable ASCII.
pub fn acceptable_request_id(v: &[u8]) -> bool {
    v.len() <= 128 && v.iter().all(u8::is_ascii_graphic)
}

/// A new request id, `req_` and 22 base62 characters: unique and
/// unpredictable enough for correlating logs, without a system call per
/// request. A counter is mixed (SplitMix64) with a random seed drawn once
/// per process. Each thread takes counter values in blocks, so the worker
/// threads do not write one shared cache line per request. Request ids are
/// not secrets.
pub fn new_request_id() -> [u8; 26] {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    const BLOCK: u64 = 1024;
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    let seed = *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        if keyward_core::secret::Entropy::fill(&keyward_core::secret::OsEntropy, &mut b).is_err() {
            tracing::warn!("No entropy for request ids; seeding them from the process id.");
        }
        u64::from_le_bytes(b) ^ u64::from(std::process::id())
    });
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let n = RANGE.with(|r| {
        let (mut next, mut end) = r.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            end = next + BLOCK;
        }
        r.set((next + 1, end));
        next
    });
    let mut id = *b"req_0000000000000000000000";
    // 11 base62 digits hold 65 bits, so each u64 fits in its half.
    let a = mix(seed ^ n);
    let b = mix(a ^ seed.rotate_left(32));
    for (half, mut v) in [(4, a), (15, b)] {
        for slot in id[half..half + 11].iter_mut().rev() {
            *slot = keyward_core::base62::ALPHABET[(v % 62) as usize];
            v /= 62;
        }
    }
    id
}
