//! Outbound events: the outbox, webhook endpoints, their deliveries and
//! attempts, and alerts.
//!
//! **The outbox.** An [`Event`] is written in the transaction of whatever
//! caused it: a management change writes it with its audit entry
//! ([`AuditEntry::event`](crate::AuditEntry)), an upstream's event with its
//! idempotency key ([`EventStore::record_event`]), an alert with the alert
//! ([`EventStore::raise_alert`]). In that same transaction the event is
//! *fanned out*: one [`Delivery`] row per enabled endpoint whose tenant and
//! event-type filter match. Nothing is sent from the transaction; delivery
//! workers on any node claim due deliveries afterwards.
//!
//! **Claims.** [`EventStore::claim_deliveries`] leases due deliveries to one
//! worker (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer).
//! A lease that runs out (the node died mid-attempt) makes the delivery due
//! again: at-least-once. [`EventStore::finish_attempt`] records the attempt
//! and schedules the next one, or gives up, in one transaction.
//!
//! **Alerts** are stored once per *open* condition: a partial unique index
//! on `dedupe` among unresolved alerts makes raising idempotent across
//! nodes and evaluations; resolving reopens the condition.
//!
//! No secret is stored here: an endpoint's signing secret is derived from a
//! deployment master key and the endpoint's `salt` (see keyward-webhooks).

use async_trait::async_trait;
use serde_json::Value;

use crate::{AuditEntry, Page, PageRequest, StoreResult};

/// An event to record (the outbox row).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// `msg_…`: the `webhook-id` every delivery of it carries.
    pub id: String,
    pub at: i64,
    /// The tenant whose endpoints receive it (operator-wide endpoints
    /// receive every tenant's); `None` for deployment events.
    pub tenant_id: Option<String>,
    /// The key it is about, if any.
    pub key_id: Option<String>,
    /// `key.revoked`, `vox.call.completed`, …
    pub event_type: String,
    /// The payload's `data`. Never a secret.
    pub data: Value,
    /// `keyward` (a change or alert) or `upstream` (`POST /v1/events`).
    pub source: String,
    /// The upstream's idempotency key, unique per tenant.
    pub idempotency_key: Option<String>,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub event_type: String,
    pub data: Value,
    pub source: String,
}

/// What recording an event did.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub event: Event,
    /// Deliveries created (endpoints that matched).
    pub deliveries: u64,
    /// An event with this idempotency key existed: it is returned, nothing
    /// new was recorded.
    pub duplicate: bool,
}

/// One pattern of an endpoint's event filter, as stored: an exact type, or
/// a prefix (`vox.call.` for `vox.call.*`; empty for `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    Exact(String),
    Prefix(String),
}

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `whe_…`.
    pub id: String,
    /// `None`: operator-wide (receives every tenant's matching events).
    pub tenant_id: Option<String>,
    pub url: String,
    pub description: String,
    /// The filter as given (`["key.*", "vox.call.completed"]`).
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Derives the current signing secret (with the master key).
    pub salt: String,
    /// The previous secret's salt while a rotation overlaps.
    pub previous_salt: Option<String>,
    pub previous_until: Option<i64>,
    /// Set when a delivery gave up; cleared by the next success.
    pub failing_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Changes to an endpoint; `None` leaves a field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    /// With the patterns to store for it.
    pub event_types: Option<(Vec<String>, Vec<TypePattern>)>,
    pub enabled: Option<bool>,
    /// A rotation: the new salt, and until when the old one still signs.
    pub rotate: Option<(String, i64)>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Due now or later (see `next_at`).
    Pending,
    Delivered,
    /// Gave up after the schedule's last attempt.
    Failed,
    /// The endpoint was deleted first.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            "cancelled" => DeliveryStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One event to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub seq: i64,
    pub event_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made in all.
    pub attempts: u32,
    /// Attempts in the current schedule (a redelivery restarts it).
    pub tries: u32,
    /// When the next attempt is due (pending only).
    pub next_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// A delivery leased to one worker, with what it needs to send it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub delivery: Delivery,
    pub event: Event,
    pub endpoint: Endpoint,
}

/// One attempt's result, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub at: i64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The response body's first bytes.
    pub response: String,
    pub error: Option<String>,
    pub ok: bool,
    /// The node that made it.
    pub node: String,
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    Delivered,
    RetryAt(i64),
    /// The schedule is exhausted: the delivery fails, the endpoint is marked
    /// failing, and this alert (with its event) is raised.
    GiveUp(Box<(Alert, NewEvent)>),
}

/// An alert: a condition keyward noticed about a key, tenant or endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `alr_…`.
    pub id: String,
    pub at: i64,
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    /// `new_ip`, `traffic_spike`, `error_rate`, `key_dormant`,
    /// `key_expiring`, `credits_low`, `endpoint_failing`.
    pub kind: String,
    /// One open alert per dedupe value (`new_ip:key_…:203.0.113.9`).
    pub dedupe: String,
    pub details: Value,
    pub resolved_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub kind: Option<String>,
    /// Only unresolved ones.
    pub open: bool,
}

/// Per key and minute: requests and errors (class 3), from the usage
/// counts, for alert evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMinute {
    pub key_id: String,
    pub tenant_id: String,
    pub minute: i64,
    pub requests: i64,
    pub errors: i64,
}

/// An address first seen for a key after another address was known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAddress {
    pub key_id: String,
    pub tenant_id: Option<String>,
    pub ip: String,
    pub first_seen: i64,
}

/// A key found by a time-based check (dormant or expiring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDue {
    pub key_id: String,
    pub tenant_id: Option<String>,
    pub name: String,
    /// Last use (or creation) for dormant keys; the expiry for expiring ones.
    pub at: i64,
}

