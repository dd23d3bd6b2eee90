//! [`UsageStore`] for [`SqlStore`]: the `usage_counts` and `key_ips` tables
//! of migration 7. Counts are added with `INSERT … ON CONFLICT DO UPDATE`
//! that sums, many rows per statement, in primary-key order.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{backend, SqlStore};
use crate::*;

/// Rows per multi-row statement. Small on purpose: binding a statement
/// costs the square of its values (the SQLite driver looks each
/// placeholder up by name, a linear scan), and 8 rows already take most of
/// the round trips out.
const CHUNK: usize = 8;

fn g(granularity: Granularity) -> i64 {
    match granularity {
        Granularity::Minute => 0,
        Granularity::Hour => 1,
        Granularity::Day => 2,
    }
}

/// A row's primary key: key, granularity, bucket, tenant header, route,
/// outcome. The map below keeps rows merged and in this order.
type RowKey = (String, i64, i64, String, String, String);

#[derive(Default)]
struct Sums {
    tenant_id: String,
    class: i64,
    requests: i64,
    credits: i64,
    latency_us: i64,
}

/// The outcome and sums of a usage row of a grouped query.
fn sums(r: &AnyRow) -> StoreResult<(String, OutcomeClass, i64, i64, i64)> {
    Ok((
        r.try_get("outcome").map_err(backend)?,
        OutcomeClass::from_i64(r.try_get("class").map_err(backend)?),
        sum(r, "requests")?,
        sum(r, "credits")?,
        sum(r, "latency_us")?,
    ))
}

