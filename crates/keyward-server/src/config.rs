//! Configuration: a TOML file plus `KEYWARD_*` environment overrides, checked
//! once at start into [`Settings`]. Every error names the setting.
//!
//! Environment overrides map `KEYWARD_A__B` to the setting `a.b`
//! (`KEYWARD_LISTEN`, `KEYWARD_CACHE__TTL_SECONDS`, …). Values are read as
//! TOML (`30`, `true`, `["a", "b"]`) and otherwise taken as strings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use keyward_core::allowlist::IpAllowlist;
use keyward_core::scope::ScopeCatalog;
use keyward_core::secret::KeyFormat;
use serde::{Deserialize, Serialize};

mod events;
pub mod reference;

pub use events::{AlertsConfig, WebhooksConfig, DEFAULT_RETRY_SCHEDULE_MS};

/// Environment variables that belong to the CLI, not to the configuration.
const NOT_SETTINGS: &[&str] = &[
    "KEYWARD_CONFIG",
    "KEYWARD_URL",
    "KEYWARD_ROOT_KEY",
    "KEYWARD_LOG",
];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the embedded SQLite store lives.
    pub data_dir: PathBuf,
    /// `postgres://…` for many nodes; default `sqlite://<data_dir>/keyward.db`.
    pub store_url: Option<String>,
    /// `redis://…`: rate limits shared by every node (default: none, each
    /// node limits in memory, which is exact for one node).
    pub redis_url: Option<String>,
    /// How the Redis rate limiter behaves (key prefix, timeout, what a node
    /// does while Redis is away).
    pub redis: RedisConfig,
    pub log: LogConfig,
    pub keys: KeysConfig,
    pub cache: CacheConfig,
    pub usage: UsageConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    pub http: HttpConfig,
    pub errors: ErrorsConfig,
    /// Reverse-proxy settings for `[[routes]]`.
    pub gateway: GatewayConfig,
    /// Rate-limit tiers and the credits they refill.
    pub limits: LimitsConfig,
    /// How this node holds and settles credits.
    pub credits: CreditsConfig,
    /// Idempotent retries through the gateway.
    pub idempotency: IdempotencyConfig,
    /// Gateway routes: requests matching none of keyward's own paths are
    /// matched against these, in order.
    pub routes: Vec<RouteConfig>,
    /// The developer console at `/console`.
    pub console: ConsoleConfig,
    /// How this node hears of changes made on other nodes.
    pub changes: ChangesConfig,
    /// What leak reports do to keys, and who may send them.
    pub leaks: LeaksConfig,
    /// Signed event delivery to webhook endpoints.
    pub webhooks: WebhooksConfig,
    /// The alert checks (spikes, error rates, new addresses, dormant and
    /// expiring keys, low credits).
    pub alerts: AlertsConfig,
}

pub use keyward_limits::{CreditsConfig, LimitsConfig, TierConfig};
pub use keyward_redis::{FailurePolicy, RedisConfig};

pub use keyward_gateway::config::{
    GatewayConfig, IdempotencyConfig, IdempotencyMode, IdentityHeaders, RouteConfig,
    UpstreamProtocol,
};

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            store_url: None,
            redis_url: None,
            redis: RedisConfig::default(),
            log: LogConfig::default(),
            keys: KeysConfig::default(),
            cache: CacheConfig::default(),
            usage: UsageConfig::default(),
            metrics: MetricsConfig::default(),
            http: HttpConfig::default(),
            errors: ErrorsConfig::default(),
            gateway: GatewayConfig::default(),
            limits: LimitsConfig::default(),
            credits: CreditsConfig::default(),
            idempotency: IdempotencyConfig::default(),
            routes: Vec::new(),
            console: ConsoleConfig::default(),
            changes: ChangesConfig::default(),
            leaks: LeaksConfig::default(),
            webhooks: WebhooksConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `keyward_server=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

pub use keyward_verify::credential::Scheme;

/// One entry of `keys.scopes`: a scope's name (`"vox:read"`), or a table
/// with its name and a description the console shows beside its checkbox
/// (`{ name = "vox:read", description = "Read call records." }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ScopeDeclaration {
    Name(String),
    Described(DescribedScope),
}

/// `{ name = "vox:read", description = "Read call records." }` in `keys.scopes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DescribedScope {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ScopeDeclaration {
    pub fn name(&self) -> &str {
        match self {
            ScopeDeclaration::Name(n) => n,
            ScopeDeclaration::Described(d) => &d.name,
        }
    }

    pub fn description(&self) -> Option<&str> {
        match self {
            ScopeDeclaration::Name(_) => None,
            ScopeDeclaration::Described(d) => d.description.as_deref(),
        }
    }
}

impl From<&str> for ScopeDeclaration {
    fn from(name: &str) -> ScopeDeclaration {
        ScopeDeclaration::Name(name.to_owned())
    }
}

