//! Console accounts: creating users (the first operator from the CLI, the
//! others by invitation) and setting passwords.

use keyward_core::secret::Entropy;
use keyward_manage::{Actor, ManageError, ManageService, NewUser};
use keyward_store::User;
use zeroize::Zeroizing;

use super::password;
pub use super::password::PasswordError;

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
    Manage(ManageError),
}

/// Emails are compared lower-cased and trimmed.
pub fn normalize_email(s: &str) -> String {
    keyward_manage::normalize_email(s)
}

/// A plausible address: one `@`, something on each side, a dot in the
/// domain, no spaces or control characters, at most 254 characters.
pub fn check_email(email: &str) -> Result<(), AccountError> {
    if keyward_manage::check_email(email) {
        Ok(())
    } else {
        Err(AccountError::Email(email.to_owned()))
    }
}

pub fn check_name(name: &str) -> Result<(), AccountError> {
    if keyward_manage::check_name(name) {
        Ok(())
    } else {
        Err(AccountError::Name)
    }
}

fn manage_error(email: &str, e: ManageError) -> AccountError {
    match e {
        ManageError::Validation(errors) if errors.iter().any(|e| e.field == "email") => {
            AccountError::Email(email.to_owned())
        }
        ManageError::Validation(_) => AccountError::Name,
        ManageError::Conflict { .. } => AccountError::Taken(email.to_owned()),
        ManageError::NotFound(_) => AccountError::Unknown(email.to_owned()),
        other => AccountError::Manage(other),
    }
}

/// Checks the email, name and password, and hashes the password.
async fn checked(
    entropy: &dyn Entropy,
    email: &str,
    name: &str,
    password: Zeroizing<String>,
    operator: bool,
) -> Result<NewUser, AccountError> {
    let email = normalize_email(email);
    check_email(&email)?;
    let name = name.trim();
    check_name(name)?;
    password::check_policy(&password)?;
    let password_hash = password::hash(password, entropy).await?;
    Ok(NewUser {
        email,
        name: name.to_owned(),
        password_hash,
        operator,
    })
}

/// A new user record with a hashed password (not yet stored; an accepted
/// invitation stores it).
pub async fn new_user(
    manage: &ManageService,
    entropy: &dyn Entropy,
    email: &str,
    name: &str,
    password: Zeroizing<String>,
    operator: bool,
) -> Result<User, AccountError> {
    let input = checked(entropy, email, name, password, operator).await?;
    let email = input.email.clone();
    manage.new_user(input).map_err(|e| manage_error(&email, e))
}

/// Creates a user straight in the store (`keyward users create`), as the host.
pub async fn create_user(
    manage: &ManageService,
    entropy: &dyn Entropy,
    email: &str,
    name: &str,
    password: Zeroizing<String>,
    operator: bool,
) -> Result<User, AccountError> {
    let input = checked(entropy, email, name, password, operator).await?;
    let email = input.email.clone();
    manage
        .create_user(&Actor::host("cli"), input)
        .await
        .map_err(|e| manage_error(&email, e))
}

/// Sets a new password (`keyward users set-password`), as the host; ends
/// the user's sessions.
pub async fn set_password(
    manage: &ManageService,
    entropy: &dyn Entropy,
    email: &str,
    password: Zeroizing<String>,
) -> Result<User, AccountError> {
    let email = normalize_email(email);
    let host = Actor::host("cli");
    if manage
        .find_user(&host, &email)
        .await
        .map_err(|e| manage_error(&email, e))?
        .is_none()
    {
        return Err(AccountError::Unknown(email));
    }
    let hash = password::hash(password, entropy).await?;
    manage
        .set_password(&host, &email, &hash)
        .await
        .map_err(|e| manage_error(&email, e))
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
