//! Keys: create (secret returned once), read, list, update, revoke, rotate,
//! delete; and root keys, which the host creates.

use keyward_core::secret::{KeyKind, KeySecret};
use keyward_store::{
    KeyClass, KeyFilter, KeyPatch, KeyRecord, KeyStatus, Page, PageRequest, StoreError, Tenant,
};
use serde_json::{json, Value};

use super::{IssuedKey, ManageService, Paging};
use crate::actor::Actor;
use crate::check::{check_grants, Checks, MAX_GRACE_SECONDS, MAX_KEY_NAME, MAX_REASON};
use crate::error::{not_found, ManageError};
use crate::event::ChangeEvent;

/// A key's own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInput {
    pub limit: u64,
    pub window_seconds: u64,
    /// Defaults to `limit`.
    pub burst: Option<u64>,
}

/// A new tenant key.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Operators must name it; tenant actors default to their own.
    pub tenant_id: Option<String>,
    pub name: String,
    pub environment: String,
    pub scopes: Vec<String>,
    pub owner: Option<String>,
    pub tier: Option<String>,
    pub credit_cap: Option<i64>,
    pub rate_limit: Option<RateLimitInput>,
    pub ip_allowlist: Vec<String>,
    pub sub_tenants: Vec<String>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    pub metadata: Option<Value>,
    pub enabled: Option<bool>,
}

/// Changes to a key: `None` leaves a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct KeyChanges {
    pub name: Option<String>,
    pub owner: Option<Option<String>>,
    pub scopes: Option<Vec<String>>,
    pub tier: Option<Option<String>>,
    pub credit_cap: Option<Option<i64>>,
    pub rate_limit: Option<Option<RateLimitInput>>,
    pub ip_allowlist: Option<Vec<String>>,
    pub sub_tenants: Option<Vec<String>>,
    pub expires_at: Option<Option<String>>,
    pub metadata: Option<Value>,
    pub enabled: Option<bool>,
}

/// Which keys to list.
#[derive(Debug, Clone)]
pub struct KeyQuery {
    /// Operators: filter by tenant. Others see their own tenant.
    pub tenant_id: Option<String>,
    pub environment: Option<String>,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: Option<String>,
    /// `tenant` (default) or `root` (operators only).
    pub kind: Option<String>,
    pub paging: Paging,
}

/// What a revocation did.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub key: KeyRecord,
    /// The key was revoked before this call: nothing changed, nothing was
    /// audited (revoking is idempotent).
    pub already_revoked: bool,
}

