//! [`KeyStore`] for [`SqlStore`]: keys and root keys, with the check that a
//! change never ends the last root key that can manage keys.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::{
    backend, insert_audit, json_text, paged, parse_json, parse_strings, rate_limit_text,
    strings_text, Bind, Built, Dialect, SqlStore,
};
use crate::*;

const KEY_COLUMNS: &str = "seq, id, class, tenant_id, name, environment, hash, start, owner, scopes, \
    tier, credit_cap, ip_allowlist, expires_at, metadata, enabled, created_by, created_at, updated_at, \
    last_used_at, last_used_ip, revoked_at, revoked_reason, rotated_from, replaced_by, grace_until, deleted_at, \
    sub_tenants, rate_limit";
/// Keys per last-use statement (three bind parameters each).
const TOUCH_BATCH: usize = 100;
/// The IN-list lengths of key lookups (the last is the most one call takes).
const LOOKUP_SIZES: [usize; 5] = [1, 8, 32, 128, crate::MAX_HASHES_PER_LOOKUP];

/// Serializes changes of root keys (PostgreSQL; SQLite has one writer), so
/// that two root keys revoking each other at once cannot both pass the
/// check that another remains.
const ROOT_KEYS_LOCK: i64 = 0x006b_7772_6f6f_7473;

fn key_from_row(r: &AnyRow) -> StoreResult<(i64, KeyRecord)> {
    let class = match r.try_get::<String, _>("class").map_err(backend)?.as_str() {
        "tenant" => KeyClass::Tenant,
        "root" => KeyClass::Root,
        other => return Err(StoreError::Corrupt(format!("class: {other:?}"))),
    };
    Ok((
        r.try_get("seq").map_err(backend)?,
        KeyRecord {
            id: r.try_get("id").map_err(backend)?,
            class,
            tenant_id: r.try_get("tenant_id").map_err(backend)?,
            name: r.try_get("name").map_err(backend)?,
            environment: r.try_get("environment").map_err(backend)?,
            hash: r.try_get("hash").map_err(backend)?,
            start: r.try_get("start").map_err(backend)?,
            owner: r.try_get("owner").map_err(backend)?,
            scopes: parse_strings(
                "scopes",
                &r.try_get::<String, _>("scopes").map_err(backend)?,
            )?,
            tier: r.try_get("tier").map_err(backend)?,
            credit_cap: r.try_get("credit_cap").map_err(backend)?,
            ip_allowlist: parse_strings(
                "ip_allowlist",
                &r.try_get::<String, _>("ip_allowlist").map_err(backend)?,
            )?,
            expires_at: r.try_get("expires_at").map_err(backend)?,
            metadata: parse_json(
                "metadata",
                &r.try_get::<String, _>("metadata").map_err(backend)?,
            )?,
            enabled: r.try_get::<i64, _>("enabled").map_err(backend)? != 0,
            created_by: r.try_get("created_by").map_err(backend)?,
            created_at: r.try_get("created_at").map_err(backend)?,
            updated_at: r.try_get("updated_at").map_err(backend)?,
            last_used_at: r.try_get("last_used_at").map_err(backend)?,
            last_used_ip: r.try_get("last_used_ip").map_err(backend)?,
            revoked_at: r.try_get("revoked_at").map_err(backend)?,
            revoked_reason: r.try_get("revoked_reason").map_err(backend)?,
            rotated_from: r.try_get("rotated_from").map_err(backend)?,
            replaced_by: r.try_get("replaced_by").map_err(backend)?,
            grace_until: r.try_get("grace_until").map_err(backend)?,
            sub_tenants: parse_strings(
                "sub_tenants",
                &r.try_get::<String, _>("sub_tenants").map_err(backend)?,
            )?,
            deleted_at: r.try_get("deleted_at").map_err(backend)?,
            rate_limit: match r
                .try_get::<Option<String>, _>("rate_limit")
                .map_err(backend)?
            {
                None => None,
                Some(s) => Some(
                    serde_json::from_str(&s)
                        .map_err(|e| StoreError::Corrupt(format!("rate_limit: {e}")))?,
                ),
            },
        },
    ))
}

/// Unique-index violations on key names become [`StoreError::NameTaken`].
fn map_unique(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let msg = db.message();
        let unique = db.is_unique_violation()
            || db.code().as_deref() == Some("23505")
            || msg.contains("UNIQUE constraint failed");
        if unique
            && (msg.contains("keys_live_name")
                || msg.contains("keys.class")
                || msg.contains("keys.name"))
        {
            return StoreError::NameTaken;
        }
    }
    backend(e)
}

