//! Leaked keys: reports from secret scanners and people, the policy's
//! action on the key, a key's reports, and which hashes are live keys.
//!
//! A report is answered fast and acted on after: [`ManageService::report_leaks`]
//! checks each token's checksum first (a broken checksum is not a key of
//! this deployment: `false_positive`, without a store read), then looks the
//! hashes up in one batch and records each report of a known key as
//! `pending` with its `key.leaked` audit entry, in one transaction. The
//! caller answers and queues the pending reports; [`ManageService::apply_leak`]
//! then applies the policy (`[leaks]`: revoke, disable or flag) as the actor
//! `leak-report`, through the same revoke and update paths as any caller,
//! so audit, cache invalidation and the change feed behave as for any
//! revocation. The first report of a key acts; later ones are repeats.

use std::net::IpAddr;

use keyward_core::secret::KeyHash;
use keyward_store::{
    AuditEntry, KeyClass, KeyPatch, KeyRecord, KeyStatus, LeakReport, LeakStatus, StoreError,
    MAX_HASHES_PER_LOOKUP,
};
use serde_json::json;

use super::ManageService;
use crate::actor::Actor;
use crate::error::{not_found, ManageError};
use crate::event::ChangeEvent;
use crate::policy::LeakAction;
use crate::FieldError;

/// Most tokens one report call takes.
pub const MAX_LEAK_REPORTS: usize = 1000;
/// Most hashes one live-key check takes.
pub const MAX_CHECK_HASHES: usize = 100;
/// Longest URL kept (longer ones are cut at a character boundary).
const MAX_URL: usize = 2048;
/// Longest token type or source kept.
const MAX_LABEL: usize = 200;
/// Most reports of a key read back.
const MAX_KEY_REPORTS: u32 = 50;

/// Who reported a leak.
#[derive(Debug, Clone, Copy)]
pub enum Reporter<'a> {
    /// GitHub's secret-scanning partner program (a signed request).
    GitHub,
    /// GitLab's token revocation API call (the shared token).
    GitLab,
    /// An API key or console person holding `keyward:leaks:write`.
    Actor(&'a Actor),
}

impl Reporter<'_> {
    /// The report's `reporter`: `github`, `gitlab`, `api:<key id>`.
    pub fn name(&self) -> String {
        match self {
            Reporter::GitHub => "github".into(),
            Reporter::GitLab => "gitlab".into(),
            Reporter::Actor(a) => format!("api:{}", a.audit_id()),
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        match self {
            Reporter::Actor(a) => a.ip(),
            _ => None,
        }
    }

    /// Whether this reporter may act on `key` (partners: every key; an
    /// actor: the keys it can see).
    fn reaches(&self, key: &KeyRecord) -> bool {
        match self {
            Reporter::GitHub | Reporter::GitLab => true,
            Reporter::Actor(a) => match key.class {
                KeyClass::Root => a.is_operator(),
                KeyClass::Tenant => a.sees_tenant(key.tenant_id.as_deref()),
            },
        }
    }
}

/// The leaked token: the secret itself (checked and hashed here, then
/// dropped), or the hex SHA-256 of it.
pub enum LeakedToken {
    Secret(String),
    Hash(String),
}

impl std::fmt::Debug for LeakedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeakedToken::Secret(_) => f.write_str("Secret(<redacted>)"),
            LeakedToken::Hash(h) => write!(f, "Hash({h})"),
        }
    }
}

/// One reported token and where it was found.
#[derive(Debug)]
pub struct LeakInput {
    pub token: LeakedToken,
    pub token_type: Option<String>,
    pub url: Option<String>,
    pub source: Option<String>,
}

/// The answer for one reported token.
#[derive(Debug, Clone)]
pub struct LeakVerdict {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// The token is a key of this deployment (`true_positive`).
    pub known: bool,
    /// The recorded report (none for a broken checksum).
    pub report: Option<LeakReport>,
}

