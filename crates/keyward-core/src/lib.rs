//! The pure core of keyward: everything that decides whether a presented API
//! key is good, with no I/O.
//!
//! - [`secret`]: the key format (`<prefix><body><checksum>`), generation from
//!   an [`secret::Entropy`] source, parsing that rejects typos before any
//!   lookup, and the [`secret::KeyHash`] that storage keeps instead of the
//!   secret.
//! - [`scope`]: scope names, the `*` suffix rule and the deployment's catalog.
//! - [`allowlist`]: CIDR allowlists for IPv4 and IPv6.
//! - [`clock`]: time as a parameter, so expiry and grace are testable.
//! - [`verdict`]: the ordered checks of a verification and their stable codes.
//! - [`id`]: public, prefixed identifiers such as `key_…`.
//! - [`ratelimit`]: GCRA, the exact check-and-spend behind rate limits.
//! - [`hashing`]: a cheap hash for maps keyed by values keyward makes itself.
//!
//! A server embeds this crate, looks a [`secret::KeyHash`] up in its store,
//! and hands the stored facts to [`verdict::evaluate`].
#![forbid(unsafe_code)]

pub mod allowlist;
pub mod base62;
pub mod clock;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod hashing;
pub mod id;
pub mod ratelimit;
pub mod scope;
pub mod secret;
pub mod verdict;
