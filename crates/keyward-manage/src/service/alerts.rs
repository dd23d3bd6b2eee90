//! Alerts: conditions keyward notices about keys and tenants, each stored
//! once while it lasts and sent as an event to webhook endpoints.
//!
//! [`ManageService::evaluate_alerts`] runs every check once; the server
//! calls it on a timer on every node. Raising is idempotent across nodes
//! and runs (one open alert per dedupe value, held by the store), so an
//! alert is raised once per condition, never once per request.
//!
//! The checks, on the usage counts (minutes) and key records:
//! - **traffic spike** (`alert.traffic_spike`): a key's requests in the
//!   current or the previous minute are at least `spike_factor` times its
//!   baseline — its mean per minute over the `baseline_minutes` before that
//!   minute — and at least `spike_min_requests`. A key with no requests in
//!   the baseline window has no baseline and raises none. Resolved when no
//!   minute of the two qualifies.
//! - **error rate** (`alert.error_rate`): over the last
//!   `error_window_minutes` (the current one included), 5xx answers (the
//!   upstream's or keyward's) are at least `error_rate` of at least
//!   `error_min_requests` requests. Resolved when that no longer holds.
//! - **new client address** (`alert.new_ip`): an address first seen for a
//!   key that was seen from another address before (a key's first
//!   addresses raise none). Once per key and address.
//! - **dormant key** (`alert.key_dormant`): an enabled key unused (or, never
//!   used, created) `dormant_days` ago; with `disable_dormant` the key is
//!   also disabled (audited as `key.disabled` by `alerts`). Resolved when
//!   the key is used again.
//! - **expiring key** (`key.expiring`): `expiring_days` before its expiry,
//!   once per expiry.
//! - **credits low** (`credits.low`): a tenant's balance under its
//!   threshold (the tenant's own, or the deployment's default). Resolved
//!   when the balance is back at or over it.

use std::collections::{BTreeMap, BTreeSet};

use keyward_core::clock::Timestamp;
use keyward_store::{Alert, KeyMinute, KeyPatch, NewEvent};
use serde_json::{json, Value};

use super::ManageService;
use crate::actor::Actor;
use crate::error::ManageError;
use crate::event::ChangeEvent;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// Rows each time-based check reads per run.
const BATCH: u32 = 1_000;

/// Thresholds of the alert checks (the server's `[alerts]` settings).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPolicy {
    pub spike_factor: f64,
    pub spike_min_requests: i64,
    pub baseline_minutes: i64,
    pub error_rate: f64,
    pub error_window_minutes: i64,
    pub error_min_requests: i64,
    pub new_ip: bool,
    /// 0: off.
    pub dormant_days: u32,
    pub disable_dormant: bool,
    /// 0: off.
    pub expiring_days: u32,
    /// For tenants without a threshold of their own; `None`: only tenants
    /// with one are checked.
    pub credits_low_threshold: Option<i64>,
    /// Busiest keys read per run for spikes and error rates.
    pub max_keys: u32,
}

impl Default for AlertPolicy {
    fn default() -> AlertPolicy {
        AlertPolicy {
            spike_factor: 10.0,
            spike_min_requests: 100,
            baseline_minutes: 60,
            error_rate: 0.5,
            error_window_minutes: 5,
            error_min_requests: 20,
            new_ip: true,
            dormant_days: 90,
            disable_dormant: false,
            expiring_days: 7,
            credits_low_threshold: None,
            max_keys: 10_000,
        }
    }
}

/// What one evaluation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertRun {
    pub raised: u64,
    pub resolved: u64,
}

/// A spike found in one key's minutes: the minute, its count, the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    pub minute: i64,
    pub requests: i64,
    pub baseline: f64,
}

