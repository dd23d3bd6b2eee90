//! [`LeakStore`] for [`SqlStore`].

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{backend, insert_audit, SqlStore};
use crate::*;

const LEAK_COLUMNS: &str = "id, key_hash, key_id, tenant_id, token_type, url, source, reporter, \
    received_at, status, action, applied_at, detail";

fn leak_from_row(r: &AnyRow) -> StoreResult<LeakReport> {
    let status: String = r.try_get("status").map_err(backend)?;
    Ok(LeakReport {
        id: r.try_get("id").map_err(backend)?,
        key_hash: r.try_get("key_hash").map_err(backend)?,
        key_id: r.try_get("key_id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        token_type: r.try_get("token_type").map_err(backend)?,
        url: r.try_get("url").map_err(backend)?,
        source: r.try_get("source").map_err(backend)?,
        reporter: r.try_get("reporter").map_err(backend)?,
        received_at: r.try_get("received_at").map_err(backend)?,
        status: LeakStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("leak status: {status:?}")))?,
        action: r.try_get("action").map_err(backend)?,
        applied_at: r.try_get("applied_at").map_err(backend)?,
        detail: r.try_get("detail").map_err(backend)?,
    })
}

/// The insert of one report; `acting` marks the row the unique index holds
/// once per key hash.
fn insert_sql(acting: bool) -> String {
    let tail = if acting {
        " ON CONFLICT DO NOTHING"
    } else {
        ""
    };
    format!(
        "INSERT INTO leak_reports ({LEAK_COLUMNS}, acting) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14){tail}"
    )
}

#[async_trait]
impl LeakStore for SqlStore {
    async fn record_leak(
        &self,
        report: &LeakReport,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<LeakReport> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let wants_action = report.key_id.is_some() && report.status == LeakStatus::Pending;
        // The acting insert does nothing when the key already has an acting
        // report (the partial unique index): this one is then a repeat.
        let acted = wants_action
            && bind_report(
                sqlx::query(&insert_sql(true)),
                report,
                LeakStatus::Pending,
                true,
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected()
                == 1;
        let mut stored = report.clone();
        if !acted {
            stored.status = if wants_action {
                LeakStatus::Repeat
            } else {
                report.status
            };
            bind_report(
                sqlx::query(&insert_sql(false)),
                report,
                stored.status,
                false,
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        if let Some(a) = audit {
            insert_audit(&mut tx, a).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn get_leak(&self, id: &str) -> StoreResult<LeakReport> {
        let row = sqlx::query(&format!(
            "SELECT {LEAK_COLUMNS} FROM leak_reports WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref()
            .map(leak_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn pending_leaks(&self, limit: u32) -> StoreResult<Vec<LeakReport>> {
        let rows = sqlx::query(&format!(
            "SELECT {LEAK_COLUMNS} FROM leak_reports WHERE status = 'pending' ORDER BY seq LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(leak_from_row).collect()
    }

    async fn finish_leak(
        &self,
        id: &str,
        status: LeakStatus,
        action: &str,
        detail: Option<&str>,
        at: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE leak_reports SET status = $1, action = $2, detail = $3, applied_at = $4 \
             WHERE id = $5 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(action)
        .bind(detail.map(str::to_owned))
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn leaks_of_key(&self, key_id: &str, limit: u32) -> StoreResult<Vec<LeakReport>> {
        let rows = sqlx::query(&format!(
            "SELECT {LEAK_COLUMNS} FROM leak_reports WHERE key_id = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(key_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(leak_from_row).collect()
    }

    async fn leaked_keys(&self, key_ids: &[String]) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        for chunk in key_ids.chunks(100) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT key_id FROM leak_reports WHERE acting = 1 AND key_id IN ({})",
                list.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            for row in q.fetch_all(&self.pool).await.map_err(backend)? {
                out.push(row.try_get::<String, _>(0).map_err(backend)?);
            }
        }
        Ok(out)
    }

    async fn audit_refused_leak(&self, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)
    }
}

fn bind_report<'q>(
    q: super::AnyQuery<'q>,
    r: &LeakReport,
    status: LeakStatus,
    acting: bool,
) -> super::AnyQuery<'q> {
    q.bind(r.id.clone())
        .bind(r.key_hash.clone())
        .bind(r.key_id.clone())
        .bind(r.tenant_id.clone())
        .bind(r.token_type.clone())
        .bind(r.url.clone())
        .bind(r.source.clone())
        .bind(r.reporter.clone())
        .bind(r.received_at)
        .bind(status.as_str())
        .bind(r.action.clone())
        .bind(r.applied_at)
        .bind(r.detail.clone())
        .bind(i64::from(acting))
}
