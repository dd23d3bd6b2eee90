//! Who may do what in a tenant, and the API [`Caller`] that carries it.
//!
//! | | owner | admin | developer | viewer | operator |
//! |---|---|---|---|---|---|
//! | see keys and members | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | create, edit, revoke, rotate keys | ✓ | ✓ | ✓ | | ✓ |
//! | invite, change roles, remove members | ✓ | ✓ (not owners) | | | ✓ |
//! | read the audit log | ✓ | ✓ | | | ✓ |
//! | list and create tenants | | | | | ✓ |
//!
//! The console checks these before acting, to answer with a clear message;
//! the API handlers it then calls check the [`Caller`]'s scopes and tenant
//! again, so a page that forgot a check would still be refused.

use std::sync::Arc;

use keyward_core::clock::Timestamp;
use keyward_core::scope::{refused_grants, Grantor, ScopeSet};
use keyward_store::{KeyClass, KeyRecord, Role, Tenant};

use super::session::SignedIn;
use super::ConsoleError;
use crate::api::Caller;
use crate::app::AppState;
use crate::verifier::CachedKey;

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
        state: &AppState,
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
    /// API's rule (`keyward_core::scope::refused_grants`) for their caller,
    /// with the tenant's ceiling. For offering only grantable scopes.
    pub fn may_grant(&self, scope: &str) -> bool {
        let role;
        let grantor = match self.standing {
            Standing::Operator => Grantor::Operator,
            Standing::Member(r) => {
                role = ScopeSet::new(role_scopes(r).iter().map(|s| (*s).to_owned()));
                Grantor::Member(&role)
            }
        };
        let ceiling = self
            .tenant
            .grantable_scopes
            .as_ref()
            .map(|g| ScopeSet::new(g.iter().cloned()));
        refused_grants(
            grantor,
            ceiling.as_ref(),
            &ScopeSet::default(),
            &[scope.to_owned()],
        )
        .is_empty()
    }

    pub fn refuse(&self, what: &str) -> ConsoleError {
        super::role_refusal(self.role(), &self.tenant.name, what)
    }

    /// The API caller for this user in this tenant: the scopes of their
    /// role, confined to the tenant (operators act as a root key). Audit
    /// records name the user's id as the actor.
    pub fn caller(&self, state: &AppState, signed: &SignedIn) -> Caller {
        let (class, tenant_id, scopes): (KeyClass, Option<String>, &[&str]) = match self.standing {
            Standing::Operator => (KeyClass::Root, None, &["keyward:*"]),
            Standing::Member(role) => (
                KeyClass::Tenant,
                Some(self.tenant.id.clone()),
                role_scopes(role),
            ),
        };
        user_caller(
            state,
            signed,
            class,
            tenant_id,
            scopes,
            Some(&self.tenant.name),
        )
    }
}

/// The API scopes a member's role acts with.
fn role_scopes(role: Role) -> &'static [&'static str] {
    match role {
        Role::Owner | Role::Admin => &[
            "keyward:keys:read",
            "keyward:keys:write",
            "keyward:audit:read",
            "keyward:tenants:read",
        ],
        Role::Developer => &[
            "keyward:keys:read",
            "keyward:keys:write",
            "keyward:tenants:read",
        ],
        Role::Viewer => &["keyward:keys:read", "keyward:tenants:read"],
    }
}

/// An operator acting outside any tenant (tenant list and creation).
pub fn operator_caller(state: &AppState, signed: &SignedIn) -> Result<Caller, ConsoleError> {
    if !signed.user.operator {
        return Err(ConsoleError::Forbidden(
            "Only keyward operators can list and create tenants. \
             Ask an operator if you need a new tenant."
                .into(),
        ));
    }
    Ok(user_caller(
        state,
        signed,
        KeyClass::Root,
        None,
        &["keyward:*"],
        None,
    ))
}

fn user_caller(
    state: &AppState,
    signed: &SignedIn,
    class: KeyClass,
    tenant_id: Option<String>,
    scopes: &[&str],
    tenant_name: Option<&str>,
) -> Caller {
    let user = &signed.user;
    let now = state.clock.now();
    let issued = KeyRecord::issued(
        user.id.clone(),
        class,
        "console".into(),
        String::new(),
        String::new(),
        user.id.clone(),
        Timestamp::millis(now),
    );
    let record = KeyRecord {
        tenant_id,
        name: user.email.clone(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..issued
    };
    let actor = match (&record.tenant_id, class) {
        (Some(t), KeyClass::Tenant) => {
            let role = signed.membership(t).map_or(Role::Viewer, |m| m.role);
            keyward_manage::Actor::member(&user.id, t, role, signed.ip)
        }
        _ => keyward_manage::Actor::operator(&user.id, signed.ip),
    };
    Caller {
        key: Arc::new(CachedKey::new(record, tenant_name.map(str::to_owned), None)),
        actor,
    }
}
