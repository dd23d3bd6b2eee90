//! [`IdempotencyStore`] for [`SqlStore`]: claims bounded per scope, stored
//! responses, purging.

use async_trait::async_trait;
use base64::Engine;
use serde_json::Value;
use sqlx::{Any, Row};

use super::{backend, SqlStore};
use crate::*;

type Tx<'a> = sqlx::Transaction<'a, Any>;

#[async_trait]
impl IdempotencyStore for SqlStore {
    async fn claim_idempotency(&self, c: &IdempotencyClaim) -> StoreResult<ClaimOutcome> {
        for _ in 0..4 {
            match self.insert_claim(c).await? {
                Inserted::Yes => return Ok(ClaimOutcome::Claimed),
                Inserted::OverQuota => return Ok(ClaimOutcome::QuotaExceeded),
                Inserted::Exists => {}
            }
            let row = sqlx::query(
                "SELECT fingerprint, state, locked_until, expires_at, status, headers, body \
                 FROM idempotency_records WHERE scope = $1 AND idem_key = $2",
            )
            .bind(&c.scope)
            .bind(&c.key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            let Some(row) = row else {
                continue;
            };
            let state: String = row.try_get("state").map_err(backend)?;
            let fingerprint: String = row.try_get("fingerprint").map_err(backend)?;
            let locked_until: i64 = row.try_get("locked_until").map_err(backend)?;
            let expires_at: i64 = row.try_get("expires_at").map_err(backend)?;
            if state == "done" && expires_at <= c.now {
                // Its replay window ended: the key is free again.
                sqlx::query(
                    "DELETE FROM idempotency_records WHERE scope = $1 AND idem_key = $2 \
                     AND state = 'done' AND expires_at <= $3",
                )
                .bind(&c.scope)
                .bind(&c.key)
                .bind(c.now)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
                continue;
            }
            if state == "in_flight" && locked_until <= c.now {
                // Abandoned (the gateway died mid-request): take it over.
                let taken = sqlx::query(
                    "UPDATE idempotency_records SET fingerprint = $1, locked_until = $2, expires_at = $3, created_at = $4 \
                     WHERE scope = $5 AND idem_key = $6 AND state = 'in_flight' AND locked_until <= $4",
                )
                .bind(&c.fingerprint)
                .bind(c.lock_until)
                .bind(c.expires_at)
                .bind(c.now)
                .bind(&c.scope)
                .bind(&c.key)
                .execute(&self.pool)
                .await.map_err(backend)?;
                if taken.rows_affected() == 1 {
                    return Ok(ClaimOutcome::Claimed);
                }
                continue;
            }
            if fingerprint != c.fingerprint {
                return Ok(ClaimOutcome::Mismatch);
            }
            if state == "in_flight" {
                return Ok(ClaimOutcome::InProgress);
            }
            let status: i64 = row
                .try_get::<Option<i64>, _>("status")
                .map_err(backend)?
                .unwrap_or(500);
            let headers: Vec<(String, String)> = match row
                .try_get::<Option<String>, _>("headers")
                .map_err(backend)?
            {
                None => Vec::new(),
                Some(s) => serde_json::from_str::<Vec<(String, String)>>(&s)
                    .map_err(|e| StoreError::Corrupt(format!("idempotency headers: {e}")))?,
            };
            let body = match row.try_get::<Option<String>, _>("body").map_err(backend)? {
                None => Vec::new(),
                Some(s) => base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| StoreError::Corrupt(format!("idempotency body: {e}")))?,
            };
            return Ok(ClaimOutcome::Completed(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                headers,
                body,
            }));
        }
        // Four rounds of the record changing under us: report it as busy.
        Ok(ClaimOutcome::InProgress)
    }

    async fn complete_idempotency(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
        expires_at: i64,
    ) -> StoreResult<()> {
        let headers = Value::from(
            response
                .headers
                .iter()
                .map(|(n, v)| Value::from(vec![n.clone(), v.clone()]))
                .collect::<Vec<_>>(),
        )
        .to_string();
        sqlx::query(
            "UPDATE idempotency_records SET state = 'done', status = $1, headers = $2, body = $3, expires_at = $4 \
             WHERE scope = $5 AND idem_key = $6",
        )
        .bind(i64::from(response.status))
        .bind(headers)
        .bind(base64::engine::general_purpose::STANDARD.encode(&response.body))
        .bind(expires_at)
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await.map_err(backend)?;
        Ok(())
    }

    async fn release_idempotency(&self, scope: &str, key: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_records WHERE scope = $1 AND idem_key = $2 AND state = 'in_flight'",
        )
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await.map_err(backend)?;
        Ok(())
    }

    async fn purge_idempotency(&self, now: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM idempotency_records WHERE expires_at <= $1 AND (state = 'done' OR locked_until <= $1)",
        )
        .bind(now)
        .execute(&self.pool)
        .await.map_err(backend)?;
        Ok(done.rows_affected())
    }
}

