//! [`CreditStore`] for [`SqlStore`]: credit accounts and the ledger, in the same portable SQL as the rest of the store.
//!
//! Row locks: `UPDATE … SET x = x … RETURNING` takes the row lock in
//! PostgreSQL (so concurrent nodes serialize on a tenant's balance) and is
//! plain SQL in SQLite, whose single connection serializes everything anyway.
//! Every statement that changes a tenant's `credit_reservations` rows runs
//! after its account row is locked, so a sum of those rows read under the
//! lock is exact: that is how every ledger entry's `balance_after` (stored
//! balance + every node's reservation) is computed. Transactions that lock
//! several accounts lock them in `tenant_id` order, so two nodes settling
//! the same tenants cannot deadlock.

use async_trait::async_trait;
use keyward_core::id::new_id;
use keyward_core::secret::OsEntropy;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::{backend, insert_audit, paged, Bind, Built, SqlStore};
use crate::*;

const ACCOUNT_COLUMNS: &str =
    "tenant_id, balance, refill, last_refill_at, next_refill_at, updated_at";
const LEDGER_COLUMNS: &str =
    "seq, id, tenant_id, at, kind, amount, balance_after, key_id, requests, \
    actor, reason, idempotency_key, fingerprint";

type Tx<'a> = sqlx::Transaction<'a, Any>;

fn ledger_id() -> StoreResult<String> {
    new_id("led", &OsEntropy).map_err(|e| StoreError::Corrupt(format!("entropy: {e}")))
}

fn account_from_row(r: &AnyRow) -> StoreResult<CreditAccount> {
    let refill = match r.try_get::<Option<String>, _>("refill").map_err(backend)? {
        None => None,
        Some(s) => Some(
            serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("refill: {e}")))?,
        ),
    };
    Ok(CreditAccount {
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        balance: r.try_get("balance").map_err(backend)?,
        reserved: 0,
        refill,
        last_refill_at: r.try_get("last_refill_at").map_err(backend)?,
        next_refill_at: r.try_get("next_refill_at").map_err(backend)?,
        updated_at: r.try_get("updated_at").map_err(backend)?,
    })
}

fn ledger_from_row(r: &AnyRow) -> StoreResult<(i64, LedgerEntry, Option<String>)> {
    let kind: String = r.try_get("kind").map_err(backend)?;
    Ok((
        r.try_get("seq").map_err(backend)?,
        LedgerEntry {
            id: r.try_get("id").map_err(backend)?,
            tenant_id: r.try_get("tenant_id").map_err(backend)?,
            at: r.try_get("at").map_err(backend)?,
            kind: LedgerKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("ledger kind {kind:?}")))?,
            amount: r.try_get("amount").map_err(backend)?,
            balance_after: r.try_get("balance_after").map_err(backend)?,
            key_id: r.try_get("key_id").map_err(backend)?,
            requests: r.try_get("requests").map_err(backend)?,
            actor: r.try_get("actor").map_err(backend)?,
            reason: r.try_get("reason").map_err(backend)?,
            idempotency_key: r.try_get("idempotency_key").map_err(backend)?,
        },
        r.try_get("fingerprint").map_err(backend)?,
    ))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation()
        || db.code().as_deref() == Some("23505")
        || db.message().contains("UNIQUE constraint failed"))
}

async fn insert_ledger(
    tx: &mut Tx<'_>,
    e: &LedgerEntry,
    fingerprint: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO credit_ledger ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &LEDGER_COLUMNS["seq, ".len()..]
    ))
    .bind(&e.id)
    .bind(&e.tenant_id)
    .bind(e.at)
    .bind(e.kind.as_str())
    .bind(e.amount)
    .bind(e.balance_after)
    .bind(e.key_id.clone())
    .bind(e.requests)
    .bind(e.actor.clone())
    .bind(e.reason.clone())
    .bind(e.idempotency_key.clone())
    .bind(fingerprint.map(str::to_owned))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Creates the account if missing, then locks and returns it.
