//! [`EventStore`] for [`SqlStore`]: the outbox (`events`), webhook
//! endpoints and their filters, deliveries, attempts and alerts of
//! migration 9. [`insert_event`] is also called by [`super::insert_audit`],
//! so a change's event and its fan-out share the change's transaction.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::{backend, json_text, paged, parse_json, parse_strings, strings_text, Bind, Built};
use super::{insert_audit, Dialect, SqlStore};
use crate::*;

type Tx<'a> = sqlx::Transaction<'a, Any>;

const EVENT_COLUMNS: &str = "seq, id, at, tenant_id, key_id, type, data, source";
const ENDPOINT_COLUMNS: &str = "seq, id, tenant_id, url, description, event_types, enabled, salt, \
    previous_salt, previous_until, failing_since, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "seq, event_id, endpoint_id, event_type, status, attempts, tries, \
    next_at, created_at, updated_at, last_status, last_error";
const ALERT_COLUMNS: &str = "seq, id, at, tenant_id, key_id, kind, dedupe, details, resolved_at";

fn event_from_row(r: &AnyRow) -> StoreResult<Event> {
    Ok(Event {
        seq: r.try_get("seq").map_err(backend)?,
        id: r.try_get("id").map_err(backend)?,
        at: r.try_get("at").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        key_id: r.try_get("key_id").map_err(backend)?,
        event_type: r.try_get("type").map_err(backend)?,
        data: parse_json("data", &r.try_get::<String, _>("data").map_err(backend)?)?,
        source: r.try_get("source").map_err(backend)?,
    })
}

fn endpoint_from_row(r: &AnyRow) -> StoreResult<Endpoint> {
    Ok(Endpoint {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        url: r.try_get("url").map_err(backend)?,
        description: r.try_get("description").map_err(backend)?,
        event_types: parse_strings(
            "event_types",
            &r.try_get::<String, _>("event_types").map_err(backend)?,
        )?,
        enabled: r.try_get::<i64, _>("enabled").map_err(backend)? != 0,
        salt: r.try_get("salt").map_err(backend)?,
        previous_salt: r.try_get("previous_salt").map_err(backend)?,
        previous_until: r.try_get("previous_until").map_err(backend)?,
        failing_since: r.try_get("failing_since").map_err(backend)?,
        created_at: r.try_get("created_at").map_err(backend)?,
        updated_at: r.try_get("updated_at").map_err(backend)?,
    })
}

fn delivery_from_row(r: &AnyRow) -> StoreResult<Delivery> {
    let status: String = r.try_get("status").map_err(backend)?;
    let count = |c: &str| -> StoreResult<u32> {
        Ok(u32::try_from(r.try_get::<i64, _>(c).map_err(backend)?).unwrap_or(u32::MAX))
    };
    Ok(Delivery {
        seq: r.try_get("seq").map_err(backend)?,
        event_id: r.try_get("event_id").map_err(backend)?,
        endpoint_id: r.try_get("endpoint_id").map_err(backend)?,
        event_type: r.try_get("event_type").map_err(backend)?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status: {status:?}")))?,
        attempts: count("attempts")?,
        tries: count("tries")?,
        next_at: r.try_get("next_at").map_err(backend)?,
        created_at: r.try_get("created_at").map_err(backend)?,
        updated_at: r.try_get("updated_at").map_err(backend)?,
        last_status: r
            .try_get::<Option<i64>, _>("last_status")
            .map_err(backend)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get("last_error").map_err(backend)?,
    })
}

fn alert_from_row(r: &AnyRow) -> StoreResult<Alert> {
    Ok(Alert {
        id: r.try_get("id").map_err(backend)?,
        at: r.try_get("at").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        key_id: r.try_get("key_id").map_err(backend)?,
        kind: r.try_get("kind").map_err(backend)?,
        dedupe: r.try_get("dedupe").map_err(backend)?,
        details: parse_json(
            "details",
            &r.try_get::<String, _>("details").map_err(backend)?,
        )?,
        resolved_at: r.try_get("resolved_at").map_err(backend)?,
    })
}

