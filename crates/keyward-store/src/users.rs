//! Console users: people who sign in to the console, their role in each
//! tenant, their sessions, invitations, and failed sign-in counters.
//!
//! [`UserStore`] is a supertrait of [`crate::Store`], so an `Arc<dyn Store>`
//! reaches it. Nothing here holds a credential in the clear: users keep an
//! argon2id PHC string, sessions and invitations are looked up by the hex
//! SHA-256 of their random token, which only the browser (or the invitee's
//! link) ever holds.

use async_trait::async_trait;

use crate::{AuditEntry, StoreResult};

/// A person who signs in to the console.
#[derive(Clone, PartialEq)]
pub struct User {
    /// `usr_…`
    pub id: String,
    /// Lower-cased; unique.
    pub email: String,
    pub name: String,
    /// argon2id PHC string (`$argon2id$v=19$…`).
    pub password_hash: String,
    /// keyward's operators see and manage every tenant.
    pub operator: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

/// What a member may do in a tenant. Ordered from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Owner,
    Admin,
    Developer,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Developer, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A user's role in one tenant, with the tenant's name for display.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub tenant_id: String,
    pub tenant_name: String,
    pub user_id: String,
    pub role: Role,
    pub created_at: i64,
}

/// A member of a tenant, as the members page lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

/// A signed-in browser. Found by the hash of the cookie's token.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Hex SHA-256 of the session token; the token itself is never stored.
    pub token_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// Absolute end, whatever the activity.
    pub expires_at: i64,
    pub ip: Option<String>,
}

/// A one-time invitation to join a tenant with a role.
#[derive(Debug, Clone, PartialEq)]
pub struct Invite {
    /// `inv_…`; public, appears in the audit log and in URLs.
    pub id: String,
    /// Hex SHA-256 of the token in the invite link.
    pub token_hash: String,
    pub tenant_id: String,
    pub email: String,
    pub role: Role,
    /// The user id that invited.
    pub invited_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub accepted_by: Option<String>,
    pub revoked_at: Option<i64>,
}

impl Invite {
    /// Whether the link still works at `now`.
    pub fn is_open(&self, now: i64) -> bool {
        self.accepted_at.is_none() && self.revoked_at.is_none() && now < self.expires_at
    }
}

/// How an invitation is accepted: by a new user (created in the same
/// transaction) or by an existing one.
#[derive(Debug, Clone)]
pub enum Invitee<'a> {
    New(&'a User),
    Existing(&'a str),
}

/// Console users, memberships, sessions, invitations and sign-in throttling.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// [`crate::StoreError::Conflict`] if the email is taken.
    async fn create_user(&self, user: &User, audit: &AuditEntry) -> StoreResult<()>;
    async fn get_user(&self, id: &str) -> StoreResult<User>;
    /// By lower-cased email.
    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// Every user, oldest first (for operators and the CLI).
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Replaces the password hash and ends every session of the user.
    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// The user's tenants, by tenant name.
    async fn memberships_of(&self, user_id: &str) -> StoreResult<Vec<Membership>>;
    async fn membership(&self, tenant_id: &str, user_id: &str) -> StoreResult<Option<Membership>>;
    /// The tenant's members, by email.
    async fn list_members(&self, tenant_id: &str) -> StoreResult<Vec<Member>>;
    /// Adds a member or changes their role. Refuses
    /// ([`crate::StoreError::Conflict`]) to leave a tenant that has owners
    /// without one.
    async fn set_role(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: Role,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    /// Refuses ([`crate::StoreError::Conflict`]) to remove the last owner.
    async fn remove_member(
        &self,
        tenant_id: &str,
        user_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<Session>>;
    /// Records activity (for the idle timeout).
    async fn touch_session(&self, token_hash: &str, at: i64) -> StoreResult<()>;
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
    /// Deletes sessions past their absolute end or idle since before `idle_before`.
    async fn purge_sessions(&self, now: i64, idle_before: i64) -> StoreResult<u64>;

    async fn create_invite(&self, invite: &Invite, audit: &AuditEntry) -> StoreResult<()>;
    async fn find_invite(&self, token_hash: &str) -> StoreResult<Option<Invite>>;
    /// Open (unaccepted, unrevoked, unexpired at `now`) invitations of a tenant.
    async fn list_invites(&self, tenant_id: &str, now: i64) -> StoreResult<Vec<Invite>>;
    async fn revoke_invite(
        &self,
        tenant_id: &str,
        invite_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    /// Uses the invitation once: marks it accepted (only if still open at
    /// `audit.at`), creates the user if new, and adds the membership, in one
    /// transaction. [`crate::StoreError::Conflict`] if the invitation was
    /// used, revoked or expired meanwhile, or the user is already a member.
    async fn accept_invite(
        &self,
        invite: &Invite,
        invitee: Invitee<'_>,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// Failed sign-ins counted for `subject` (an account or an address) in
    /// its current window, and when that window started; `(0, now)` if none.
    async fn login_failures(
        &self,
        subject: &str,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<(i64, i64)>;
    /// Counts one failure in one atomic step and returns the new count and
    /// when the window started.
    async fn record_login_failure(
        &self,
        subject: &str,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<(i64, i64)>;
    async fn clear_login_failures(&self, subject: &str) -> StoreResult<()>;
}
