//! [`SqlStore`]: the [`Store`] for SQLite and PostgreSQL, over sqlx's `Any`
//! driver so both run the same queries.
//!
//! Portability rules for every query here: `$n` placeholders (both engines
//! accept them), TEXT / BIGINT columns only, JSON stored as TEXT, times as
//! BIGINT milliseconds, booleans as 0/1, and no `$n IS NULL` tricks (PostgreSQL
//! cannot type an untyped NULL parameter): optional filters build the SQL.

mod limits;
pub mod schema;
mod users;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Executor, Row};

use crate::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The SQLite / PostgreSQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

const KEY_COLUMNS: &str = "seq, id, class, tenant_id, name, environment, hash, start, owner, scopes, \
    tier, credit_cap, ip_allowlist, expires_at, metadata, enabled, created_by, created_at, updated_at, \
    last_used_at, last_used_ip, revoked_at, revoked_reason, rotated_from, replaced_by, grace_until, deleted_at, \
    sub_tenants, rate_limit";
const TENANT_COLUMNS: &str =
    "seq, id, name, metadata, created_at, updated_at, tier, grantable_scopes";
const AUDIT_COLUMNS: &str = "seq, id, at, actor, actor_ip, tenant_id, action, target, details";

/// Keys per last-use statement (three bind parameters each).
const TOUCH_BATCH: usize = 100;
/// The IN-list lengths of key lookups (the last is the most one call takes).
const LOOKUP_SIZES: [usize; 5] = [1, 8, 32, 128, crate::MAX_HASHES_PER_LOOKUP];

/// Serializes migrations across nodes starting at once (PostgreSQL).
const MIGRATION_LOCK: i64 = 0x006b_6579_7761_7264;
/// Serializes changes of root keys (PostgreSQL; SQLite has one writer), so
/// that two root keys revoking each other at once cannot both pass the
/// check that another remains.
const ROOT_KEYS_LOCK: i64 = 0x006b_7772_6f6f_7473;

type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

