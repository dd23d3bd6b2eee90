//! Reading usage: a key's series, a tenant's usage grouped, a key's client
//! addresses. Reads only: usage is written by the nodes' recorders, not by
//! a management action.

use std::collections::BTreeMap;

use keyward_core::clock::Timestamp;
use keyward_store::{
    Granularity, GroupBy, GroupRow, KeyIp, KeyRecord, OutcomeClass, UsageRange, UsageRow,
};

use super::{Cursor, ManageService, Paging};
use crate::actor::Actor;
use crate::error::ManageError;

/// At most this many buckets in one series (a day of minutes, ninety days
/// of hours, two years of days all fit).
pub const MAX_BUCKETS: i64 = 2_200;

/// The range a usage question covers when it names none: the last day.
pub const DEFAULT_SPAN_MS: i64 = 86_400_000;

/// An address first seen this recently is unfamiliar, unless the key itself
/// is that young (every address of a new key is new).
pub const UNFAMILIAR_MS: i64 = 86_400_000;

/// The range of a usage question, as asked: `to` defaults to now and
/// `from` to a day before it; the granularity to hours. Both ends are
/// widened to whole buckets.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageWindow {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub granularity: Option<Granularity>,
}

/// Counts of one bucket, one group or a whole range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: i64,
    pub successes: i64,
    pub denied: i64,
    pub client_errors: i64,
    pub errors: i64,
    pub credits: i64,
    pub latency_us: i64,
    /// Every outcome and its count (`valid`, `upstream_2xx`,
    /// `revoked_api_key`…).
    pub outcomes: BTreeMap<String, i64>,
    /// The class of each outcome counted.
    classes: BTreeMap<String, OutcomeClass>,
}

impl UsageCounts {
    pub fn add(
        &mut self,
        outcome: &str,
        class: OutcomeClass,
        requests: i64,
        credits: i64,
        latency_us: i64,
    ) {
        self.requests += requests;
        match class {
            OutcomeClass::Success => self.successes += requests,
            OutcomeClass::Denied => self.denied += requests,
            OutcomeClass::ClientError => self.client_errors += requests,
            OutcomeClass::Error => self.errors += requests,
        }
        self.credits += credits;
        self.latency_us = self.latency_us.saturating_add(latency_us);
        *self.outcomes.entry(outcome.to_owned()).or_default() += requests;
        if !self.classes.contains_key(outcome) {
            self.classes.insert(outcome.to_owned(), class);
        }
    }

    fn add_row(&mut self, r: &UsageRow) {
        self.add(&r.outcome, r.class, r.requests, r.credits, r.latency_us);
    }

    /// The denials among the outcomes, by code (every outcome of a request
    /// keyward refused).
    pub fn denied_by_code(&self) -> BTreeMap<String, i64> {
        self.outcomes
            .iter()
            .filter(|(code, _)| self.class_of(code) == Some(OutcomeClass::Denied))
            .map(|(c, n)| (c.clone(), *n))
            .collect()
    }

    /// The class `outcome` was counted in (`None`: not counted here).
    pub fn class_of(&self, outcome: &str) -> Option<OutcomeClass> {
        self.classes.get(outcome).copied()
    }

    /// `errors / requests` (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// Mean latency in milliseconds (`None` without requests).
    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.latency_us as f64 / self.requests as f64 / 1000.0)
    }
}

/// A key's series: one point per bucket of the range, empty ones included.
#[derive(Debug, Clone)]
pub struct KeyUsage {
    pub key: KeyRecord,
    pub range: UsageRange,
    /// `(bucket start, counts)`, oldest first.
    pub points: Vec<(i64, UsageCounts)>,
    pub totals: UsageCounts,
}

/// A page of a tenant's usage grouped.
#[derive(Debug, Clone)]
pub struct TenantUsage {
    pub range: UsageRange,
    pub by: GroupBy,
    pub groups: Vec<(String, UsageCounts)>,
    /// The last group of this page when more follow (the next page starts
    /// after it).
    pub next: Option<String>,
}

