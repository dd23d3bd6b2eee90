//! A typed async client for keyward's HTTP API: every management and
//! verification operation, posting and reading the [`keyward_wire`] types
//! the server itself writes and reads. The `keyward` CLI is built on it.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use keyward_client::{Client, ClientError};
//! use keyward_wire::{ChangeCredits, CreateKey, CreateTenant, ListKeys, VerifyKey};
//!
//! # async fn example(root_key: String) -> Result<(), ClientError> {
//! let client = Client::builder("https://keyward.example.com")
//!     .key(root_key)
//!     .timeout(Duration::from_secs(10))
//!     .retries(2)
//!     .build()?;
//!
//! let tenant = client
//!     .create_tenant(&CreateTenant { name: "Acme".into(), ..Default::default() })
//!     .await?;
//! let issued = client
//!     .create_key(&CreateKey {
//!         tenant_id: Some(tenant.id.clone()),
//!         name: "web".into(),
//!         environment: Some("live".into()),
//!         ..Default::default()
//!     })
//!     .await?;
//!
//! // Safe to retry: the client sends one idempotency key on every attempt.
//! let change = ChangeCredits { kind: "grant".into(), amount: 100, reason: None };
//! client.change_credits(&tenant.id, &change, Some("order-1")).await?;
//!
//! let verdict = client
//!     .verify(&VerifyKey {
//!         key: issued.secret,
//!         scopes: vec![],
//!         ip: None,
//!         cost: None,
//!         credits: Some(1),
//!     })
//!     .await?;
//! assert!(verdict.valid);
//!
//! // Every page, but at most 50 requests.
//! let keys = client.list_keys_all(&ListKeys::default(), 50).await?;
//!
//! match client.get_tenant("no-such-tenant").await {
//!     Err(ClientError::Problem { problem, .. }) if problem.code == "not_found" => {}
//!     other => { other?; }
//! }
//! # let _ = keys;
//! # Ok(())
//! # }
//! ```
//!
//! # Surface
//!
//! [`Client::builder`] takes the base URL, the API key (an [`ApiKey`]),
//! timeouts and the number of retries; [`Client`] has one method per API
//! operation (the `impl` blocks in `api/` follow the server's areas:
//! health and `/me`, tenants, credits, keys, usage, audit, leaks, webhooks
//! with events and alerts). Lists answer one page (`list_*`) or walk the
//! pages for you (`list_*_all`, at most the pages you allow). Every failure
//! is a [`ClientError`]; keyward's error bodies become
//! [`ClientError::Problem`] with a [`ProblemDetails`], whichever error
//! style the deployment uses.
//!
//! # Retries
//!
//! A failed attempt is sent again, up to `retries` times with jittered
//! exponential backoff, only when that cannot do more than sending it once:
//! - a request that never left (no connection) is always sent again;
//! - reads, and the writes that carry an idempotency key
//!   ([`Client::change_credits`], [`Client::publish_event`]; the client
//!   makes one key per call when the caller gives none and sends it on
//!   every attempt) are also sent again after the connection broke before
//!   the answer, or after a 502, 503 or 504 (waiting at least a
//!   `Retry-After` within the backoff's ceiling);
//! - other writes are not sent again once sent: keyward has no idempotency
//!   for them, so an attempt that reached it may have been applied (a
//!   second `create_key` would make a second key). Nor is
//!   [`Client::verify`]: each arrival spends rate-limit tokens and credits.
//!
//! Timeouts are not retried (the wait would multiply); see `retry.rs`.
//!
//! # Secrets
//!
//! The API key is an [`ApiKey`]: `Debug` prints `<redacted>`, and it is
//! wiped on drop. The client keeps it only as its `Authorization` header,
//! whose bytes are wiped when the client and its last request are gone;
//! the bodies of `verify` and `report_leak` (they hold a key) are wiped the
//! same way. No
//! error or `Debug` output holds either. What the HTTP stack copies into
//! its own buffers is out of reach, and the secrets in `create_key`,
//! `rotate_key`, `create_webhook` and `rotate_webhook_secret` answers are
//! the caller's to keep or wipe.
//!
//! # Architecture invariants
//!
//! - One `reqwest` connection pool per [`Client`] (clones share it), so a
//!   `verify` on a warm client is one request on a reused connection: its
//!   URL is parsed once, its body serialized once for every attempt.
//! - Randomness (idempotency keys, jitter) comes from an
//!   [`Entropy`] given to the builder.
//! - Path segments are percent-encoded (tenant ids are chosen by users).

#![forbid(unsafe_code)]

mod api;
mod call;
mod error;
mod paging;
mod path;
mod retry;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use reqwest::Url;
use zeroize::Zeroizing;

pub use error::{ClientError, ProblemDetails};
/// Where idempotency keys and jitter come from (keyward-core's).
pub use keyward_core::secret::{Entropy, EntropyError, OsEntropy};
/// The API's JSON types, which every method takes and answers.
pub use keyward_wire as wire;