impl ManageService {
    pub(crate) fn checks<'a>(
        &self,
        policy: &'a crate::ManagePolicy,
        actor: &'a Actor,
    ) -> Checks<'a> {
        Checks {
            policy,
            actor,
            now: self.now(),
            errors: Vec::new(),
        }
    }

    async fn load_tenant(&self, id: &str) -> Result<Tenant, ManageError> {
        self.store.get_tenant(id).await.map_err(not_found("tenant"))
    }

    /// A key the actor may see, or [`ManageError::NotFound`] (never a
    /// refusal: ids of other tenants do not exist for them).
    pub(crate) async fn visible_key(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<KeyRecord, ManageError> {
        let k = self.store.get_key(id).await.map_err(not_found("key"))?;
        let sees = match k.class {
            KeyClass::Root => actor.is_operator(),
            KeyClass::Tenant => actor.sees_tenant(k.tenant_id.as_deref()),
        };
        if sees {
            Ok(k)
        } else {
            Err(ManageError::NotFound("key"))
        }
    }

    /// Whether an active root key other than `id` can manage keys (to
    /// answer a root key deleting itself; the store enforces the rule itself).
    async fn another_managing_root(&self, id: &str) -> Result<bool, ManageError> {
        let now = self.now().0;
        let filter = KeyFilter {
            class: Some(KeyClass::Root),
            status: Some(KeyStatus::Active),
            now,
            ..KeyFilter::default()
        };
        let mut before = None;
        loop {
            let page = self
                .store
                .list_keys(&filter, PageRequest { limit: 100, before })
                .await?;
            if page
                .items
                .iter()
                .any(|(_, k)| k.id != id && k.is_managing_root(now))
            {
                return Ok(true);
            }
            match page.next {
                Some(n) => before = Some(n),
                None => return Ok(false),
            }
        }
    }

    fn generate(&self, kind: &KeyKind) -> Result<KeySecret, ManageError> {
        self.policy()
            .format
            .generate(kind, self.entropy.as_ref())
            .map_err(|e| {
                tracing::error!(error = %e, "Key generation failed.");
                ManageError::Internal
            })
    }

    /// Creates a tenant key (`keyward:keys:write`). The secret is returned
    /// once and never stored.
    pub async fn create_key(&self, actor: &Actor, input: NewKey) -> Result<IssuedKey, ManageError> {
        actor.require("keyward:keys:write")?;
        let tenant_id = match (&input.tenant_id, actor.tenant_id()) {
            (Some(t), _) if !actor.sees_tenant(Some(t)) => {
                return Err(ManageError::NotFound("tenant"))
            }
            (Some(t), _) => t.clone(),
            (None, Some(own)) => own.to_owned(),
            (None, None) => {
                return Err(ManageError::field(
                    "tenant_id",
                    "required",
                    "root keys must say which tenant the key is for",
                ))
            }
        };
        let policy = self.policy();
        let mut c = self.checks(&policy, actor);
        let name = c.key_name(&input.name);
        c.environment(&input.environment);
        let scopes = c.scopes(&input.scopes);
        let ip_allowlist = c.allowlist(&input.ip_allowlist);
        let sub_tenants = c.sub_tenants(&input.sub_tenants);
        let expires_at = input.expires_at.as_deref().and_then(|e| c.expiry(e));
        let metadata = input.metadata.unwrap_or_else(|| json!({}));
        c.metadata(&metadata);
        if let Some(t) = &input.tier {
            c.tier(t);
        }
        if let Some(o) = &input.owner {
            c.text("owner", o, 200);
        }
        if let Some(cap) = input.credit_cap {
            c.credit_cap(cap);
        }
        let rate_limit = input.rate_limit.as_ref().and_then(|r| c.rate_limit(r));
        c.finish()?;
        let tenant = self.load_tenant(&tenant_id).await?;
        check_grants(actor, &tenant, &[], &scopes)?;

        let secret = self.generate(&KeyKind::Environment(input.environment.clone()))?;
        let now = self.now();
        let issued = KeyRecord::issued(
            self.new_id("key")?,
            KeyClass::Tenant,
            input.environment,
            secret.hash().to_hex(),
            secret.start(),
            actor.audit_id().to_owned(),
            now.0,
        );
        let record = KeyRecord {
            tenant_id: Some(tenant_id.clone()),
            name,
            owner: input.owner,
            scopes,
            tier: input.tier,
            credit_cap: input.credit_cap,
            rate_limit,
            ip_allowlist,
            sub_tenants,
            expires_at,
            metadata,
            enabled: input.enabled.unwrap_or(true),
            ..issued
        };
        let event = ChangeEvent::KeyCreated {
            key_id: record.id.clone(),
            tenant_id: tenant_id.clone(),
            hash: record.hash.clone(),
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "name": record.name, "environment": record.environment, "scopes": record.scopes }),
        )?;
        self.store.create_key(&record, &audit).await?;
        self.committed(&event);
        tracing::info!(key_id = %record.id, tenant_id = %tenant_id, actor = %actor.audit_id(), "Key created.");
        Ok(IssuedKey {
            record,
            secret,
            at: now,
        })
    }

    /// Lists keys, newest first (`keyward:keys:read`).
    pub async fn list_keys(
        &self,
        actor: &Actor,
        q: KeyQuery,
    ) -> Result<Page<KeyRecord>, ManageError> {
        actor.require("keyward:keys:read")?;
        let mut errors = Vec::new();
        let status = match q.status.as_deref() {
            None => None,
            Some(s) => {
                let parsed = KeyStatus::parse(s);
                if parsed.is_none() {
                    errors.push(crate::FieldError::new(
                        "status",
                        "invalid",
                        "status must be active, disabled, expired or revoked",
                    ));
                }
                parsed
            }
        };
        let class = match q.kind.as_deref() {
            None | Some("tenant") => KeyClass::Tenant,
            Some("root") if actor.is_operator() => KeyClass::Root,
            Some("root") => return Err(ManageError::RootOnly),
            Some(_) => {
                errors.push(crate::FieldError::new(
                    "kind",
                    "invalid",
                    "kind must be tenant or root",
                ));
                KeyClass::Tenant
            }
        };
        if !errors.is_empty() {
            return Err(ManageError::Validation(errors));
        }
        let tenant_id = match (actor.is_operator(), q.tenant_id) {
            (true, t) => t,
            (false, Some(t)) if Some(t.as_str()) != actor.tenant_id() => {
                return Err(ManageError::NotFound("tenant"))
            }
            (false, _) => actor.tenant_id().map(str::to_owned),
        };
        let filter = KeyFilter {
            tenant_id,
            class: Some(class),
            environment: q.environment,
            status,
            now: self.now().0,
        };
        let page = q.paging.request()?;
        Ok(self.store.list_keys(&filter, page).await?)
    }

    /// One key (`keyward:keys:read`).
    pub async fn get_key(&self, actor: &Actor, id: &str) -> Result<KeyRecord, ManageError> {
        actor.require("keyward:keys:read")?;
        self.visible_key(actor, id).await
    }

    /// Changes a key (`keyward:keys:write`).
    pub async fn update_key(
        &self,
        actor: &Actor,
        id: &str,
        input: KeyChanges,
    ) -> Result<KeyRecord, ManageError> {
        actor.require("keyward:keys:write")?;
        let current = self.visible_key(actor, id).await?;
        if current.revoked_at.is_some() {
            return Err(ManageError::Conflict {
                code: "key_revoked",
                message: "The key is revoked and can no longer be changed.".into(),
            });
        }
        let policy = self.policy();
        let mut c = self.checks(&policy, actor);
        let mut patch = KeyPatch {
            updated_at: self.now().0,
            ..KeyPatch::default()
        };
        let mut changed: Vec<&str> = Vec::new();
        if let Some(n) = &input.name {
            patch.name = Some(c.key_name(n));
            changed.push("name");
        }
        if let Some(s) = &input.scopes {
            patch.scopes = Some(c.scopes(s));
            changed.push("scopes");
        }
        if let Some(a) = &input.ip_allowlist {
            patch.ip_allowlist = Some(c.allowlist(a));
            changed.push("ip_allowlist");
        }
        if let Some(t) = &input.sub_tenants {
            patch.sub_tenants = Some(c.sub_tenants(t));
            changed.push("sub_tenants");
        }
        if let Some(e) = &input.expires_at {
            patch.expires_at = Some(e.as_deref().and_then(|e| c.expiry(e)));
            changed.push("expires_at");
        }
        if let Some(m) = &input.metadata {
            c.metadata(m);
            patch.metadata = Some(m.clone());
            changed.push("metadata");
        }
        if let Some(t) = &input.tier {
            match t {
                Some(t) => c.tier(t),
                None if !actor.is_operator() => c.push(
                    "tier",
                    "not_grantable",
                    "only operator root keys change a key's tier",
                ),
                None => {}
            }
            patch.tier = Some(t.clone());
            changed.push("tier");
        }
        if let Some(r) = &input.rate_limit {
            let value = match r {
                Some(r) => c.rate_limit(r),
                None if !actor.is_operator() => {
                    c.push(
                        "rate_limit",
                        "not_grantable",
                        "only operator root keys change a key's own rate limit",
                    );
                    None
                }
                None => None,
            };
            patch.rate_limit = Some(value);
            changed.push("rate_limit");
        }
        if let Some(o) = &input.owner {
            if let Some(o) = o {
                c.text("owner", o, 200);
            }
            patch.owner = Some(o.clone());
            changed.push("owner");
        }
        if let Some(cap) = input.credit_cap {
            if let Some(cap) = cap {
                c.credit_cap(cap);
            }
            patch.credit_cap = Some(cap);
            changed.push("credit_cap");
        }
        if let Some(e) = input.enabled {
            patch.enabled = Some(e);
            changed.push(if e { "enabled" } else { "disabled" });
        }
        c.finish()?;
        if let (Some(scopes), Some(t)) = (&patch.scopes, &current.tenant_id) {
            if !actor.is_operator() {
                let tenant = self.load_tenant(t).await?;
                check_grants(actor, &tenant, &current.scopes, scopes)?;
            }
        }
        let event = ChangeEvent::KeyUpdated {
            key_id: id.to_owned(),
            tenant_id: current.tenant_id.clone(),
            hash: current.hash.clone(),
        };
        let audit = self.audit(actor, &event, json!({ "changed": changed }))?;
        let k = self
            .store
            .update_key(id, &patch, &audit)
            .await
            .map_err(not_found("key"))?;
        self.committed(&ChangeEvent::KeyUpdated {
            key_id: k.id.clone(),
            tenant_id: k.tenant_id.clone(),
            hash: k.hash.clone(),
        });
        Ok(k)
    }

    /// Revokes a key at once (`keyward:keys:write`).
    pub async fn revoke_key(
        &self,
        actor: &Actor,
        id: &str,
        reason: Option<String>,
    ) -> Result<Revocation, ManageError> {
        actor.require("keyward:keys:write")?;
        let current = self.visible_key(actor, id).await?;
        if let Some(r) = &reason {
            let policy = self.policy();
            let mut c = self.checks(&policy, actor);
            c.text("reason", r, MAX_REASON);
            c.finish()?;
        }
        if current.revoked_at.is_some() {
            // Idempotent: nothing changes, nothing is audited or announced.
            return Ok(Revocation {
                key: current,
                already_revoked: true,
            });
        }
        let event = ChangeEvent::KeyRevoked {
            key_id: id.to_owned(),
            tenant_id: current.tenant_id.clone(),
            hash: current.hash.clone(),
        };
        let audit = self.audit(actor, &event, json!({ "reason": reason }))?;
        let k = self
            .store
            .revoke_key(id, reason.as_deref(), &audit)
            .await
            .map_err(not_found("key"))?;
        // A concurrent revocation won: the store changed and audited nothing.
        if k.revoked_at != Some(audit.at) {
            return Ok(Revocation {
                key: k,
                already_revoked: true,
            });
        }
        self.committed(&ChangeEvent::KeyRevoked {
            key_id: k.id.clone(),
            tenant_id: k.tenant_id.clone(),
            hash: k.hash.clone(),
        });
        tracing::info!(key_id = %id, actor = %actor.audit_id(), "Key revoked.");
        Ok(Revocation {
            key: k,
            already_revoked: false,
        })
    }

    /// Issues a new secret for a key; the old one works for `grace_seconds`
    /// more (`keyward:keys:write`). Returns the new key and its secret once.
    pub async fn rotate_key(
        &self,
        actor: &Actor,
        id: &str,
        grace_seconds: u64,
    ) -> Result<IssuedKey, ManageError> {
        actor.require("keyward:keys:write")?;
        let old = self.visible_key(actor, id).await?;
        let grace = grace_seconds;
        if grace > MAX_GRACE_SECONDS {
            return Err(ManageError::field(
                "grace_seconds",
                "out_of_range",
                format!("grace_seconds must be at most {MAX_GRACE_SECONDS} (30 days)"),
            ));
        }
        if old.class == KeyClass::Root {
            return Err(ManageError::Conflict {
                code: "root_key_rotation",
                message:
                    "Root keys are rotated with the CLI: create a new one, then revoke this one."
                        .into(),
            });
        }
        // The new secret is a new grant of the old key's scopes to the actor.
        if let (false, Some(t)) = (actor.is_operator(), &old.tenant_id) {
            let tenant = self.load_tenant(t).await?;
            check_grants(actor, &tenant, &[], &old.scopes)?;
        }
        let secret = self.generate(&KeyKind::Environment(old.environment.clone()))?;
        let now = self.now();
        let new_key = KeyRecord {
            id: self.new_id("key")?,
            hash: secret.hash().to_hex(),
            start: secret.start(),
            created_by: actor.audit_id().to_owned(),
            created_at: now.0,
            updated_at: now.0,
            last_used_at: None,
            last_used_ip: None,
            rotated_from: Some(old.id.clone()),
            replaced_by: None,
            grace_until: None,
            ..old.clone()
        };
        let grace_until = now.plus_seconds(i64::try_from(grace).unwrap_or(i64::MAX));
        let event = ChangeEvent::KeyRotated {
            old_key_id: old.id.clone(),
            old_hash: old.hash.clone(),
            new_key_id: new_key.id.clone(),
            new_hash: new_key.hash.clone(),
            tenant_id: old.tenant_id.clone(),
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "new_key_id": new_key.id, "grace_seconds": grace }),
        )?;
        let created = self
            .store
            .rotate_key(&old.id, &new_key, grace_until.0, &audit)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => ManageError::Conflict {
                    code: "key_not_rotatable",
                    message: m.to_owned(),
                },
                other => not_found("key")(other),
            })?;
        self.committed(&event);
        tracing::info!(key_id = %old.id, new_key_id = %created.id, grace_seconds = grace, "Key rotated.");
        Ok(IssuedKey {
            record: created,
            secret,
            at: now,
        })
    }

    /// Deletes a key (`keyward:keys:write`); a key cannot delete itself.
    pub async fn delete_key(&self, actor: &Actor, id: &str) -> Result<(), ManageError> {
        actor.require("keyward:keys:write")?;
        let current = self.visible_key(actor, id).await?;
        if matches!(actor, Actor::Key { id: own, .. } if *own == current.id) {
            if current.class == KeyClass::Root && !self.another_managing_root(&current.id).await? {
                return Err(ManageError::LastRootKey);
            }
            return Err(ManageError::Conflict {
                code: "cannot_delete_self",
                message: "A key cannot delete itself; use another key.".into(),
            });
        }
        let event = ChangeEvent::KeyDeleted {
            key_id: id.to_owned(),
            tenant_id: current.tenant_id.clone(),
            hash: current.hash.clone(),
        };
        let audit = self.audit(actor, &event, json!({}))?;
        let k = self
            .store
            .delete_key(id, &audit)
            .await
            .map_err(not_found("key"))?;
        self.committed(&ChangeEvent::KeyDeleted {
            key_id: k.id.clone(),
            tenant_id: k.tenant_id.clone(),
            hash: k.hash.clone(),
        });
        Ok(())
    }

    /// Creates an operator root key named `name` with `scopes` (default
    /// `keyward:*`), straight in the store: how a deployment gets its first
    /// key. Operators only (in practice the host's CLI).
    pub async fn create_root_key(
        &self,
        actor: &Actor,
        name: &str,
        scopes: &[String],
    ) -> Result<IssuedKey, ManageError> {
        actor.require_operator()?;
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_KEY_NAME
            || name.chars().any(char::is_control)
        {
            return Err(ManageError::field(
                "name",
                "invalid",
                format!("name must be 1 to {MAX_KEY_NAME} printable characters"),
            ));
        }
        let scopes = if scopes.is_empty() {
            vec!["keyward:*".to_owned()]
        } else {
            scopes.to_vec()
        };
        let policy = self.policy();
        let mut errors = Vec::new();
        for (i, s) in scopes.iter().enumerate() {
            if let Err(e) = policy.catalog.check_grant(s) {
                errors.push(crate::FieldError::new(
                    format!("scopes[{i}]"),
                    "invalid",
                    e.to_string(),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ManageError::Validation(errors));
        }
        let secret = self.generate(&KeyKind::Root)?;
        let now = self.now();
        let issued = KeyRecord::issued(
            self.new_id("key")?,
            KeyClass::Root,
            "root".into(),
            secret.hash().to_hex(),
            secret.start(),
            actor.audit_id().to_owned(),
            now.0,
        );
        let record = KeyRecord {
            name: name.to_owned(),
            scopes,
            ..issued
        };
        let event = ChangeEvent::RootKeyCreated {
            key_id: record.id.clone(),
            hash: record.hash.clone(),
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "name": record.name, "scopes": record.scopes }),
        )?;
        self.store.create_key(&record, &audit).await?;
        self.committed(&event);
        Ok(IssuedKey {
            record,
            secret,
            at: now,
        })
    }
}
