//! keyward's HTTP edge, shared by every front end (the management API, the
//! console, the gateway's two paths).
//!
//! - [`error`]: [`error::ApiError`], every error a request can end in, and
//!   the one place errors become HTTP: [`error::render_parts`] /
//!   [`error::render_response`] write RFC 9457 problem+json or the
//!   deployment's `{"error": {…}}` envelope ([`error::ErrorsConfig`]), with
//!   its own code spellings and messages, `WWW-Authenticate` on 401s and
//!   `Retry-After` where a wait is known.
//! - [`path`]: the request-path rule ([`path::normalize`]): unreserved
//!   escapes decoded, dot segments resolved, and encoded separators, NUL and
//!   double encoding refused, so every route and upstream sees one spelling
//!   of a path.
//! - [`edge`]: the rules applied before routing on every path ([`edge::admit`]:
//!   one `Host`, the path in normal form) and the request id.
//!
//! # Invariants
//! - Nothing else builds an error body: handlers return [`error::ApiError`]
//!   (or a domain error that converts into it) and the edge renders it.
//! - [`path::normalize`] is idempotent: a normal path is its own normal form.
#![forbid(unsafe_code)]

pub mod edge;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod path;