use retry::Backoff;

/// The most retries a client makes per call.
pub const MAX_RETRIES: u32 = 10;

/// An API key to call keyward with. `Debug` prints `<redacted>`, and the
/// text is wiped from memory on drop.
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(Zeroizing::new(key.into()))
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> ApiKey {
        ApiKey::new(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> ApiKey {
        ApiKey::new(key)
    }
}

impl From<Zeroizing<String>> for ApiKey {
    fn from(key: Zeroizing<String>) -> ApiKey {
        ApiKey(key)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A client of one keyward deployment. Cheap to clone: clones share the
/// connection pool and settings.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The base URL without a trailing `/`; paths start with `/`.
    base: String,
    /// `POST /v1/keys/verify`, parsed once: the hot path.
    verify_url: Url,
    /// `Bearer <key>`, marked sensitive, over bytes wiped on drop.
    auth: Option<HeaderValue>,
    retries: u32,
    backoff: Backoff,
    timeout: Duration,
    entropy: Arc<dyn Entropy>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .field("key", &self.inner.auth.as_ref().map(|_| "<redacted>"))
            .field("retries", &self.inner.retries)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder for a client of the keyward at `base_url` (e.g.
    /// `https://keyward.example.com`, or with a path prefix if keyward is
    /// served under one).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            key: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Backoff::default(),
            entropy: Arc::new(OsEntropy),
        }
    }

    /// The base URL calls go to (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }
}

/// Settings of a [`Client`]; [`ClientBuilder::build`] checks them.
pub struct ClientBuilder {
    base_url: String,
    key: Option<ApiKey>,
    timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    backoff: Backoff,
    entropy: Arc<dyn Entropy>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The API key every call presents (`Authorization: Bearer`). Without
    /// one, only `health`, `ready` and `openapi` succeed.
    pub fn key(mut self, key: impl Into<ApiKey>) -> ClientBuilder {
        self.key = Some(key.into());
        self
    }

    /// The most one attempt may take, from sending to the whole answer
    /// (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// The most making a connection may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// How many times a failed attempt may be sent again when that is safe
    /// (default 2, at most [`MAX_RETRIES`]; see the crate docs).
    pub fn retries(mut self, retries: u32) -> ClientBuilder {
        self.retries = retries.min(MAX_RETRIES);
        self
    }

    /// The backoff between attempts: retry `n` waits between half and all
    /// of `base · 2^(n-1)`, at most `max` (default 100 ms and 2 s). A
    /// `Retry-After` over `max` ends the retries.
    pub fn backoff(mut self, base: Duration, max: Duration) -> ClientBuilder {
        self.backoff = Backoff {
            base,
            max: max.max(base),
        };
        self
    }

    /// Where idempotency keys and jitter come from (default the operating
    /// system's CSPRNG).
    pub fn entropy(mut self, entropy: Arc<dyn Entropy>) -> ClientBuilder {
        self.entropy = entropy;
        self
    }

    /// The client, or why these settings cannot make one.
    pub fn build(self) -> Result<Client, ClientError> {
        let base = base_url(&self.base_url)?;
        let verify_url =
            Url::parse(&format!("{base}/v1/keys/verify")).map_err(|_| ClientError::InvalidUrl {
                url: self.base_url.clone(),
                reason: "paths cannot be appended to it",
            })?;
        let auth = self.key.as_ref().map(authorization).transpose()?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            // keyward's API never redirects; following one could carry the
            // key to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyward-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Connect {
                url: base.clone(),
                source,
            })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                verify_url,
                auth,
                retries: self.retries,
                backoff: self.backoff,
                timeout: self.timeout,
                entropy: self.entropy,
            }),
        })
    }
}

/// The base URL, checked, without a trailing `/`.
fn base_url(given: &str) -> Result<String, ClientError> {
    let invalid = |reason| ClientError::InvalidUrl {
        url: given.to_owned(),
        reason,
    };
    let url = Url::parse(given.trim()).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or a fragment"));
    }
    // Errors quote the base URL: it must not hold a secret, and this one
    // is quoted without it.
    if !url.username().is_empty() || url.password().is_some() {
        let mut shown = url.clone();
        // Infallible for http(s) URLs with a host, checked above.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(ClientError::InvalidUrl {
            url: shown.to_string(),
            reason: "it must not hold credentials (give the key with .key())",
        });
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `Bearer <key>` as a sensitive header value over bytes that are wiped
/// when the last request holding them is gone.
fn authorization(key: &ApiKey) -> Result<HeaderValue, ClientError> {
    let mut text = Zeroizing::new(Vec::with_capacity(7 + key.0.len()));
    text.extend_from_slice(b"Bearer ");
    text.extend_from_slice(key.0.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .map_err(|_| ClientError::InvalidKey)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests;