impl SqlStore {
    /// Opens (creating if needed) the store at `url` and applies migrations.
    /// `sqlite://PATH` (or `sqlite::memory:`) or `postgres://…`.
    pub async fn open(url: &str) -> StoreResult<SqlStore> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let pool = match dialect {
            Dialect::Sqlite => {
                let url = if url.contains("mode=") || url.contains(":memory:") {
                    url.to_owned()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                let options = AnyConnectOptions::from_str(&url)?;
                // One connection: SQLite has one writer anyway, and a single
                // connection cannot deadlock on lock upgrades. The hot path
                // reads from memory, not from here.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Dialect::Postgres => {
                let options = AnyConnectOptions::from_str(url)?;
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?
            }
        };
        let store = SqlStore { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS keyward_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await?;
            let applied: Vec<i64> = sqlx::query("SELECT version FROM keyward_migrations")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()?;
            for (version, statements) in schema::migrations(self.dialect) {
                if applied.contains(&version) {
                    continue;
                }
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for s in &statements {
                    tx.execute(s.as_str()).await?;
                }
                sqlx::query("INSERT INTO keyward_migrations (version, applied_at) VALUES ($1, 0)")
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(version, "Applied store migration.");
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        result.map_err(StoreError::from)
    }
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn strings_text(v: &[String]) -> String {
    Value::from(v.to_vec()).to_string()
}

fn rate_limit_text(r: Option<&RateLimitOverride>) -> Option<String> {
    r.and_then(|r| serde_json::to_string(r).ok())
}

fn parse_json(column: &str, s: &str) -> StoreResult<Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn parse_strings(column: &str, s: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn key_from_row(r: &AnyRow) -> StoreResult<(i64, KeyRecord)> {
    let class = match r.try_get::<String, _>("class")?.as_str() {
        "tenant" => KeyClass::Tenant,
        "root" => KeyClass::Root,
        other => return Err(StoreError::Corrupt(format!("class: {other:?}"))),
    };
    Ok((
        r.try_get("seq")?,
        KeyRecord {
            id: r.try_get("id")?,
            class,
            tenant_id: r.try_get("tenant_id")?,
            name: r.try_get("name")?,
            environment: r.try_get("environment")?,
            hash: r.try_get("hash")?,
            start: r.try_get("start")?,
            owner: r.try_get("owner")?,
            scopes: parse_strings("scopes", &r.try_get::<String, _>("scopes")?)?,
            tier: r.try_get("tier")?,
            credit_cap: r.try_get("credit_cap")?,
            ip_allowlist: parse_strings("ip_allowlist", &r.try_get::<String, _>("ip_allowlist")?)?,
            expires_at: r.try_get("expires_at")?,
            metadata: parse_json("metadata", &r.try_get::<String, _>("metadata")?)?,
            enabled: r.try_get::<i64, _>("enabled")? != 0,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            last_used_at: r.try_get("last_used_at")?,
            last_used_ip: r.try_get("last_used_ip")?,
            revoked_at: r.try_get("revoked_at")?,
            revoked_reason: r.try_get("revoked_reason")?,
            rotated_from: r.try_get("rotated_from")?,
            replaced_by: r.try_get("replaced_by")?,
            grace_until: r.try_get("grace_until")?,
            sub_tenants: parse_strings("sub_tenants", &r.try_get::<String, _>("sub_tenants")?)?,
            deleted_at: r.try_get("deleted_at")?,
            rate_limit: match r.try_get::<Option<String>, _>("rate_limit")? {
                None => None,
                Some(s) => Some(
                    serde_json::from_str(&s)
                        .map_err(|e| StoreError::Corrupt(format!("rate_limit: {e}")))?,
                ),
            },
        },
    ))
}

fn tenant_from_row(r: &AnyRow) -> StoreResult<(i64, Tenant)> {
    Ok((
        r.try_get("seq")?,
        Tenant {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            metadata: parse_json("metadata", &r.try_get::<String, _>("metadata")?)?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            tier: r.try_get("tier")?,
            grantable_scopes: match r.try_get::<Option<String>, _>("grantable_scopes")? {
                None => None,
                Some(s) => Some(parse_strings("grantable_scopes", &s)?),
            },
        },
    ))
}

fn audit_from_row(r: &AnyRow) -> StoreResult<(i64, AuditEvent)> {
    let seq = r.try_get("seq")?;
    Ok((
        seq,
        AuditEvent {
            seq,
            id: r.try_get("id")?,
            at: r.try_get("at")?,
            actor: r.try_get("actor")?,
            actor_ip: r.try_get("actor_ip")?,
            tenant_id: r.try_get("tenant_id")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            details: parse_json("details", &r.try_get::<String, _>("details")?)?,
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
    StoreError::Backend(e)
}

/// A growing list of bind values for a query built at run time.
enum Bind {
    Text(Option<String>),
    Int(Option<i64>),
}

struct Built {
    sql: String,
    binds: Vec<Bind>,
}

impl Built {
    fn new(sql: impl Into<String>) -> Built {
        Built {
            sql: sql.into(),
            binds: Vec::new(),
        }
    }

    /// Appends a placeholder bound to `b` and returns it (`$n`).
    fn arg(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    /// Appends the keyset page: `{joiner} seq < before` (if any), newest
    /// first, one row more than the limit so [`paged`] knows if more follow.
    /// `joiner` is `WHERE` or `AND`, whichever continues the SQL so far.
    fn page(&mut self, page: PageRequest, joiner: &str) {
        if let Some(before) = page.before {
            let p = self.arg(Bind::Int(Some(before)));
            self.sql.push_str(&format!(" {joiner} seq < {p}"));
        }
        let p = self.arg(Bind::Int(Some(i64::from(page.limit) + 1)));
        self.sql.push_str(&format!(" ORDER BY seq DESC LIMIT {p}"));
    }

    fn query(&self) -> AnyQuery<'_> {
        let mut q = sqlx::query(&self.sql);
        for b in &self.binds {
            q = match b {
                Bind::Text(v) => q.bind(v.clone()),
                Bind::Int(v) => q.bind(*v),
            };
        }
        q
    }
}

pub(crate) fn paged<T>(mut rows: Vec<(i64, T)>, limit: u32) -> Page<T> {
    let limit = limit as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(seq, _)| *seq)
    } else {
        None
    };
    Page { items: rows, next }
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
    Ok(())
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
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
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
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if class.as_deref() != Some(KeyClass::Root.as_str()) {
            return Ok(None);
        }
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ROOT_KEYS_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        // Read under the lock: a change that committed while this waited is seen.
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
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
        let rows = sqlx::query(&sql).fetch_all(&mut **tx).await?;
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
            .await?;
        row.as_ref()
            .map(key_from_row)
            .transpose()
            .map(|o| o.map(|(_, k)| k))
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_tenant(&self, t: &Tenant, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, metadata, created_at, updated_at, tier, grantable_scopes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(json_text(&t.metadata))
        .bind(t.created_at)
        .bind(t.updated_at)
        .bind(t.tier.clone())
        .bind(t.grantable_scopes.as_deref().map(strings_text))
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() || db.code().as_deref() == Some("23505") || db.message().contains("UNIQUE") => {
                StoreError::Conflict("a tenant with this id already exists")
            }
            _ => StoreError::Backend(e),
        })?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(tenant_from_row(&r)?.1),
            None => Err(StoreError::NotFound),
        }
    }

    async fn list_tenants(&self, page: PageRequest) -> StoreResult<Page<Tenant>> {
        let mut b = Built::new(format!("SELECT {TENANT_COLUMNS} FROM tenants"));
        b.page(page, "WHERE");
        let rows = b.query().fetch_all(&self.pool).await?;
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
        let p = b.arg(Bind::Text(Some(id.to_owned())));
        b.sql
            .push_str(&format!(" WHERE id = {p} RETURNING {TENANT_COLUMNS}"));
        let mut tx = self.pool.begin().await?;
        let row = b.query().fetch_optional(&mut *tx).await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let tenant = tenant_from_row(&row)?.1;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn create_key(&self, key: &KeyRecord, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_key(&mut tx, key).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
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
        let rows = b.query().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(KeyWithTenant {
                    key: key_from_row(r)?.1,
                    tenant_name: r.try_get("tenant_name")?,
                    tenant_tier: r.try_get("tenant_tier")?,
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
        let rows = b.query().fetch_all(&self.pool).await?;
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
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
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
            .await?;
        match row {
            Some(row) => {
                let key = key_from_row(&row)?.1;
                Self::check_root_remains(&mut tx, root.as_ref(), audit.at).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql)
            .bind(&new_key.id)
            .bind(grace_until)
            .bind(audit.at)
            .bind(old_id)
            .execute(&mut *tx)
            .await?;
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
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
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
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let key = key_from_row(&row)?.1;
        Self::check_root_remains(&mut tx, root.as_ref(), audit.at).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn touch_keys(&self, uses: &[KeyUse]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        // One statement per few hundred keys (a VALUES list joined to the
        // table), not one per key: a busy node touches every active key
        // once a minute. Both engines name VALUES columns column1, column2…
        let mut tx = self.pool.begin().await?;
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
            b.query().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

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
        let rows = b.query().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(audit_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }
}
