//! Tenants: the businesses, accounts or organizations that own keys.

use keyward_store::{Page, StoreError, Tenant, TenantPatch};
use serde_json::{json, Value};

use super::{ManageService, Paging};
use crate::actor::Actor;
use crate::error::{not_found, FieldError, ManageError};
use crate::event::ChangeEvent;

/// A new tenant.
#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    /// Chosen by the caller, or a new `ten_…` id.
    pub id: Option<String>,
    pub name: String,
    pub tier: Option<String>,
    pub grantable_scopes: Option<Vec<String>>,
    pub metadata: Option<Value>,
    /// A balance under this raises `credits.low`.
    pub credits_low_threshold: Option<i64>,
}

/// Changes to a tenant: `None` leaves a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub tier: Option<Option<String>>,
    pub grantable_scopes: Option<Option<Vec<String>>>,
    pub metadata: Option<Value>,
    pub credits_low_threshold: Option<Option<i64>>,
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

impl ManageService {
    /// A tenant the actor may see, or [`ManageError::NotFound`].
    pub(crate) async fn visible_tenant(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<Tenant, ManageError> {
        if !actor.sees_tenant(Some(id)) {
            return Err(ManageError::NotFound("tenant"));
        }
        self.store.get_tenant(id).await.map_err(not_found("tenant"))
    }

    /// Creates a tenant. Operators only (`keyward:tenants:write`).
    pub async fn create_tenant(
        &self,
        actor: &Actor,
        input: NewTenant,
    ) -> Result<Tenant, ManageError> {
        actor.require("keyward:tenants:write")?;
        actor.require_operator()?;
        let policy = self.policy();
        let mut c = self.checks(&policy, actor);
        c.tenant_name(&input.name);
        let metadata = input.metadata.unwrap_or_else(|| json!({}));
        c.metadata(&metadata);
        if let Some(t) = &input.tier {
            c.tier(t);
        }
        let grantable_scopes = input.grantable_scopes.as_deref().map(|g| c.grantable(g));
        if input.credits_low_threshold.is_some_and(|t| t < 0) {
            c.push(
                "credits_low_threshold",
                "out_of_range",
                "the threshold is 0 or more credits",
            );
        }
        if let Some(id) = &input.id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                c.push(
                    "id",
                    "invalid",
                    "id must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -",
                );
            }
        }
        c.finish()?;
        let now = self.now().0;
        let id = match input.id {
            Some(id) => id,
            None => self.new_id("ten")?,
        };
        let tenant = Tenant {
            id,
            name: input.name.trim().to_owned(),
            metadata,
            created_at: now,
            updated_at: now,
            tier: input.tier,
            grantable_scopes,
            credits_low_threshold: input.credits_low_threshold,
        };
        let event = ChangeEvent::TenantCreated {
            tenant_id: tenant.id.clone(),
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "name": tenant.name, "grantable_scopes": tenant.grantable_scopes }),
        )?;
        self.store
            .create_tenant(&tenant, &audit)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => ManageError::Conflict {
                    code: "tenant_exists",
                    message: format!("{}.", capitalize(m)),
                },
                other => other.into(),
            })?;
        self.committed(&event);
        Ok(tenant)
    }

    /// Lists tenants, newest first. Operators only (`keyward:tenants:read`).
    pub async fn list_tenants(
        &self,
        actor: &Actor,
        paging: Paging,
    ) -> Result<Page<Tenant>, ManageError> {
        actor.require("keyward:tenants:read")?;
        actor.require_operator()?;
        Ok(self.store.list_tenants(paging.request()?).await?)
    }

    /// One tenant: operators, or an actor of that tenant (`keyward:tenants:read`).
    pub async fn get_tenant(&self, actor: &Actor, id: &str) -> Result<Tenant, ManageError> {
        actor.require("keyward:tenants:read")?;
        self.visible_tenant(actor, id).await
    }

    /// Renames a tenant or replaces its metadata; operators also set its
    /// tier and grantable scopes (`keyward:tenants:write`).
    pub async fn update_tenant(
        &self,
        actor: &Actor,
        id: &str,
        input: TenantChanges,
    ) -> Result<Tenant, ManageError> {
        actor.require("keyward:tenants:write")?;
        self.visible_tenant(actor, id).await?;
        let policy = self.policy();
        let mut c = self.checks(&policy, actor);
        if let Some(n) = &input.name {
            c.tenant_name(n);
        }
        if let Some(m) = &input.metadata {
            c.metadata(m);
        }
        match &input.tier {
            Some(Some(t)) => c.tier(t),
            Some(None) if !actor.is_operator() => c.errors.push(FieldError::new(
                "tier",
                "not_grantable",
                "only operator root keys set tiers",
            )),
            _ => {}
        }
        let grantable_scopes = match &input.grantable_scopes {
            None => None,
            Some(Some(g)) => Some(Some(c.grantable(g))),
            Some(None) => {
                if !actor.is_operator() {
                    c.push(
                        "grantable_scopes",
                        "not_grantable",
                        "only operators set a tenant's grantable scopes",
                    );
                }
                Some(None)
            }
        };
        if matches!(input.credits_low_threshold, Some(Some(t)) if t < 0) {
            c.push(
                "credits_low_threshold",
                "out_of_range",
                "the threshold is 0 or more credits",
            );
        }
        c.finish()?;
        let patch = TenantPatch {
            name: input.name.map(|n| n.trim().to_owned()),
            metadata: input.metadata,
            tier: input.tier,
            grantable_scopes,
            credits_low_threshold: input.credits_low_threshold,
            updated_at: self.now().0,
        };
        let mut changed = Vec::new();
        if patch.name.is_some() {
            changed.push("name");
        }
        if patch.metadata.is_some() {
            changed.push("metadata");
        }
        if patch.tier.is_some() {
            changed.push("tier");
        }
        if patch.credits_low_threshold.is_some() {
            changed.push("credits_low_threshold");
        }
        let mut details = json!({ "changed": changed });
        if let Some(g) = &patch.grantable_scopes {
            changed.push("grantable_scopes");
            details = json!({ "changed": changed, "grantable_scopes": g });
        }
        let event = ChangeEvent::TenantUpdated {
            tenant_id: id.to_owned(),
        };
        let audit = self.audit(actor, &event, details)?;
        let t = self.store.update_tenant(id, &patch, &audit).await?;
        self.committed(&event);
        Ok(t)
    }
}