async fn lock_account(tx: &mut Tx<'_>, tenant_id: &str, now: i64) -> StoreResult<CreditAccount> {
    sqlx::query(
        "INSERT INTO credit_accounts (tenant_id, balance, updated_at) VALUES ($1, 0, $2) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    let row = sqlx::query(&format!(
        "UPDATE credit_accounts SET balance = balance WHERE tenant_id = $1 RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(tenant_id)
    .fetch_one(&mut **tx)
    .await.map_err(backend)?;
    account_from_row(&row)
}

/// What nodes hold in reservations of a locked account: all of them, and
/// all but `node_id`'s.
async fn held(tx: &mut Tx<'_>, tenant_id: &str, node_id: &str) -> StoreResult<(i64, i64)> {
    // SUM of a BIGINT is NUMERIC on PostgreSQL, which the Any driver cannot
    // read: cast back.
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS total, \
         CAST(COALESCE(SUM(CASE WHEN node_id = $2 THEN 0 ELSE amount END), 0) AS BIGINT) AS elsewhere \
         FROM credit_reservations WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(node_id)
    .fetch_one(&mut **tx)
    .await
    .map_err(backend)?;
    Ok((
        row.try_get("total").map_err(backend)?,
        row.try_get("elsewhere").map_err(backend)?,
    ))
}

/// The ledger's running balance of a locked account: its stored balance
/// plus every node's reservation.
async fn running_balance(tx: &mut Tx<'_>, account: &CreditAccount) -> StoreResult<i64> {
    let (total, _) = held(tx, &account.tenant_id, "").await?;
    Ok(account.balance.saturating_add(total))
}

/// Applies `refill` to a locked account if it is due, writing the ledger.
async fn refill_if_due(
    tx: &mut Tx<'_>,
    account: &mut CreditAccount,
    refill: Option<Refill>,
    now: i64,
) -> StoreResult<()> {
    // The tenant's own schedule wins over its tier's.
    let Some(r) = account.refill.or(refill) else {
        return Ok(());
    };
    if account.next_refill_at.is_some_and(|next| next > now) {
        return Ok(());
    }
    let (reserved, _) = held(tx, &account.tenant_id, "").await?;
    let before = account.balance;
    // `Set` sets what is not yet spent, reservations included.
    let after = match r.mode {
        RefillMode::Set => r.amount.saturating_sub(reserved).max(0),
        RefillMode::Add => before.saturating_add(r.amount).max(0),
    };
    account.balance = after;
    account.last_refill_at = Some(now);
    account.next_refill_at = Some(next_boundary(r.every, now));
    sqlx::query(
        "UPDATE credit_accounts SET balance = $1, last_refill_at = $2, next_refill_at = $3, updated_at = $2 \
         WHERE tenant_id = $4",
    )
    .bind(after)
    .bind(now)
    .bind(account.next_refill_at)
    .bind(&account.tenant_id)
    .execute(&mut **tx)
    .await.map_err(backend)?;
    let entry = LedgerEntry {
        id: ledger_id()?,
        tenant_id: account.tenant_id.clone(),
        at: now,
        kind: LedgerKind::Refill,
        amount: after - before,
        balance_after: after.saturating_add(reserved),
        key_id: None,
        requests: 0,
        actor: None,
        reason: Some(format!(
            "{} refill ({})",
            match r.every {
                RefillPeriod::Daily => "daily",
                RefillPeriod::Monthly => "monthly",
            },
            match r.mode {
                RefillMode::Set => "set",
                RefillMode::Add => "add",
            }
        )),
        idempotency_key: None,
    };
    insert_ledger(tx, &entry, None).await.map_err(backend)?;
    Ok(())
}

#[async_trait]
impl CreditStore for SqlStore {
    async fn credit_account(
        &self,
        tenant_id: &str,
        refill: Option<Refill>,
        now: i64,
    ) -> StoreResult<CreditAccount> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut account = lock_account(&mut tx, tenant_id, now).await?;
        refill_if_due(&mut tx, &mut account, refill, now).await?;
        account.reserved = held(&mut tx, tenant_id, "").await?.0;
        tx.commit().await.map_err(backend)?;
        Ok(account)
    }

    async fn reserve_credits(&self, r: &ReserveRequest, now: i64) -> StoreResult<Reserved> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut account = lock_account(&mut tx, &r.tenant_id, now).await?;
        refill_if_due(&mut tx, &mut account, r.refill, now).await?;
        let granted = if account.balance >= r.min.max(1) {
            account.balance.min(r.want.max(r.min))
        } else {
            0
        };
        if granted > 0 {
            account.balance -= granted;
            sqlx::query(
                "UPDATE credit_accounts SET balance = $1, updated_at = $2 WHERE tenant_id = $3",
            )
            .bind(account.balance)
            .bind(now)
            .bind(&r.tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            sqlx::query(
                "INSERT INTO credit_reservations (tenant_id, node_id, amount, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, node_id) DO UPDATE \
                 SET amount = credit_reservations.amount + excluded.amount, updated_at = excluded.updated_at",
            )
            .bind(&r.tenant_id)
            .bind(&r.node_id)
            .bind(granted)
            .bind(now)
            .execute(&mut *tx)
            .await.map_err(backend)?;
        }
        let (_, held_elsewhere) = held(&mut tx, &r.tenant_id, &r.node_id).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Reserved {
            granted,
            balance: account.balance,
            held_elsewhere,
        })
    }

    async fn settle_credits(
        &self,
        node_id: &str,
        settlements: &[Settlement],
        now: i64,
    ) -> StoreResult<()> {
        let mut ordered: Vec<&Settlement> = settlements.iter().collect();
        ordered.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for s in ordered {
            let mut account = lock_account(&mut tx, &s.tenant_id, now).await?;
            let held = sqlx::query(
                "UPDATE credit_reservations SET amount = amount - $1, updated_at = $2 \
                 WHERE tenant_id = $3 AND node_id = $4",
            )
            .bind(s.spent + s.release)
            .bind(now)
            .bind(&s.tenant_id)
            .bind(node_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            if held.rows_affected() == 0 {
                // Another node counted this reservation as spent already
                // (this node looked stopped): its spends are in the ledger
                // and its remainder is gone; adding either would count twice.
                tracing::warn!(tenant = %s.tenant_id, "A credit reservation was recovered by another node; its settlement is skipped.");
                continue;
            }
            if s.release > 0 {
                account.balance += s.release;
                sqlx::query(
                    "UPDATE credit_accounts SET balance = $1, updated_at = $2 WHERE tenant_id = $3",
                )
                .bind(account.balance)
                .bind(now)
                .bind(&s.tenant_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            sqlx::query(
                "DELETE FROM credit_reservations WHERE tenant_id = $1 AND node_id = $2 AND amount <= 0",
            )
            .bind(&s.tenant_id)
            .bind(node_id)
            .execute(&mut *tx)
            .await.map_err(backend)?;
            for (key_id, spent) in &s.key_spends {
                sqlx::query(
                    "INSERT INTO key_credits (key_id, spent) VALUES ($1, $2) \
                     ON CONFLICT (key_id) DO UPDATE SET spent = key_credits.spent + excluded.spent",
                )
                .bind(key_id)
                .bind(*spent)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            if s.spent > 0 {
                let entry = LedgerEntry {
                    id: ledger_id()?,
                    tenant_id: s.tenant_id.clone(),
                    at: now,
                    kind: LedgerKind::Spend,
                    amount: -s.spent,
                    balance_after: running_balance(&mut tx, &account).await?,
                    key_id: s.key_id.clone(),
                    requests: s.requests,
                    actor: None,
                    reason: None,
                    idempotency_key: None,
                };
                insert_ledger(&mut tx, &entry, None)
                    .await
                    .map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn recover_reservations(&self, which: Recover<'_>, now: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let rows = match which {
            Recover::Node(node_id) => sqlx::query(
                "SELECT tenant_id, node_id, amount FROM credit_reservations WHERE node_id = $1 \
                 ORDER BY tenant_id, node_id",
            )
            .bind(node_id),
            Recover::StaleExcept { node_id, before } => sqlx::query(
                "SELECT tenant_id, node_id, amount FROM credit_reservations WHERE node_id <> $1 AND updated_at < $2 \
                 ORDER BY tenant_id, node_id",
            )
            .bind(node_id)
            .bind(before),
        }
        .fetch_all(&mut *tx)
        .await.map_err(backend)?;
        let mut recovered = 0;
        for row in &rows {
            let tenant: String = row.try_get("tenant_id").map_err(backend)?;
            let node: String = row.try_get("node_id").map_err(backend)?;
            let amount: i64 = row.try_get("amount").map_err(backend)?;
            let account = lock_account(&mut tx, &tenant, now).await?;
            let gone = sqlx::query(
                "DELETE FROM credit_reservations WHERE tenant_id = $1 AND node_id = $2 AND amount = $3",
            )
            .bind(&tenant)
            .bind(&node)
            .bind(amount)
            .execute(&mut *tx)
            .await.map_err(backend)?;
            if gone.rows_affected() == 0 || amount <= 0 {
                continue;
            }
            recovered += 1;
            let entry = LedgerEntry {
                id: ledger_id()?,
                tenant_id: tenant,
                at: now,
                kind: LedgerKind::Spend,
                amount: -amount,
                balance_after: running_balance(&mut tx, &account).await?,
                key_id: None,
                requests: 0,
                actor: None,
                reason: Some(format!(
                    "reserved by node {node}, which stopped without settling; counted as spent"
                )),
                idempotency_key: None,
            };
            insert_ledger(&mut tx, &entry, None)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(recovered)
    }

    async fn key_credits_spent(&self, key_id: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT spent FROM key_credits WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(match row {
            Some(r) => r.try_get("spent").map_err(backend)?,
            None => 0,
        })
    }

    async fn change_credits(
        &self,
        c: &CreditChange,
        audit: &crate::AuditEntry,
    ) -> StoreResult<ChangeOutcome> {
        let find = |key: String| async move {
            let row = sqlx::query(&format!(
                "SELECT {LEDGER_COLUMNS} FROM credit_ledger WHERE tenant_id = $1 AND idempotency_key = $2"
            ))
            .bind(&c.tenant_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await.map_err(backend)?;
            row.as_ref().map(ledger_from_row).transpose()
        };
        let replay = |(_, entry, fp): (i64, LedgerEntry, Option<String>)| {
            if fp.as_deref() == Some(c.fingerprint.as_str()) {
                Ok(ChangeOutcome {
                    entry,
                    replayed: true,
                })
            } else {
                Err(StoreError::Conflict(
                    "this Idempotency-Key was used for a different credit change",
                ))
            }
        };
        if let Some(key) = &c.idempotency_key {
            if let Some(found) = find(key.clone()).await? {
                return replay(found);
            }
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut account = lock_account(&mut tx, &c.tenant_id, c.at).await?;
        refill_if_due(&mut tx, &mut account, c.refill, c.at).await?;
        let after = account.balance.saturating_add(c.amount);
        if after < 0 {
            return Err(StoreError::Conflict(
                "the change would make the balance negative",
            ));
        }
        sqlx::query(
            "UPDATE credit_accounts SET balance = $1, updated_at = $2 WHERE tenant_id = $3",
        )
        .bind(after)
        .bind(c.at)
        .bind(&c.tenant_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        account.balance = after;
        let entry = LedgerEntry {
            id: c.id.clone(),
            tenant_id: c.tenant_id.clone(),
            at: c.at,
            kind: c.kind,
            amount: c.amount,
            balance_after: running_balance(&mut tx, &account).await?,
            key_id: None,
            requests: 0,
            actor: Some(c.actor.clone()),
            reason: c.reason.clone(),
            idempotency_key: c.idempotency_key.clone(),
        };
        match insert_ledger(&mut tx, &entry, Some(&c.fingerprint)).await {
            Ok(()) => {}
            // A concurrent change with the same key won: answer with it.
            Err(e) if is_unique_violation(&e) && c.idempotency_key.is_some() => {
                drop(tx);
                let key = c.idempotency_key.clone().unwrap_or_default();
                return match find(key).await? {
                    Some(found) => replay(found),
                    None => Err(backend(e)),
                };
            }
            Err(e) => return Err(backend(e)),
        }
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(ChangeOutcome {
            entry,
            replayed: false,
        })
    }

    async fn set_refill(
        &self,
        tenant_id: &str,
        refill: Option<Refill>,
        now: i64,
        audit: &crate::AuditEntry,
    ) -> StoreResult<CreditAccount> {
        let text = refill
            .map(|r| serde_json::to_string(&r))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        lock_account(&mut tx, tenant_id, now).await?;
        // A new schedule applies at once, then at each boundary.
        let row = sqlx::query(&format!(
            "UPDATE credit_accounts SET refill = $1, next_refill_at = NULL, updated_at = $2 \
             WHERE tenant_id = $3 RETURNING {ACCOUNT_COLUMNS}"
        ))
        .bind(text)
        .bind(now)
        .bind(tenant_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let mut account = account_from_row(&row)?;
        account.reserved = held(&mut tx, tenant_id, "").await?.0;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(account)
    }

    async fn list_ledger(
        &self,
        tenant_id: &str,
        page: PageRequest,
    ) -> StoreResult<Page<LedgerEntry>> {
        let mut b = Built::new(format!(
            "SELECT {LEDGER_COLUMNS} FROM credit_ledger WHERE tenant_id = "
        ));
        let p = b.arg(Bind::Text(Some(tenant_id.to_owned())));
        b.sql.push_str(&p);
        b.page(page, "AND");
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(|r| ledger_from_row(r).map(|(seq, e, _)| (seq, e)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }
}