impl From<String> for ScopeDeclaration {
    fn from(name: String) -> ScopeDeclaration {
        ScopeDeclaration::Name(name)
    }
}

impl PartialEq<&str> for ScopeDeclaration {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other && self.description().is_none()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Environment name → secret prefix.
    pub environments: BTreeMap<String, String>,
    /// Prefix of operator root keys.
    pub root_prefix: String,
    /// The deployment's scope catalog, in the order the console shows it
    /// (keyward's own `keyward:*` scopes are always added): names, or
    /// `{ name = "vox:read", description = "…" }`.
    pub scopes: Vec<ScopeDeclaration>,
    /// Header for the `header` scheme.
    pub header: String,
    /// Which ways of presenting a key are accepted.
    pub schemes: Vec<Scheme>,
    /// Largest accepted key metadata, as serialized JSON bytes.
    pub metadata_max_bytes: usize,
}

impl Default for KeysConfig {
    fn default() -> KeysConfig {
        KeysConfig {
            environments: BTreeMap::from([
                ("live".to_owned(), "kw_live_".to_owned()),
                ("test".to_owned(), "kw_test_".to_owned()),
            ]),
            root_prefix: "kw_root_".into(),
            scopes: Vec::new(),
            header: "X-API-Key".into(),
            schemes: vec![Scheme::Bearer, Scheme::Header, Scheme::Basic],
            metadata_max_bytes: 4096,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long a known key is served from memory before it is re-read.
    /// Changes made on other nodes arrive through the change log first
    /// (`[changes]`); this is a bound of its own.
    pub ttl_seconds: u64,
    /// How long an unknown hash is remembered as unknown.
    pub negative_ttl_seconds: u64,
    /// Most known keys kept (size it above the keys in use on a node).
    pub capacity: usize,
    /// Most unknown hashes remembered (the negative cache), apart from
    /// `capacity`: unknown keys never evict known ones.
    pub negative_capacity: usize,
    /// Most distinct keys the cache does not know that may wait for a store
    /// read at once; beyond it such a request is answered 503 `overloaded`
    /// with `Retry-After: 1`. Keys the cache knows are never refused.
    pub max_pending_loads: usize,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            ttl_seconds: 30,
            negative_ttl_seconds: 5,
            capacity: 100_000,
            negative_capacity: 50_000,
            max_pending_loads: 10_000,
        }
    }
}

/// Every change that can make a cached key stale is written to the store's
/// change log in the change's own transaction; each node follows the log.
/// On PostgreSQL a live feed (`LISTEN/NOTIFY`) brings each change within
/// milliseconds; the log is also read every `poll_interval_ms`, which
/// catches anything a lost notice missed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangesConfig {
    /// How often the change log is read, whether or not notices arrive:
    /// the bound on propagation when a notice is lost.
    pub poll_interval_ms: u64,
    /// A node that could not read the change log for this long stops
    /// trusting its key cache: every request re-reads its key from the
    /// store (and is answered 503 while the store does not answer). No key
    /// revoked more than this long ago is ever served.
    pub max_silence_seconds: u64,
    /// Changes are kept this long (only a node away longer than
    /// `max_silence_seconds` needs old ones, and it drops its cache anyway).
    pub retain_hours: u64,
}

impl Default for ChangesConfig {
    fn default() -> ChangesConfig {
        ChangesConfig {
            poll_interval_ms: 1_000,
            max_silence_seconds: 10,
            retain_hours: 24,
        }
    }
}

pub use keyward_manage::LeakAction;

/// `[leaks]`: what a leak report does to the key it names (per
/// environment, per tenant), and the partner endpoints' credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaksConfig {
    /// Environment → action (`revoke`, `disable`, `flag`).
    pub environments: BTreeMap<String, LeakAction>,
    /// The action for keys of environments not listed (root keys: `root`).
    pub other_environments: LeakAction,
    /// Tenant id → environment → action, overriding the above.
    pub tenants: BTreeMap<String, BTreeMap<String, LeakAction>>,
    /// Accepted reports waiting for the policy worker; beyond it they wait
    /// in the store (pending) for the worker's next sweep.
    pub queue_capacity: usize,
    /// How often the worker looks for pending reports in the store.
    pub sweep_interval_seconds: u64,
    pub github: GithubLeaksConfig,
    pub gitlab: GitlabLeaksConfig,
}

impl Default for LeaksConfig {
    fn default() -> LeaksConfig {
        LeaksConfig {
            environments: BTreeMap::from([
                ("live".to_owned(), LeakAction::Revoke),
                ("test".to_owned(), LeakAction::Flag),
            ]),
            other_environments: LeakAction::Revoke,
            tenants: BTreeMap::new(),
            queue_capacity: 1024,
            sweep_interval_seconds: 60,
            github: GithubLeaksConfig::default(),
            gitlab: GitlabLeaksConfig::default(),
        }
    }
}

