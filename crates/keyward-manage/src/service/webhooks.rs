//! Webhook endpoints (per tenant, or operator-wide), their deliveries, and
//! events handed in by the upstream API (`POST /v1/events`).
//!
//! An endpoint's signing secret is never stored: it is derived from the
//! deployment's master key and the endpoint's salt
//! ([`keyward_webhooks::SigningSecret::derive`]) and shown once, on create
//! and on rotation. A rotation keeps the old salt for an overlap in which
//! deliveries carry both signatures.

use std::sync::Arc;

use keyward_store::{
    AlertFilter, Attempt, Delivery, Endpoint, EndpointPatch, Event, NewEvent, Page, PageRequest,
    Recorded, TypePattern,
};
use keyward_webhooks::{EventFilter, MasterKey, SigningSecret};
use serde_json::{json, Value};

use super::{ManageService, Paging};
use crate::actor::Actor;
use crate::error::{not_found, ManageError};
use crate::event::ChangeEvent;

/// The longest description.
pub const MAX_DESCRIPTION: usize = 500;
/// The largest `data` of an upstream event, serialized.
pub const MAX_EVENT_DATA: usize = 64 * 1024;
/// The longest idempotency key of an upstream event.
pub const MAX_EVENT_IDEMPOTENCY_KEY: usize = 255;
/// Event types keyward publishes itself; the upstream may not use them.
pub const RESERVED_PREFIXES: &[&str] = &["key.", "tenant.", "credits.", "alert.", "webhook."];

/// How webhooks run in this deployment.
pub struct WebhookSettings {
    /// Derives every endpoint's signing secret.
    pub master: MasterKey,
    /// Endpoints may resolve to loopback, private or link-local addresses.
    pub allow_private: bool,
    /// How long a rotated-out secret still signs (ms), unless the call says.
    pub rotation_overlap_ms: i64,
    /// Live endpoints per tenant (and operator-wide).
    pub max_endpoints: u64,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("allow_private", &self.allow_private)
            .field("rotation_overlap_ms", &self.rotation_overlap_ms)
            .field("max_endpoints", &self.max_endpoints)
            .finish_non_exhaustive()
    }
}

/// A new endpoint.
#[derive(Debug, Clone, Default)]
pub struct NewEndpoint {
    /// Operators: the tenant, or `None` for an operator-wide endpoint.
    /// Others: their own tenant (always).
    pub tenant_id: Option<String>,
    pub url: String,
    pub description: Option<String>,
    /// Patterns: `key.revoked`, `vox.call.*`, `*`.
    pub event_types: Vec<String>,
    pub enabled: Option<bool>,
}

/// Changes to an endpoint; `None` leaves a field.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// An endpoint with its secret, just created or rotated: shown once.
pub struct EndpointWithSecret {
    pub endpoint: Endpoint,
    pub secret: SigningSecret,
}

impl std::fmt::Debug for EndpointWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointWithSecret")
            .field("endpoint", &self.endpoint.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// An event the upstream hands in.
#[derive(Debug, Clone)]
pub struct UpstreamEvent {
    /// Operators name it; tenant keys publish to their own tenant.
    pub tenant_id: Option<String>,
    pub event_type: String,
    pub data: Value,
    pub idempotency_key: Option<String>,
}

/// Which alerts to list.
#[derive(Debug, Clone)]
pub struct AlertQuery {
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub kind: Option<String>,
    pub open: bool,
    pub paging: Paging,
}

/// A delivery with its attempts.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    pub delivery: Delivery,
    pub event: Event,
    pub attempts: Vec<Attempt>,
}

/// An endpoint filter as stored.
fn patterns(filter: &EventFilter) -> Vec<TypePattern> {
    filter
        .patterns()
        .iter()
        .map(|p| match p.sql_pair() {
            (Some(e), _) => TypePattern::Exact(e),
            (None, p) => TypePattern::Prefix(p.unwrap_or_default()),
        })
        .collect()
}

impl ManageService {
    /// Turns webhooks on (or off, with `None`).
    pub fn set_webhooks(&self, settings: Option<WebhookSettings>) {
        let mut w = self.webhooks.write().unwrap_or_else(|e| e.into_inner());
        *w = settings.map(Arc::new);
    }

