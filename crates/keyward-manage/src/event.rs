//! What changed: one [`ChangeEvent`] per committed management change, and
//! the [`Invalidator`] told of each.

use keyward_store::LedgerKind;

/// A committed management change. Carries ids, the tenant and, for keys,
/// the hex SHA-256 the cache knows them by; never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeEvent {
    TenantCreated {
        tenant_id: String,
    },
    TenantUpdated {
        tenant_id: String,
    },
    KeyCreated {
        key_id: String,
        tenant_id: String,
        hash: String,
    },
    RootKeyCreated {
        key_id: String,
        hash: String,
    },
    KeyUpdated {
        key_id: String,
        tenant_id: Option<String>,
        hash: String,
    },
    KeyRevoked {
        key_id: String,
        tenant_id: Option<String>,
        hash: String,
    },
    KeyRotated {
        old_key_id: String,
        old_hash: String,
        new_key_id: String,
        new_hash: String,
        tenant_id: Option<String>,
    },
    KeyDeleted {
        key_id: String,
        tenant_id: Option<String>,
        hash: String,
    },
    /// A leak report named this key (`report_id`); the policy's action, if
    /// any, is a change of its own (`KeyRevoked`, `KeyUpdated`).
    KeyLeaked {
        key_id: String,
        tenant_id: Option<String>,
        hash: String,
        report_id: String,
    },
    /// A grant or adjustment of a tenant's credits (ledger entry `ledger_id`).
    CreditsChanged {
        tenant_id: String,
        ledger_id: String,
        kind: LedgerKind,
    },
    RefillSet {
        tenant_id: String,
    },
    RefillCleared {
        tenant_id: String,
    },
    MemberInvited {
        tenant_id: String,
        invite_id: String,
    },
    InviteRevoked {
        tenant_id: String,
        invite_id: String,
    },
    MemberJoined {
        tenant_id: String,
        user_id: String,
        invite_id: String,
    },
    MemberRoleChanged {
        tenant_id: String,
        user_id: String,
    },
    MemberRemoved {
        tenant_id: String,
        user_id: String,
    },
    UserCreated {
        user_id: String,
    },
    UserPasswordSet {
        user_id: String,
    },
}

impl ChangeEvent {
    /// The audit log's `action` for this change.
    pub fn action(&self) -> &'static str {
        match self {
            ChangeEvent::TenantCreated { .. } => "tenant.created",
            ChangeEvent::TenantUpdated { .. } => "tenant.updated",
            ChangeEvent::KeyCreated { .. } => "key.created",
            ChangeEvent::RootKeyCreated { .. } => "root_key.created",
            ChangeEvent::KeyUpdated { .. } => "key.updated",
            ChangeEvent::KeyRevoked { .. } => "key.revoked",
            ChangeEvent::KeyRotated { .. } => "key.rotated",
            ChangeEvent::KeyDeleted { .. } => "key.deleted",
            ChangeEvent::KeyLeaked { .. } => "key.leaked",
            ChangeEvent::CreditsChanged {
                kind: LedgerKind::Grant,
                ..
            } => "credits.granted",
            ChangeEvent::CreditsChanged { .. } => "credits.adjusted",
            ChangeEvent::RefillSet { .. } => "credits.refill_set",
            ChangeEvent::RefillCleared { .. } => "credits.refill_cleared",
            ChangeEvent::MemberInvited { .. } => "member.invited",
            ChangeEvent::InviteRevoked { .. } => "invite.revoked",
            ChangeEvent::MemberJoined { .. } => "member.joined",
            ChangeEvent::MemberRoleChanged { .. } => "member.role_changed",
            ChangeEvent::MemberRemoved { .. } => "member.removed",
            ChangeEvent::UserCreated { .. } => "user.created",
            ChangeEvent::UserPasswordSet { .. } => "user.password_set",
        }
    }

    /// The tenant the change belongs to, if any.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            ChangeEvent::TenantCreated { tenant_id }
            | ChangeEvent::TenantUpdated { tenant_id }
            | ChangeEvent::KeyCreated { tenant_id, .. }
            | ChangeEvent::CreditsChanged { tenant_id, .. }
            | ChangeEvent::RefillSet { tenant_id }
            | ChangeEvent::RefillCleared { tenant_id }
            | ChangeEvent::MemberInvited { tenant_id, .. }
            | ChangeEvent::InviteRevoked { tenant_id, .. }
            | ChangeEvent::MemberJoined { tenant_id, .. }
            | ChangeEvent::MemberRoleChanged { tenant_id, .. }
            | ChangeEvent::MemberRemoved { tenant_id, .. } => Some(tenant_id),
            ChangeEvent::KeyUpdated { tenant_id, .. }
            | ChangeEvent::KeyRevoked { tenant_id, .. }
            | ChangeEvent::KeyRotated { tenant_id, .. }
            | ChangeEvent::KeyDeleted { tenant_id, .. }
            | ChangeEvent::KeyLeaked { tenant_id, .. } => tenant_id.as_deref(),
            ChangeEvent::RootKeyCreated { .. }
            | ChangeEvent::UserCreated { .. }
            | ChangeEvent::UserPasswordSet { .. } => None,
        }
    }

    /// The audit log's `target`: what the change is about.
    pub(crate) fn target(&self) -> &str {
        match self {
            ChangeEvent::TenantCreated { tenant_id }
            | ChangeEvent::TenantUpdated { tenant_id }
            | ChangeEvent::RefillSet { tenant_id }
            | ChangeEvent::RefillCleared { tenant_id } => tenant_id,
            ChangeEvent::KeyCreated { key_id, .. }
            | ChangeEvent::RootKeyCreated { key_id, .. }
            | ChangeEvent::KeyUpdated { key_id, .. }
            | ChangeEvent::KeyRevoked { key_id, .. }
            | ChangeEvent::KeyDeleted { key_id, .. }
            | ChangeEvent::KeyLeaked { key_id, .. } => key_id,
            ChangeEvent::KeyRotated { old_key_id, .. } => old_key_id,
            ChangeEvent::CreditsChanged { ledger_id, .. } => ledger_id,
            ChangeEvent::MemberInvited { invite_id, .. }
            | ChangeEvent::InviteRevoked { invite_id, .. } => invite_id,
            ChangeEvent::MemberJoined { user_id, .. }
            | ChangeEvent::MemberRoleChanged { user_id, .. }
            | ChangeEvent::MemberRemoved { user_id, .. }
            | ChangeEvent::UserCreated { user_id }
            | ChangeEvent::UserPasswordSet { user_id } => user_id,
        }
    }
}

/// Told of every change after it is committed, once per change, by
/// [`crate::ManageService`]. The server drops cache entries here.
pub trait Invalidator: Send + Sync + 'static {
    fn changed(&self, event: &ChangeEvent);
}

/// For direct-store commands (the CLI), where no cache runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInvalidation;

impl Invalidator for NoInvalidation {
    fn changed(&self, _event: &ChangeEvent) {}
}
