//! Password hashing: argon2id with the OWASP-recommended parameters
//! (19 MiB, 2 passes, 1 lane), stored as PHC strings. Hashing and checking
//! take tens of milliseconds on purpose, so callers run them on the blocking
//! pool ([`hash`], [`verify`]), never on a request's async task.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use keyward_core::secret::Entropy;
use zeroize::Zeroizing;

/// Shortest password accepted.
pub const MIN_LEN: usize = 10;
/// Longest password accepted (argon2 takes any length; this bounds the work).
pub const MAX_LEN: usize = 1024;

fn argon2() -> Argon2<'static> {
    // Params::DEFAULT is m=19456 KiB, t=2, p=1: the OWASP recommendation.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be {MIN_LEN} to {MAX_LEN} characters")]
    Length,
    #[error("the operating system's random number generator failed")]
    Entropy,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Checks a new password against the policy: length only (NIST SP 800-63B:
/// no composition rules, which push people to predictable patterns).
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    let n = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&n) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
}

/// Hashes `password` with a fresh 16-byte salt; returns the PHC string.
pub async fn hash(
    password: Zeroizing<String>,
    entropy: &dyn Entropy,
) -> Result<String, PasswordError> {
    check_policy(&password)?;
    let mut salt = [0u8; 16];
    entropy
        .fill(&mut salt)
        .map_err(|_| PasswordError::Entropy)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| PasswordError::Hash(e.to_string()))?
}

/// A hash of a password nobody knows: checked when the account does not
/// exist, so that an unknown email takes as long as a wrong password.
static DUMMY: LazyLock<Option<String>> = LazyLock::new(|| {
    let salt = SaltString::encode_b64(b"keyward-dummy-salt").ok()?;
    argon2()
        .hash_password(b"no account has this password", &salt)
        .ok()
        .map(|h| h.to_string())
});

/// Whether `password` matches the PHC string `stored` (or, with `None`,
/// spends the same time and answers false).
pub async fn verify(password: Zeroizing<String>, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let against = match &stored {
            Some(s) => s.as_str(),
            None => match DUMMY.as_deref() {
                Some(d) => d,
                None => return false,
            },
        };
        let Ok(parsed) = PasswordHash::new(against) else {
            tracing::error!("A stored password hash cannot be parsed.");
            return false;
        };
        let ok = argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && stored.is_some()
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::secret::OsEntropy;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let a = hash(Zeroizing::new("correct horse battery".into()), &OsEntropy)
            .await
            .unwrap();
        let b = hash(Zeroizing::new("correct horse battery".into()), &OsEntropy)
            .await
            .unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(
            verify(
                Zeroizing::new("correct horse battery".into()),
                Some(a.clone())
            )
            .await
        );
        assert!(!verify(Zeroizing::new("correct horse battery!".into()), Some(a)).await);
        assert!(!verify(Zeroizing::new("anything at all".into()), None).await);
        assert!(hash(Zeroizing::new("short".into()), &OsEntropy)
            .await
            .is_err());
    }
}