    /// The webhook settings in force, or a conflict saying webhooks are off.
    pub fn webhooks(&self) -> Result<Arc<WebhookSettings>, ManageError> {
        self.webhooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| ManageError::Conflict {
                code: "webhooks_disabled",
                message: "webhooks are off in this deployment (webhooks.enabled = false)"
                    .to_owned(),
            })
    }

    /// The secrets that sign deliveries to `endpoint` at `now`: the current
    /// one, and the previous one while a rotation overlaps.
    pub fn signing_secrets(&self, endpoint: &Endpoint, now: i64) -> Vec<SigningSecret> {
        let Ok(w) = self.webhooks() else {
            return Vec::new();
        };
        let mut out = vec![w.master.signing_secret(&endpoint.id, &endpoint.salt)];
        if let (Some(salt), Some(until)) = (&endpoint.previous_salt, endpoint.previous_until) {
            if until > now {
                out.push(w.master.signing_secret(&endpoint.id, salt));
            }
        }
        out
    }

    /// An endpoint the actor may see.
    async fn visible_endpoint(&self, actor: &Actor, id: &str) -> Result<Endpoint, ManageError> {
        let e = self
            .store
            .get_endpoint(id)
            .await
            .map_err(not_found("endpoint"))?;
        if actor.sees_tenant(e.tenant_id.as_deref()) {
            Ok(e)
        } else {
            Err(ManageError::NotFound("endpoint"))
        }
    }

    async fn checked_url(&self, settings: &WebhookSettings, url: &str) -> Result<(), ManageError> {
        let parsed = keyward_webhooks::parse_endpoint_url(url)
            .map_err(|e| ManageError::field("url", e.code(), e.to_string()))?;
        keyward_webhooks::check_endpoint(&parsed, settings.allow_private)
            .await
            .map_err(|e| ManageError::field("url", e.code(), e.to_string()))
    }

    fn checked_filter(types: &[String]) -> Result<EventFilter, ManageError> {
        if types.is_empty() {
            return Err(ManageError::field(
                "event_types",
                "required",
                "list at least one event type or pattern (`key.*`, `vox.call.*`, `*`)",
            ));
        }
        EventFilter::parse(types)
            .map_err(|e| ManageError::field("event_types", e.code(), e.to_string()))
    }

    fn checked_description(d: &str) -> Result<(), ManageError> {
        if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
            return Err(ManageError::field(
                "description",
                "invalid",
                format!("at most {MAX_DESCRIPTION} characters, no control characters"),
            ));
        }
        Ok(())
    }

    fn new_salt(&self) -> Result<String, ManageError> {
        self.new_id("salt")
    }

    /// Creates an endpoint (`keyward:webhooks:write`); its secret is shown
    /// once.
    pub async fn create_endpoint(
        &self,
        actor: &Actor,
        input: NewEndpoint,
    ) -> Result<EndpointWithSecret, ManageError> {
        actor.require("keyward:webhooks:write")?;
        let settings = self.webhooks()?;
        let tenant_id = if actor.is_operator() {
            input.tenant_id
        } else {
            match (input.tenant_id, actor.tenant_id()) {
                (Some(t), Some(own)) if t != own => return Err(ManageError::NotFound("tenant")),
                (_, own) => Some(own.ok_or(ManageError::RootOnly)?.to_owned()),
            }
        };
        if let Some(t) = &tenant_id {
            self.visible_tenant(actor, t).await?;
        }
        let description = input.description.unwrap_or_default();
        Self::checked_description(&description)?;
        let filter = Self::checked_filter(&input.event_types)?;
        self.checked_url(&settings, &input.url).await?;
        if self.store.count_endpoints(tenant_id.as_deref()).await? >= settings.max_endpoints {
            return Err(ManageError::Conflict {
                code: "too_many_endpoints",
                message: format!(
                    "at most {} webhook endpoints per tenant; delete one first",
                    settings.max_endpoints
                ),
            });
        }
        let now = self.now().0;
        let endpoint = Endpoint {
            id: self.new_id("whe")?,
            tenant_id: tenant_id.clone(),
            url: input.url,
            description,
            event_types: input.event_types,
            enabled: input.enabled.unwrap_or(true),
            salt: self.new_salt()?,
            previous_salt: None,
            previous_until: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let event = ChangeEvent::EndpointCreated {
            endpoint_id: endpoint.id.clone(),
            tenant_id,
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "url": endpoint.url, "event_types": endpoint.event_types }),
        )?;
        self.store
            .create_endpoint(&endpoint, &patterns(&filter), &audit)
            .await?;
        self.committed(&event);
        let secret = settings.master.signing_secret(&endpoint.id, &endpoint.salt);
        tracing::info!(endpoint_id = %endpoint.id, actor = %actor.audit_id(), "Webhook endpoint created.");
        Ok(EndpointWithSecret { endpoint, secret })
    }

    /// Lists endpoints, newest first (`keyward:webhooks:read`). Operators
    /// see every endpoint (or a tenant's); others their tenant's.
    pub async fn list_endpoints(
        &self,
        actor: &Actor,
        tenant_id: Option<String>,
        paging: Paging,
    ) -> Result<Page<Endpoint>, ManageError> {
        actor.require("keyward:webhooks:read")?;
        let tenant = match (actor.is_operator(), tenant_id) {
            (true, t) => t,
            (false, Some(t)) if Some(t.as_str()) != actor.tenant_id() => {
                return Err(ManageError::NotFound("tenant"))
            }
            (false, _) => Some(actor.tenant_id().ok_or(ManageError::RootOnly)?.to_owned()),
        };
        Ok(self
            .store
            .list_endpoints(tenant.as_deref(), paging.request()?)
            .await?)
    }

    /// One endpoint (`keyward:webhooks:read`).
    pub async fn get_endpoint(&self, actor: &Actor, id: &str) -> Result<Endpoint, ManageError> {
        actor.require("keyward:webhooks:read")?;
        self.visible_endpoint(actor, id).await
    }

    /// Changes an endpoint (`keyward:webhooks:write`).
    pub async fn update_endpoint(
        &self,
        actor: &Actor,
        id: &str,
        changes: EndpointChanges,
    ) -> Result<Endpoint, ManageError> {
        actor.require("keyward:webhooks:write")?;
        let settings = self.webhooks()?;
        let current = self.visible_endpoint(actor, id).await?;
        if let Some(d) = &changes.description {
            Self::checked_description(d)?;
        }
        let types = match changes.event_types {
            Some(t) => {
                let filter = Self::checked_filter(&t)?;
                Some((t, patterns(&filter)))
            }
            None => None,
        };
        if let Some(url) = &changes.url {
            self.checked_url(&settings, url).await?;
        }
        let mut changed = Vec::new();
        for (name, set) in [
            ("url", changes.url.is_some()),
            ("description", changes.description.is_some()),
            ("event_types", types.is_some()),
            ("enabled", changes.enabled.is_some()),
        ] {
            if set {
                changed.push(name);
            }
        }
        let event = ChangeEvent::EndpointUpdated {
            endpoint_id: current.id.clone(),
            tenant_id: current.tenant_id.clone(),
        };
        let audit = self.audit(actor, &event, json!({ "changed": changed }))?;
        let patch = EndpointPatch {
            url: changes.url,
            description: changes.description,
            event_types: types,
            enabled: changes.enabled,
            rotate: None,
            updated_at: audit.at,
        };
        let e = self
            .store
            .update_endpoint(id, &patch, &audit)
            .await
            .map_err(not_found("endpoint"))?;
        self.committed(&event);
        Ok(e)
    }

    /// Deletes an endpoint; its pending deliveries are cancelled
    /// (`keyward:webhooks:write`).
    pub async fn delete_endpoint(&self, actor: &Actor, id: &str) -> Result<(), ManageError> {
        actor.require("keyward:webhooks:write")?;
        let current = self.visible_endpoint(actor, id).await?;
        let event = ChangeEvent::EndpointDeleted {
            endpoint_id: current.id.clone(),
            tenant_id: current.tenant_id.clone(),
        };
        let audit = self.audit(actor, &event, json!({ "url": current.url }))?;
        self.store
            .delete_endpoint(id, &audit)
            .await
            .map_err(not_found("endpoint"))?;
        self.committed(&event);
        Ok(())
    }

    /// A new signing secret (shown once); the old one keeps signing for
    /// `overlap_seconds` (default: the deployment's), so receivers can
    /// switch without losing a delivery (`keyward:webhooks:write`).
    pub async fn rotate_endpoint_secret(
        &self,
        actor: &Actor,
        id: &str,
        overlap_seconds: Option<u64>,
    ) -> Result<EndpointWithSecret, ManageError> {
        actor.require("keyward:webhooks:write")?;
        let settings = self.webhooks()?;
        let current = self.visible_endpoint(actor, id).await?;
        let overlap_ms = match overlap_seconds {
            Some(s) if s > 7 * 86_400 => {
                return Err(ManageError::field(
                    "overlap_seconds",
                    "out_of_range",
                    "the overlap is at most 7 days (604800 seconds)",
                ))
            }
            Some(s) => i64::try_from(s).unwrap_or(0).saturating_mul(1000),
            None => settings.rotation_overlap_ms,
        };
        let event = ChangeEvent::EndpointSecretRotated {
            endpoint_id: current.id.clone(),
            tenant_id: current.tenant_id.clone(),
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "overlap_seconds": overlap_ms / 1000 }),
        )?;
        let salt = self.new_salt()?;
        let patch = EndpointPatch {
            rotate: Some((salt, audit.at.saturating_add(overlap_ms))),
            updated_at: audit.at,
            ..EndpointPatch::default()
        };
        let endpoint = self
            .store
            .update_endpoint(id, &patch, &audit)
            .await
            .map_err(not_found("endpoint"))?;
        self.committed(&event);
        let secret = settings.master.signing_secret(&endpoint.id, &endpoint.salt);
        Ok(EndpointWithSecret { endpoint, secret })
    }

    /// Sends a `webhook.test` event to this endpoint only
    /// (`keyward:webhooks:write`).
    pub async fn send_test_event(&self, actor: &Actor, id: &str) -> Result<Event, ManageError> {
        actor.require("keyward:webhooks:write")?;
        self.webhooks()?;
        let endpoint = self.visible_endpoint(actor, id).await?;
        let now = self.now().0;
        let event = NewEvent {
            id: self.new_id("msg")?,
            at: now,
            tenant_id: endpoint.tenant_id.clone(),
            key_id: None,
            event_type: "webhook.test".to_owned(),
            data: json!({ "endpoint_id": endpoint.id, "actor": actor.audit_id() }),
            source: "keyward".to_owned(),
            idempotency_key: None,
        };
        self.store
            .record_event_for(&event, &endpoint.id)
            .await
            .map_err(not_found("endpoint"))
    }

    /// An endpoint's deliveries, newest first (`keyward:webhooks:read`).
    pub async fn list_deliveries(
        &self,
        actor: &Actor,
        id: &str,
        paging: Paging,
    ) -> Result<Page<Delivery>, ManageError> {
        actor.require("keyward:webhooks:read")?;
        let endpoint = self.visible_endpoint(actor, id).await?;
        Ok(self
            .store
            .list_deliveries(&endpoint.id, paging.request()?)
            .await?)
    }

    /// One delivery with its event and attempts (`keyward:webhooks:read`).
    pub async fn delivery_log(
        &self,
        actor: &Actor,
        id: &str,
        event_id: &str,
    ) -> Result<DeliveryLog, ManageError> {
        actor.require("keyward:webhooks:read")?;
        let endpoint = self.visible_endpoint(actor, id).await?;
        let delivery = self
            .store
            .get_delivery(&endpoint.id, event_id)
            .await
            .map_err(not_found("delivery"))?;
        let attempts = self
            .store
            .list_attempts(&endpoint.id, event_id, 100)
            .await?;
        let event = self
            .store
            .get_event(event_id)
            .await
            .map_err(not_found("delivery"))?;
        Ok(DeliveryLog {
            delivery,
            event,
            attempts,
        })
    }

    /// Makes a delivery due now with a fresh retry schedule
    /// (`keyward:webhooks:write`).
    pub async fn redeliver(
        &self,
        actor: &Actor,
        id: &str,
        event_id: &str,
    ) -> Result<Delivery, ManageError> {
        actor.require("keyward:webhooks:write")?;
        self.webhooks()?;
        let endpoint = self.visible_endpoint(actor, id).await?;
        let d = self
            .store
            .redeliver(&endpoint.id, event_id, self.now().0)
            .await
            .map_err(not_found("delivery"))?;
        tracing::info!(endpoint_id = %endpoint.id, event_id, actor = %actor.audit_id(), "Webhook delivery requeued.");
        Ok(d)
    }

    /// Records an event from the upstream API and fans it out to the
    /// tenant's matching endpoints (`keyward:events:write`).
    pub async fn publish_event(
        &self,
        actor: &Actor,
        input: UpstreamEvent,
    ) -> Result<Recorded, ManageError> {
        actor.require("keyward:events:write")?;
        self.webhooks()?;
        let tenant_id = match (actor.is_operator(), input.tenant_id, actor.tenant_id()) {
            (true, Some(t), _) => t,
            (true, None, _) => {
                return Err(ManageError::field(
                    "tenant_id",
                    "required",
                    "name the tenant whose endpoints receive the event",
                ))
            }
            (false, Some(t), Some(own)) if t != own => return Err(ManageError::NotFound("tenant")),
            (false, _, Some(own)) => own.to_owned(),
            (false, _, None) => return Err(ManageError::RootOnly),
        };
        self.visible_tenant(actor, &tenant_id).await?;
        let mut errors = Vec::new();
        if let Err(e) = keyward_webhooks::check_event_type(&input.event_type) {
            errors.push(crate::FieldError::new("type", e.code(), e.to_string()));
        } else if let Some(p) = RESERVED_PREFIXES
            .iter()
            .find(|p| input.event_type.starts_with(**p))
        {
            errors.push(crate::FieldError::new(
                "type",
                "reserved_type",
                format!("event types starting with {p:?} are keyward's own"),
            ));
        }
        if !input.data.is_object() {
            errors.push(crate::FieldError::new(
                "data",
                "invalid",
                "data must be a JSON object",
            ));
        } else if input.data.to_string().len() > MAX_EVENT_DATA {
            errors.push(crate::FieldError::new(
                "data",
                "too_large",
                format!("data is at most {MAX_EVENT_DATA} bytes of JSON"),
            ));
        }
        if let Some(k) = &input.idempotency_key {
            if k.is_empty()
                || k.len() > MAX_EVENT_IDEMPOTENCY_KEY
                || !k.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                errors.push(crate::FieldError::new(
                    "idempotency_key",
                    "invalid",
                    format!("1-{MAX_EVENT_IDEMPOTENCY_KEY} printable ASCII characters"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ManageError::Validation(errors));
        }
        let event = NewEvent {
            id: self.new_id("msg")?,
            at: self.now().0,
            tenant_id: Some(tenant_id),
            key_id: None,
            event_type: input.event_type,
            data: input.data,
            source: "upstream".to_owned(),
            idempotency_key: input.idempotency_key,
        };
        Ok(self.store.record_event(&event).await?)
    }

    /// The alert (and its `webhook.endpoint_failing` event) raised when a
    /// delivery to `endpoint` gives up.
    pub fn endpoint_failing(
        &self,
        endpoint: &Endpoint,
        delivery: &Delivery,
        at: i64,
    ) -> Result<(keyward_store::Alert, NewEvent), ManageError> {
        let details = json!({
            "endpoint_id": endpoint.id,
            "url": endpoint.url,
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "attempts": delivery.attempts.saturating_add(1),
        });
        let alert = keyward_store::Alert {
            id: self.new_id("alr")?,
            at,
            tenant_id: endpoint.tenant_id.clone(),
            key_id: None,
            kind: "endpoint_failing".to_owned(),
            dedupe: format!("endpoint_failing:{}", endpoint.id),
            details: details.clone(),
            resolved_at: None,
        };
        let mut data = details;
        if let Value::Object(d) = &mut data {
            d.insert("alert_id".into(), Value::from(alert.id.as_str()));
            d.insert("kind".into(), Value::from("endpoint_failing"));
        }
        let event = NewEvent {
            id: self.new_id("msg")?,
            at,
            tenant_id: endpoint.tenant_id.clone(),
            key_id: None,
            event_type: "webhook.endpoint_failing".to_owned(),
            data,
            source: "keyward".to_owned(),
            idempotency_key: None,
        };
        Ok((alert, event))
    }

    /// Lists alerts, newest first (`keyward:alerts:read`).
    pub async fn list_alerts(
        &self,
        actor: &Actor,
        q: AlertQuery,
    ) -> Result<Page<keyward_store::Alert>, ManageError> {
        actor.require("keyward:alerts:read")?;
        let tenant_id = match (actor.is_operator(), q.tenant_id) {
            (true, t) => t,
            (false, Some(t)) if Some(t.as_str()) != actor.tenant_id() => {
                return Err(ManageError::NotFound("tenant"))
            }
            (false, _) => Some(actor.tenant_id().ok_or(ManageError::RootOnly)?.to_owned()),
        };
        let filter = AlertFilter {
            tenant_id,
            key_id: q.key_id,
            kind: q.kind,
            open: q.open,
        };
        let page: PageRequest = q.paging.request()?;
        Ok(self.store.list_alerts(&filter, page).await?)
    }
}
