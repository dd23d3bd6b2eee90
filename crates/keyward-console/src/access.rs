//! Who may do what in a tenant, and the management [`Actor`] that carries it.
//!
//! | | owner | admin | developer | viewer | operator |
//! |---|---|---|---|---|---|
//! | see keys and members | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | create, edit, revoke, rotate keys | ✓ | ✓ | ✓ | | ✓ |
//! | invite, change roles, remove members | ✓ | ✓ (not owners) | | | ✓ |
//! | read the audit log | ✓ | ✓ | | | ✓ |
//! | see webhook endpoints, deliveries and alerts | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | add, change, test, rotate, delete endpoints; redeliver | ✓ | ✓ | | | ✓ |
//! | list and create tenants | | | | | ✓ |
//!
//! The console checks these before acting, to answer with a clear message;
//! the management service it then calls checks the [`Actor`]'s scopes, role
//! and tenant again, so a page that forgot a check would still be refused.

use keyward_manage::Actor;
use keyward_store::{Role, Tenant};

use super::session::SignedIn;
use super::ConsoleError;
use crate::ConsoleState;

/// How the signed-in user stands in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Operator,
    Member(Role),
}

/// A tenant page's tenant, and what the user may do there.
#[derive(Debug, Clone)]
pub struct TenantAccess {
    pub tenant: Tenant,
    pub standing: Standing,
}

impl TenantAccess {
    /// The user's access to `tenant_id`, or 404 (never 403: a tenant the
    /// user does not belong to does not exist for them).
    pub async fn load(
        state: &ConsoleState,
        signed: &SignedIn,
        tenant_id: &str,
    ) -> Result<TenantAccess, ConsoleError> {
        let standing = if signed.user.operator {
            Standing::Operator
        } else {
            match signed.membership(tenant_id) {
                Some(m) => Standing::Member(m.role),
                None => return Err(ConsoleError::NotFound),
            }
        };
        let tenant = state.store.get_tenant(tenant_id).await?;
        Ok(TenantAccess { tenant, standing })
    }

    pub fn role(&self) -> Option<Role> {
        match self.standing {
            Standing::Operator => None,
            Standing::Member(r) => Some(r),
        }
    }

    /// What to call the user's standing on the page.
    pub fn label(&self) -> &'static str {
        match self.standing {
            Standing::Operator => "operator",
            Standing::Member(r) => r.as_str(),
        }
    }

    pub fn can_write_keys(&self) -> bool {
        !matches!(self.standing, Standing::Member(Role::Viewer))
    }

    pub fn can_manage_members(&self) -> bool {
        matches!(
            self.standing,
            Standing::Operator | Standing::Member(Role::Owner | Role::Admin)
        )
    }

    pub fn can_read_audit(&self) -> bool {
        self.can_manage_members()
    }

    /// Whether the user acts with `scope`: a member with their role's
    /// scopes ([`Actor::role_scopes`], the table the management service
    /// checks), an operator with every scope.
    pub fn holds(&self, scope: &str) -> bool {
        match self.standing {
            Standing::Operator => true,
            Standing::Member(role) => Actor::role_scopes(role).contains(&scope),
        }
    }

    pub fn can_write_webhooks(&self) -> bool {
        self.holds("keyward:webhooks:write")
    }

    /// Roles this user may give (invite with, or change to).
    pub fn grantable_roles(&self) -> Vec<Role> {
        match self.standing {
            Standing::Operator | Standing::Member(Role::Owner) => Role::ALL.to_vec(),
            Standing::Member(Role::Admin) => vec![Role::Admin, Role::Developer, Role::Viewer],
            Standing::Member(_) => Vec::new(),
        }
    }

    /// Whether this user may change or remove a member who has `role`.
    pub fn may_manage(&self, role: Role) -> bool {
        self.can_manage_members() && self.grantable_roles().contains(&role)
    }

    /// Whether this user may give a new key `scope` in this tenant: the
    /// management service's rule (`keyward_core::scope::refused_grants`) for
    /// their actor, with the tenant's ceiling. For offering only grantable scopes.
    pub fn may_grant(&self, state: &ConsoleState, scope: &str) -> bool {
        // What one may grant follows from the standing, not from who one is.
        let actor = match self.standing {
            Standing::Operator => Actor::operator("", None),
            Standing::Member(role) => Actor::member("", &self.tenant.id, role, None),
        };
        state.manage.may_grant(&actor, &self.tenant, scope)
    }

    pub fn refuse(&self, what: &str) -> ConsoleError {
        super::role_refusal(self.role(), &self.tenant.name, what)
    }

    /// The management actor for this user in this tenant: a member with
    /// their role (and its scopes), or an operator. Audit records name the
    /// user's id as the actor.
    pub fn actor(&self, signed: &SignedIn) -> Actor {
        match self.standing {
            Standing::Operator => Actor::operator(&signed.user.id, signed.ip),
            Standing::Member(role) => {
                Actor::member(&signed.user.id, &self.tenant.id, role, signed.ip)
            }
        }
    }
}

/// An operator acting outside any tenant (tenant list and creation).
pub fn operator_actor(signed: &SignedIn) -> Result<Actor, ConsoleError> {
    if !signed.user.operator {
        return Err(ConsoleError::Forbidden(
            "Only keyward operators can list and create tenants. \
             Ask an operator if you need a new tenant."
                .into(),
        ));
    }
    Ok(Actor::operator(&signed.user.id, signed.ip))
}