async fn insert_key(tx: &mut sqlx::Transaction<'_, Any>, k: &KeyRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO keys (id, class, tenant_id, name, environment, hash, start, owner, scopes, tier, \
         credit_cap, ip_allowlist, expires_at, metadata, enabled, created_by, created_at, updated_at, \
         rotated_from, sub_tenants, rate_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(&k.id)
    .bind(k.class.as_str())
    .bind(k.tenant_id.clone())
    .bind(&k.name)
    .bind(&k.environment)
    .bind(&k.hash)
    .bind(&k.start)
    .bind(k.owner.clone())
    .bind(strings_text(&k.scopes))
    .bind(k.tier.clone())
    .bind(k.credit_cap)
    .bind(strings_text(&k.ip_allowlist))
    .bind(k.expires_at)
    .bind(json_text(&k.metadata))
    .bind(i64::from(k.enabled))
    .bind(&k.created_by)
    .bind(k.created_at)
    .bind(k.updated_at)
    .bind(k.rotated_from.clone())
    .bind(strings_text(&k.sub_tenants))
    .bind(rate_limit_text(k.rate_limit.as_ref()))
    .execute(&mut **tx)
    .await
    .map_err(map_unique)?;
    Ok(())
}

impl SqlStore {
    /// A transaction for a key change that may end a root key. On SQLite it
    /// takes the write lock at once (`BEGIN IMMEDIATE`), so what it reads is
    /// the latest state even with another process on the same file.
    async fn begin_key_change(&self) -> StoreResult<sqlx::Transaction<'static, Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(backend)?,
            Dialect::Postgres => self.pool.begin().await.map_err(backend)?,
        })
    }

    /// Before a change of key `id` in `tx`: if it is a root key, waits for
    /// the root-key lock (PostgreSQL) and returns the key as it is now,
    /// for [`SqlStore::check_root_remains`] after the change.
    async fn lock_if_root(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        id: &str,
    ) -> StoreResult<Option<KeyRecord>> {
        // A key's class never changes, so it may be read before the lock.
        let class: Option<String> = sqlx::query("SELECT class FROM keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(backend)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(backend)?;
        if class.as_deref() != Some(KeyClass::Root.as_str()) {
            return Ok(None);
        }
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ROOT_KEYS_LOCK)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
        }
        // Read under the lock: a change that committed while this waited is seen.
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(key_from_row)
            .transpose()
            .map(|o| o.map(|(_, k)| k))
    }

    /// After a change of the root key `before` in `tx`: fails with
    /// [`StoreError::LastRootKey`] if it could manage keys and now no active
    /// root key can (the caller then drops `tx`, undoing the change).
    async fn check_root_remains(
        tx: &mut sqlx::Transaction<'_, Any>,
        before: Option<&KeyRecord>,
        now: i64,
    ) -> StoreResult<()> {
        if !before.is_some_and(|k| k.is_managing_root(now)) {
            return Ok(());
        }
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE class = 'root' AND revoked_at IS NULL AND deleted_at IS NULL"
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&mut **tx)
            .await
            .map_err(backend)?;
        for r in &rows {
            if key_from_row(r)?.1.is_managing_root(now) {
                return Ok(());
            }
        }
        Err(StoreError::LastRootKey)
    }

    async fn key_where(&self, clause: &str, value: &str) -> StoreResult<Option<KeyRecord>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE {clause} = $1");
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(key_from_row)
            .transpose()
            .map(|o| o.map(|(_, k)| k))
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn create_key(&self, key: &KeyRecord, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_key(&mut tx, key).await?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn get_key(&self, id: &str) -> StoreResult<KeyRecord> {
        match self.key_where("id", id).await? {
            Some(k) if k.deleted_at.is_none() => Ok(k),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn find_key_by_hash(&self, hash_hex: &str) -> StoreResult<Option<KeyRecord>> {
        self.key_where("hash", hash_hex).await
    }

    async fn find_keys_with_tenants(
        &self,
        hashes_hex: &[String],
    ) -> StoreResult<Vec<KeyWithTenant>> {
        if hashes_hex.is_empty() {
            return Ok(Vec::new());
        }
        if hashes_hex.len() > crate::MAX_HASHES_PER_LOOKUP {
            return Err(StoreError::Unavailable(format!(
                "at most {} hashes per lookup",
                crate::MAX_HASHES_PER_LOOKUP
            )));
        }
        let columns = KEY_COLUMNS
            .split(',')
            .map(|c| format!("k.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut b = Built::new(format!(
            "SELECT {columns}, t.name AS tenant_name, t.tier AS tenant_tier \
             FROM keys k LEFT JOIN tenants t ON t.id = k.tenant_id WHERE k.hash IN ("
        ));
        // A few list lengths only, padded with the first hash, so each is
        // one prepared statement reused (parsing a long statement costs
        // more than running it).
        let slots = LOOKUP_SIZES
            .iter()
            .copied()
            .find(|&n| n >= hashes_hex.len())
            .unwrap_or(hashes_hex.len());
        let first = &hashes_hex[0];
        let padded = hashes_hex
            .iter()
            .chain(std::iter::repeat(first))
            .take(slots);
        for (i, h) in padded.enumerate() {
            let p = b.arg(Bind::Text(Some(h.clone())));
            if i > 0 {
                b.sql.push_str(", ");
            }
            b.sql.push_str(&p);
        }
        b.sql.push(')');
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(KeyWithTenant {
                    key: key_from_row(r)?.1,
                    tenant_name: r.try_get("tenant_name").map_err(backend)?,
                    tenant_tier: r.try_get("tenant_tier").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn list_keys(&self, f: &KeyFilter, page: PageRequest) -> StoreResult<Page<KeyRecord>> {
        let mut b = Built::new(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE deleted_at IS NULL"
        ));
        let class = b.arg(Bind::Text(Some(
            f.class.unwrap_or(KeyClass::Tenant).as_str().to_owned(),
        )));
        b.sql.push_str(&format!(" AND class = {class}"));
        if let Some(t) = &f.tenant_id {
            let p = b.arg(Bind::Text(Some(t.clone())));
            b.sql.push_str(&format!(" AND tenant_id = {p}"));
        }
        if let Some(e) = &f.environment {
            let p = b.arg(Bind::Text(Some(e.clone())));
            b.sql.push_str(&format!(" AND environment = {p}"));
        }
        if let Some(status) = f.status {
            // Mirrors KeyRecord::status: revoked, then expired, then disabled.
            let now = b.arg(Bind::Int(Some(f.now)));
            let expired = format!(
                "((expires_at IS NOT NULL AND expires_at <= {now}) OR (grace_until IS NOT NULL AND grace_until <= {now}))"
            );
            let clause = match status {
                KeyStatus::Revoked => "revoked_at IS NOT NULL".to_owned(),
                KeyStatus::Expired => format!("revoked_at IS NULL AND {expired}"),
                KeyStatus::Disabled => {
                    format!("revoked_at IS NULL AND NOT {expired} AND enabled = 0")
                }
                KeyStatus::Active => {
                    format!("revoked_at IS NULL AND NOT {expired} AND enabled = 1")
                }
            };
            b.sql.push_str(&format!(" AND {clause}"));
        }
        b.page(page, "AND");
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(key_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }

    async fn update_key(
        &self,
        id: &str,
        patch: &KeyPatch,
        audit: &AuditEntry,
    ) -> StoreResult<KeyRecord> {
        let mut b = Built::new("UPDATE keys SET updated_at = ");
        let p = b.arg(Bind::Int(Some(patch.updated_at)));
        b.sql.push_str(&p);
        let set = |b: &mut Built, column: &str, v: Bind| {
            let p = b.arg(v);
            b.sql.push_str(&format!(", {column} = {p}"));
        };
        if let Some(v) = &patch.name {
            set(&mut b, "name", Bind::Text(Some(v.clone())));
        }
        if let Some(v) = &patch.owner {
            set(&mut b, "owner", Bind::Text(v.clone()));
        }
        if let Some(v) = &patch.scopes {
            set(&mut b, "scopes", Bind::Text(Some(strings_text(v))));
        }
        if let Some(v) = &patch.tier {
            set(&mut b, "tier", Bind::Text(v.clone()));
        }
        if let Some(v) = patch.credit_cap {
            set(&mut b, "credit_cap", Bind::Int(v));
        }
        if let Some(v) = &patch.rate_limit {
            set(
                &mut b,
                "rate_limit",
                Bind::Text(rate_limit_text(v.as_ref())),
            );
        }
        if let Some(v) = &patch.ip_allowlist {
            set(&mut b, "ip_allowlist", Bind::Text(Some(strings_text(v))));
        }
        if let Some(v) = &patch.sub_tenants {
            set(&mut b, "sub_tenants", Bind::Text(Some(strings_text(v))));
        }
        if let Some(v) = patch.expires_at {
            set(&mut b, "expires_at", Bind::Int(v));
        }
        if let Some(v) = &patch.metadata {
            set(&mut b, "metadata", Bind::Text(Some(json_text(v))));
        }
        if let Some(v) = patch.enabled {
            set(&mut b, "enabled", Bind::Int(Some(i64::from(v))));
        }
        let p = b.arg(Bind::Text(Some(id.to_owned())));
        b.sql.push_str(&format!(
            " WHERE id = {p} AND deleted_at IS NULL RETURNING {KEY_COLUMNS}"
        ));
        let mut tx = self.begin_key_change().await?;
        let root = self.lock_if_root(&mut tx, id).await?;
        let row = b
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_unique)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let key = key_from_row(&row)?.1;
        Self::check_root_remains(&mut tx, root.as_ref(), patch.updated_at).await?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(key)
    }

    async fn revoke_key(
        &self,
        id: &str,
        reason: Option<&str>,
        audit: &AuditEntry,
    ) -> StoreResult<KeyRecord> {
        let sql = format!(
            "UPDATE keys SET revoked_at = $1, revoked_reason = $2, updated_at = $1 \
             WHERE id = $3 AND deleted_at IS NULL AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
        );
        let mut tx = self.begin_key_change().await?;
        let root = self.lock_if_root(&mut tx, id).await?;
        let row = sqlx::query(&sql)
            .bind(audit.at)
            .bind(reason.map(str::to_owned))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        match row {
            Some(row) => {
                let key = key_from_row(&row)?.1;
                Self::check_root_remains(&mut tx, root.as_ref(), audit.at).await?;
                insert_audit(&mut tx, audit).await.map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                Ok(key)
            }
            None => {
                drop(tx);
                self.get_key(id).await
            }
        }
    }

    async fn rotate_key(
        &self,
        old_id: &str,
        new_key: &KeyRecord,
        grace_until: i64,
        audit: &AuditEntry,
    ) -> StoreResult<KeyRecord> {
        let sql = "UPDATE keys SET replaced_by = $1, grace_until = $2, updated_at = $3 \
             WHERE id = $4 AND deleted_at IS NULL AND revoked_at IS NULL AND replaced_by IS NULL";
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query(sql)
            .bind(&new_key.id)
            .bind(grace_until)
            .bind(audit.at)
            .bind(old_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            drop(tx);
            let old = self.get_key(old_id).await?;
            return Err(if old.revoked_at.is_some() {
                StoreError::Conflict("the key is revoked; create a new key instead")
            } else {
                StoreError::Conflict("the key was already rotated; rotate its replacement instead")
            });
        }
        insert_key(&mut tx, new_key).await?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.get_key(&new_key.id).await
    }

    async fn delete_key(&self, id: &str, audit: &AuditEntry) -> StoreResult<KeyRecord> {
        let sql = format!(
            "UPDATE keys SET deleted_at = $1, updated_at = $1 WHERE id = $2 AND deleted_at IS NULL RETURNING {KEY_COLUMNS}"
        );
        let mut tx = self.begin_key_change().await?;
        let root = self.lock_if_root(&mut tx, id).await?;
        let row = sqlx::query(&sql)
            .bind(audit.at)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let key = key_from_row(&row)?.1;
        Self::check_root_remains(&mut tx, root.as_ref(), audit.at).await?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(key)
    }

    async fn touch_keys(&self, uses: &[KeyUse]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        // One statement per few hundred keys (a VALUES list joined to the
        // table), not one per key: a busy node touches every active key
        // once a minute. Both engines name VALUES columns column1, column2…
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for chunk in uses.chunks(TOUCH_BATCH) {
            let mut b = Built::new(
                "UPDATE keys SET last_used_at = v.column2, last_used_ip = v.column3 FROM (VALUES ",
            );
            for (i, u) in chunk.iter().enumerate() {
                let id = b.arg(Bind::Text(Some(u.key_id.clone())));
                let at = b.arg(Bind::Int(Some(u.at)));
                let ip = b.arg(Bind::Text(u.ip.clone()));
                if i > 0 {
                    b.sql.push_str(", ");
                }
                b.sql.push_str(&format!("({id}, {at}, {ip})"));
            }
            b.sql.push_str(
                ") AS v WHERE keys.id = v.column1 \
                 AND (keys.last_used_at IS NULL OR keys.last_used_at < v.column2)",
            );
            b.query().execute(&mut *tx).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }
}
