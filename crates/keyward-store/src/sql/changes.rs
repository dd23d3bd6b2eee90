//! [`ChangeStore`] for [`SqlStore`]: the change log the triggers of
//! migration 6 fill, and on PostgreSQL its `LISTEN/NOTIFY` feed.

use std::str::FromStr;

use async_trait::async_trait;
use serde::Deserialize;
use sqlx::any::AnyRow;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::Row;

use super::{backend, Dialect, SqlStore};
use crate::*;

const COLUMNS: &str = "seq, at, kind, key_hash, tenant_id, origin";

fn change_from_row(r: &AnyRow) -> StoreResult<Change> {
    let kind: String = r.try_get("kind").map_err(backend)?;
    Ok(Change {
        seq: r.try_get("seq").map_err(backend)?,
        at: r.try_get("at").map_err(backend)?,
        kind: ChangeKind::parse(&kind),
        key_hash: r.try_get("key_hash").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        origin: r.try_get("origin").map_err(backend)?,
    })
}

#[async_trait]
impl ChangeStore for SqlStore {
    async fn record_change(
        &self,
        kind: ChangeKind,
        tenant_id: Option<&str>,
        origin: Option<&str>,
        at: i64,
    ) -> StoreResult<i64> {
        let row = sqlx::query(
            "INSERT INTO change_log (at, kind, tenant_id, origin) VALUES ($1, $2, $3, $4) RETURNING seq",
        )
        .bind(at)
        .bind(kind.as_str().to_owned())
        .bind(tenant_id.map(str::to_owned))
        .bind(origin.map(str::to_owned))
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        row.try_get("seq").map_err(backend)
    }

    async fn changes_after(&self, after: i64, limit: u32) -> StoreResult<Vec<Change>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(change_from_row).collect()
    }

    async fn last_change_seq(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM change_log")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        row.try_get("last").map_err(backend)
    }

    async fn prune_changes(&self, before_at: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM change_log WHERE at < $1")
            .bind(before_at)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn change_feed(&self, name: &str) -> StoreResult<Option<Box<dyn ChangeFeed>>> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        // The channel carries the schema, so deployments (and test runs)
        // sharing one database in different schemas do not hear each other.
        let row = sqlx::query("SELECT CAST(current_schema() AS TEXT) AS s")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        let schema: String = row.try_get("s").map_err(backend)?;
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(backend)?
            .application_name(&name.chars().take(63).collect::<String>());
        let mut listener = PgListener::connect_with(&sqlx::PgPool::connect_lazy_with(options))
            .await
            .map_err(backend)?;
        listener
            .listen(&format!("keyward_changes:{schema}"))
            .await
            .map_err(backend)?;
        Ok(Some(Box::new(PgFeed { listener })))
    }

    async fn ping_feed(&self, origin: &str) -> StoreResult<()> {
        self.send_feed_ping(origin).await
    }
}

impl SqlStore {
    async fn send_feed_ping(&self, origin: &str) -> StoreResult<()> {
        if self.dialect != Dialect::Postgres {
            return Ok(());
        }
        sqlx::query(
            "SELECT CAST(pg_notify('keyward_changes:' || current_schema(), json_build_object(\
             'seq', 0, 'at', 0, 'kind', 'ping', 'key_hash', NULL, 'tenant_id', NULL, \
             'origin', CAST($1 AS TEXT))::text) AS TEXT) AS sent",
        )
        .bind(origin.to_owned())
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

struct PgFeed {
    listener: PgListener,
}

#[derive(Deserialize)]
struct Notice {
    seq: i64,
    at: i64,
    kind: String,
    key_hash: Option<String>,
    tenant_id: Option<String>,
    origin: Option<String>,
}

#[async_trait]
impl ChangeFeed for PgFeed {
    async fn next(&mut self) -> StoreResult<Option<Change>> {
        loop {
            // `try_recv` says when the connection was lost (`None`); the
            // next call reconnects and listens again.
            let Some(n) = self.listener.try_recv().await.map_err(backend)? else {
                return Ok(None);
            };
            match serde_json::from_str::<Notice>(n.payload()) {
                Ok(n) => {
                    return Ok(Some(Change {
                        seq: n.seq,
                        at: n.at,
                        kind: ChangeKind::parse(&n.kind),
                        key_hash: n.key_hash,
                        tenant_id: n.tenant_id,
                        origin: n.origin,
                    }))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Ignored a change notice that could not be read.")
                }
            }
        }
    }
}