/// The spike check over one key's minutes (`(minute, requests)`), for the
/// minutes `current` and the one before it.
pub fn spike(minutes: &[(i64, i64)], current: i64, p: &AlertPolicy) -> Option<Spike> {
    let window = p.baseline_minutes.max(1);
    [current - MINUTE, current].into_iter().find_map(|m| {
        let requests: i64 = minutes
            .iter()
            .filter(|(b, _)| *b == m)
            .map(|(_, n)| n)
            .sum();
        let before: i64 = minutes
            .iter()
            .filter(|(b, _)| *b >= m - window * MINUTE && *b < m)
            .map(|(_, n)| n)
            .sum();
        let baseline = before as f64 / window as f64;
        (before > 0
            && requests >= p.spike_min_requests
            && requests as f64 >= p.spike_factor * baseline)
            .then_some(Spike {
                minute: m,
                requests,
                baseline,
            })
    })
}

/// The error-rate check over one key's minutes (`(minute, requests,
/// errors)`): `(requests, errors)` of the window when it fires.
pub fn error_rate(
    minutes: &[(i64, i64, i64)],
    current: i64,
    p: &AlertPolicy,
) -> Option<(i64, i64)> {
    let from = current - (p.error_window_minutes.max(1) - 1) * MINUTE;
    let (requests, errors) = minutes
        .iter()
        .filter(|(b, _, _)| *b >= from && *b <= current)
        .fold((0, 0), |(r, e), (_, n, x)| (r + n, e + x));
    (requests >= p.error_min_requests.max(1) && errors as f64 >= p.error_rate * requests as f64)
        .then_some((requests, errors))
}

impl ManageService {
    /// Raises one alert with its event (`event_type`); `true` if new.
    async fn raise(
        &self,
        kind: &str,
        event_type: &str,
        dedupe: String,
        tenant_id: Option<String>,
        key_id: Option<String>,
        details: Value,
    ) -> Result<bool, ManageError> {
        let at = self.now().0;
        let alert = Alert {
            id: self.new_id("alr")?,
            at,
            tenant_id: tenant_id.clone(),
            key_id: key_id.clone(),
            kind: kind.to_owned(),
            dedupe,
            details: details.clone(),
            resolved_at: None,
        };
        let mut data = json!({ "alert_id": alert.id, "kind": kind });
        if let (Value::Object(d), Value::Object(more)) = (&mut data, details) {
            d.extend(more);
            if let Some(k) = &key_id {
                d.insert("key_id".into(), Value::from(k.as_str()));
            }
            if let Some(t) = &tenant_id {
                d.insert("tenant_id".into(), Value::from(t.as_str()));
            }
        }
        let event = NewEvent {
            id: self.new_id("msg")?,
            at,
            tenant_id,
            key_id,
            event_type: event_type.to_owned(),
            data,
            source: "keyward".to_owned(),
            idempotency_key: None,
        };
        let raised = self.store.raise_alert(&alert, &event).await?;
        if raised {
            tracing::warn!(kind, alert_id = %alert.id, key_id = alert.key_id.as_deref().unwrap_or(""), "Alert raised.");
        }
        Ok(raised)
    }

