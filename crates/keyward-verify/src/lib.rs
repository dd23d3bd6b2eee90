//! The verification hot path: is this presented key good for this request?
//!
//! - [`credential`]: finding the key in a request (`Authorization: Bearer`,
//!   the API-key header, Basic) by the deployment's [`credential::CredentialRules`],
//!   refusing keys in query strings and cookies, and the client address
//!   behind trusted proxies.
//! - [`verifier`]: parse → checksum → SHA-256 → [`verifier::KeyCache`] →
//!   `keyward_core::verdict::evaluate`. The cache's loader
//!   reads misses and refreshes in batches; management changes drop entries
//!   through [`verifier::Verifier::invalidate`] and [`verifier::KeyCache::clear`].
//! - [`last_use`]: last-use times recorded in memory and written in batches.
//!
//! # Invariants
//! - A cache hit touches no SQL and allocates nothing but the verdict.
//! - Malformed keys (prefix, alphabet, length, checksum) are refused before
//!   hashing or lookup.
//! - Unknown hashes never evict known keys, nor queue without bound.
//! - A read of the store that began before an invalidation is not cached.
//! - No secret is stored or logged: [`credential::Secret`] prints `<redacted>`
//!   and is zeroized on drop.
//!
//! This crate knows nothing of HTTP servers, routes, limits or the
//! management API; the gateway and the API call it.
#![forbid(unsafe_code)]

pub mod credential;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod last_use;
pub mod verifier;
