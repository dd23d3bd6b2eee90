//! API keys: tenant keys and operator root keys in one store, told apart by
//! [`KeyClass`], found by the hex SHA-256 of their secret.

use async_trait::async_trait;
use serde_json::Value;

use crate::{AuditEntry, Page, PageRequest, StoreResult};

/// The most hashes one [`KeyStore::find_keys_with_tenants`] call takes (well
/// under SQLite's and PostgreSQL's bind-parameter limits).
pub const MAX_HASHES_PER_LOOKUP: usize = 500;

/// Tenant keys belong to a tenant; root keys belong to keyward's operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    Tenant,
    Root,
}

impl KeyClass {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyClass::Tenant => "tenant",
            KeyClass::Root => "root",
        }
    }
}

/// A key with what the verifier caches beside it: its tenant's name and
/// rate-limit tier (read in the same query).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyWithTenant {
    pub key: KeyRecord,
    pub tenant_name: Option<String>,
    pub tenant_tier: Option<String>,
}

/// One API key. Never holds the secret: only its hash and display start.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub class: KeyClass,
    pub tenant_id: Option<String>,
    pub name: String,
    pub environment: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub start: String,
    pub owner: Option<String>,
    pub scopes: Vec<String>,
    pub tier: Option<String>,
    pub credit_cap: Option<i64>,
    pub ip_allowlist: Vec<String>,
    /// Sub-tenants this key may act for through the tenant header.
    pub sub_tenants: Vec<String>,
    pub expires_at: Option<i64>,
    pub metadata: Value,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub rotated_from: Option<String>,
    pub replaced_by: Option<String>,
    pub grace_until: Option<i64>,
    pub deleted_at: Option<i64>,
    /// This key's own rate limit, overriding its tier.
    pub rate_limit: Option<RateLimitOverride>,
}

/// A per-key rate limit: `limit` tokens per `window_ms`, bucket `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimitOverride {
    pub limit: u64,
    pub window_ms: u64,
    pub burst: u64,
}

impl KeyRecord {
    /// A freshly issued, enabled key with no scopes, limits or history:
    /// callers fill in the rest with struct-update syntax.
    pub fn issued(
        id: String,
        class: KeyClass,
        environment: String,
        hash: String,
        start: String,
        created_by: String,
        now: i64,
    ) -> KeyRecord {
        KeyRecord {
            id,
            class,
            tenant_id: None,
            name: String::new(),
            environment,
            hash,
            start,
            owner: None,
            scopes: Vec::new(),
            tier: None,
            credit_cap: None,
            ip_allowlist: Vec::new(),
            sub_tenants: Vec::new(),
            expires_at: None,
            metadata: Value::Object(serde_json::Map::new()),
            enabled: true,
            created_by,
            created_at: now,
            updated_at: now,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
            revoked_reason: None,
            rotated_from: None,
            replaced_by: None,
            grace_until: None,
            deleted_at: None,
            rate_limit: None,
        }
    }
}

/// The lifecycle state shown to users, derived from the record and "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Disabled,
    Expired,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<KeyStatus> {
        Some(match s {
            "active" => KeyStatus::Active,
            "disabled" => KeyStatus::Disabled,
            "expired" => KeyStatus::Expired,
            "revoked" => KeyStatus::Revoked,
            _ => return None,
        })
    }
}

/// The scope a root key needs to manage keys. The store never lets a change
/// end the last active root key holding it ([`StoreError::LastRootKey`]).
///
/// [`StoreError::LastRootKey`]: crate::StoreError::LastRootKey
pub const ROOT_MANAGEMENT_SCOPE: &str = "keyward:keys:write";

impl KeyRecord {
    /// Whether this is an active root key (not revoked, deleted, disabled or
    /// expired at `now`) that can manage keys.
    pub fn is_managing_root(&self, now: i64) -> bool {
        self.class == KeyClass::Root
            && self.status(now) == KeyStatus::Active
            && keyward_core::scope::ScopeSet::new(self.scopes.iter().cloned())
                .allows(ROOT_MANAGEMENT_SCOPE)
    }