fn attempt_from_row(r: &AnyRow) -> StoreResult<Attempt> {
    Ok(Attempt {
        at: r.try_get("at").map_err(backend)?,
        status: r
            .try_get::<Option<i64>, _>("status")
            .map_err(backend)?
            .and_then(|s| u16::try_from(s).ok()),
        latency_ms: u64::try_from(r.try_get::<i64, _>("latency_ms").map_err(backend)?)
            .unwrap_or_default(),
        response: r.try_get("response").map_err(backend)?,
        error: r.try_get("error").map_err(backend)?,
        ok: r.try_get::<i64, _>("ok").map_err(backend)? != 0,
        node: r.try_get("node").map_err(backend)?,
    })
}

fn key_due(r: &AnyRow) -> StoreResult<KeyDue> {
    Ok(KeyDue {
        key_id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        at: r.try_get("at").map_err(backend)?,
    })
}

/// A tenant's low-credit threshold in SQL: its own, else the default (a
/// tenant with neither has none, and `balance < NULL` is never true).
fn threshold_sql(b: &mut Built, default_threshold: Option<i64>) -> String {
    match default_threshold {
        Some(d) => {
            let p = b.arg(Bind::Int(Some(d)));
            format!("COALESCE(t.credits_low_threshold, {p})")
        }
        None => "t.credits_low_threshold".to_owned(),
    }
}

/// The upstream's idempotency key as stored: unique per tenant.
fn idem(e: &NewEvent) -> Option<String> {
    e.idempotency_key
        .as_ref()
        .map(|k| format!("{}\u{1f}{}", e.tenant_id.as_deref().unwrap_or(""), k))
}

/// Inserts the event row (nothing else); `false` if its idempotency key
/// was used already.
async fn insert_event_row(tx: &mut Tx<'_>, e: &NewEvent) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO events (id, at, tenant_id, key_id, type, data, source, idem) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(&e.id)
    .bind(e.at)
    .bind(e.tenant_id.clone())
    .bind(e.key_id.clone())
    .bind(&e.event_type)
    .bind(json_text(&e.data))
    .bind(&e.source)
    .bind(idem(e))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One delivery per enabled, live endpoint of the event's tenant (or
/// operator-wide) whose filter matches its type; returns how many.
async fn fan_out(tx: &mut Tx<'_>, e: &NewEvent) -> Result<u64, sqlx::Error> {
    let tenant = if e.tenant_id.is_some() {
        "(w.tenant_id IS NULL OR w.tenant_id = $4)"
    } else {
        "w.tenant_id IS NULL AND $4 = ''"
    };
    let sql = format!(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, event_type, status, attempts, \
         tries, next_at, created_at, updated_at) \
         SELECT $1, w.id, $2, 'pending', 0, 0, $3, $3, $3 FROM webhook_endpoints w \
         WHERE w.deleted_at IS NULL AND w.enabled = 1 AND {tenant} \
         AND EXISTS (SELECT 1 FROM webhook_filters f WHERE f.endpoint_id = w.id \
         AND (f.exact = $2 OR substr($2, 1, length(f.prefix)) = f.prefix))"
    );
    let done = sqlx::query(&sql)
        .bind(&e.id)
        .bind(&e.event_type)
        .bind(e.at)
        .bind(e.tenant_id.clone().unwrap_or_default())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// Records an event and fans it out inside `tx` (the caller's change).
pub(crate) async fn insert_event(tx: &mut Tx<'_>, e: &NewEvent) -> Result<u64, sqlx::Error> {
    if insert_event_row(tx, e).await? {
        fan_out(tx, e).await
    } else {
        Ok(0)
    }
}

/// Raises `alert` inside `tx` unless an open one has its dedupe value; its
/// event is recorded and fanned out with it.
async fn raise_in(tx: &mut Tx<'_>, a: &Alert, e: &NewEvent) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO alerts (id, at, tenant_id, key_id, kind, dedupe, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&a.id)
    .bind(a.at)
    .bind(a.tenant_id.clone())
    .bind(a.key_id.clone())
    .bind(&a.kind)
    .bind(&a.dedupe)
    .bind(json_text(&a.details))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    insert_event(tx, e).await?;
    Ok(true)
}

async fn resolve_in(tx: &mut Tx<'_>, dedupe: &str, at: i64) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE alerts SET resolved_at = $1 WHERE dedupe = $2 AND resolved_at IS NULL")
            .bind(at)
            .bind(dedupe)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() > 0)
}