impl LeakVerdict {
    /// The report to act on, if this one acts (pending).
    pub fn pending(&self) -> Option<&str> {
        self.report
            .as_ref()
            .filter(|r| r.status == LeakStatus::Pending)
            .map(|r| r.id.as_str())
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn clip(s: Option<String>, max: usize) -> Option<String> {
    s.map(|mut s| {
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    })
    .filter(|s| !s.is_empty())
}

fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ManageService {
    /// Records leak reports and answers which tokens are keys of this
    /// deployment. Tokens whose checksum is broken are answered without a
    /// store read; the rest are looked up in batches. Reports of known keys
    /// are recorded `pending` (or as repeats) with their `key.leaked` audit
    /// entry; the caller queues the pending ones for [`ManageService::apply_leak`].
    /// An actor needs `keyward:leaks:write` and reaches only keys it can see.
    pub async fn report_leaks(
        &self,
        reporter: Reporter<'_>,
        inputs: Vec<LeakInput>,
    ) -> Result<Vec<LeakVerdict>, ManageError> {
        if let Reporter::Actor(a) = reporter {
            a.require("keyward:leaks:write")?;
        }
        if inputs.len() > MAX_LEAK_REPORTS {
            return Err(ManageError::field(
                "reports",
                "too_many",
                format!("at most {MAX_LEAK_REPORTS} tokens per report"),
            ));
        }
        let format = self.policy().format.clone();
        // Checksum first: no store read for what cannot be a key.
        let mut hashes: Vec<Option<String>> = Vec::with_capacity(inputs.len());
        let mut errors = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            hashes.push(match &input.token {
                LeakedToken::Secret(s) => format.parse(s).is_ok().then(|| KeyHash::of(s).to_hex()),
                LeakedToken::Hash(h) if is_hash(h) => Some(h.clone()),
                LeakedToken::Hash(_) => {
                    errors.push(FieldError::new(
                        format!("[{i}].key_hash"),
                        "invalid",
                        "key_hash must be 64 lowercase hex digits (SHA-256)",
                    ));
                    None
                }
            });
        }
        if !errors.is_empty() {
            return Err(ManageError::Validation(errors));
        }
        let mut wanted: Vec<String> = hashes.iter().flatten().cloned().collect();
        wanted.sort();
        wanted.dedup();
        let mut keys: Vec<KeyRecord> = Vec::new();
        for chunk in wanted.chunks(MAX_HASHES_PER_LOOKUP) {
            keys.extend(
                self.store
                    .find_keys_with_tenants(chunk)
                    .await?
                    .into_iter()
                    .map(|k| k.key),
            );
        }
        let now = self.now().0;
        let name = reporter.name();
        let mut out = Vec::with_capacity(inputs.len());
        for (input, hash) in inputs.into_iter().zip(hashes) {
            let token_hash = match (&input.token, hash) {
                (_, Some(h)) => h,
                (LeakedToken::Secret(s), None) => {
                    out.push(LeakVerdict {
                        token_hash: KeyHash::of(s).to_hex(),
                        known: false,
                        report: None,
                    });
                    continue;
                }
                (LeakedToken::Hash(h), None) => h.clone(),
            };
            let key = keys
                .iter()
                .find(|k| k.hash == token_hash && reporter.reaches(k));
            let report = LeakReport {
                id: self.new_id("leak")?,
                key_hash: token_hash.clone(),
                key_id: key.map(|k| k.id.clone()),
                tenant_id: key.and_then(|k| k.tenant_id.clone()),
                token_type: clip(input.token_type, MAX_LABEL),
                url: clip(input.url, MAX_URL),
                source: clip(input.source, MAX_LABEL),
                reporter: name.clone(),
                received_at: now,
                status: if key.is_some() {
                    LeakStatus::Pending
                } else {
                    LeakStatus::Unmatched
                },
                action: None,
                applied_at: None,
                detail: None,
            };
            let event = key.map(|k| ChangeEvent::KeyLeaked {
                key_id: k.id.clone(),
                tenant_id: k.tenant_id.clone(),
                hash: k.hash.clone(),
                report_id: report.id.clone(),
            });
            let audit = match &event {
                Some(e) => Some(AuditEntry {
                    actor: name.clone(),
                    actor_ip: reporter.ip().map(|i| i.to_string()),
                    ..self.audit(
                        &Actor::host("leak-report"),
                        e,
                        json!({
                            "report_id": report.id,
                            "url": report.url,
                            "source": report.source,
                            "token_type": report.token_type,
                        }),
                    )?
                }),
                None => None,
            };
            let stored = self.store.record_leak(&report, audit.as_ref()).await?;
            if let Some(e) = &event {
                self.committed(e);
                tracing::warn!(
                    key_id = stored.key_id.as_deref().unwrap_or(""),
                    report_id = %stored.id,
                    reporter = %name,
                    repeat = stored.status == LeakStatus::Repeat,
                    "Leaked key reported."
                );
            }
            out.push(LeakVerdict {
                token_hash,
                known: key.is_some(),
                report: Some(stored),
            });
        }
        Ok(out)
    }

    /// Applies the policy to a pending report (revoke, disable or flag, as
    /// the actor `leak-report`) and finishes it; a report no longer pending
    /// is returned as it is. A store failure leaves it pending (it is
    /// applied again later, or at the next start).
    pub async fn apply_leak(&self, report_id: &str) -> Result<LeakReport, ManageError> {
        let report = self
            .store
            .get_leak(report_id)
            .await
            .map_err(not_found("leak report"))?;
        if report.status != LeakStatus::Pending {
            return Ok(report);
        }
        let now = self.now().0;
        let host = Actor::host("leak-report");
        let key = match &report.key_id {
            Some(id) => match self.store.get_key(id).await {
                Ok(k) => Some(k),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let (status, action, detail): (LeakStatus, &str, Option<String>) = match &key {
            None => (
                LeakStatus::Applied,
                "none",
                Some("the key was deleted".into()),
            ),
            Some(k) if k.revoked_at.is_some() => (
                LeakStatus::Applied,
                "none",
                Some("the key was already revoked".into()),
            ),
            Some(k) => {
                let chosen = self
                    .policy()
                    .leaks
                    .action_for(k.tenant_id.as_deref(), &k.environment);
                match chosen {
                    LeakAction::Revoke => {
                        let reason = format!("Leaked (reported by {}).", report.reporter);
                        match self.revoke_key(&host, &k.id, Some(reason)).await {
                            Ok(_) => (LeakStatus::Applied, "revoke", None),
                            Err(ManageError::LastRootKey) => (
                                LeakStatus::Failed,
                                "revoke",
                                Some("the last root key that can manage keys cannot be revoked; revoke it by hand after creating another".into()),
                            ),
                            Err(e) => return Err(e),
                        }
                    }
                    LeakAction::Disable if !k.enabled => (
                        LeakStatus::Applied,
                        "disable",
                        Some("the key was already disabled".into()),
                    ),
                    LeakAction::Disable => match self.disable_leaked(&host, k, &report).await {
                        Ok(()) => (LeakStatus::Applied, "disable", None),
                        Err(ManageError::LastRootKey) => (
                            LeakStatus::Failed,
                            "disable",
                            Some(
                                "the last root key that can manage keys cannot be disabled".into(),
                            ),
                        ),
                        Err(e) => return Err(e),
                    },
                    LeakAction::Flag => (LeakStatus::Applied, "flag", None),
                }
            }
        };
        self.store
            .finish_leak(&report.id, status, action, detail.as_deref(), now)
            .await?;
        let done = LeakReport {
            status,
            action: Some(action.to_owned()),
            applied_at: Some(now),
            detail,
            ..report
        };
        self.key_leaked_hook(&done, key.as_ref());
        Ok(done)
    }

    /// Disables a leaked key, audited as `key.disabled` by `actor`.
    async fn disable_leaked(
        &self,
        actor: &Actor,
        key: &KeyRecord,
        report: &LeakReport,
    ) -> Result<(), ManageError> {
        let event = ChangeEvent::KeyUpdated {
            key_id: key.id.clone(),
            tenant_id: key.tenant_id.clone(),
            hash: key.hash.clone(),
        };
        let audit = AuditEntry {
            action: "key.disabled".into(),
            ..self.audit(
                actor,
                &event,
                json!({ "changed": ["disabled"], "report_id": report.id }),
            )?
        };
        let patch = KeyPatch {
            enabled: Some(false),
            updated_at: audit.at,
            ..KeyPatch::default()
        };
        self.store
            .update_key(&key.id, &patch, &audit)
            .await
            .map_err(not_found("key"))?;
        self.committed(&event);
        Ok(())
    }

    /// The hook for a leak acted on: today a warning in the log (the
    /// alert); the `key.leaked` webhook event of the webhooks issue is to
    /// be sent from here, once per acting report.
    fn key_leaked_hook(&self, report: &LeakReport, key: Option<&KeyRecord>) {
        tracing::warn!(
            report_id = %report.id,
            key_id = key.map_or("", |k| k.id.as_str()),
            tenant_id = report.tenant_id.as_deref().unwrap_or(""),
            action = report.action.as_deref().unwrap_or(""),
            status = report.status.as_str(),
            reporter = %report.reporter,
            url = report.url.as_deref().unwrap_or(""),
            source = report.source.as_deref().unwrap_or(""),
            "Leaked key: policy applied."
        );
    }

    /// Reports left pending (a crash, a full queue), oldest first.
    pub async fn pending_leaks(&self, limit: u32) -> Result<Vec<String>, ManageError> {
        Ok(self
            .store
            .pending_leaks(limit)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect())
    }

    /// A key's leak reports, newest first (`keyward:keys:read`).
    pub async fn key_leaks(
        &self,
        actor: &Actor,
        key_id: &str,
    ) -> Result<Vec<LeakReport>, ManageError> {
        actor.require("keyward:keys:read")?;
        let key = self.visible_key(actor, key_id).await?;
        Ok(self.store.leaks_of_key(&key.id, MAX_KEY_REPORTS).await?)
    }

    /// Which of `key_ids` (of a list the actor just read) were reported
    /// leaked (`keyward:keys:read`).
    pub async fn leaked_keys(
        &self,
        actor: &Actor,
        key_ids: &[String],
    ) -> Result<Vec<String>, ManageError> {
        actor.require("keyward:keys:read")?;
        Ok(self.store.leaked_keys(key_ids).await?)
    }

    /// Which of `hashes` (hex SHA-256) are keys active now that the actor
    /// can see (`keyward:leaks:check`): what `keyward scan --check` asks,
    /// sending hashes only.
    pub async fn live_hashes(
        &self,
        actor: &Actor,
        hashes: &[String],
    ) -> Result<Vec<String>, ManageError> {
        actor.require("keyward:leaks:check")?;
        if hashes.is_empty() || hashes.len() > MAX_CHECK_HASHES {
            return Err(ManageError::field(
                "hashes",
                "out_of_range",
                format!("hashes must hold 1 to {MAX_CHECK_HASHES} SHA-256 hex digests"),
            ));
        }
        let errors: Vec<FieldError> = hashes
            .iter()
            .enumerate()
            .filter(|(_, h)| !is_hash(h))
            .map(|(i, _)| {
                FieldError::new(
                    format!("hashes[{i}]"),
                    "invalid",
                    "a hash is 64 lowercase hex digits (SHA-256)",
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(ManageError::Validation(errors));
        }
        let now = self.now().0;
        let found = self.store.find_keys_with_tenants(hashes).await?;
        let reporter = Reporter::Actor(actor);
        Ok(hashes
            .iter()
            .filter(|h| {
                found.iter().any(|k| {
                    &k.key.hash == *h
                        && reporter.reaches(&k.key)
                        && k.key.status(now) == KeyStatus::Active
                })
            })
            .cloned()
            .collect())
    }

    /// Audits a refused leak report (`leak.report_refused`): who it claimed
    /// to come from, why it was refused, and the peer's address; never the
    /// body.
    pub async fn refused_leak_report(
        &self,
        reporter: &str,
        reason: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), ManageError> {
        let audit = AuditEntry {
            id: self.new_id("evt")?,
            at: self.now().0,
            actor: reporter.to_owned(),
            actor_ip: ip.map(|i| i.to_string()),
            tenant_id: None,
            action: "leak.report_refused".into(),
            target: reporter.to_owned(),
            details: json!({ "reason": reason }),
            event: None,
        };
        self.store.audit_refused_leak(&audit).await?;
        tracing::warn!(reporter, reason, "Leak report refused.");
        Ok(())
    }
}