/// `[leaks.github]`: the public keys GitHub's partner reports are verified with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubLeaksConfig {
    /// A file in GitHub's JSON shape (`{"public_keys": [{"key_identifier", "key", "is_current"}]}`).
    pub public_keys_file: Option<PathBuf>,
    /// Keys given inline: `[{ key_identifier = "…", key = "-----BEGIN PUBLIC KEY-----…" }]`.
    pub public_keys: Vec<InlineKey>,
    /// A URL serving GitHub's JSON shape, fetched at start and every
    /// `refresh_seconds` (plain `http://`: keyward has no TLS client).
    pub public_keys_url: Option<String>,
    /// Longest wait for the URL.
    pub fetch_timeout_ms: u64,
    /// How often the file and the URL are read again.
    pub refresh_seconds: u64,
}

impl Default for GithubLeaksConfig {
    fn default() -> GithubLeaksConfig {
        GithubLeaksConfig {
            public_keys_file: None,
            public_keys: Vec::new(),
            public_keys_url: None,
            fetch_timeout_ms: 5_000,
            refresh_seconds: 3_600,
        }
    }
}

/// One inline public key of `[leaks.github] public_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InlineKey {
    pub key_identifier: String,
    /// PEM (`-----BEGIN PUBLIC KEY-----`), P-256.
    pub key: String,
}

/// `[leaks.gitlab]`: GitLab's token revocation API.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitlabLeaksConfig {
    /// The token GitLab sends in `Authorization` (`secret_detection_token_revocation_token`).
    pub token: Option<String>,
}

impl LeaksConfig {
    /// The management service's leak policy.
    pub fn policy(&self) -> keyward_manage::LeakPolicy {
        keyward_manage::LeakPolicy {
            environments: self.environments.clone(),
            other_environments: self.other_environments,
            tenants: self.tenants.clone(),
        }
    }

