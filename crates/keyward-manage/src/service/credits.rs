//! Tenant credits: balance, grants and adjustments, refill schedules and the
//! ledger. Reading needs `keyward:credits:read` (a tenant actor reads its
//! own tenant); changing needs `keyward:credits:write` and an operator.

use std::future::Future;

use keyward_core::secret::KeyHash;
use keyward_store::{ChangeOutcome, CreditAccount, CreditChange, LedgerEntry, LedgerKind, Refill};
use keyward_store::{Page, StoreError, Tenant};
use serde_json::json;

use super::{ManageService, Paging};
use crate::actor::Actor;
use crate::error::{FieldError, ManageError};
use crate::event::ChangeEvent;

/// A tenant's stored credit account, with the refill its tier gives it.
#[derive(Debug, Clone)]
pub struct Credits {
    pub tenant: Tenant,
    pub account: CreditAccount,
    /// The tier's refill (the tenant's own, in `account.refill`, wins).
    pub tier_refill: Option<Refill>,
}

/// A grant (`kind` "grant", amount > 0) or adjustment ("adjust", either sign).
#[derive(Debug, Clone)]
pub struct CreditChangeInput {
    pub kind: String,
    pub amount: i64,
    pub reason: Option<String>,
    /// The request's idempotency key, or why the one sent is malformed.
    pub idempotency_key: Result<Option<String>, &'static str>,
}

impl ManageService {
    fn tier_refill(&self, tenant: &Tenant) -> Option<Refill> {
        self.policy().refill_for_tenant(tenant.tier.as_deref())
    }

    /// The tenant's credit account; a refill that is due is applied first
    /// (`keyward:credits:read`).
    pub async fn credits(&self, actor: &Actor, tenant_id: &str) -> Result<Credits, ManageError> {
        actor.require("keyward:credits:read")?;
        let tenant = self.visible_tenant(actor, tenant_id).await?;
        let tier_refill = self.tier_refill(&tenant);
        let account = self
            .store
            .credit_account(tenant_id, tier_refill, self.now().0)
            .await?;
        Ok(Credits {
            tenant,
            account,
            tier_refill,
        })
    }

    /// Grants or adjusts a tenant's credits; the same idempotency key
    /// replays the first result (`outcome.replayed`).
    pub async fn change_credits(
        &self,
        actor: &Actor,
        tenant_id: &str,
        input: CreditChangeInput,
    ) -> Result<ChangeOutcome, ManageError> {
        actor.require("keyward:credits:write")?;
        actor.require_operator()?;
        let tenant = self.visible_tenant(actor, tenant_id).await?;
        let idempotency_key = input
            .idempotency_key
            .map_err(ManageError::InvalidIdempotencyKey)?;
        let mut errors = Vec::new();
        let kind = match input.kind.as_str() {
            "grant" => {
                if input.amount <= 0 {
                    errors.push(FieldError::new(
                        "amount",
                        "out_of_range",
                        "a grant adds credits: amount must be positive",
                    ));
                }
                LedgerKind::Grant
            }
            "adjust" => {
                if input.amount == 0 {
                    errors.push(FieldError::new(
                        "amount",
                        "out_of_range",
                        "an adjustment must change the balance: amount must not be 0",
                    ));
                }
                LedgerKind::Adjust
            }
            _ => {
                errors.push(FieldError::new(
                    "kind",
                    "invalid",
                    "kind must be grant or adjust",
                ));
                LedgerKind::Adjust
            }
        };
        if let Some(r) = &input.reason {
            if r.chars().count() > 500 || r.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    "reason",
                    "invalid",
                    "reason must be at most 500 printable characters",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ManageError::Validation(errors));
        }
        let fingerprint = KeyHash::of(&format!(
            "{}\n{}\n{}",
            input.kind,
            input.amount,
            input.reason.as_deref().unwrap_or("")
        ))
        .to_hex();
        let ledger_id = self.new_id("led")?;
        let event = ChangeEvent::CreditsChanged {
            tenant_id: tenant_id.to_owned(),
            ledger_id: ledger_id.clone(),
            kind,
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "amount": input.amount, "reason": input.reason }),
        )?;
        let change = CreditChange {
            id: ledger_id,
            tenant_id: tenant_id.to_owned(),
            kind,
            amount: input.amount,
            at: self.now().0,
            actor: actor.audit_id().to_owned(),
            reason: input.reason,
            idempotency_key,
            fingerprint,
            refill: self.tier_refill(&tenant),
        };
        let outcome = self
            .store
            .change_credits(&change, &audit)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) if m.contains("Idempotency-Key") => {
                    ManageError::IdempotencyKeyReused
                }
                StoreError::Conflict(m) => ManageError::Conflict {
                    code: "insufficient_balance",
                    message: format!("The balance is too low: {m}."),
                },
                other => other.into(),
            })?;
        if !outcome.replayed {
            self.committed(&event);
        }
        Ok(outcome)
    }

    /// Sets the tenant's own refill schedule, which wins over its tier's.
    pub async fn set_refill(
        &self,
        actor: &Actor,
        tenant_id: &str,
        refill: Refill,
    ) -> Result<Credits, ManageError> {
        actor.require("keyward:credits:write")?;
        actor.require_operator()?;
        let tenant = self.visible_tenant(actor, tenant_id).await?;
        crate::check::refill(&refill)?;
        let event = ChangeEvent::RefillSet {
            tenant_id: tenant_id.to_owned(),
        };
        let audit = self.audit(actor, &event, json!({ "refill": refill }))?;
        let now = self.now().0;
        self.store
            .set_refill(tenant_id, Some(refill), now, &audit)
            .await?;
        self.committed(&event);
        let tier_refill = self.tier_refill(&tenant);
        let account = self
            .store
            .credit_account(tenant_id, tier_refill, now)
            .await?;
        Ok(Credits {
            tenant,
            account,
            tier_refill,
        })
    }

    /// Removes the tenant's own refill schedule (its tier's applies, if any).
    pub async fn clear_refill(
        &self,
        actor: &Actor,
        tenant_id: &str,
    ) -> Result<Credits, ManageError> {
        actor.require("keyward:credits:write")?;
        actor.require_operator()?;
        let tenant = self.visible_tenant(actor, tenant_id).await?;
        let event = ChangeEvent::RefillCleared {
            tenant_id: tenant_id.to_owned(),
        };
        let audit = self.audit(actor, &event, json!({}))?;
        let now = self.now().0;
        let account = self.store.set_refill(tenant_id, None, now, &audit).await?;
        self.committed(&event);
        let tier_refill = self.tier_refill(&tenant);
        Ok(Credits {
            tenant,
            account,
            tier_refill,
        })
    }

    /// The tenant's credit ledger, newest first (`keyward:credits:read`).
    /// `before_read` runs once the actor may read it, before the read (the
    /// server settles this node's spends there).
    pub async fn ledger<F>(
        &self,
        actor: &Actor,
        tenant_id: &str,
        paging: Paging,
        before_read: F,
    ) -> Result<Page<LedgerEntry>, ManageError>
    where
        F: Future<Output = Result<(), StoreError>>,
    {
        actor.require("keyward:credits:read")?;
        self.visible_tenant(actor, tenant_id).await?;
        before_read.await?;
        Ok(self.store.list_ledger(tenant_id, paging.request()?).await?)
    }
}