/// A tenant below its low-credit threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowCredits {
    pub tenant_id: String,
    pub balance: i64,
    pub threshold: i64,
}

/// Removed by [`EventStore::prune_events`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedEvents {
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Records an event and fans it out, in one transaction. With an
    /// idempotency key already used by the tenant, returns that event.
    async fn record_event(&self, event: &NewEvent) -> StoreResult<Recorded>;
    /// Records an event for one endpoint only (a test event).
    async fn record_event_for(&self, event: &NewEvent, endpoint_id: &str) -> StoreResult<Event>;
    /// An event by id.
    async fn get_event(&self, id: &str) -> StoreResult<Event>;
    async fn list_events(
        &self,
        tenant_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Event>>;

    /// Creates an endpoint with its audit entry.
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        patterns: &[TypePattern],
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    /// A live endpoint ([`NotFound`](crate::StoreError::NotFound) if none).
    async fn get_endpoint(&self, id: &str) -> StoreResult<Endpoint>;
    /// Live endpoints, newest first; `tenant_id` `None` lists all.
    async fn list_endpoints(
        &self,
        tenant_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Endpoint>>;
    async fn update_endpoint(
        &self,
        id: &str,
        patch: &EndpointPatch,
        audit: &AuditEntry,
    ) -> StoreResult<Endpoint>;
    /// Deletes an endpoint and cancels its pending deliveries.
    async fn delete_endpoint(&self, id: &str, audit: &AuditEntry) -> StoreResult<()>;
    /// Live endpoints (for a tenant, or operator-wide when `None`).
    async fn count_endpoints(&self, tenant_id: Option<&str>) -> StoreResult<u64>;

    /// Leases up to `limit` due deliveries to `owner` until `lease_until`.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<Claimed>>;
    /// Records an attempt and what follows. `false` if `owner` no longer
    /// held the lease (the attempt is recorded; the delivery is left to its
    /// new holder).
    async fn finish_attempt(
        &self,
        delivery_seq: i64,
        owner: &str,
        attempt: &Attempt,
        next: &NextStep,
    ) -> StoreResult<bool>;
    /// An endpoint's deliveries, newest first.
    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        page: PageRequest,
    ) -> StoreResult<Page<Delivery>>;
    async fn get_delivery(&self, endpoint_id: &str, event_id: &str) -> StoreResult<Delivery>;
    /// A delivery's attempts, oldest first (at most `limit`).
    async fn list_attempts(
        &self,
        endpoint_id: &str,
        event_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<Attempt>>;
    /// Makes a delivery due now with a fresh schedule.
    async fn redeliver(&self, endpoint_id: &str, event_id: &str, at: i64) -> StoreResult<Delivery>;
    /// Deliveries pending (due or not): the outbox's depth.
    async fn pending_deliveries(&self) -> StoreResult<u64>;

    /// Raises an alert and records its event, unless an open alert has the
    /// same dedupe value: then nothing happens and `false` is returned.
    async fn raise_alert(&self, alert: &Alert, event: &NewEvent) -> StoreResult<bool>;
    /// Resolves the open alert with this dedupe value, if any.
    async fn resolve_alert(&self, dedupe: &str, at: i64) -> StoreResult<bool>;
    async fn list_alerts(
        &self,
        filter: &AlertFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Alert>>;
    /// Open alerts of `kind` (for resolving), at most `limit`.
    async fn open_alerts(&self, kind: &str, limit: u32) -> StoreResult<Vec<Alert>>;

    /// Per key and minute since `since`, for keys with requests at or after
    /// `active_since` (at most `max_keys` keys, busiest first).
    async fn key_minutes(
        &self,
        since: i64,
        active_since: i64,
        max_keys: u32,
    ) -> StoreResult<Vec<KeyMinute>>;
    /// Addresses first seen at or after `since` on keys that had another
    /// address first seen before it (at most `limit`).
    async fn new_addresses(&self, since: i64, limit: u32) -> StoreResult<Vec<NewAddress>>;

    /// Live, enabled tenant keys last used (or, never used, created) before
    /// `unused_before`, without an open `key_dormant` alert (at most `limit`).
    async fn dormant_keys(&self, unused_before: i64, limit: u32) -> StoreResult<Vec<KeyDue>>;
    /// Resolves open `key_dormant` alerts of keys used since.
    async fn resolve_used_dormant(&self, at: i64) -> StoreResult<u64>;
    /// Live tenant keys expiring in `[from, until)` without an alert for
    /// that expiry (at most `limit`).
    async fn expiring_keys(&self, from: i64, until: i64, limit: u32) -> StoreResult<Vec<KeyDue>>;
    /// Tenants whose credit balance is below their threshold (or
    /// `default_threshold`), without an open `credits_low` alert.
    async fn low_credit_tenants(
        &self,
        default_threshold: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LowCredits>>;
    /// Resolves open `credits_low` alerts of tenants back at or above their
    /// threshold.
    async fn resolve_credits_low(
        &self,
        default_threshold: Option<i64>,
        at: i64,
    ) -> StoreResult<u64>;

    /// A deployment setting (e.g. the webhook master key's id).
    async fn setting(&self, name: &str) -> StoreResult<Option<String>>;
    /// Sets it unless set; returns the value in force.
    async fn init_setting(&self, name: &str, value: &str) -> StoreResult<String>;

    /// Removes finished deliveries and their attempts older than `before`,
    /// and events with no delivery left that are older than `before`.
    async fn prune_events(&self, before: i64) -> StoreResult<PrunedEvents>;
}
