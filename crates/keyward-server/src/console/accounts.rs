//! Console accounts: creating users (the first operator from the CLI, the
//! others by invitation) and setting passwords.

use keyward_core::clock::Clock;
use keyward_core::id::new_id;
use keyward_core::secret::Entropy;
use keyward_store::{AuditEntry, Store, StoreError, User};
use serde_json::json;
use zeroize::Zeroizing;

use super::password::{self, PasswordError};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0:?} is not an email address")]
    Email(String),
    #[error("the name must be at most 200 printable characters")]
    Name,
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("a user with the email {0} already exists")]
    Taken(String),
    #[error("no user has the email {0}")]
    Unknown(String),
    #[error(transparent)]
    Store(StoreError),
}

/// Emails are compared lower-cased and trimmed.
pub fn normalize_email(s: &str) -> String {
    s.trim().to_lowercase()
}

/// A plausible address: one `@`, something on each side, a dot in the
/// domain, no spaces or control characters, at most 254 characters.
pub fn check_email(email: &str) -> Result<(), AccountError> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(AccountError::Email(email.to_owned()))
    }
}

pub fn check_name(name: &str) -> Result<(), AccountError> {
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        Err(AccountError::Name)
    } else {
        Ok(())
    }
}

/// A new user record with a hashed password (not yet stored).
pub async fn new_user(
    entropy: &dyn Entropy,
    now: i64,
    email: &str,
    name: &str,
    password: Zeroizing<String>,
    operator: bool,
) -> Result<User, AccountError> {
    let email = normalize_email(email);
    check_email(&email)?;
    let name = name.trim();
    check_name(name)?;
    password::check_policy(&password)?;
    let password_hash = password::hash(password, entropy).await?;
    Ok(User {
        id: new_id("usr", entropy).map_err(|_| PasswordError::Entropy)?,
        email,
        name: name.to_owned(),
        password_hash,
        operator,
        created_at: now,
        updated_at: now,
    })
}

/// Creates a user straight in the store (`keyward users create`).
pub async fn create_user(
    store: &dyn Store,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
    email: &str,
    name: &str,
    password: Zeroizing<String>,
    operator: bool,
) -> Result<User, AccountError> {
    let now = clock.now().0;
    let user = new_user(entropy, now, email, name, password, operator).await?;
    let audit = AuditEntry {
        id: new_id("evt", entropy).map_err(|_| PasswordError::Entropy)?,
        at: now,
        actor: "cli".into(),
        actor_ip: None,
        tenant_id: None,
        action: "user.created".into(),
        target: user.id.clone(),
        details: json!({ "email": user.email, "operator": user.operator }),
    };
    store
        .create_user(&user, &audit)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => AccountError::Taken(user.email.clone()),
            other => AccountError::Store(other),
        })?;
    Ok(user)
}

/// Sets a new password (`keyward users set-password`); ends the user's sessions.
pub async fn set_password(
    store: &dyn Store,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
    email: &str,
    password: Zeroizing<String>,
) -> Result<User, AccountError> {
    let email = normalize_email(email);
    let user = store
        .find_user_by_email(&email)
        .await
        .map_err(AccountError::Store)?
        .ok_or_else(|| AccountError::Unknown(email.clone()))?;
    let hash = password::hash(password, entropy).await?;
    let audit = AuditEntry {
        id: new_id("evt", entropy).map_err(|_| PasswordError::Entropy)?,
        at: clock.now().0,
        actor: "cli".into(),
        actor_ip: None,
        tenant_id: None,
        action: "user.password_set".into(),
        target: user.id.clone(),
        details: json!({}),
    };
    store
        .set_password(&user.id, &hash, &audit)
        .await
        .map_err(AccountError::Store)?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(check_email("a@b.co").is_ok());
        assert!(check_email("first.last+tag@example.com").is_ok());
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a@b.co.", "a b@c.co", "a@b@c.co",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_email("  Ann@Example.COM "), "ann@example.com");
    }
}
