//! Health, readiness and the principal behind a key.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The principal behind a key, as `/v1/me` and verification report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Principal {
    pub key_id: String,
    pub key_name: String,
    pub start: String,
    /// `tenant` or `root`.
    pub kind: String,
    pub tenant_id: Option<String>,
    pub tenant_name: Option<String>,
    pub environment: String,
    pub scopes: Vec<String>,
    pub owner: Option<String>,
    pub tier: Option<String>,
    pub expires_at: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (`/v1/health`); `ready` or `degraded` (`/v1/ready`: serving,
    /// with a shared part falling back, see `checks`).
    pub status: String,
    pub version: String,
    /// `/v1/ready` only: the state of each part the node relies on, e.g.
    /// `store: ok`, `rate_limiter: redis | local | local_fallback |
    /// unavailable`, `changes: listening | polling | silent`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, String>,
}