fn sum(r: &AnyRow, column: &str) -> StoreResult<i64> {
    r.try_get::<Option<i64>, _>(column)
        .map(Option::unwrap_or_default)
        .map_err(backend)
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn add_usage(
        &self,
        deltas: &[UsageDelta],
        ips: &[IpSighting],
        max_ips_per_key: u32,
    ) -> StoreResult<()> {
        if deltas.is_empty() && ips.is_empty() {
            return Ok(());
        }
        // Each delta lands in its minute, hour and day; deltas meeting in
        // one hour or day are summed first (one statement may not touch a
        // row twice), and the map's order is the order rows are locked in.
        let mut rows: BTreeMap<RowKey, Sums> = BTreeMap::new();
        for d in deltas {
            for gr in Granularity::ALL {
                let k = (
                    d.key_id.clone(),
                    g(gr),
                    gr.floor(d.minute),
                    d.tenant_header.clone(),
                    d.route.clone(),
                    d.outcome.clone(),
                );
                let s = rows.entry(k).or_default();
                s.tenant_id = d.tenant_id.clone().unwrap_or_default();
                s.class = d.class.as_i64();
                s.requests += d.requests;
                s.credits += d.credits;
                s.latency_us = s.latency_us.saturating_add(d.latency_us);
            }
        }
        let mut sightings: BTreeMap<(&str, &str), (i64, i64, i64)> = BTreeMap::new();
        for s in ips {
            let e = sightings
                .entry((&s.key_id, &s.ip))
                .or_insert((s.first_seen, s.last_seen, 0));
            e.0 = e.0.min(s.first_seen);
            e.1 = e.1.max(s.last_seen);
            e.2 += s.requests;
        }
        let rows: Vec<(RowKey, Sums)> = rows.into_iter().collect();
        let sightings: Vec<_> = sightings.into_iter().collect();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for chunk in rows.chunks(CHUNK) {
            let mut sql = String::from(
                "INSERT INTO usage_counts (key_id, g, bucket, tenant_header, route, outcome, \
                 tenant_id, class, requests, credits, latency_us) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 11;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for c in 1..=11 {
                    if c > 1 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("${}", b + c));
                }
                sql.push(')');
            }
            sql.push_str(
                " ON CONFLICT (key_id, g, bucket, tenant_header, route, outcome) DO UPDATE SET \
                 requests = usage_counts.requests + excluded.requests, \
                 credits = usage_counts.credits + excluded.credits, \
                 latency_us = usage_counts.latency_us + excluded.latency_us",
            );
            let mut q = sqlx::query(&sql);
            for ((key_id, gr, bucket, header, route, outcome), s) in chunk {
                q = q
                    .bind(key_id.clone())
                    .bind(*gr)
                    .bind(*bucket)
                    .bind(header.clone())
                    .bind(route.clone())
                    .bind(outcome.clone())
                    .bind(s.tenant_id.clone())
                    .bind(s.class)
                    .bind(s.requests)
                    .bind(s.credits)
                    .bind(s.latency_us);
            }
            q.execute(&mut *tx).await.map_err(backend)?;
        }
        for chunk in sightings.chunks(CHUNK) {
            let mut sql = String::from(
                "INSERT INTO key_ips (key_id, ip, first_seen, last_seen, requests) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 5;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                ));
            }
            sql.push_str(
                " ON CONFLICT (key_id, ip) DO UPDATE SET \
                 first_seen = CASE WHEN excluded.first_seen < key_ips.first_seen \
                   THEN excluded.first_seen ELSE key_ips.first_seen END, \
                 last_seen = CASE WHEN excluded.last_seen > key_ips.last_seen \
                   THEN excluded.last_seen ELSE key_ips.last_seen END, \
                 requests = key_ips.requests + excluded.requests",
            );
            let mut q = sqlx::query(&sql);
            for ((key_id, ip), (first, last, n)) in chunk {
                q = q
                    .bind((*key_id).to_owned())
                    .bind((*ip).to_owned())
                    .bind(*first)
                    .bind(*last)
                    .bind(*n);
            }
            q.execute(&mut *tx).await.map_err(backend)?;
        }
        // Keys now over their bound keep their most recently seen addresses.
        let mut keys: Vec<&str> = sightings.iter().map(|((k, _), _)| *k).collect();
        keys.dedup();
        for chunk in keys.chunks(CHUNK) {
            let list = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT key_id FROM key_ips WHERE key_id IN ({list}) GROUP BY key_id \
                 HAVING COUNT(*) > ${}",
                chunk.len() + 1
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind((*k).to_owned());
            }
            let over = q
                .bind(i64::from(max_ips_per_key))
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
            for r in over {
                let key_id: String = r.try_get("key_id").map_err(backend)?;
                sqlx::query(
                    "DELETE FROM key_ips WHERE key_id = $1 AND ip NOT IN \
                     (SELECT ip FROM key_ips WHERE key_id = $1 \
                      ORDER BY last_seen DESC, ip LIMIT $2)",
                )
                .bind(key_id)
                .bind(i64::from(max_ips_per_key))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)
    }

    async fn key_usage(&self, key_id: &str, range: UsageRange) -> StoreResult<Vec<UsageRow>> {
        let rows = sqlx::query(
            "SELECT bucket, outcome, class, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(credits) AS BIGINT) AS credits, CAST(SUM(latency_us) AS BIGINT) AS latency_us \
             FROM usage_counts WHERE key_id = $1 AND g = $2 AND bucket >= $3 AND bucket < $4 \
             GROUP BY bucket, outcome, class ORDER BY bucket, outcome",
        )
        .bind(key_id.to_owned())
        .bind(g(range.granularity))
        .bind(range.from)
        .bind(range.to)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let (outcome, class, requests, credits, latency_us) = sums(r)?;
                Ok(UsageRow {
                    bucket: r.try_get("bucket").map_err(backend)?,
                    outcome,
                    class,
                    requests,
                    credits,
                    latency_us,
                })
            })
            .collect()
    }

    async fn tenant_usage(
        &self,
        tenant_id: &str,
        range: UsageRange,
        by: GroupBy,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<GroupRow>> {
        let col = match by {
            GroupBy::Key => "key_id",
            GroupBy::TenantHeader => "tenant_header",
            GroupBy::Route => "route",
            GroupBy::Outcome => "outcome",
        };
        let filter = "tenant_id = $1 AND g = $2 AND bucket >= $3 AND bucket < $4";
        let after_sql = if after.is_some() {
            format!(" AND {col} > $6")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {col} AS grp, outcome, class, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(credits) AS BIGINT) AS credits, CAST(SUM(latency_us) AS BIGINT) AS latency_us \
             FROM usage_counts WHERE {filter} AND {col} IN \
             (SELECT DISTINCT {col} FROM usage_counts WHERE {filter}{after_sql} \
              ORDER BY {col} LIMIT $5) \
             GROUP BY {col}, outcome, class ORDER BY grp, outcome"
        );
        let mut q = sqlx::query(&sql)
            .bind(tenant_id.to_owned())
            .bind(g(range.granularity))
            .bind(range.from)
            .bind(range.to)
            .bind(i64::from(limit));
        if let Some(a) = after {
            q = q.bind(a.to_owned());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter()
            .map(|r| {
                let (outcome, class, requests, credits, latency_us) = sums(r)?;
                Ok(GroupRow {
                    group: r.try_get("grp").map_err(backend)?,
                    outcome,
                    class,
                    requests,
                    credits,
                    latency_us,
                })
            })
            .collect()
    }

    async fn key_ips(&self, key_id: &str, offset: u64, limit: u32) -> StoreResult<Vec<KeyIp>> {
        let rows = sqlx::query(
            "SELECT ip, first_seen, last_seen, requests FROM key_ips WHERE key_id = $1 \
             ORDER BY last_seen DESC, ip LIMIT $2 OFFSET $3",
        )
        .bind(key_id.to_owned())
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(KeyIp {
                    ip: r.try_get("ip").map_err(backend)?,
                    first_seen: r.try_get("first_seen").map_err(backend)?,
                    last_seen: r.try_get("last_seen").map_err(backend)?,
                    requests: r.try_get("requests").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn prune_usage(&self, now: i64, retention: UsageRetention) -> StoreResult<Pruned> {
        let mut pruned = Pruned::default();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for (gr, keep, out) in [
            (Granularity::Minute, retention.minutes, &mut pruned.minutes),
            (Granularity::Hour, retention.hours, &mut pruned.hours),
            (Granularity::Day, retention.days, &mut pruned.days),
        ] {
            let done = sqlx::query("DELETE FROM usage_counts WHERE g = $1 AND bucket < $2")
                .bind(g(gr))
                .bind(now.saturating_sub(keep))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            *out = done.rows_affected();
        }
        let done = sqlx::query("DELETE FROM key_ips WHERE last_seen < $1")
            .bind(now.saturating_sub(retention.days))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        pruned.ips = done.rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(pruned)
    }
}
