//! keyward's storage.
//!
//! [`Store`] is everything the server needs from durable state: tenants,
//! keys (tenant keys and operator root keys in one table, told apart by
//! [`KeyClass`]), and the append-only audit log. Every management change and
//! its [`AuditEntry`] are written in one transaction. Its supertrait
//! [`UserStore`] keeps the console's people: users, roles per tenant,
//! sessions, invitations and failed sign-in counts.
//!
//! [`SqlStore`] implements it for SQLite (the embedded default) and
//! PostgreSQL (many nodes) with the same code: queries use only portable SQL
//! and portable column types (TEXT, BIGINT milliseconds, JSON as TEXT), and
//! the few dialect differences live in [`sql::schema`]. The conformance suite
//! in the integration tests runs against both.
#![forbid(unsafe_code)]

pub mod limits;
mod model;
pub mod sql;
pub mod users;

use async_trait::async_trait;

pub use limits::LimitStore;
pub use model::*;
pub use sql::SqlStore;
pub use users::{Invite, Invitee, Member, Membership, Role, Session, User, UserStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("a live key with this name already exists in this tenant")]
    NameTaken,
    #[error("{0}")]
    Conflict(&'static str),
    /// The change would leave no active root key that can manage keys.
    #[error("the change would end the last active root key that can manage keys")]
    LastRootKey,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage is unavailable: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("unsupported store URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The most hashes one [`Store::find_keys_with_tenants`] call takes (well
/// under SQLite's and PostgreSQL's bind-parameter limits).
pub const MAX_HASHES_PER_LOOKUP: usize = 500;

/// Durable state. Implementations must be safe to share across tasks and,
/// for PostgreSQL, across nodes.
#[async_trait]
pub trait Store: LimitStore + UserStore + Send + Sync + 'static {
    /// Cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_tenant(&self, tenant: &Tenant, audit: &AuditEntry) -> StoreResult<()>;
    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant>;
    async fn list_tenants(&self, page: PageRequest) -> StoreResult<Page<Tenant>>;
    async fn update_tenant(
        &self,
        id: &str,
        patch: &TenantPatch,
        audit: &AuditEntry,
    ) -> StoreResult<Tenant>;

    /// Inserts a key. [`StoreError::NameTaken`] if a live key of the same
    /// tenant already has its name.
    async fn create_key(&self, key: &KeyRecord, audit: &AuditEntry) -> StoreResult<()>;
    /// A key by id, including revoked ones; deleted keys are [`StoreError::NotFound`].
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
    /// [`StoreError::LastRootKey`] (changing nothing) if it would end the last
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

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEvent>>;
}
