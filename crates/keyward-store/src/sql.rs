//! [`SqlStore`]: the [`Store`] for SQLite and PostgreSQL, over sqlx's `Any`
//! driver so both run the same queries.
//!
//! Portability rules for every query here: `$n` placeholders (both engines
//! accept them), TEXT / BIGINT columns only, JSON stored as TEXT, times as
//! BIGINT milliseconds, booleans as 0/1, and no `$n IS NULL` tricks (PostgreSQL
//! cannot type an untyped NULL parameter): optional filters build the SQL.

mod audit;
mod changes;
mod credits;
mod events;
mod idempotency;
mod keys;
mod leaks;
pub mod schema;
mod tenants;
mod usage;
mod users;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Executor, Row};

use crate::*;
use audit::insert_audit;

/// A backend error as a [`StoreError`] (this crate's only way from sqlx's
/// error type to its own: sqlx stays out of the public error).
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The SQLite / PostgreSQL store.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// Kept for connections outside the pool (the change feed).
    url: String,
}

/// Serializes migrations across nodes starting at once (PostgreSQL).
const MIGRATION_LOCK: i64 = 0x006b_6579_7761_7264;

/// Leaves the URL out: it may hold a password.
impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

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
                let options = AnyConnectOptions::from_str(&url).map_err(backend)?;
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
                    .await
                    .map_err(backend)?
            }
            Dialect::Postgres => {
                let options = AnyConnectOptions::from_str(url).map_err(backend)?;
                // A short acquire timeout: while PostgreSQL is unreachable,
                // management calls answer 503 within it instead of hanging
                // (sqlx retries the connection until then).
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(3))
                    .connect_with(options)
                    .await
                    .map_err(backend)?
            }
        };
        let store = SqlStore {
            pool,
            dialect,
            url: url.to_owned(),
        };
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
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
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
                .await
                .map_err(backend)?;
        }
        result.map_err(backend)
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

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