async fn insert_patterns(
    tx: &mut Tx<'_>,
    endpoint_id: &str,
    patterns: &[TypePattern],
) -> Result<(), sqlx::Error> {
    for p in patterns {
        let (exact, prefix) = match p {
            TypePattern::Exact(t) => (Some(t.clone()), None),
            TypePattern::Prefix(t) => (None, Some(t.clone())),
        };
        sqlx::query("INSERT INTO webhook_filters (endpoint_id, exact, prefix) VALUES ($1, $2, $3)")
            .bind(endpoint_id)
            .bind(exact)
            .bind(prefix)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl SqlStore {
    async fn event_by_id(&self, id: &str) -> StoreResult<Event> {
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound)?;
        event_from_row(&row)
    }

    /// The event holding `e`'s idempotency key.
    async fn event_by_idem(&self, e: &NewEvent) -> StoreResult<Event> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE idem = $1"
        ))
        .bind(idem(e))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        event_from_row(&row)
    }
}

#[async_trait]
impl EventStore for SqlStore {
    async fn record_event(&self, e: &NewEvent) -> StoreResult<Recorded> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let fresh = insert_event_row(&mut tx, e).await.map_err(backend)?;
        let deliveries = if fresh {
            fan_out(&mut tx, e).await.map_err(backend)?
        } else {
            0
        };
        tx.commit().await.map_err(backend)?;
        if fresh {
            Ok(Recorded {
                event: self.event_by_id(&e.id).await?,
                deliveries,
                duplicate: false,
            })
        } else {
            let event = self.event_by_idem(e).await?;
            let deliveries = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM webhook_deliveries WHERE event_id = $1",
            )
            .bind(&event.id)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?
            .try_get::<i64, _>("n")
            .map_err(backend)?;
            Ok(Recorded {
                event,
                deliveries: u64::try_from(deliveries).unwrap_or_default(),
                duplicate: true,
            })
        }
    }

    async fn record_event_for(&self, e: &NewEvent, endpoint_id: &str) -> StoreResult<Event> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_event_row(&mut tx, e).await.map_err(backend)?;
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (event_id, endpoint_id, event_type, status, attempts, \
             tries, next_at, created_at, updated_at) \
             SELECT $1, w.id, $2, 'pending', 0, 0, $3, $3, $3 FROM webhook_endpoints w \
             WHERE w.id = $4 AND w.deleted_at IS NULL",
        )
        .bind(&e.id)
        .bind(&e.event_type)
        .bind(e.at)
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(backend)?;
        self.event_by_id(&e.id).await
    }

    async fn get_event(&self, id: &str) -> StoreResult<Event> {
        self.event_by_id(id).await
    }

    async fn list_events(
        &self,
        tenant_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Event>> {
        let mut b = Built::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1"));
        if let Some(t) = tenant_id {
            let p = b.arg(Bind::Text(Some(t.to_owned())));
            b.sql.push_str(&format!(" AND tenant_id = {p}"));
        }
        b.page(page, "AND");
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(|r| event_from_row(r).map(|e| (e.seq, e)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }

    async fn create_endpoint(
        &self,
        w: &Endpoint,
        patterns: &[TypePattern],
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, enabled, \
             salt, previous_salt, previous_until, failing_since, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&w.id)
        .bind(w.tenant_id.clone())
        .bind(&w.url)
        .bind(&w.description)
        .bind(strings_text(&w.event_types))
        .bind(i64::from(w.enabled))
        .bind(&w.salt)
        .bind(w.previous_salt.clone())
        .bind(w.previous_until)
        .bind(w.failing_since)
        .bind(w.created_at)
        .bind(w.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_patterns(&mut tx, &w.id, patterns)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn get_endpoint(&self, id: &str) -> StoreResult<Endpoint> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        endpoint_from_row(&row)
    }

    async fn list_endpoints(
        &self,
        tenant_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Endpoint>> {
        let mut b = Built::new(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE deleted_at IS NULL"
        ));
        if let Some(t) = tenant_id {
            let p = b.arg(Bind::Text(Some(t.to_owned())));
            b.sql.push_str(&format!(" AND tenant_id = {p}"));
        }
        b.page(page, "AND");
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq").map_err(backend)?;
                endpoint_from_row(r).map(|e| (seq, e))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }

    async fn update_endpoint(
        &self,
        id: &str,
        p: &EndpointPatch,
        audit: &AuditEntry,
    ) -> StoreResult<Endpoint> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        let mut b = Built::new("UPDATE webhook_endpoints SET updated_at = $1");
        b.binds.push(Bind::Int(Some(p.updated_at)));
        if let Some(url) = &p.url {
            let a = b.arg(Bind::Text(Some(url.clone())));
            b.sql.push_str(&format!(", url = {a}"));
        }
        if let Some(d) = &p.description {
            let a = b.arg(Bind::Text(Some(d.clone())));
            b.sql.push_str(&format!(", description = {a}"));
        }
        if let Some((types, _)) = &p.event_types {
            let a = b.arg(Bind::Text(Some(strings_text(types))));
            b.sql.push_str(&format!(", event_types = {a}"));
        }
        if let Some(on) = p.enabled {
            let a = b.arg(Bind::Int(Some(i64::from(on))));
            b.sql.push_str(&format!(", enabled = {a}"));
        }
        if let Some((salt, until)) = &p.rotate {
            let a = b.arg(Bind::Text(Some(salt.clone())));
            let u = b.arg(Bind::Int(Some(*until)));
            b.sql.push_str(&format!(
                ", previous_salt = salt, salt = {a}, previous_until = {u}"
            ));
        }
        let a = b.arg(Bind::Text(Some(id.to_owned())));
        b.sql.push_str(&format!(
            " WHERE id = {a} AND deleted_at IS NULL RETURNING {ENDPOINT_COLUMNS}"
        ));
        let row = b
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound)?;
        let endpoint = endpoint_from_row(&row)?;
        if let Some((_, patterns)) = &p.event_types {
            sqlx::query("DELETE FROM webhook_filters WHERE endpoint_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            insert_patterns(&mut tx, id, patterns)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(endpoint)
    }

    async fn delete_endpoint(&self, id: &str, audit: &AuditEntry) -> StoreResult<()> {
        let at = audit.at;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET deleted_at = $1, updated_at = $1 \
             WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'cancelled', next_at = NULL, updated_at = $1, \
             lease_owner = NULL, lease_until = NULL WHERE endpoint_id = $2 AND status = 'pending'",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM webhook_filters WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        resolve_in(&mut tx, &format!("endpoint_failing:{id}"), at)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn count_endpoints(&self, tenant_id: Option<&str>) -> StoreResult<u64> {
        let mut b = Built::new(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM webhook_endpoints WHERE deleted_at IS NULL",
        );
        match tenant_id {
            Some(t) => {
                let p = b.arg(Bind::Text(Some(t.to_owned())));
                b.sql.push_str(&format!(" AND tenant_id = {p}"));
            }
            None => b.sql.push_str(" AND tenant_id IS NULL"),
        }
        let n: i64 = b
            .query()
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?
            .try_get("n")
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<Claimed>> {
        // Another node's live lease is skipped (PostgreSQL: and rows it is
        // claiming right now); an expired lease is taken over.
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 WHERE seq IN (\
             SELECT d.seq FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             WHERE d.status = 'pending' AND d.next_at <= $3 \
             AND (d.lease_until IS NULL OR d.lease_until < $3) \
             AND w.enabled = 1 AND w.deleted_at IS NULL \
             ORDER BY d.next_at LIMIT $4{lock}) RETURNING seq"
        );
        let claimed: Vec<i64> = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| r.try_get::<i64, _>("seq").map_err(backend))
            .collect::<StoreResult<_>>()?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut b = Built::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE seq IN ("
        ));
        for (i, seq) in claimed.iter().enumerate() {
            let p = b.arg(Bind::Int(Some(*seq)));
            b.sql.push_str(if i == 0 { "" } else { ", " });
            b.sql.push_str(&p);
        }
        b.sql.push_str(") ORDER BY next_at");
        let deliveries = b
            .query()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(delivery_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut out = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let event = self.event_by_id(&delivery.event_id).await?;
            let endpoint = self.get_endpoint(&delivery.endpoint_id).await?;
            out.push(Claimed {
                delivery,
                event,
                endpoint,
            });
        }
        Ok(out)
    }

    async fn finish_attempt(
        &self,
        seq: i64,
        owner: &str,
        a: &Attempt,
        next: &NextStep,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row =
            sqlx::query("SELECT event_id, endpoint_id FROM webhook_deliveries WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .ok_or(StoreError::NotFound)?;
        let event_id: String = row.try_get("event_id").map_err(backend)?;
        let endpoint_id: String = row.try_get("endpoint_id").map_err(backend)?;
        sqlx::query(
            "INSERT INTO webhook_attempts (event_id, endpoint_id, at, status, latency_ms, response, \
             error, ok, node) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&event_id)
        .bind(&endpoint_id)
        .bind(a.at)
        .bind(a.status.map(i64::from))
        .bind(i64::try_from(a.latency_ms).unwrap_or(i64::MAX))
        .bind(&a.response)
        .bind(a.error.clone())
        .bind(i64::from(a.ok))
        .bind(&a.node)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let (status, next_at) = match next {
            NextStep::Delivered => ("delivered", None),
            NextStep::RetryAt(t) => ("pending", Some(*t)),
            NextStep::GiveUp(_) => ("failed", None),
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_at = $2, attempts = attempts + 1, \
             tries = tries + 1, lease_owner = NULL, lease_until = NULL, updated_at = $3, \
             last_status = $4, last_error = $5 \
             WHERE seq = $6 AND lease_owner = $7 AND status = 'pending'",
        )
        .bind(status)
        .bind(next_at)
        .bind(a.at)
        .bind(a.status.map(i64::from))
        .bind(a.error.clone())
        .bind(seq)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let held = done.rows_affected() == 1;
        if held {
            match next {
                NextStep::Delivered => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET failing_since = NULL \
                         WHERE id = $1 AND failing_since IS NOT NULL",
                    )
                    .bind(&endpoint_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                    resolve_in(&mut tx, &format!("endpoint_failing:{endpoint_id}"), a.at)
                        .await
                        .map_err(backend)?;
                }
                NextStep::GiveUp(raise) => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $1) \
                         WHERE id = $2",
                    )
                    .bind(a.at)
                    .bind(&endpoint_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                    let (alert, event) = raise.as_ref();
                    raise_in(&mut tx, alert, event).await.map_err(backend)?;
                }
                NextStep::RetryAt(_) => {}
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(held)
    }

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        page: PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let mut b = Built::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1"
        ));
        b.binds.push(Bind::Text(Some(endpoint_id.to_owned())));
        b.page(page, "AND");
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(|r| delivery_from_row(r).map(|d| (d.seq, d)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }

    async fn get_delivery(&self, endpoint_id: &str, event_id: &str) -> StoreResult<Delivery> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2"
        ))
        .bind(endpoint_id)
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        delivery_from_row(&row)
    }

    async fn list_attempts(
        &self,
        endpoint_id: &str,
        event_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<Attempt>> {
        sqlx::query(
            "SELECT at, status, latency_ms, response, error, ok, node FROM webhook_attempts \
             WHERE endpoint_id = $1 AND event_id = $2 ORDER BY seq LIMIT $3",
        )
        .bind(endpoint_id)
        .bind(event_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(attempt_from_row)
        .collect()
    }

    async fn redeliver(&self, endpoint_id: &str, event_id: &str, at: i64) -> StoreResult<Delivery> {
        let row = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET status = 'pending', tries = 0, next_at = $1, \
             lease_owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE endpoint_id = $2 AND event_id = $3 AND status <> 'cancelled' \
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(at)
        .bind(endpoint_id)
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        delivery_from_row(&row)
    }

    async fn pending_deliveries(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?
        .try_get("n")
        .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn raise_alert(&self, alert: &Alert, event: &NewEvent) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let raised = raise_in(&mut tx, alert, event).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(raised)
    }

    async fn resolve_alert(&self, dedupe: &str, at: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = resolve_in(&mut tx, dedupe, at).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done)
    }

    async fn list_alerts(&self, f: &AlertFilter, page: PageRequest) -> StoreResult<Page<Alert>> {
        let mut b = Built::new(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1"));
        for (column, value) in [
            ("tenant_id", &f.tenant_id),
            ("key_id", &f.key_id),
            ("kind", &f.kind),
        ] {
            if let Some(v) = value {
                let p = b.arg(Bind::Text(Some(v.clone())));
                b.sql.push_str(&format!(" AND {column} = {p}"));
            }
        }
        if f.open {
            b.sql.push_str(" AND resolved_at IS NULL");
        }
        b.page(page, "AND");
        let rows = b.query().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq").map_err(backend)?;
                alert_from_row(r).map(|a| (seq, a))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paged(items, page.limit))
    }

    async fn open_alerts(&self, kind: &str, limit: u32) -> StoreResult<Vec<Alert>> {
        sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE kind = $1 AND resolved_at IS NULL \
             ORDER BY seq LIMIT $2"
        ))
        .bind(kind)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(alert_from_row)
        .collect()
    }

    async fn key_minutes(
        &self,
        since: i64,
        active_since: i64,
        max_keys: u32,
    ) -> StoreResult<Vec<KeyMinute>> {
        sqlx::query(
            "SELECT key_id, tenant_id, bucket, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(CASE WHEN class = 3 THEN requests ELSE 0 END) AS BIGINT) AS errors \
             FROM usage_counts WHERE g = 0 AND bucket >= $1 AND key_id IN (\
             SELECT key_id FROM usage_counts WHERE g = 0 AND bucket >= $2 \
             GROUP BY key_id ORDER BY SUM(requests) DESC LIMIT $3) \
             GROUP BY key_id, tenant_id, bucket ORDER BY key_id, bucket",
        )
        .bind(since)
        .bind(active_since)
        .bind(i64::from(max_keys))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| {
            Ok(KeyMinute {
                key_id: r.try_get("key_id").map_err(backend)?,
                tenant_id: r.try_get("tenant_id").map_err(backend)?,
                minute: r.try_get("bucket").map_err(backend)?,
                requests: r.try_get("requests").map_err(backend)?,
                errors: r.try_get("errors").map_err(backend)?,
            })
        })
        .collect()
    }

    async fn new_addresses(&self, since: i64, limit: u32) -> StoreResult<Vec<NewAddress>> {
        sqlx::query(
            "SELECT i.key_id, k.tenant_id, i.ip, i.first_seen FROM key_ips i \
             JOIN keys k ON k.id = i.key_id WHERE i.first_seen >= $1 \
             AND EXISTS (SELECT 1 FROM key_ips o WHERE o.key_id = i.key_id \
             AND o.first_seen < i.first_seen) ORDER BY i.first_seen LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| {
            Ok(NewAddress {
                key_id: r.try_get("key_id").map_err(backend)?,
                tenant_id: r.try_get("tenant_id").map_err(backend)?,
                ip: r.try_get("ip").map_err(backend)?,
                first_seen: r.try_get("first_seen").map_err(backend)?,
            })
        })
        .collect()
    }

    async fn dormant_keys(&self, unused_before: i64, limit: u32) -> StoreResult<Vec<KeyDue>> {
        sqlx::query(
            "SELECT k.id, k.tenant_id, k.name, COALESCE(k.last_used_at, k.created_at) AS at \
             FROM keys k WHERE k.class = 'tenant' AND k.enabled = 1 AND k.revoked_at IS NULL \
             AND k.deleted_at IS NULL AND k.replaced_by IS NULL \
             AND COALESCE(k.last_used_at, k.created_at) < $1 \
             AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.dedupe = 'key_dormant:' || k.id \
             AND a.resolved_at IS NULL) ORDER BY k.seq LIMIT $2",
        )
        .bind(unused_before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(key_due)
        .collect()
    }

    async fn resolve_used_dormant(&self, at: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE alerts SET resolved_at = $1 WHERE kind = 'key_dormant' AND resolved_at IS NULL \
             AND EXISTS (SELECT 1 FROM keys k WHERE k.id = alerts.key_id \
             AND (k.last_used_at > alerts.at OR k.revoked_at IS NOT NULL \
             OR k.deleted_at IS NOT NULL))",
        )
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn expiring_keys(&self, from: i64, until: i64, limit: u32) -> StoreResult<Vec<KeyDue>> {
        sqlx::query(
            "SELECT k.id, k.tenant_id, k.name, k.expires_at AS at FROM keys k \
             WHERE k.class = 'tenant' AND k.revoked_at IS NULL AND k.deleted_at IS NULL \
             AND k.expires_at >= $1 AND k.expires_at < $2 \
             AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.resolved_at IS NULL AND \
             a.dedupe = 'key_expiring:' || k.id || ':' || CAST(k.expires_at AS TEXT)) \
             ORDER BY k.expires_at LIMIT $3",
        )
        .bind(from)
        .bind(until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(key_due)
        .collect()
    }

    async fn low_credit_tenants(
        &self,
        default_threshold: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LowCredits>> {
        let mut b = Built::new("");
        let threshold = threshold_sql(&mut b, default_threshold);
        let l = b.arg(Bind::Int(Some(i64::from(limit))));
        b.sql = format!(
            "SELECT c.tenant_id, c.balance, {threshold} AS threshold FROM credit_accounts c \
             JOIN tenants t ON t.id = c.tenant_id WHERE c.balance < {threshold} \
             AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.dedupe = 'credits_low:' || c.tenant_id \
             AND a.resolved_at IS NULL) ORDER BY c.tenant_id LIMIT {l}"
        );
        b.query()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| {
                Ok(LowCredits {
                    tenant_id: r.try_get("tenant_id").map_err(backend)?,
                    balance: r.try_get("balance").map_err(backend)?,
                    threshold: r.try_get("threshold").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn resolve_credits_low(
        &self,
        default_threshold: Option<i64>,
        at: i64,
    ) -> StoreResult<u64> {
        let mut b = Built::new("");
        let a = b.arg(Bind::Int(Some(at)));
        let threshold = threshold_sql(&mut b, default_threshold);
        b.sql = format!(
            "UPDATE alerts SET resolved_at = {a} WHERE kind = 'credits_low' AND resolved_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM credit_accounts c JOIN tenants t ON t.id = c.tenant_id \
             WHERE c.tenant_id = alerts.tenant_id AND c.balance < {threshold})"
        );
        let done = b.query().execute(&self.pool).await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        sqlx::query("SELECT value FROM keyward_settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|r| r.try_get::<String, _>("value").map_err(backend))
            .transpose()
    }

    async fn init_setting(&self, name: &str, value: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO keyward_settings (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        self.setting(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("setting {name} vanished")))
    }

    async fn prune_events(&self, before: i64) -> StoreResult<PrunedEvents> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut counts = [0u64; 3];
        for (i, sql) in [
            "DELETE FROM webhook_attempts WHERE at < $1",
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < $1",
            "DELETE FROM events WHERE at < $1 AND NOT EXISTS \
             (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = events.id)",
            "DELETE FROM alerts WHERE at < $1 AND (resolved_at IS NOT NULL \
             OR kind IN ('new_ip', 'key_expiring'))",
        ]
        .into_iter()
        .enumerate()
        {
            let done = sqlx::query(sql)
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            if let Some(c) = counts.get_mut(i) {
                *c = done.rows_affected();
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(PrunedEvents {
            attempts: counts[0],
            deliveries: counts[1],
            events: counts[2],
        })
    }
}
