//! [`TenantStore`] for [`SqlStore`].

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    backend, insert_audit, json_text, paged, parse_json, parse_strings, strings_text, Bind, Built,
    SqlStore,
};
use crate::*;

const TENANT_COLUMNS: &str =
    "seq, id, name, metadata, created_at, updated_at, tier, grantable_scopes, credits_low_threshold";

fn tenant_from_row(r: &AnyRow) -> StoreResult<(i64, Tenant)> {
    Ok((
        r.try_get("seq").map_err(backend)?,
        Tenant {
            id: r.try_get("id").map_err(backend)?,
            name: r.try_get("name").map_err(backend)?,
            metadata: parse_json(
                "metadata",
                &r.try_get::<String, _>("metadata").map_err(backend)?,
            )?,
            created_at: r.try_get("created_at").map_err(backend)?,
            updated_at: r.try_get("updated_at").map_err(backend)?,
            tier: r.try_get("tier").map_err(backend)?,
            grantable_scopes: match r
                .try_get::<Option<String>, _>("grantable_scopes")
                .map_err(backend)?
            {
                None => None,
                Some(s) => Some(parse_strings("grantable_scopes", &s)?),
            },
            credits_low_threshold: r.try_get("credits_low_threshold").map_err(backend)?,
        },
    ))
}

#[async_trait]
impl TenantStore for SqlStore {
    async fn create_tenant(&self, t: &Tenant, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO tenants (id, name, metadata, created_at, updated_at, tier, grantable_scopes, \
             credits_low_threshold) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(json_text(&t.metadata))
        .bind(t.created_at)
        .bind(t.updated_at)
        .bind(t.tier.clone())
        .bind(t.grantable_scopes.as_deref().map(strings_text))
        .bind(t.credits_low_threshold)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() || db.code().as_deref() == Some("23505") || db.message().contains("UNIQUE") => {
                StoreError::Conflict("a tenant with this id already exists")
            }
            _ => backend(e),
        })?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match row {
            Some(r) => Ok(tenant_from_row(&r)?.1),
            None => Err(StoreError::NotFound),
        }
    }

    async fn list_tenants(&self, page: PageRequest) -> StoreResult<Page<Tenant>> {
        let mut b = Built::new(format!("SELECT {TENANT_COLUMNS} FROM tenants"));
        b.page(page, "WHERE");
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(tenant_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }

    async fn update_tenant(
        &self,
        id: &str,
        patch: &TenantPatch,
        audit: &AuditEntry,
    ) -> StoreResult<Tenant> {
        let mut b = Built::new("UPDATE tenants SET updated_at = ");
        let p = b.arg(Bind::Int(Some(patch.updated_at)));
        b.sql.push_str(&p);
        if let Some(name) = &patch.name {
            let p = b.arg(Bind::Text(Some(name.clone())));
            b.sql.push_str(&format!(", name = {p}"));
        }
        if let Some(m) = &patch.metadata {
            let p = b.arg(Bind::Text(Some(json_text(m))));
            b.sql.push_str(&format!(", metadata = {p}"));
        }
        if let Some(t) = &patch.tier {
            let p = b.arg(Bind::Text(t.clone()));
            b.sql.push_str(&format!(", tier = {p}"));
        }
        if let Some(g) = &patch.grantable_scopes {
            let p = b.arg(Bind::Text(g.as_deref().map(strings_text)));
            b.sql.push_str(&format!(", grantable_scopes = {p}"));
        }
        if let Some(c) = &patch.credits_low_threshold {
            let p = b.arg(Bind::Int(*c));
            b.sql.push_str(&format!(", credits_low_threshold = {p}"));
        }
        let p = b.arg(Bind::Text(Some(id.to_owned())));
        b.sql
            .push_str(&format!(" WHERE id = {p} RETURNING {TENANT_COLUMNS}"));
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = b.query().fetch_optional(&mut *tx).await.map_err(backend)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let tenant = tenant_from_row(&row)?.1;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(tenant)
    }
}
