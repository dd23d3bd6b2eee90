//! Webhook delivery and the alert checks, as background tasks of a node.
//!
//! - [`master_key`] finds the deployment's webhook master key (config, key
//!   file, or on SQLite a key file created on first start);
//! - [`Deliverer`] claims due deliveries from the outbox (leased to this
//!   node), signs each (Standard Webhooks v1: `webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`), sends it, and records the
//!   attempt with what follows: delivered, a retry at the schedule's next
//!   delay (±20 % jitter), or giving up (the endpoint is marked failing and
//!   `webhook.endpoint_failing` is raised). Every node runs one; a lease
//!   makes each attempt one node's.
//! - [`spawn_alerts`] runs the alert checks on a timer;
//! - [`spawn_pruner`] deletes old deliveries, attempts and events.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::clock::{Clock, Timestamp};
use keyward_core::secret::Entropy;
use keyward_manage::ManageService;
use keyward_store::{Attempt, Claimed, NextStep, Store};
use keyward_webhooks::{MasterKey, Outgoing, RetrySchedule, Sender, SenderConfig};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::config::{invalid, ConfigError, Settings, WebhooksConfig};

/// The store setting that holds the master key's id, so a node configured
/// with another key refuses to start instead of signing with wrong secrets.
pub(crate) const KEY_ID_SETTING: &str = "webhooks.master_key_id";

/// The master key: `webhooks.signing_key`, else `webhooks.signing_key_file`,
/// else (SQLite) `webhook-signing.key` beside the database file (in
/// `data_dir` by default), created when missing.
/// `None` on PostgreSQL without either (webhooks are then off).
pub(crate) fn master_key(
    settings: &Settings,
    entropy: &dyn Entropy,
) -> Result<Option<MasterKey>, ConfigError> {
    let w = &settings.config.webhooks;
    if let Some(text) = &w.signing_key {
        return MasterKey::from_text(text)
            .map(Some)
            .map_err(|e| invalid("webhooks.signing_key", e));
    }
    if let Some(path) = &w.signing_key_file {
        return read_key(path, "webhooks.signing_key_file").map(Some);
    }
    let url = settings.config.effective_store_url();
    let Some(db) = url.strip_prefix("sqlite:") else {
        return Ok(None);
    };
    let db = db.trim_start_matches("//");
    let db = db.split('?').next().unwrap_or(db);
    if db.is_empty() || db.contains(":memory:") {
        // A store that ends with the process: so may its key.
        return MasterKey::generate(entropy)
            .map(Some)
            .map_err(|e| invalid("webhooks", e));
    }
    // Beside the database: the two belong together.
    let path = Path::new(db)
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("webhook-signing.key");
    if path.exists() {
        return read_key(&path, "webhooks.signing_key_file").map(Some);
    }
    let key = MasterKey::generate(entropy).map_err(|e| invalid("webhooks", e))?;
    match write_key(&path, &key.to_file_text()) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "Created the webhook signing master key.");
            Ok(Some(key))
        }
        // Another process beside the same store made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(&path, "webhooks.signing_key_file").map(Some)
        }
        Err(e) => Err(invalid(
            "webhooks.signing_key_file",
            format!("could not create {}: {e}", path.display()),
        )),
    }
}

fn read_key(path: &Path, setting: &str) -> Result<MasterKey, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(setting, format!("could not read {}: {e}", path.display())))?;
    MasterKey::from_text(text.trim())
        .map_err(|e| invalid(setting, format!("{}: {e}", path.display())))
}

/// Writes a new key file readable by its owner only.
fn write_key(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// What this node's deliverer did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct DeliveryCounters {
    /// Attempts by result: delivered, failed and retried, failed for good.
    pub(crate) delivered: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) gave_up: AtomicU64,
    /// Sum of attempt latencies, in ms.
    pub(crate) latency_ms: AtomicU64,
    /// Claims or records the store refused.
    pub(crate) store_errors: AtomicU64,
    /// Deliveries pending in the store (due or not), read every few seconds.
    pub(crate) pending: AtomicU64,
}

/// Sends due deliveries (one per node).
pub(crate) struct Deliverer {
    manage: Arc<ManageService>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    sender: Sender,
    schedule: RetrySchedule,
    node: String,
    config: WebhooksConfig,
    counters: Arc<DeliveryCounters>,
}

impl Deliverer {
    pub(crate) fn new(
        manage: Arc<ManageService>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        node: String,
        config: &WebhooksConfig,
        counters: Arc<DeliveryCounters>,
    ) -> Result<Deliverer, ConfigError> {
        let sender = Sender::new(SenderConfig {
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            timeout: Duration::from_millis(config.timeout_ms),
            max_response_bytes: config.max_response_bytes,
            allow_private: config.allow_private_addresses,
            user_agent: format!("keyward-webhooks/{}", env!("CARGO_PKG_VERSION")),
        })
        .map_err(|e| invalid("webhooks", e))?;
        Ok(Deliverer {
            manage,
            store,
            clock,
            entropy,
            sender,
            schedule: RetrySchedule::from_millis(&config.retry_schedule_ms),
            node,
            config: config.clone(),
            counters,
        })
    }

