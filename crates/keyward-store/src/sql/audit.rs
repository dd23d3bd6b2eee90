//! [`AuditStore`] for [`SqlStore`], and the insert every change's
//! transaction makes.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::{backend, json_text, paged, parse_json, Bind, Built, SqlStore};
use crate::*;

const AUDIT_COLUMNS: &str = "seq, id, at, actor, actor_ip, tenant_id, action, target, details";

fn audit_from_row(r: &AnyRow) -> StoreResult<(i64, AuditEvent)> {
    let seq = r.try_get("seq").map_err(backend)?;
    Ok((
        seq,
        AuditEvent {
            seq,
            id: r.try_get("id").map_err(backend)?,
            at: r.try_get("at").map_err(backend)?,
            actor: r.try_get("actor").map_err(backend)?,
            actor_ip: r.try_get("actor_ip").map_err(backend)?,
            tenant_id: r.try_get("tenant_id").map_err(backend)?,
            action: r.try_get("action").map_err(backend)?,
            target: r.try_get("target").map_err(backend)?,
            details: parse_json(
                "details",
                &r.try_get::<String, _>("details").map_err(backend)?,
            )?,
        },
    ))
}

pub(crate) async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, Any>,
    a: &AuditEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (id, at, actor, actor_ip, tenant_id, action, target, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&a.id)
    .bind(a.at)
    .bind(&a.actor)
    .bind(a.actor_ip.clone())
    .bind(a.tenant_id.clone())
    .bind(&a.action)
    .bind(&a.target)
    .bind(json_text(&a.details))
    .execute(&mut **tx)
    .await?;
    if let Some(e) = &a.event {
        super::events::insert_event(tx, e).await?;
    }
    Ok(())
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn list_audit(
        &self,
        f: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEvent>> {
        let mut b = Built::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE 1 = 1"
        ));
        if let Some(t) = &f.tenant_id {
            let p = b.arg(Bind::Text(Some(t.clone())));
            b.sql.push_str(&format!(" AND tenant_id = {p}"));
        }
        b.page(page, "AND");
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(audit_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }
}