    /// The GitHub keys of the file and the inline list (not the URL's).
    pub fn local_github_keys(&self) -> Result<keyward_api::leaks::PartnerKeys, ConfigError> {
        let g = &self.github;
        let mut keys = keyward_api::leaks::PartnerKeys::default();
        if let Some(path) = &g.public_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "leaks.github.public_keys_file",
                    format!("{}: {e}", path.display()),
                )
            })?;
            keys.add_github_json(&text)
                .map_err(|e| invalid("leaks.github.public_keys_file", e))?;
        }
        for k in &g.public_keys {
            keys.add_pem(&k.key_identifier, &k.key)
                .map_err(|e| invalid("leaks.github.public_keys", e))?;
        }
        Ok(keys)
    }

    fn check(&self, environments: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let known = |e: &str| e == "root" || environments.contains_key(e);
        // The defaults name `live` and `test`, which a deployment with
        // other environments does not have: those entries are left alone
        // (they match no key); any other unknown name is a mistake.
        let defaults = LeaksConfig::default().environments;
        if let Some(e) = self
            .environments
            .iter()
            .find(|(e, a)| !known(e) && defaults.get(*e) != Some(*a))
            .map(|(e, _)| e)
        {
            return Err(invalid(
                "leaks.environments",
                format!("{e:?} is not an environment of keys.environments (or root)"),
            ));
        }
        for (tenant, envs) in &self.tenants {
            if let Some(e) = envs.keys().find(|e| !known(e)) {
                return Err(invalid(
                    format!("leaks.tenants.{tenant}"),
                    format!("{e:?} is not an environment of keys.environments (or root)"),
                ));
            }
        }
        if self.queue_capacity == 0 {
            return Err(invalid("leaks.queue_capacity", "must be at least 1"));
        }
        if self.sweep_interval_seconds == 0 {
            return Err(invalid(
                "leaks.sweep_interval_seconds",
                "must be at least 1",
            ));
        }
        let g = &self.github;
        if let Some(url) = &g.public_keys_url {
            if !url.starts_with("http://") {
                return Err(invalid(
                    "leaks.github.public_keys_url",
                    "must be an http:// URL (keyward has no TLS client: serve GitHub's keys from a local mirror, or use public_keys_file)",
                ));
            }
        }
        if !(1..=60_000).contains(&g.fetch_timeout_ms) {
            return Err(invalid(
                "leaks.github.fetch_timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        if g.refresh_seconds == 0 {
            return Err(invalid(
                "leaks.github.refresh_seconds",
                "must be at least 1",
            ));
        }
        if self.gitlab.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(invalid(
                "leaks.gitlab.token",
                "must be at least 16 characters",
            ));
        }
        self.local_github_keys().map(|_| ())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Count usage per key, tenant header, route and outcome.
    pub enabled: bool,
    /// How often `last_used_at` / `last_used_ip` are written, in
    /// milliseconds.
    pub flush_interval_ms: u64,
    /// How often usage counts are added to the store, in milliseconds.
    pub counts_interval_ms: u64,
    /// A key's last use is rewritten at most this often (unless its client
    /// address changed), so busy keys do not turn into a write per flush.
    pub last_used_resolution_seconds: u64,
    /// Distinct series (key, tenant header, route, outcome, minute) held
    /// between two flushes; requests past it are counted as overflow.
    pub max_series: usize,
    /// Distinct (key, client address) pairs held between two flushes.
    pub max_ips: usize,
    /// Client addresses kept per key (the most recently seen).
    pub max_ips_per_key: u32,
    /// How long per-minute counts are kept, in days.
    pub retain_minutes_days: u64,
    /// How long per-hour counts are kept, in days.
    pub retain_hours_days: u64,
    /// How long per-day counts (and client addresses) are kept, in days.
    pub retain_days_days: u64,
    /// How often counts past their retention are deleted, in seconds.
    pub prune_interval_seconds: u64,
}

impl Default for UsageConfig {
    fn default() -> UsageConfig {
        UsageConfig {
            enabled: true,
            flush_interval_ms: 1000,
            counts_interval_ms: 10_000,
            last_used_resolution_seconds: 60,
            max_series: 50_000,
            max_ips: 50_000,
            max_ips_per_key: 100,
            retain_minutes_days: 7,
            retain_hours_days: 90,
            retain_days_days: 730,
            prune_interval_seconds: 600,
        }
    }
}

impl UsageConfig {
    pub fn retention(&self) -> keyward_store::UsageRetention {
        let ms = |days: u64| i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        keyward_store::UsageRetention {
            minutes: ms(self.retain_minutes_days),
            hours: ms(self.retain_hours_days),
            days: ms(self.retain_days_days),
        }
    }

    pub fn limits(&self) -> keyward_observe::UsageLimits {
        keyward_observe::UsageLimits {
            max_series: self.max_series,
            max_ips: self.max_ips,
            max_ips_per_key: self.max_ips_per_key,
        }
    }
}

/// `[metrics]`: Prometheus metrics.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve metrics (and count them).
    pub enabled: bool,
    /// The path they are served at.
    pub path: String,
    /// A bearer token a scrape must present (`Authorization: Bearer …`);
    /// none: open to whoever reaches the address.
    pub token: Option<String>,
    /// Serve them on this address of their own instead of the main
    /// listener.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            enabled: false,
            path: "/metrics".into(),
            token: None,
            listen: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs).
    pub trusted_proxies: Vec<String>,
    /// Threads serving connections, each with its own event loop and its
    /// own accept loop on the listener (0: one per CPU).
    pub workers: usize,
    /// A request head must be complete this long after its first byte (on
    /// a new connection: after the connection opened). Past it, a partly
    /// sent head is answered 408 `request_timeout` and the connection
    /// closes; a new connection that sent nothing is closed.
    pub header_read_timeout_ms: u64,
    /// Longest wait for the next byte of a request body; past it the
    /// request is answered 408 `request_timeout` and the connection closes.
    pub body_read_timeout_ms: u64,
    /// An idle connection between requests (a response finished, no byte
    /// of the next request yet) is closed after this.
    pub keep_alive_timeout_ms: u64,
    /// Most client connections open at once on this node; more are
    /// answered 503 `overloaded` and closed. 0: sized from the process's
    /// open-file limit (a larger value is lowered to that size).
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            workers: 0,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            keep_alive_timeout_ms: 60_000,
            max_connections: 0,
        }
    }
}

pub use keyward_http::error::{CodeCase, ErrorStyle, ErrorsConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid setting {setting}: {message}")]
    Invalid { setting: String, message: String },
}

impl From<keyward_gateway::PolicyError> for ConfigError {
    fn from(e: keyward_gateway::PolicyError) -> ConfigError {
        ConfigError::Invalid {
            setting: e.setting,
            message: e.message,
        }
    }
}

impl From<keyward_limits::TierError> for ConfigError {
    fn from(e: keyward_limits::TierError) -> ConfigError {
        ConfigError::Invalid {
            setting: e.setting,
            message: e.message,
        }
    }
}

pub(crate) fn invalid(setting: impl Into<String>, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        message: message.to_string(),
    }
}

