//! The `[console]` section of keyward's configuration.

use serde::{Deserialize, Serialize};

/// A `[console]` setting out of range: which, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct InvalidSetting {
    pub setting: &'static str,
    pub message: &'static str,
}

/// The developer console's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console at `/console`.
    pub enabled: bool,
    /// Mark the session cookie `Secure` (and name it `__Host-…`). Browsers
    /// accept secure cookies over plain HTTP on `localhost` / `127.0.0.1`
    /// only; turn off only behind a proxy that cannot speak HTTPS.
    pub secure_cookies: bool,
    /// A session ends after this long without a request.
    pub session_idle_seconds: u64,
    /// A session ends this long after sign-in, whatever the activity.
    pub session_lifetime_seconds: u64,
    /// How long an invitation link works.
    pub invite_ttl_seconds: u64,
    /// Failed sign-ins allowed per account, then per client address, within
    /// `login_window_seconds`; past them sign-in is refused until the window ends.
    pub login_max_failures_per_account: u32,
    pub login_max_failures_per_ip: u32,
    pub login_window_seconds: u64,
    /// Public base URL (e.g. `https://keys.example.com`) for invitation links;
    /// default: the address the browser used.
    pub public_url: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> ConsoleConfig {
        ConsoleConfig {
            enabled: true,
            secure_cookies: true,
            session_idle_seconds: 30 * 60,
            session_lifetime_seconds: 12 * 3600,
            invite_ttl_seconds: 72 * 3600,
            login_max_failures_per_account: 5,
            login_max_failures_per_ip: 50,
            login_window_seconds: 15 * 60,
            public_url: None,
        }
    }
}

impl ConsoleConfig {
    /// Refuses out-of-range settings, naming the first.
    pub fn check(&self) -> Result<(), InvalidSetting> {
        let positive = [
            ("console.session_idle_seconds", self.session_idle_seconds),
            (
                "console.session_lifetime_seconds",
                self.session_lifetime_seconds,
            ),
            ("console.invite_ttl_seconds", self.invite_ttl_seconds),
            ("console.login_window_seconds", self.login_window_seconds),
            (
                "console.login_max_failures_per_account",
                u64::from(self.login_max_failures_per_account),
            ),
            (
                "console.login_max_failures_per_ip",
                u64::from(self.login_max_failures_per_ip),
            ),
        ];
        for (name, v) in positive {
            if v == 0 || v > 10 * 365 * 24 * 3600 {
                return Err(InvalidSetting {
                    setting: name,
                    message: "must be between 1 and 315360000",
                });
            }
        }
        if let Some(u) = &self.public_url {
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && !u.contains(['?', '#', ' '])
                && u.len() <= 512;
            if !ok {
                return Err(InvalidSetting {
                    setting: "console.public_url",
                    message: "must be a base URL such as https://keys.example.com",
                });
            }
        }
        Ok(())
    }
}
