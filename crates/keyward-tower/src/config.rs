//! What the layer must know of the keyward deployment it checks keys for:
//! the key format (to parse keys and to spot them where they do not
//! belong), the API-key header, the accepted schemes, the trusted proxies
//! and the error style. [`DeploymentConfig`] reads these from the same
//! sections of a `keyward.toml` as the server (`[keys]`, `[http]`,
//! `[errors]`, and for the embedded backend `[cache]`, `[limits]`,
//! `[changes]`, `store_url`); other sections are ignored.

use std::collections::BTreeMap;

use ipnet::IpNet;
use keyward_core::allowlist::IpAllowlist;
use keyward_core::secret::KeyFormat;
use keyward_http::error::{Accepted, ErrorsConfig};
use keyward_limits::LimitsConfig;
use keyward_verify::credential::{CredentialRules, Scheme};
use serde::Deserialize;

/// A setting that does not hold, named as in `keyward.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

fn invalid(setting: &'static str, message: impl ToString) -> ConfigError {
    ConfigError {
        setting,
        message: message.to_string(),
    }
}

/// The deployment's settings as written (defaults: keyward's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeploymentConfig {
    /// The embedded backend's store (`sqlite://…` or `postgres://…`).
    pub store_url: Option<String>,
    pub keys: KeysSection,
    pub http: HttpSection,
    pub errors: ErrorsConfig,
    pub cache: CacheSection,
    pub limits: LimitsConfig,
    pub changes: ChangesSection,
}

/// `[keys]`: the parts the layer reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KeysSection {
    pub environments: BTreeMap<String, String>,
    pub root_prefix: String,
    pub header: String,
    pub schemes: Vec<Scheme>,
}

impl Default for KeysSection {
    fn default() -> KeysSection {
        KeysSection {
            environments: BTreeMap::from([
                ("live".to_owned(), "kw_live_".to_owned()),
                ("test".to_owned(), "kw_test_".to_owned()),
            ]),
            root_prefix: "kw_root_".into(),
            header: "X-API-Key".into(),
            schemes: vec![Scheme::Bearer, Scheme::Header, Scheme::Basic],
        }
    }
}

/// `[http]`: the proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpSection {
    pub trusted_proxies: Vec<String>,
}

/// `[cache]`: the key cache of the embedded backend (the server's meaning).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CacheSection {
    pub ttl_seconds: u64,
    pub negative_ttl_seconds: u64,
    pub capacity: usize,
    pub negative_capacity: usize,
    pub max_pending_loads: usize,
}

impl Default for CacheSection {
    fn default() -> CacheSection {
        CacheSection {
            ttl_seconds: 60,
            negative_ttl_seconds: 5,
            capacity: 100_000,
            negative_capacity: 100_000,
            max_pending_loads: 1_024,
        }
    }
}

/// `[changes]`: how the embedded backend follows the change log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ChangesSection {
    pub poll_interval_ms: u64,
    pub max_silence_seconds: u64,
}

impl Default for ChangesSection {
    fn default() -> ChangesSection {
        ChangesSection {
            poll_interval_ms: 1_000,
            max_silence_seconds: 10,
        }
    }
}

/// The deployment, checked and ready for the layer.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub(crate) config: DeploymentConfig,
    pub(crate) credentials: CredentialRules,
    pub(crate) schemes: Vec<Scheme>,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) errors: ErrorsConfig,
}

impl Deployment {
    pub fn new(mut config: DeploymentConfig) -> Result<Deployment, ConfigError> {
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
        if k.schemes.is_empty() {
            return Err(invalid(
                "keys.schemes",
                "at least one of bearer, header, basic is needed",
            ));
        }
        if http::HeaderName::from_bytes(k.header.as_bytes()).is_err() {
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
        // 401 challenges and hints name the ways this deployment takes keys.
        config.errors.accepted = Accepted {
            bearer: k.schemes.contains(&Scheme::Bearer),
            basic: k.schemes.contains(&Scheme::Basic),
            header: k
                .schemes
                .contains(&Scheme::Header)
                .then(|| k.header.clone()),
        };
        Ok(Deployment {
            credentials: CredentialRules {
                header: k.header.clone(),
                format,
            },
            schemes: k.schemes.clone(),
            trusted_proxies,
            errors: config.errors.clone(),
            config,
        })
    }

    pub fn config(&self) -> &DeploymentConfig {
        &self.config
    }

    pub fn errors(&self) -> &ErrorsConfig {
        &self.errors
    }
}
