//! Who performs a management action.

use std::net::IpAddr;

use keyward_core::scope::{Grantor, ScopeSet};
use keyward_store::{KeyClass, Role};

use crate::error::ManageError;

/// Who acts. The audit `actor` of each kind is [`Actor::audit_id`]: the key
/// id for API keys, the user id for console people, the host's name
/// (`cli`) for the server's own CLI and bootstrap.
#[derive(Debug, Clone)]
pub enum Actor {
    /// An authenticated API key (every check but scopes has passed).
    Key {
        id: String,
        class: KeyClass,
        tenant_id: Option<String>,
        scopes: ScopeSet,
        ip: Option<IpAddr>,
    },
    /// A console member acting in `tenant_id` with their role's scopes.
    Member {
        user_id: String,
        tenant_id: String,
        role: Role,
        scopes: ScopeSet,
        ip: Option<IpAddr>,
    },
    /// A console operator: acts as an operator in every tenant.
    Operator { user_id: String, ip: Option<IpAddr> },
    /// A person acting for themselves without a role yet (accepting an
    /// invitation).
    User { user_id: String, ip: Option<IpAddr> },
    /// The server's host: its CLI and bootstrap, an operator without a key.
    Host { name: &'static str },
}

impl Actor {
    /// The host acting as `name` (e.g. `Actor::host("cli")`).
    pub fn host(name: &'static str) -> Actor {
        Actor::Host { name }
    }

    /// A console member of `tenant_id` with `role`, which decides the scopes
    /// they act with ([`Actor::role_scopes`]).
    pub fn member(user_id: &str, tenant_id: &str, role: Role, ip: Option<IpAddr>) -> Actor {
        Actor::Member {
            user_id: user_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            role,
            scopes: ScopeSet::new(Actor::role_scopes(role).iter().map(|s| (*s).to_owned())),
            ip,
        }
    }

    /// A console operator.
    pub fn operator(user_id: &str, ip: Option<IpAddr>) -> Actor {
        Actor::Operator {
            user_id: user_id.to_owned(),
            ip,
        }
    }

    /// The API scopes a console member's role acts with.
    pub fn role_scopes(role: Role) -> &'static [&'static str] {
        match role {
            Role::Owner | Role::Admin => &[
                "keyward:keys:read",
                "keyward:keys:write",
                "keyward:audit:read",
                "keyward:tenants:read",
                "keyward:webhooks:read",
                "keyward:webhooks:write",
                "keyward:alerts:read",
            ],
            Role::Developer => &[
                "keyward:keys:read",
                "keyward:keys:write",
                "keyward:tenants:read",
                "keyward:webhooks:read",
                "keyward:alerts:read",
            ],
            Role::Viewer => &[
                "keyward:keys:read",
                "keyward:tenants:read",
                "keyward:webhooks:read",
                "keyward:alerts:read",
            ],
        }
    }

    /// Fails with [`ManageError::InsufficientScope`] unless the actor holds `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ManageError> {
        let allowed = match self {
            Actor::Key { scopes, .. } | Actor::Member { scopes, .. } => scopes.allows(scope),
            Actor::Operator { .. } | Actor::Host { .. } => true,
            Actor::User { .. } => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ManageError::InsufficientScope {
                missing: vec![scope.to_owned()],
            })
        }
    }

    /// Operators: root keys, console operators and the host.
    pub fn is_operator(&self) -> bool {
        match self {
            Actor::Key { class, .. } => *class == KeyClass::Root,
            Actor::Operator { .. } | Actor::Host { .. } => true,
            Actor::Member { .. } | Actor::User { .. } => false,
        }
    }

    pub fn require_operator(&self) -> Result<(), ManageError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ManageError::RootOnly)
        }
    }

    /// The tenant a tenant key or member acts in (operators: none).
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Actor::Key { tenant_id, .. } => tenant_id.as_deref(),
            Actor::Member { tenant_id, .. } => Some(tenant_id),
            _ => None,
        }
    }

    /// Whether this actor may see things of `tenant_id` (operators see all;
    /// others their own tenant only). Actions answer 404 otherwise.
    pub fn sees_tenant(&self, tenant_id: Option<&str>) -> bool {
        self.is_operator() || (tenant_id.is_some() && tenant_id == self.tenant_id())
    }

    /// Whether this is a console member (grant refusals are worded for them).
    pub fn is_member(&self) -> bool {
        matches!(self, Actor::Member { .. })
    }

    /// Who this actor is when giving a key scopes
    /// (`keyward_core::scope::refused_grants`).
    pub fn grantor(&self) -> Grantor<'_> {
        match self {
            Actor::Member { scopes, .. } => Grantor::Member(scopes),
            Actor::Key { scopes, .. } if !self.is_operator() => Grantor::Key(scopes),
            _ => Grantor::Operator,
        }
    }

    /// The audit log's `actor` for this actor.
    pub fn audit_id(&self) -> &str {
        match self {
            Actor::Key { id, .. } => id,
            Actor::Member { user_id, .. }
            | Actor::Operator { user_id, .. }
            | Actor::User { user_id, .. } => user_id,
            Actor::Host { name } => name,
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Actor::Key { ip, .. }
            | Actor::Member { ip, .. }
            | Actor::Operator { ip, .. }
            | Actor::User { ip, .. } => *ip,
            Actor::Host { .. } => None,
        }
    }

    /// The console role, for members.
    pub fn role(&self) -> Option<Role> {
        match self {
            Actor::Member { role, .. } => Some(*role),
            _ => None,
        }
    }

    /// Whether this actor may invite, change and remove members of
    /// `tenant_id`: operators, and its owners and admins.
    pub fn manages_members(&self, tenant_id: &str) -> bool {
        match self {
            Actor::Member {
                tenant_id: t, role, ..
            } => t == tenant_id && matches!(role, Role::Owner | Role::Admin),
            other => other.is_operator(),
        }
    }

    /// The roles this actor may give (invite with, or change to).
    pub fn grantable_roles(&self) -> Vec<Role> {
        match self {
            Actor::Member { role, .. } => match role {
                Role::Owner => Role::ALL.to_vec(),
                Role::Admin => vec![Role::Admin, Role::Developer, Role::Viewer],
                _ => Vec::new(),
            },
            other if other.is_operator() => Role::ALL.to_vec(),
            _ => Vec::new(),
        }
    }
}
