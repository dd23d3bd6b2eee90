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
    EndpointCreated {
        endpoint_id: String,
        tenant_id: Option<String>,
    },
    EndpointUpdated {
        endpoint_id: String,
        tenant_id: Option<String>,
    },
    EndpointSecretRotated {
        endpoint_id: String,
        tenant_id: Option<String>,
    },
    EndpointDeleted {
        endpoint_id: String,
        tenant_id: Option<String>,
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
            ChangeEvent::EndpointCreated { .. } => "webhook.endpoint_created",
            ChangeEvent::EndpointUpdated { .. } => "webhook.endpoint_updated",
            ChangeEvent::EndpointSecretRotated { .. } => "webhook.secret_rotated",
            ChangeEvent::EndpointDeleted { .. } => "webhook.endpoint_deleted",
        }
    }

    /// Whether this change is published as an event (to webhook endpoints):
    /// key, tenant and credit changes are; people and sign-in changes are not.
    pub fn published(&self) -> bool {
        matches!(
            self,
            ChangeEvent::TenantCreated { .. }
                | ChangeEvent::TenantUpdated { .. }
                | ChangeEvent::KeyCreated { .. }
                | ChangeEvent::KeyUpdated { .. }
                | ChangeEvent::KeyRevoked { .. }
                | ChangeEvent::KeyRotated { .. }
                | ChangeEvent::KeyDeleted { .. }
                | ChangeEvent::KeyLeaked { .. }
                | ChangeEvent::CreditsChanged { .. }
        )
    }

    /// The ids an event's `data` carries (never a hash or a secret).
    pub(crate) fn ids(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: &str| {
            m.insert(k.to_owned(), serde_json::Value::from(v));
        };
        match self {
            ChangeEvent::KeyCreated { key_id, .. }
            | ChangeEvent::KeyUpdated { key_id, .. }
            | ChangeEvent::KeyRevoked { key_id, .. }
            | ChangeEvent::KeyDeleted { key_id, .. } => put("key_id", key_id),
            ChangeEvent::KeyLeaked {
                key_id, report_id, ..
            } => {
                put("key_id", key_id);
                put("report_id", report_id);
            }
            ChangeEvent::KeyRotated {
                old_key_id,
                new_key_id,
                ..
            } => {
                put("key_id", old_key_id);
                put("new_key_id", new_key_id);
            }
            ChangeEvent::CreditsChanged { ledger_id, .. } => put("ledger_id", ledger_id),
            _ => {}
        }
        if let Some(t) = self.tenant_id() {
            put("tenant_id", t);
        }
        m
    }

    /// The key the change is about, if any.
    pub(crate) fn key_id(&self) -> Option<&str> {
        match self {
            ChangeEvent::KeyCreated { key_id, .. }
            | ChangeEvent::KeyUpdated { key_id, .. }
            | ChangeEvent::KeyRevoked { key_id, .. }
            | ChangeEvent::KeyDeleted { key_id, .. }
            | ChangeEvent::KeyLeaked { key_id, .. } => Some(key_id),
            ChangeEvent::KeyRotated { old_key_id, .. } => Some(old_key_id),
            _ => None,
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
            | ChangeEvent::KeyLeaked { tenant_id, .. }
            | ChangeEvent::EndpointCreated { tenant_id, .. }
            | ChangeEvent::EndpointUpdated { tenant_id, .. }
            | ChangeEvent::EndpointSecretRotated { tenant_id, .. }
            | ChangeEvent::EndpointDeleted { tenant_id, .. } => tenant_id.as_deref(),
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
            ChangeEvent::EndpointCreated { endpoint_id, .. }
            | ChangeEvent::EndpointUpdated { endpoint_id, .. }
            | ChangeEvent::EndpointSecretRotated { endpoint_id, .. }
            | ChangeEvent::EndpointDeleted { endpoint_id, .. } => endpoint_id,
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