impl Config {
    /// Reads `path` (if any), applies `KEYWARD_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let mut doc: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(file_error(path, &e)))?;
        // The file alone first, so that its errors point at its own lines.
        toml::from_str::<Config>(&text).map_err(|e| {
            match e.span().and_then(|span| setting_at(&text, span.start)) {
                Some(setting) => invalid(setting, file_error(path, &e)),
                None => ConfigError::Parse(file_error(path, &e)),
            }
        })?;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| {
                name.starts_with("KEYWARD_")
                    && !NOT_SETTINGS.contains(&name.as_str())
                    && !name.starts_with("KEYWARD_TEST_")
            })
            .collect();
        vars.sort();
        for (name, value) in vars {
            let Some(setting) = name.strip_prefix("KEYWARD_") else {
                continue;
            };
            let path: Vec<String> = setting.split("__").map(str::to_ascii_lowercase).collect();
            let named = || format!("{name} ({})", path.join("."));
            set_path(&mut doc, &path, parse_env_value(&value)).map_err(|m| invalid(named(), m))?;
            // Each variable is checked as it is applied, so an error names
            // the variable that caused it, not a line of a merged document.
            Config::deserialize(toml::Value::Table(doc.clone()))
                .map_err(|e| invalid(named(), e.message()))?;
        }
        Config::deserialize(toml::Value::Table(doc)).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// The store URL in effect.
    pub fn effective_store_url(&self) -> String {
        match &self.store_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("keyward.db").display()),
        }
    }
}

/// The dotted name of the setting written on the line holding byte `at` of
/// a TOML file (`cache.ttl_seconds`), read from that line's key and the
/// table header above it; `None` where the line holds no `key = value`.
fn setting_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| {
            let array = h.starts_with("[[");
            let name = h.trim_matches(|c| c == '[' || c == ']').trim();
            if array {
                format!("{name}[]")
            } else {
                name.to_owned()
            }
        });
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_owned(),
    })
}

fn file_error(path: Option<&Path>, e: &toml::de::Error) -> String {
    match path {
        Some(p) => format!("{}: {e}", p.display()),
        None => e.to_string(),
    }
}

fn parse_env_value(v: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct Probe {
        v: toml::Value,
    }
    match toml::from_str::<Probe>(&format!("v = {v}")) {
        Ok(p) => p.v,
        Err(_) => toml::Value::String(v.to_owned()),
    }
}

fn set_path(doc: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty setting name".into());
    };
    let mut table = doc;
    for p in parents {
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a table"))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// The checked, ready-to-use form of [`Config`]. The request policy
/// (routes, tiers, gateway settings) is compiled from it by
/// [`Settings::policy`], which checks those sections.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub format: KeyFormat,
    /// Where keys are looked for (the header's name, the format).
    pub credentials: keyward_verify::credential::CredentialRules,
    pub catalog: ScopeCatalog,
    pub trusted_proxies: Vec<IpNet>,
}