    /// Runs every alert check once (see the module docs).
    pub async fn evaluate_alerts(&self, p: &AlertPolicy) -> Result<AlertRun, ManageError> {
        let mut run = AlertRun::default();
        let now = self.now().0;
        let current = now - now.rem_euclid(MINUTE);
        self.usage_alerts(p, now, current, &mut run).await?;
        if p.new_ip {
            for a in self.store.new_addresses(now - 15 * MINUTE, BATCH).await? {
                run.raised += u64::from(
                    self.raise(
                        "new_ip",
                        "alert.new_ip",
                        format!("new_ip:{}:{}", a.key_id, a.ip),
                        a.tenant_id,
                        Some(a.key_id),
                        json!({ "ip": a.ip, "first_seen": Timestamp(a.first_seen).to_rfc3339() }),
                    )
                    .await?,
                );
            }
        }
        if p.dormant_days > 0 {
            run.resolved += self.store.resolve_used_dormant(now).await?;
            let before = now - i64::from(p.dormant_days) * DAY;
            for k in self.store.dormant_keys(before, BATCH).await? {
                let raised = self
                    .raise(
                        "key_dormant",
                        "alert.key_dormant",
                        format!("key_dormant:{}", k.key_id),
                        k.tenant_id.clone(),
                        Some(k.key_id.clone()),
                        json!({
                            "name": k.name,
                            "last_used_or_created": Timestamp(k.at).to_rfc3339(),
                            "dormant_days": p.dormant_days,
                            "disabled": p.disable_dormant,
                        }),
                    )
                    .await?;
                if raised {
                    run.raised += 1;
                    if p.disable_dormant {
                        self.disable_dormant(&k.key_id, k.tenant_id.clone()).await?;
                    }
                }
            }
        }
        if p.expiring_days > 0 {
            let until = now + i64::from(p.expiring_days) * DAY;
            for k in self.store.expiring_keys(now, until, BATCH).await? {
                run.raised += u64::from(
                    self.raise(
                        "key_expiring",
                        "key.expiring",
                        format!("key_expiring:{}:{}", k.key_id, k.at),
                        k.tenant_id,
                        Some(k.key_id),
                        json!({ "name": k.name, "expires_at": Timestamp(k.at).to_rfc3339() }),
                    )
                    .await?,
                );
            }
        }
        run.resolved += self
            .store
            .resolve_credits_low(p.credits_low_threshold, now)
            .await?;
        for t in self
            .store
            .low_credit_tenants(p.credits_low_threshold, BATCH)
            .await?
        {
            run.raised += u64::from(
                self.raise(
                    "credits_low",
                    "credits.low",
                    format!("credits_low:{}", t.tenant_id),
                    Some(t.tenant_id),
                    None,
                    json!({ "balance": t.balance, "threshold": t.threshold }),
                )
                .await?,
            );
        }
        Ok(run)
    }

    /// Spikes and error rates, from the usage minutes of the busiest keys.
    async fn usage_alerts(
        &self,
        p: &AlertPolicy,
        now: i64,
        current: i64,
        run: &mut AlertRun,
    ) -> Result<(), ManageError> {
        let window = p.baseline_minutes.max(p.error_window_minutes).max(1) + 1;
        let rows = self
            .store
            .key_minutes(current - window * MINUTE, current - MINUTE, p.max_keys)
            .await?;
        let mut by_key: BTreeMap<&str, (&str, Vec<&KeyMinute>)> = BTreeMap::new();
        for r in &rows {
            by_key
                .entry(r.key_id.as_str())
                .or_insert_with(|| (r.tenant_id.as_str(), Vec::new()))
                .1
                .push(r);
        }
        let mut firing: BTreeSet<String> = BTreeSet::new();
        for (key, (tenant, minutes)) in &by_key {
            let counts: Vec<(i64, i64)> = minutes.iter().map(|m| (m.minute, m.requests)).collect();
            if let Some(s) = spike(&counts, current, p) {
                let dedupe = format!("traffic_spike:{key}");
                firing.insert(dedupe.clone());
                run.raised += u64::from(
                    self.raise(
                        "traffic_spike",
                        "alert.traffic_spike",
                        dedupe,
                        Some((*tenant).to_owned()),
                        Some((*key).to_owned()),
                        json!({
                            "minute": Timestamp(s.minute).to_rfc3339(),
                            "requests": s.requests,
                            "baseline_per_minute": (s.baseline * 100.0).round() / 100.0,
                            "factor": p.spike_factor,
                        }),
                    )
                    .await?,
                );
            }
            let errs: Vec<(i64, i64, i64)> = minutes
                .iter()
                .map(|m| (m.minute, m.requests, m.errors))
                .collect();
            if let Some((requests, errors)) = error_rate(&errs, current, p) {
                let dedupe = format!("error_rate:{key}");
                firing.insert(dedupe.clone());
                run.raised += u64::from(
                    self.raise(
                        "error_rate",
                        "alert.error_rate",
                        dedupe,
                        Some((*tenant).to_owned()),
                        Some((*key).to_owned()),
                        json!({
                            "requests": requests,
                            "errors": errors,
                            "error_rate": (errors as f64 / requests as f64 * 1000.0).round() / 1000.0,
                            "threshold": p.error_rate,
                            "window_minutes": p.error_window_minutes,
                        }),
                    )
                    .await?,
                );
            }
        }
        for kind in ["traffic_spike", "error_rate"] {
            for open in self.store.open_alerts(kind, BATCH).await? {
                if !firing.contains(&open.dedupe)
                    && self.store.resolve_alert(&open.dedupe, now).await?
                {
                    run.resolved += 1;
                }
            }
        }
        Ok(())
    }