    pub fn status(&self, now: i64) -> KeyStatus {
        let past = |t: Option<i64>| t.is_some_and(|t| now >= t);
        if self.revoked_at.is_some() || self.deleted_at.is_some() {
            KeyStatus::Revoked
        } else if past(self.expires_at) || past(self.grace_until) {
            KeyStatus::Expired
        } else if !self.enabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        }
    }
}

/// Fields a key update may change; `None` leaves a field as it is, and
/// `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub owner: Option<Option<String>>,
    pub scopes: Option<Vec<String>>,
    pub tier: Option<Option<String>>,
    pub credit_cap: Option<Option<i64>>,
    pub rate_limit: Option<Option<RateLimitOverride>>,
    pub ip_allowlist: Option<Vec<String>>,
    pub sub_tenants: Option<Vec<String>>,
    pub expires_at: Option<Option<i64>>,
    pub metadata: Option<Value>,
    pub enabled: Option<bool>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub tenant_id: Option<String>,
    /// `None` lists tenant keys only.
    pub class: Option<KeyClass>,
    pub environment: Option<String>,
    pub status: Option<KeyStatus>,
    /// The instant `status` is judged at.
    pub now: i64,
}

/// A key's last use, recorded off the request path in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub key_id: String,
    pub at: i64,
    pub ip: Option<String>,
}

/// Keys, including root keys: issue, look up (by id or secret hash), change,
/// revoke, rotate, delete, and record last use. Every change is written with
/// its [`AuditEntry`] in one transaction.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a key. [`StoreError::NameTaken`](crate::StoreError::NameTaken) if a live key of the same
    /// tenant already has its name.
    async fn create_key(&self, key: &KeyRecord, audit: &AuditEntry) -> StoreResult<()>;
    /// A key by id, including revoked ones; deleted keys are [`StoreError::NotFound`](crate::StoreError::NotFound).
    async fn get_key(&self, id: &str) -> StoreResult<KeyRecord>;
    /// A key by the hex SHA-256 of its secret, including revoked and deleted
    /// ones (the verifier reports those as such).
    async fn find_key_by_hash(&self, hash_hex: &str) -> StoreResult<Option<KeyRecord>>;
    /// Keys by the hex SHA-256 of their secrets, each with its tenant's
    /// name and tier, in one round trip (the verifier's cache fills and
    /// refreshes in batches). Revoked and deleted keys are included; hashes
    /// without a key are left out. At most [`MAX_HASHES_PER_LOOKUP`] hashes.
    async fn find_keys_with_tenants(
        &self,
        hashes_hex: &[String],
    ) -> StoreResult<Vec<KeyWithTenant>>;
    async fn list_keys(
        &self,
        filter: &KeyFilter,
        page: PageRequest,
    ) -> StoreResult<Page<KeyRecord>>;
    /// Changes a key. Like revoke and delete, fails with
    /// [`StoreError::LastRootKey`](crate::StoreError::LastRootKey) (changing nothing) if it would end the last
    /// active root key that can manage keys ([`KeyRecord::is_managing_root`]);
    /// concurrent changes of root keys are serialized for this check.
    async fn update_key(
        &self,
        id: &str,
        patch: &KeyPatch,
        audit: &AuditEntry,
    ) -> StoreResult<KeyRecord>;
    /// Revokes a live key. Revoking a revoked key returns it unchanged.
    async fn revoke_key(
        &self,
        id: &str,
        reason: Option<&str>,
        audit: &AuditEntry,
    ) -> StoreResult<KeyRecord>;
    /// Marks `old_id` as replaced by `new_key` (its secret keeps working until
    /// `grace_until`) and inserts `new_key`, in one transaction.
    async fn rotate_key(
        &self,
        old_id: &str,
        new_key: &KeyRecord,
        grace_until: i64,
        audit: &AuditEntry,
    ) -> StoreResult<KeyRecord>;
    async fn delete_key(&self, id: &str, audit: &AuditEntry) -> StoreResult<KeyRecord>;
    /// Records last use for a batch of keys; older timestamps never overwrite
    /// newer ones.
    async fn touch_keys(&self, uses: &[KeyUse]) -> StoreResult<()>;
}
