//! Webhook endpoints, their deliveries, events handed in by the upstream
//! (`POST /v1/events`), and alerts.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A webhook endpoint. Its signing secret is shown only when it is created
/// or rotated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointView {
    /// `whe_…`.
    pub id: String,
    /// The tenant whose events it receives; `null`: operator-wide (every
    /// tenant's matching events and deployment events).
    pub tenant_id: Option<String>,
    pub url: String,
    pub description: String,
    /// Exact types, `prefix.*` patterns, or `*`.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Since when deliveries give up (the last gave up after every retry);
    /// `null` once one succeeds.
    pub failing_since: Option<String>,
    /// While a rotated-out secret still signs (both signatures are sent).
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// An endpoint with its signing secret: the only time it is shown.
// No `Debug`: it holds a secret.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointWithSecret {
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
    pub endpoint: EndpointView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointPage {
    pub data: Vec<EndpointView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Operators: the tenant, or absent for an operator-wide endpoint.
    /// Tenant keys: their own tenant (the default).
    pub tenant_id: Option<String>,
    /// `https://…` (or `http://`); must not resolve to a loopback, private
    /// or link-local address unless the deployment allows it.
    #[schema(max_length = 2048)]
    pub url: String,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// 1 to 50 of: an event type (`key.revoked`), a `prefix.*` pattern
    /// (`vox.call.*`), or `*`.
    #[schema(min_items = 1, max_items = 50)]
    pub event_types: Vec<String>,
    /// Default `true`.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500)]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 50)]
    pub event_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateEndpointSecret {
    /// How long the old secret still signs (both signatures are sent), at
    /// most 604800; default `webhooks.rotation_overlap_seconds`.
    #[schema(maximum = 604800)]
    pub overlap_seconds: Option<u64>,
}

/// One event to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// The event's id (`msg_…`), sent as `webhook-id`.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered`, `failed` (gave up) or `cancelled`.
    pub status: String,
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub at: String,
    /// The endpoint's HTTP status (`null`: no answer).
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The answer's first bytes (`webhooks.max_response_bytes`).
    pub response: String,
    /// Why it failed without a status, or was refused.
    pub error: Option<String>,
    pub ok: bool,
    /// The node that made it.
    pub node: String,
}

/// An event as delivered: the body is `{type, timestamp, data}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// `msg_…`.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: String,
    pub tenant_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
}

/// A delivery with its event and attempts (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetail {
    pub delivery: DeliveryView,
    pub event: EventView,
    pub attempts: Vec<AttemptView>,
}

/// An event from the upstream API, for the tenant's matching endpoints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// Operators name it; tenant keys publish to their own tenant.
    pub tenant_id: Option<String>,
    /// Lowercase dot-separated segments (`vox.call.completed`); keyward's
    /// own prefixes (`key.`, `tenant.`, `credits.`, `alert.`, `webhook.`)
    /// are refused.
    #[serde(rename = "type")]
    #[schema(max_length = 100, pattern = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")]
    pub event_type: String,
    /// A JSON object, at most 64 KiB.
    #[schema(value_type = Object)]
    pub data: Value,
    /// The same key (per tenant) records the event once; the
    /// `Idempotency-Key` header is used when absent.
    #[schema(max_length = 255, pattern = r"^[ -~]+$")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublishedEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub tenant_id: Option<String>,
    /// Endpoints it was queued for.
    pub deliveries: u64,
    /// The idempotency key was used already: this is that event.
    pub duplicate: bool,
}

/// An alert: a condition keyward noticed, stored once while it lasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    /// `alr_…`.
    pub id: String,
    /// `new_ip`, `traffic_spike`, `error_rate`, `key_dormant`,
    /// `key_expiring`, `credits_low` or `endpoint_failing`.
    pub kind: String,
    pub raised_at: String,
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    /// `null` while open.
    pub resolved_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertPage {
    pub data: Vec<AlertView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

// The query of `GET /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEndpoints {
    /// Operators: one tenant's endpoints (default: all).
    pub tenant_id: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

// The query of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveries {
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

// The query of `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAlerts {
    /// Operators: one tenant's alerts (default: all).
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub kind: Option<String>,
    /// Only open alerts.
    pub open: Option<bool>,
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
