//! keyward's outbound webhooks, as the Standard Webhooks v1 spec has them:
//! everything about a delivery except where it is queued.
//!
//! - [`secret`]: per-endpoint [`secret::SigningSecret`]s derived from a
//!   [`secret::MasterKey`] and a stored salt (keyward stores no secret),
//!   printed as `whsec_…`; [`secret::master_key_id`] fingerprints the master.
//! - [`sign`]: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per
//!   live secret in the `webhook-signature` header, and [`sign::verify`].
//! - [`filter`]: event types (`vox.call.ended`) and the patterns endpoints
//!   subscribe with (`key.created`, `vox.*`, `*`), with the pair form the
//!   store matches in SQL.
//! - [`target`]: endpoint URL rules and the addresses no webhook may reach
//!   (SSRF), checked when an endpoint is saved.
//! - [`sender`]: the HTTP client that posts one attempt: no redirects, no
//!   proxy, rustls, a resolver that drops forbidden addresses at connect
//!   time, bounded time and response size. It reports an
//!   [`sender::Attempt`] and never fails otherwise.
//! - [`schedule`]: when to try again. The default [`schedule::RetrySchedule`]
//!   waits 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after the failed
//!   attempts (±20 % jitter): 8 attempts over about 27.6 hours, the first
//!   immediate.
//!
//! # Invariants
//! - No signing secret is stored or logged: secrets derive from the master
//!   key and a salt, print `<redacted>`, and are zeroized on drop; the
//!   `whsec_` text exists only to be shown once.
//! - Unless private targets are allowed, no connection is made to a
//!   forbidden address, whatever DNS answers at delivery time.
//! - An attempt is bounded in time (`timeout`) and in the bytes it reads.
//! - Nothing here reads the clock or draws randomness on its own: timestamps
//!   and jitter come from the caller (latency is measured with a monotonic
//!   clock).
//!
//! This crate knows no store and no server: keyward-server's delivery worker
//! claims messages, calls [`sign::signature_header`] and [`sender::Sender::send`],
//! and records the [`sender::Attempt`].
#![forbid(unsafe_code)]

pub mod filter;
pub mod schedule;
pub mod secret;
pub mod sender;
pub mod sign;
pub mod target;

pub use filter::{check_event_type, EventFilter, EventPattern, FilterError};
pub use schedule::RetrySchedule;
pub use secret::{master_key_id, MasterKey, SecretError, SigningSecret};
pub use sender::{Attempt, Outgoing, Sender, SenderConfig, SenderError};
pub use sign::{sign, signature_header, verify};
pub use target::{check_endpoint, forbidden, parse_endpoint_url, EndpointUrl, UrlError};