    /// The dormant-key policy's action: disables the key, audited.
    async fn disable_dormant(
        &self,
        key_id: &str,
        tenant_id: Option<String>,
    ) -> Result<(), ManageError> {
        let key = self.store.get_key(key_id).await?;
        let event = ChangeEvent::KeyUpdated {
            key_id: key.id.clone(),
            tenant_id,
            hash: key.hash.clone(),
        };
        let audit = keyward_store::AuditEntry {
            action: "key.disabled".into(),
            ..self.audit(
                &Actor::host("alerts"),
                &event,
                json!({ "changed": ["disabled"], "reason": "dormant" }),
            )?
        };
        let patch = KeyPatch {
            enabled: Some(false),
            updated_at: audit.at,
            ..KeyPatch::default()
        };
        self.store.update_key(&key.id, &patch, &audit).await?;
        self.committed(&event);
        tracing::warn!(key_id, "Dormant key disabled.");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> AlertPolicy {
        AlertPolicy {
            spike_min_requests: 20,
            ..AlertPolicy::default()
        }
    }

    #[test]
    fn a_tenfold_minute_over_the_baseline_is_a_spike() {
        let now = 1_000 * MINUTE;
        // 60 minutes at 3 a minute, then 30 in the current minute.
        let mut m: Vec<(i64, i64)> = (1..=60).map(|i| (now - i * MINUTE, 3)).collect();
        m.push((now, 30));
        let s = spike(&m, now, &p()).expect("spike");
        assert_eq!(s.requests, 30);
        assert!((s.baseline - 3.0).abs() < 1e-9);
        m.pop();
        m.push((now, 29));
        assert_eq!(spike(&m, now, &p()), None, "29 < 10 × 3");
    }

    #[test]
    fn no_baseline_no_spike_and_a_minimum_volume() {
        let now = 1_000 * MINUTE;
        assert_eq!(spike(&[(now, 10_000)], now, &p()), None);
        let m = vec![(now - 30 * MINUTE, 1), (now, 19)];
        assert_eq!(spike(&m, now, &p()), None, "under the minimum of 20");
        let m = vec![(now - 30 * MINUTE, 1), (now - MINUTE, 25)];
        assert_eq!(
            spike(&m, now, &p()).map(|s| s.minute),
            Some(now - MINUTE),
            "the previous minute counts too"
        );
    }

    #[test]
    fn error_rate_needs_volume_and_the_threshold() {
        let now = 1_000 * MINUTE;
        let m = vec![(now - MINUTE, 10, 5), (now, 10, 5)];
        assert_eq!(error_rate(&m, now, &p()), Some((20, 10)));
        let m = vec![(now - MINUTE, 10, 4), (now, 10, 5)];
        assert_eq!(error_rate(&m, now, &p()), None, "45 %");
        let m = vec![(now, 19, 19)];
        assert_eq!(error_rate(&m, now, &p()), None, "under 20 requests");
        let m = vec![(now - 5 * MINUTE, 100, 100), (now, 20, 0)];
        assert_eq!(error_rate(&m, now, &p()), None, "outside the window");
    }
}
