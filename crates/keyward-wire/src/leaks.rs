//! Leaked keys: a report by an API key, the live-key check `keyward scan
//! --check` asks, and a key's reports. (The partner formats of GitHub and
//! GitLab are theirs, not keyward's, and stay with their handlers.)

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A leak report by a person or another scanner: the key itself or the hex
/// SHA-256 of it (one of the two), and where it was found.
// No `Debug`: it may hold a secret.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportLeak {
    /// The leaked key (checked and hashed, never stored).
    #[serde(default)]
    pub key: Option<String>,
    /// Or: the hex SHA-256 of the leaked key.
    #[serde(default)]
    pub key_hash: Option<String>,
    /// Where it was found.
    #[serde(default)]
    pub url: Option<String>,
    /// What kind of place (`commit`, `paste`, `log`, …).
    #[serde(default)]
    pub source: Option<String>,
}

/// What happened to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeakReceipt {
    /// Hex SHA-256 of the key.
    pub token_hash: String,
    /// `true_positive`: a key you can see; `false_positive`: not one.
    pub label: String,
    /// The recorded report (none for a key with a broken checksum).
    pub report_id: Option<String>,
    /// `pending` (the policy is applied in a moment), `repeat` (the key was
    /// reported before: it acts once), or `unmatched`.
    pub status: Option<String>,
}

/// Hashes to check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckLeaks {
    /// Hex SHA-256 digests of candidate keys, 1 to 100.
    pub hashes: Vec<String>,
}

/// Which of the hashes are keys active now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LiveKeys {
    pub live: Vec<String>,
}

/// One leak report of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyLeakView {
    pub id: String,
    /// `github`, `gitlab`, `api:<key id>`.
    pub reporter: String,
    pub url: Option<String>,
    pub source: Option<String>,
    pub token_type: Option<String>,
    pub received_at: String,
    /// `pending`, `applied`, `failed` or `repeat`.
    pub status: String,
    /// `revoke`, `disable`, `flag` or `none`, once applied.
    pub action: Option<String>,
    pub applied_at: Option<String>,
    pub detail: Option<String>,
}

/// A key's leak reports, newest first, at most 50 (`keyward:keys:read`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyLeaks {
    /// Whether the key was reported leaked.
    pub leaked: bool,
    pub data: Vec<KeyLeakView>,
}
