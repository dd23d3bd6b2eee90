//! `[webhooks]` and `[alerts]`: signed event delivery and the alert checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// The Standard Webhooks retry schedule keyward uses by default: the
/// delays after each failed attempt (8 attempts over about 27.6 hours).
pub const DEFAULT_RETRY_SCHEDULE_MS: &[u64] = &[
    5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];

/// `[webhooks]`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Deliver events to webhook endpoints.
    pub enabled: bool,
    /// The master key every endpoint's signing secret is derived from (64
    /// hex characters, or base64 of 32 bytes or more). Prefer
    /// `signing_key_file`; every node must have the same.
    pub signing_key: Option<String>,
    /// A file holding the master key. Unset on SQLite: `webhook-signing.key`
    /// beside the database (in `data_dir`), created on first start.
    pub signing_key_file: Option<PathBuf>,
    /// Allow endpoints resolving to loopback, private, link-local and other
    /// non-public addresses (tests, private networks).
    pub allow_private_addresses: bool,
    /// Delays after each failed attempt, in milliseconds; when they run
    /// out the delivery fails and the endpoint is marked failing.
    pub retry_schedule_ms: Vec<u64>,
    pub connect_timeout_ms: u64,
    /// The whole attempt: connect, send, status and the response's first bytes.
    pub timeout_ms: u64,
    /// Response bytes kept in the delivery log (the rest is not read).
    pub max_response_bytes: usize,
    /// Deliveries one node sends at once.
    pub concurrency: usize,
    /// How often a node looks for due deliveries when idle.
    pub poll_interval_ms: u64,
    /// How long a rotated-out secret still signs, by default.
    pub rotation_overlap_seconds: u64,
    /// Live endpoints per tenant (and operator-wide).
    pub max_endpoints: u64,
    /// Finished deliveries, attempts and their events are deleted after.
    pub retain_days: u64,
}

impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("enabled", &self.enabled)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("signing_key_file", &self.signing_key_file)
            .field("allow_private_addresses", &self.allow_private_addresses)
            .field("retry_schedule_ms", &self.retry_schedule_ms)
            .finish_non_exhaustive()
    }
}

impl Default for WebhooksConfig {
    fn default() -> WebhooksConfig {
        WebhooksConfig {
            enabled: true,
            signing_key: None,
            signing_key_file: None,
            allow_private_addresses: false,
            retry_schedule_ms: DEFAULT_RETRY_SCHEDULE_MS.to_vec(),
            connect_timeout_ms: 5_000,
            timeout_ms: 15_000,
            max_response_bytes: 4_096,
            concurrency: 16,
            poll_interval_ms: 500,
            rotation_overlap_seconds: 86_400,
            max_endpoints: 20,
            retain_days: 30,
        }
    }
}

impl WebhooksConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.retry_schedule_ms.len() > 20 {
            return Err(invalid("webhooks.retry_schedule_ms", "at most 20 retries"));
        }
        if self.retry_schedule_ms.iter().any(|d| *d > 7 * 86_400_000) {
            return Err(invalid(
                "webhooks.retry_schedule_ms",
                "each delay is at most 7 days",
            ));
        }
        for (name, v, lo, hi) in [
            (
                "webhooks.connect_timeout_ms",
                self.connect_timeout_ms,
                1,
                60_000,
            ),
            ("webhooks.timeout_ms", self.timeout_ms, 1, 120_000),
            (
                "webhooks.poll_interval_ms",
                self.poll_interval_ms,
                10,
                60_000,
            ),
            ("webhooks.max_endpoints", self.max_endpoints, 1, 1_000),
            ("webhooks.retain_days", self.retain_days, 1, 3_650),
            (
                "webhooks.rotation_overlap_seconds",
                self.rotation_overlap_seconds,
                0,
                7 * 86_400,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(invalid(name, format!("must be between {lo} and {hi}")));
            }
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(invalid("webhooks.concurrency", "must be between 1 and 256"));
        }
        if !(64..=1_048_576).contains(&self.max_response_bytes) {
            return Err(invalid(
                "webhooks.max_response_bytes",
                "must be between 64 and 1048576",
            ));
        }
        Ok(())
    }

    /// How long a claimed delivery stays leased: one attempt's timeout and
    /// a margin; a node that dies mid-attempt leaves it due again after.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms + self.timeout_ms + 30_000)
    }
}

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Run the alert checks.
    pub enabled: bool,
    /// How often each node runs them.
    pub interval_ms: u64,
    pub spike_factor: f64,
    pub spike_min_requests: i64,
    pub baseline_minutes: i64,
    pub error_rate: f64,
    pub error_window_minutes: i64,
    pub error_min_requests: i64,
    pub new_ip: bool,
    pub dormant_days: u32,
    pub disable_dormant: bool,
    pub expiring_days: u32,
    pub credits_low_threshold: Option<i64>,
    pub max_keys: u32,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        let p = keyward_manage::AlertPolicy::default();
        AlertsConfig {
            enabled: true,
            interval_ms: 60_000,
            spike_factor: p.spike_factor,
            spike_min_requests: p.spike_min_requests,
            baseline_minutes: p.baseline_minutes,
            error_rate: p.error_rate,
            error_window_minutes: p.error_window_minutes,
            error_min_requests: p.error_min_requests,
            new_ip: p.new_ip,
            dormant_days: p.dormant_days,
            disable_dormant: p.disable_dormant,
            expiring_days: p.expiring_days,
            credits_low_threshold: p.credits_low_threshold,
            max_keys: p.max_keys,
        }
    }
}

impl AlertsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if !(100..=3_600_000).contains(&self.interval_ms) {
            return Err(invalid(
                "alerts.interval_ms",
                "must be between 100 and 3600000",
            ));
        }
        if !(self.spike_factor >= 1.0 && self.spike_factor <= 1_000.0) {
            return Err(invalid("alerts.spike_factor", "must be between 1 and 1000"));
        }
        if !(self.error_rate > 0.0 && self.error_rate <= 1.0) {
            return Err(invalid("alerts.error_rate", "must be in (0, 1]"));
        }
        for (name, v) in [
            ("alerts.spike_min_requests", self.spike_min_requests),
            ("alerts.baseline_minutes", self.baseline_minutes),
            ("alerts.error_window_minutes", self.error_window_minutes),
            ("alerts.error_min_requests", self.error_min_requests),
        ] {
            if v < 1 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if self.baseline_minutes > 7 * 24 * 60 || self.error_window_minutes > 24 * 60 {
            return Err(invalid(
                "alerts.baseline_minutes / alerts.error_window_minutes",
                "the baseline is at most 7 days and the error window at most 1 day (usage minutes are kept 7 days)",
            ));
        }
        Ok(())
    }

    /// The policy the management service evaluates.
    pub fn policy(&self) -> keyward_manage::AlertPolicy {
        keyward_manage::AlertPolicy {
            spike_factor: self.spike_factor,
            spike_min_requests: self.spike_min_requests,
            baseline_minutes: self.baseline_minutes,
            error_rate: self.error_rate,
            error_window_minutes: self.error_window_minutes,
            error_min_requests: self.error_min_requests,
            new_ip: self.new_ip,
            dormant_days: self.dormant_days,
            disable_dormant: self.disable_dormant,
            expiring_days: self.expiring_days,
            credits_low_threshold: self.credits_low_threshold,
            max_keys: self.max_keys,
        }
    }
}