/// What inserting a new claim did.
enum Inserted {
    Yes,
    /// The key has a record already.
    Exists,
    /// The scope is full of claims in flight.
    OverQuota,
}

/// A PostgreSQL advisory-lock key for an idempotency scope (FNV-1a: stable
/// across nodes and releases; a collision only makes two scopes wait for
/// each other).
fn scope_lock(scope: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"keyward idempotency scope\0"
        .iter()
        .chain(scope.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

impl SqlStore {
    /// Inserts `c` as a new in-flight record within the scope's quota, in
    /// one transaction that holds the scope: PostgreSQL by an advisory
    /// lock taken first, SQLite because the first statement is a write
    /// (the database's one write lock, held to the end). So the count the
    /// quota is checked against cannot change underneath, on any node.
    async fn insert_claim(&self, c: &IdempotencyClaim) -> StoreResult<Inserted> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if self.dialect == super::Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(scope_lock(&c.scope))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let inserted = sqlx::query(
            "INSERT INTO idempotency_records (scope, idem_key, fingerprint, state, locked_until, expires_at, created_at) \
             VALUES ($1, $2, $3, 'in_flight', $4, $5, $6) ON CONFLICT (scope, idem_key) DO NOTHING",
        )
        .bind(&c.scope)
        .bind(&c.key)
        .bind(&c.fingerprint)
        .bind(c.lock_until)
        .bind(c.expires_at)
        .bind(c.now)
        .execute(&mut *tx)
        .await.map_err(backend)?;
        if inserted.rows_affected() != 1 {
            tx.rollback().await.map_err(backend)?;
            return Ok(Inserted::Exists);
        }
        let max = i64::try_from(c.max_records).unwrap_or(i64::MAX);
        let mut count = records_in(&mut tx, &c.scope).await?;
        if count > max {
            // Free records first (expired, or abandoned past their lock),
            // then the oldest completed ones. The outer condition is checked
            // again on the row itself, so a claim taken over meanwhile (in
            // flight again) is never dropped.
            sqlx::query(
                "DELETE FROM idempotency_records WHERE scope = $1 AND idem_key <> $2 \
                 AND (state = 'done' OR locked_until <= $3) \
                 AND idem_key IN (SELECT idem_key FROM idempotency_records \
                   WHERE scope = $1 AND idem_key <> $2 AND (state = 'done' OR locked_until <= $3) \
                   ORDER BY CASE WHEN state = 'done' AND expires_at > $3 THEN 1 ELSE 0 END, created_at, idem_key \
                   LIMIT $4)",
            )
            .bind(&c.scope)
            .bind(&c.key)
            .bind(c.now)
            .bind(count - max)
            .execute(&mut *tx)
            .await.map_err(backend)?;
            count = records_in(&mut tx, &c.scope).await?;
        }
        if count > max {
            tx.rollback().await.map_err(backend)?;
            return Ok(Inserted::OverQuota);
        }
        tx.commit().await.map_err(backend)?;
        Ok(Inserted::Yes)
    }
}

async fn records_in(tx: &mut Tx<'_>, scope: &str) -> StoreResult<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM idempotency_records WHERE scope = $1")
        .bind(scope)
        .fetch_one(&mut **tx)
        .await
        .map_err(backend)?;
    row.try_get("n").map_err(backend)
}