/// Where a page of groups starts.
#[derive(Debug, Clone, Default)]
pub struct GroupPaging {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

/// A key's client address, and whether it is unfamiliar (first seen in the
/// last [`UNFAMILIAR_MS`], on a key older than that).
#[derive(Debug, Clone)]
pub struct SeenAddress {
    pub ip: KeyIp,
    pub unfamiliar: bool,
}

/// A page of a key's client addresses, most recently seen first; `next`
/// is the offset of the next page.
#[derive(Debug, Clone)]
pub struct KeyAddresses {
    pub items: Vec<SeenAddress>,
    pub next: Option<i64>,
}

fn limit(l: Option<u32>) -> Result<u32, ManageError> {
    let l = l.unwrap_or(20);
    if (1..=100).contains(&l) {
        Ok(l)
    } else {
        Err(ManageError::field(
            "limit",
            "out_of_range",
            "limit must be between 1 and 100",
        ))
    }
}

impl ManageService {
    /// The range `w` asks for at `now`, checked: `from` before `to`, at
    /// most [`MAX_BUCKETS`] buckets.
    pub fn usage_range(&self, w: UsageWindow) -> Result<UsageRange, ManageError> {
        let g = w.granularity.unwrap_or(Granularity::Hour);
        let now = self.now().0;
        let to = w.to.map_or(now, |t| t.0);
        let from = w.from.map_or(to.saturating_sub(DEFAULT_SPAN_MS), |t| t.0);
        if from >= to {
            return Err(ManageError::field(
                "from",
                "invalid_range",
                "from must be before to",
            ));
        }
        let start = g.floor(from);
        let end = g.floor(to.saturating_sub(1)).saturating_add(g.millis());
        let buckets = (end - start) / g.millis();
        if buckets > MAX_BUCKETS {
            return Err(ManageError::field(
                "from",
                "range_too_large",
                format!(
                    "the range holds {buckets} {}s; at most {MAX_BUCKETS} fit in one answer: \
                     narrow it or choose a coarser granularity",
                    g.as_str()
                ),
            ));
        }
        Ok(UsageRange {
            granularity: g,
            from: start,
            to: end,
        })
    }

    /// A key's usage over `window` (`keyward:keys:read`).
    pub async fn key_usage(
        &self,
        actor: &Actor,
        key_id: &str,
        window: UsageWindow,
    ) -> Result<KeyUsage, ManageError> {
        actor.require("keyward:keys:read")?;
        let range = self.usage_range(window)?;
        let key = self.visible_key(actor, key_id).await?;
        let rows = self.store.key_usage(&key.id, range).await?;
        let step = range.granularity.millis();
        let mut points: Vec<(i64, UsageCounts)> = (0..(range.to - range.from) / step)
            .map(|i| (range.from + i * step, UsageCounts::default()))
            .collect();
        let mut totals = UsageCounts::default();
        for r in &rows {
            let i = (r.bucket - range.from) / step;
            if let Some((_, c)) = usize::try_from(i).ok().and_then(|i| points.get_mut(i)) {
                c.add_row(r);
            }
            totals.add_row(r);
        }
        Ok(KeyUsage {
            key,
            range,
            points,
            totals,
        })
    }

    /// A tenant's usage over `window`, grouped `by`, a page of groups at a
    /// time in the group's order (`keyward:tenants:read`).
    pub async fn tenant_usage(
        &self,
        actor: &Actor,
        tenant_id: &str,
        window: UsageWindow,
        by: GroupBy,
        paging: GroupPaging,
    ) -> Result<TenantUsage, ManageError> {
        actor.require("keyward:tenants:read")?;
        let range = self.usage_range(window)?;
        let limit = limit(paging.limit)?;
        let tenant = self.visible_tenant(actor, tenant_id).await?;
        let rows = self
            .store
            .tenant_usage(&tenant.id, range, by, paging.after.as_deref(), limit + 1)
            .await?;
        let mut groups: Vec<(String, UsageCounts)> = Vec::new();
        for GroupRow {
            group,
            outcome,
            class,
            requests,
            credits,
            latency_us,
        } in rows
        {
            if groups.last().map(|(g, _)| g) != Some(&group) {
                groups.push((group, UsageCounts::default()));
            }
            if let Some((_, c)) = groups.last_mut() {
                c.add(&outcome, class, requests, credits, latency_us);
            }
        }
        let next = if groups.len() > limit as usize {
            groups.truncate(limit as usize);
            groups.last().map(|(g, _)| g.clone())
        } else {
            None
        };
        Ok(TenantUsage {
            range,
            by,
            groups,
            next,
        })
    }

    /// A key's client addresses, most recently seen first
    /// (`keyward:keys:read`). The cursor is the offset of the page.
    pub async fn key_addresses(
        &self,
        actor: &Actor,
        key_id: &str,
        paging: Paging,
    ) -> Result<KeyAddresses, ManageError> {
        actor.require("keyward:keys:read")?;
        let limit = limit(paging.limit)?;
        let offset = match paging.cursor {
            Cursor::Start => 0,
            Cursor::Before(n) if n >= 0 => n,
            Cursor::Before(_) | Cursor::Invalid => return Err(ManageError::InvalidCursor),
        };
        let key = self.visible_key(actor, key_id).await?;
        let mut ips = self
            .store
            .key_ips(&key.id, offset.unsigned_abs(), limit + 1)
            .await?;
        let next = (ips.len() > limit as usize).then(|| {
            ips.truncate(limit as usize);
            offset + i64::from(limit)
        });
        let now = self.now().0;
        let items = ips
            .into_iter()
            .map(|ip| SeenAddress {
                unfamiliar: ip.first_seen >= now - UNFAMILIAR_MS
                    && ip.first_seen >= key.created_at + UNFAMILIAR_MS,
                ip,
            })
            .collect();
        Ok(KeyAddresses { items, next })
    }
}