    /// Claims and sends until aborted.
    pub(crate) fn spawn(self) -> JoinHandle<()> {
        let me = Arc::new(self);
        tokio::spawn(async move {
            let idle = Duration::from_millis(me.config.poll_interval_ms);
            let mut depth_read = std::time::Instant::now() - Duration::from_secs(60);
            loop {
                if depth_read.elapsed() >= Duration::from_secs(5) {
                    depth_read = std::time::Instant::now();
                    if let Ok(n) = me.store.pending_deliveries().await {
                        me.counters.pending.store(n, Ordering::Relaxed);
                    }
                }
                match me.round().await {
                    Ok(0) => tokio::time::sleep(idle).await,
                    Ok(_) => {}
                    Err(e) => {
                        me.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "Could not claim webhook deliveries.");
                        tokio::time::sleep(idle).await;
                    }
                }
            }
        })
    }

    /// One claim of up to `concurrency` deliveries, sent at once; how many.
    pub(crate) async fn round(self: &Arc<Self>) -> Result<usize, keyward_store::StoreError> {
        let now = self.clock.now().0;
        let lease = i64::try_from(self.config.lease().as_millis()).unwrap_or(i64::MAX);
        let limit = u32::try_from(self.config.concurrency).unwrap_or(16);
        let claimed = self
            .store
            .claim_deliveries(&self.node, now, now.saturating_add(lease), limit)
            .await?;
        let n = claimed.len();
        let mut set = tokio::task::JoinSet::new();
        for c in claimed {
            let me = Arc::clone(self);
            set.spawn(async move { me.deliver(c).await });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    async fn deliver(&self, c: Claimed) {
        let now = self.clock.now().0;
        let body = json!({
            "type": c.event.event_type,
            "timestamp": Timestamp(c.event.at).to_rfc3339(),
            "data": c.event.data,
        })
        .to_string();
        let secrets = self.manage.signing_secrets(&c.endpoint, now);
        if secrets.is_empty() {
            return;
        }
        let refs: Vec<&keyward_webhooks::SigningSecret> = secrets.iter().collect();
        let timestamp = now.div_euclid(1000);
        let signature =
            keyward_webhooks::signature_header(&refs, &c.event.id, timestamp, body.as_bytes());
        let sent = self
            .sender
            .send(&Outgoing {
                url: &c.endpoint.url,
                msg_id: &c.event.id,
                timestamp,
                body: body.as_bytes(),
                signature: &signature,
            })
            .await;
        let at = self.clock.now().0;
        let next = if sent.ok {
            NextStep::Delivered
        } else {
            match self
                .schedule
                .after_attempt(c.delivery.tries.saturating_add(1), self.jitter())
            {
                Some(d) => NextStep::RetryAt(
                    at.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                ),
                None => match self.manage.endpoint_failing(&c.endpoint, &c.delivery, at) {
                    Ok(raise) => NextStep::GiveUp(Box::new(raise)),
                    Err(e) => {
                        tracing::error!(error = %e, "Could not build the endpoint-failing alert.");
                        return;
                    }
                },
            }
        };
        let attempt = Attempt {
            at,
            status: sent.status,
            latency_ms: sent.latency_ms,
            response: sent.response,
            error: sent.error,
            ok: sent.ok,
            node: self.node.clone(),
        };
        self.counters
            .latency_ms
            .fetch_add(sent.latency_ms, Ordering::Relaxed);
        match &next {
            NextStep::Delivered => &self.counters.delivered,
            NextStep::RetryAt(_) => &self.counters.retried,
            NextStep::GiveUp(_) => &self.counters.gave_up,
        }
        .fetch_add(1, Ordering::Relaxed);
        match &next {
            NextStep::Delivered => {
                tracing::debug!(event_id = %c.event.id, endpoint_id = %c.endpoint.id, "Webhook delivered.")
            }
            NextStep::RetryAt(t) => tracing::info!(
                event_id = %c.event.id,
                endpoint_id = %c.endpoint.id,
                status = attempt.status.unwrap_or(0),
                error = attempt.error.as_deref().unwrap_or(""),
                retry_in_ms = t - at,
                "Webhook attempt failed; retrying."
            ),
            NextStep::GiveUp(_) => tracing::warn!(
                event_id = %c.event.id,
                endpoint_id = %c.endpoint.id,
                "Webhook delivery gave up; the endpoint is marked failing."
            ),
        }
        match self
            .store
            .finish_attempt(c.delivery.seq, &self.node, &attempt, &next)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                event_id = %c.event.id,
                endpoint_id = %c.endpoint.id,
                "A webhook attempt outlived its lease; another node holds the delivery."
            ),
            Err(e) => {
                tracing::error!(error = %e, event_id = %c.event.id, "Could not record a webhook attempt; it is retried when its lease runs out.")
            }
        }
    }

    /// A number in [0, 1) for the retry jitter.
    fn jitter(&self) -> f64 {
        let mut b = [0u8; 4];
        if self.entropy.fill(&mut b).is_err() {
            return 0.5;
        }
        f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
    }
}

/// Runs the alert checks every `alerts.interval_ms`.
pub(crate) fn spawn_alerts(manage: Arc<ManageService>, settings: &Settings) -> JoinHandle<()> {
    let policy = settings.config.alerts.policy();
    let every = Duration::from_millis(settings.config.alerts.interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match manage.evaluate_alerts(&policy).await {
                Ok(run) if run.raised > 0 || run.resolved > 0 => {
                    tracing::debug!(
                        raised = run.raised,
                        resolved = run.resolved,
                        "Alert checks ran."
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Alert checks failed."),
            }
        }
    })
}

/// Deletes finished deliveries, attempts and events past
/// `webhooks.retain_days`, hourly.
pub(crate) fn spawn_pruner(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retain_days: u64,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3_600));
        let keep = i64::try_from(retain_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        loop {
            tick.tick().await;
            match store.prune_events(clock.now().0.saturating_sub(keep)).await {
                Ok(p) if p.events + p.deliveries + p.attempts > 0 => tracing::info!(
                    events = p.events,
                    deliveries = p.deliveries,
                    attempts = p.attempts,
                    "Pruned old webhook deliveries and events."
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Could not prune webhook deliveries."),
            }
        }
    })
}