impl Settings {
    pub fn from_config(mut config: Config) -> Result<Settings, ConfigError> {
        config.errors.accepted = keyward_http::error::Accepted {
            bearer: config.keys.schemes.contains(&Scheme::Bearer),
            basic: config.keys.schemes.contains(&Scheme::Basic),
            header: config
                .keys
                .schemes
                .contains(&Scheme::Header)
                .then(|| config.keys.header.clone()),
        };
        if let Some(url) = &config.store_url {
            if !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return Err(invalid(
                    "store_url",
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        if let Some(url) = &config.redis_url {
            if !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                // The URL is not repeated: it may hold a password.
                return Err(invalid("redis_url", "must start with redis://"));
            }
        }
        if config.redis.timeout_ms == 0 {
            return Err(invalid("redis.timeout_ms", "must be at least 1"));
        }
        let k = &config.keys;
        if k.environments.is_empty() {
            return Err(invalid(
                "keys.environments",
                "at least one environment is needed",
            ));
        }
        let format = KeyFormat::new(
            k.environments.iter().map(|(e, p)| (e.as_str(), p.as_str())),
            &k.root_prefix,
        )
        .map_err(|e| invalid("keys.environments / keys.root_prefix", e))?;
        let catalog = ScopeCatalog::described(k.scopes.iter().map(|d| (d.name(), d.description())))
            .map_err(|e| invalid("keys.scopes", e))?;
        if k.schemes.is_empty() {
            return Err(invalid(
                "keys.schemes",
                "at least one of bearer, header, basic is needed",
            ));
        }
        if axum::http::HeaderName::from_bytes(k.header.as_bytes()).is_err() {
            return Err(invalid(
                "keys.header",
                format!("{:?} is not a valid header name", k.header),
            ));
        }
        let trusted_proxies = IpAllowlist::parse(&config.http.trusted_proxies)
            .map_err(|e| invalid("http.trusted_proxies", e))?
            .entries()
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if config.cache.capacity == 0 {
            return Err(invalid("cache.capacity", "must be at least 1"));
        }
        if config.cache.negative_capacity == 0 {
            return Err(invalid("cache.negative_capacity", "must be at least 1"));
        }
        if config.cache.max_pending_loads == 0 {
            return Err(invalid("cache.max_pending_loads", "must be at least 1"));
        }
        let ch = &config.changes;
        if ch.poll_interval_ms == 0 {
            return Err(invalid("changes.poll_interval_ms", "must be at least 1"));
        }
        if ch.max_silence_seconds.saturating_mul(1000) <= ch.poll_interval_ms {
            return Err(invalid(
                "changes.max_silence_seconds",
                "must be longer than changes.poll_interval_ms (a node would distrust its cache between two reads)",
            ));
        }
        if ch.retain_hours == 0 || ch.retain_hours.saturating_mul(3600) <= ch.max_silence_seconds {
            return Err(invalid(
                "changes.retain_hours",
                "must keep changes longer than changes.max_silence_seconds",
            ));
        }
        let u = &config.usage;
        if u.flush_interval_ms == 0 {
            return Err(invalid("usage.flush_interval_ms", "must be at least 1"));
        }
        for (name, v) in [
            ("usage.counts_interval_ms", u.counts_interval_ms),
            ("usage.max_series", u.max_series as u64),
            ("usage.max_ips", u.max_ips as u64),
            ("usage.max_ips_per_key", u64::from(u.max_ips_per_key)),
            ("usage.retain_minutes_days", u.retain_minutes_days),
            ("usage.prune_interval_seconds", u.prune_interval_seconds),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if u.retain_hours_days < u.retain_minutes_days || u.retain_days_days < u.retain_hours_days {
            return Err(invalid(
                "usage.retain_hours_days",
                "retentions must not shrink from minutes to hours to days",
            ));
        }
        let m = &config.metrics;
        if !m.path.starts_with('/') || m.path.len() < 2 {
            return Err(invalid("metrics.path", "must be a path such as /metrics"));
        }
        if m.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(invalid("metrics.token", "must be at least 16 characters"));
        }
        if config.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        for (name, ms) in [
            (
                "http.header_read_timeout_ms",
                config.http.header_read_timeout_ms,
            ),
            (
                "http.body_read_timeout_ms",
                config.http.body_read_timeout_ms,
            ),
            (
                "http.keep_alive_timeout_ms",
                config.http.keep_alive_timeout_ms,
            ),
        ] {
            // A day at most: deadlines are instants, and a timeout is a bound.
            if !(1..=86_400_000).contains(&ms) {
                return Err(invalid(name, "must be between 1 and 86400000 (a day)"));
            }
        }
        let c = &config.credits;
        if c.settle_interval_ms == 0 {
            return Err(invalid("credits.settle_interval_ms", "must be at least 1"));
        }
        if c.max_reservation < 1 {
            return Err(invalid("credits.max_reservation", "must be at least 1"));
        }
        if c.stale_seconds > 0 && c.stale_seconds.saturating_mul(1000) < 4 * c.settle_interval_ms {
            return Err(invalid(
                "credits.stale_seconds",
                "must be at least four settle intervals, or live nodes would look stopped",
            ));
        }
        if c.reclaim_wait_ms > 10_000 {
            return Err(invalid(
                "credits.reclaim_wait_ms",
                "must be at most 10000: a request waits this long before it is refused",
            ));
        }
        if let Some(n) = &c.node_id {
            if n.is_empty() || n.len() > 64 || n.chars().any(char::is_control) {
                return Err(invalid(
                    "credits.node_id",
                    "must be 1 to 64 printable characters",
                ));
            }
        }
        let i = &config.idempotency;
        if i.ttl_seconds == 0 {
            return Err(invalid("idempotency.ttl_seconds", "must be at least 1"));
        }
        if i.lock_seconds.saturating_mul(1000) < config.gateway.timeout_ms {
            return Err(invalid(
                "idempotency.lock_seconds",
                format!(
                    "must be at least the gateway timeout ({} ms), or a slow request could run twice",
                    config.gateway.timeout_ms
                ),
            ));
        }
        if i.max_records_per_key == 0 {
            return Err(invalid(
                "idempotency.max_records_per_key",
                "must be at least 1",
            ));
        }
        if i.purge_interval_seconds == 0 {
            return Err(invalid(
                "idempotency.purge_interval_seconds",
                "must be at least 1",
            ));
        }
        for m in &i.methods {
            if axum::http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() {
                return Err(invalid(
                    "idempotency.methods",
                    format!("{m:?} is not an HTTP method"),
                ));
            }
        }
        for h in &i.replay_headers {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(invalid(
                    "idempotency.replay_headers",
                    format!("{h:?} is not a valid header name"),
                ));
            }
        }
        config
            .console
            .check()
            .map_err(|e| invalid(e.setting, e.message))?;
        config.leaks.check(&config.keys.environments)?;
        config.webhooks.check()?;
        config.alerts.check()?;
        let credentials = keyward_verify::credential::CredentialRules {
            header: config.keys.header.clone(),
            format: format.clone(),
        };
        Ok(Settings {
            config,
            format,
            credentials,
            catalog,
            trusted_proxies,
        })
    }
}

impl Settings {
    /// Compiles the request policy of these settings (`[[routes]]`,
    /// `[gateway]`, `[limits]`, `[idempotency]`, checked against the key
    /// environments, scopes and header): an error names the setting.
    pub fn policy(&self) -> Result<keyward_gateway::Policy, ConfigError> {
        let c = &self.config;
        Ok(keyward_gateway::Policy::compile(
            &keyward_gateway::PolicyConfig {
                gateway: &c.gateway,
                routes: &c.routes,
                limits: &c.limits,
                idempotency: &c.idempotency,
                catalog: &self.catalog,
                environments: &c.keys.environments,
                key_header: &c.keys.header,
            },
        )?)
    }
}

/// Settings a reload (`SIGHUP`) swaps in: `[[routes]]`, `[gateway]`, the
/// tiers of `[limits]` and `[idempotency]` (each with everything below it).
/// Everything else needs a restart.
const RELOADABLE: [&str; 4] = ["routes", "gateway", "limits.tiers", "idempotency"];

/// Exceptions inside [`RELOADABLE`]: read once at start.
const RESTART_ONLY: [&str; 1] = ["idempotency.purge_interval_seconds"];

impl Config {
    /// The settings that differ between `self` (the running configuration)
    /// and `new` and that only a restart can change (listen address, store,
    /// workers, HTTP timeouts, caches, keys, console, `limits.default_tier`,
    /// …), by name (`http.workers`), in order. Empty if `new` may be
    /// reloaded.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<String> {
        let (Ok(old), Ok(new)) = (serde_json::to_value(self), serde_json::to_value(new)) else {
            return vec!["(the configuration could not be compared)".into()];
        };
        let mut changed = Vec::new();
        differences("", &old, &new, &mut changed);
        changed.retain(|name| {
            let under = |p: &str| {
                name == p
                    || name
                        .strip_prefix(p)
                        .is_some_and(|rest| rest.starts_with('.'))
            };
            RESTART_ONLY.iter().any(|p| under(p)) || !RELOADABLE.iter().any(|p| under(p))
        });
        changed
    }
}

