//! The gateway's own settings: `[gateway]`, `[[routes]]` and
//! `[idempotency]` as they are read from TOML (the server's `Config` holds
//! them under those names). They are checked when a [`crate::Policy`] is
//! compiled from them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long a completed response is replayed.
    pub ttl_seconds: u64,
    /// How long an unfinished request holds its key (if keyward dies
    /// mid-request, a retry after this succeeds). At least the gateway
    /// timeout.
    pub lock_seconds: u64,
    /// Methods where `Idempotency-Key` is honoured.
    pub methods: Vec<String>,
    /// Largest request body of an idempotent request (it is buffered to
    /// fingerprint it); larger ones answer 413.
    pub max_body_bytes: u64,
    /// Largest response body stored for replay. A larger response is
    /// passed on and replayed with its status and headers only.
    pub max_response_bytes: u64,
    /// Response headers stored and replayed with the body.
    pub replay_headers: Vec<String>,
    /// How often expired records are purged.
    pub purge_interval_seconds: u64,
    /// Most records one API key may hold. A new key beyond it drops that
    /// API key's oldest completed records (expired and abandoned ones
    /// first), never one in flight; with only requests in flight left, it
    /// is refused with 429 `idempotency_quota_exceeded`.
    pub max_records_per_key: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> IdempotencyConfig {
        IdempotencyConfig {
            ttl_seconds: 86_400,
            lock_seconds: 60,
            methods: vec!["POST".into(), "PATCH".into()],
            max_body_bytes: 1 << 20,
            max_response_bytes: 1 << 20,
            replay_headers: [
                "content-type",
                "content-language",
                "content-location",
                "location",
                "etag",
                "last-modified",
            ]
            .map(String::from)
            .to_vec(),
            purge_interval_seconds: 600,
            max_records_per_key: 1_000,
        }
    }
}

/// Whether a route takes `Idempotency-Key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdempotencyMode {
    /// Honoured when sent (on `idempotency.methods`).
    #[default]
    Optional,
    /// Requests without it answer 400 `idempotency_key_required`.
    Required,
    /// Passed to the upstream untouched.
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Base URL of the API behind keyward, e.g. `http://127.0.0.1:9000`.
    pub upstream: Option<String>,
    /// `http1` (a pool of keep-alive connections) or `h2c` (HTTP/2 with
    /// prior knowledge over cleartext: requests multiplexed on one
    /// connection). Reloadable: new connections follow it.
    pub upstream_protocol: UpstreamProtocol,
    pub connect_timeout_ms: u64,
    /// Time to the upstream's response headers.
    pub timeout_ms: u64,
    /// Largest request body forwarded (declared by Content-Length or counted
    /// while streaming); larger ones answer 413.
    pub max_body_bytes: u64,
    /// Names of the identity headers sent to the upstream. Any header of
    /// these names arriving from a client is removed first.
    pub identity_headers: IdentityHeaders,
    /// A header naming the sub-tenant a request acts for (e.g. `X-Tenant-ID`).
    /// When set and present, its value must be one of the key's
    /// `sub_tenants` (else 403 `tenant_not_allowed`); it is then forwarded.
    pub tenant_header: Option<String>,
    /// Serve plain HTTP/1.1 gateway requests on keyward's own HTTP/1 path
    /// (a pooled upstream connection per worker thread, headers rewritten
    /// in place) instead of the general HTTP stack. Requests it does not
    /// take (keyward's own paths, idempotent retries, chunked or large
    /// uploads, upgrades, HTTP/1.0, h2c) go to the general stack either
    /// way. Off: every request takes the general stack.
    pub fast_path: bool,
    /// Idle keep-alive connections kept per worker thread for the fast path.
    pub max_idle_upstream: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            upstream: None,
            upstream_protocol: UpstreamProtocol::Http1,
            connect_timeout_ms: 2_000,
            timeout_ms: 30_000,
            max_body_bytes: 1 << 30,
            identity_headers: IdentityHeaders::default(),
            tenant_header: None,
            fast_path: true,
            max_idle_upstream: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    pub key_id: String,
    pub tenant_id: String,
    pub environment: String,
    pub scopes: String,
    pub owner: String,
}

impl Default for IdentityHeaders {
    fn default() -> IdentityHeaders {
        IdentityHeaders {
            key_id: "X-Keyward-Key-Id".into(),
            tenant_id: "X-Keyward-Tenant-Id".into(),
            environment: "X-Keyward-Environment".into(),
            scopes: "X-Keyward-Scopes".into(),
            owner: "X-Keyward-Owner".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP methods; empty matches every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path pattern: literal segments, `{name}` for one segment, `{*name}`
    /// (last) for the rest.
    pub path: String,
    /// Scopes the key must hold (all of them).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Environments allowed on this route; empty allows all.
    #[serde(default)]
    pub environments: Vec<String>,
    /// A path parameter that must equal the key's tenant id (else 404).
    pub tenant_param: Option<String>,
    /// `false` forwards without a key (public routes).
    #[serde(default = "yes")]
    pub auth: bool,
    /// Answer from keyward instead of forwarding: a JSON template whose
    /// strings may contain `{key_id}`, `{key_name}`, `{start}`,
    /// `{tenant_id}`, `{tenant_name}`, `{environment}`, `{owner}`, `{tier}`;
    /// a string that is exactly `{scopes}` becomes the scope array.
    pub respond: Option<toml::Value>,
    /// Status of a `respond` answer.
    #[serde(default = "ok_status")]
    pub respond_status: u16,
    /// Rate-limit tokens a request costs (0 allowed).
    #[serde(default = "one")]
    pub cost: u64,
    /// Credits a request costs, spent from the tenant's balance after every
    /// other check passed.
    #[serde(default)]
    pub credits: i64,
    #[serde(default)]
    pub idempotency: IdempotencyMode,
    /// Forward `X-HTTP-Method-Override`, `X-HTTP-Method` and
    /// `X-Method-Override` to the upstream. Off by default: an upstream
    /// that honours them would let a key allowed only `GET` on this route
    /// make it a `DELETE`. Turn on only where the upstream's override is
    /// itself checked.
    #[serde(default)]
    pub allow_method_override: bool,
}

fn one() -> u64 {
    1
}

fn yes() -> bool {
    true
}

fn ok_status() -> u16 {
    200
}