/// The dotted names of the leaves that differ between `a` and `b` (tables
/// are descended into; any other value is compared whole).
fn differences(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match (a.get(name), b.get(name)) {
                    (Some(x), Some(y)) => differences(&path, x, y, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

/// The `[console]` section lives with the console.
pub use keyward_console::ConsoleConfig;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_work_with_nothing() {
        let c = Config::load(None, env(&[])).unwrap();
        let s = Settings::from_config(c).unwrap();
        assert_eq!(s.config.listen.port(), 8080);
        assert!(s.config.effective_store_url().ends_with("data/keyward.db"));
    }

    #[test]
    fn environment_overrides_nested_settings() {
        let c = Config::load(
            None,
            env(&[
                ("KEYWARD_LISTEN", "0.0.0.0:9000"),
                ("KEYWARD_CACHE__TTL_SECONDS", "7"),
                ("KEYWARD_KEYS__SCOPES", r#"["vox:read"]"#),
                ("KEYWARD_ROOT_KEY", "ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.cache.ttl_seconds, 7);
        assert_eq!(c.keys.scopes, vec!["vox:read"]);
    }

    #[test]
    fn connection_timeouts_have_safe_defaults_and_bounds() {
        let h = HttpConfig::default();
        assert_eq!(
            (
                h.header_read_timeout_ms,
                h.body_read_timeout_ms,
                h.keep_alive_timeout_ms,
                h.max_connections
            ),
            (10_000, 30_000, 60_000, 0)
        );
        for (var, setting) in [
            (
                "KEYWARD_HTTP__HEADER_READ_TIMEOUT_MS",
                "http.header_read_timeout_ms",
            ),
            (
                "KEYWARD_HTTP__BODY_READ_TIMEOUT_MS",
                "http.body_read_timeout_ms",
            ),
            (
                "KEYWARD_HTTP__KEEP_ALIVE_TIMEOUT_MS",
                "http.keep_alive_timeout_ms",
            ),
        ] {
            for bad in ["0", "86400001"] {
                let c = Config::load(None, env(&[(var, bad)])).unwrap();
                let e = Settings::from_config(c).unwrap_err();
                assert!(e.to_string().contains(setting), "{e}");
            }
            let c = Config::load(None, env(&[(var, "1")])).unwrap();
            assert!(Settings::from_config(c).is_ok());
        }
    }

    #[test]
    fn scopes_are_names_or_described_tables_in_order() {
        let dir = std::env::temp_dir().join(format!("kw-scopes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keyward.toml");
        std::fs::write(
            &file,
            r#"
[keys]
scopes = [
  "vox:write",
  { name = "vox:read", description = "Read call records." },
  { name = "vox:admin" },
]
"#,
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.keys.scopes[0], "vox:write");
        assert_eq!(c.keys.scopes[1].name(), "vox:read");
        assert_eq!(c.keys.scopes[1].description(), Some("Read call records."));
        assert_eq!(c.keys.scopes[2].description(), None);
        let settings = Settings::from_config(c).unwrap();
        let entries = settings.catalog.entries();
        assert_eq!(
            entries[..3]
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["vox:write", "vox:read", "vox:admin"]
        );
        assert_eq!(
            entries[1].description.as_deref(),
            Some("Read call records.")
        );

        std::fs::write(
            &file,
            "[keys]\nscopes = [{ name = \"vox:read\", descripton = \"typo\" }]\n",
        )
        .unwrap();
        let e = Config::load(Some(&file), env(&[])).unwrap_err();
        assert!(e.to_string().contains("scopes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let e = Config::load(None, env(&[("KEYWARD_CACHE__TTL_SECONDS", "soon")])).unwrap_err();
        assert!(
            e.to_string().contains(
                "invalid setting KEYWARD_CACHE__TTL_SECONDS (cache.ttl_seconds): invalid type: string \"soon\""
            ),
            "{e}"
        );
        assert!(!e.to_string().contains("TOML parse error"), "{e}");
        let e = Config::load(None, env(&[("KEYWARD_NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("KEYWARD_NOPE (nope)"), "{e}");
        let dir = std::env::temp_dir().join(format!("keyward-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[cache]\n# why\nttl_seconds = \"soon\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&file), env(&[])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid setting cache.ttl_seconds: "),
            "{e}"
        );
        assert!(e.to_string().contains("line 4"), "{e}");
        std::fs::write(&file, "[[routes]]\npath = \"/x\"\ncost = -1\n").unwrap();
        let e = Config::load(Some(&file), env(&[])).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid setting routes[].cost: "),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Config::default();
        c.keys.scopes = vec!["bad scope".into()];
        let e = Settings::from_config(c).unwrap_err();
        assert!(e.to_string().contains("keys.scopes"), "{e}");
        let mut c = Config::default();
        c.http.trusted_proxies = vec!["10.0.0.0/33".into()];
        assert!(Settings::from_config(c)
            .unwrap_err()
            .to_string()
            .contains("http.trusted_proxies"));
        let mut c = Config::default();
        assert_eq!(c.credits.reclaim_wait_ms, 500);
        c.credits.reclaim_wait_ms = 10_001;
        assert!(Settings::from_config(c)
            .unwrap_err()
            .to_string()
            .contains("credits.reclaim_wait_ms"));
    }

    #[test]
    fn leak_policy_names_configured_environments() {
        // The defaults hold with environments of the deployment's own.
        let mut c = Config::default();
        c.keys.environments = [("prod".to_owned(), "acme_prod_".to_owned())].into();
        assert!(Settings::from_config(c.clone()).is_ok());
        c.leaks
            .environments
            .insert("prd".into(), LeakAction::Disable);
        let e = Settings::from_config(c.clone()).unwrap_err();
        assert!(e.to_string().contains("leaks.environments"), "{e}");
        c.leaks.environments.remove("prd");
        c.leaks.tenants.insert(
            "acme".into(),
            [("live".to_owned(), LeakAction::Flag)].into(),
        );
        let e = Settings::from_config(c).unwrap_err();
        assert!(e.to_string().contains("leaks.tenants.acme"), "{e}");
        let mut c = Config::default();
        c.leaks.gitlab.token = Some("short".into());
        assert!(Settings::from_config(c)
            .unwrap_err()
            .to_string()
            .contains("leaks.gitlab.token"));
        let mut c = Config::default();
        c.leaks.github.public_keys_url = Some("https://api.github.com/x".into());
        assert!(Settings::from_config(c)
            .unwrap_err()
            .to_string()
            .contains("leaks.github.public_keys_url"));
        let mut c = Config::default();
        c.leaks.github.public_keys = vec![InlineKey {
            key_identifier: "k".into(),
            key: "not a key".into(),
        }];
        assert!(Settings::from_config(c)
            .unwrap_err()
            .to_string()
            .contains("leaks.github.public_keys"));
    }

    #[test]
    fn a_reload_may_change_routes_gateway_tiers_and_idempotency_only() {
        let old = Config::default();
        let mut new = old.clone();
        new.gateway.fast_path = false;
        new.gateway.upstream = Some("http://127.0.0.1:1".into());
        new.idempotency.methods = vec!["PUT".into()];
        new.limits.tiers.insert(
            "free".into(),
            TierConfig {
                limit: 1,
                window_seconds: 1,
                burst: None,
                refill: None,
            },
        );
        assert!(old.restart_only_changes(&new).is_empty());
        new.http.workers = 3;
        new.cache.capacity = 7;
        new.listen = "127.0.0.1:1".parse().unwrap();
        new.limits.default_tier = Some("free".into());
        new.idempotency.purge_interval_seconds = 1;
        assert_eq!(
            old.restart_only_changes(&new),
            [
                "cache.capacity",
                "http.workers",
                "idempotency.purge_interval_seconds",
                "limits.default_tier",
                "listen"
            ]
        );
    }
}
