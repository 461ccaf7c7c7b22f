//! Dashboard users: a user name, an Argon2id password hash and a role; a disabled user cannot
//! sign in, and disabling one ends their sessions.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{AuthError, Role};

/// Shortest password accepted.
pub const MIN_PASSWORD_LENGTH: usize = 12;

fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Password(e.to_string()))
}

/// A hash of a password nobody has, checked when the user does not exist so that an unknown
/// name takes as long to refuse as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("skywarden-no-such-user").unwrap_or_default())
}

pub async fn create(pool: &PgPool, username: &str, password: &str, role: Role) -> Result<(), AuthError> {
    if !valid_username(username) {
        return Err(AuthError::Invalid("a user name is 1 to 64 letters, digits, or . _ @ -".into()));
    }
    if password.chars().count() < MIN_PASSWORD_LENGTH {
        return Err(AuthError::Invalid(format!("a password has at least {MIN_PASSWORD_LENGTH} characters")));
    }
    let hash = hash_password(password)?;
    let inserted = sqlx::query!(
        "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        username,
        hash,
        role as Role
    )
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(AuthError::Invalid(format!("user {username} exists")));
    }
    Ok(())
}

/// Creates the user, or gives an existing one this password and role (the demo's user).
pub async fn upsert(pool: &PgPool, username: &str, password: &str, role: Role) -> Result<(), AuthError> {
    if !valid_username(username) || password.chars().count() < MIN_PASSWORD_LENGTH {
        return Err(AuthError::Invalid("bad user name or password".into()));
    }
    let hash = hash_password(password)?;
    sqlx::query!(
        "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3)
         ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role,
             disabled_at = NULL",
        username,
        hash,
        role as Role
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The user's role if the password is right and the user is enabled.
pub async fn verify(pool: &PgPool, username: &str, password: &str) -> Result<Option<Role>, AuthError> {
    let row = sqlx::query!(
        r#"SELECT password_hash, role AS "role: Role" FROM users WHERE username = $1 AND disabled_at IS NULL"#,
        username
    )
    .fetch_optional(pool)
    .await?;
    let (stored, role) = match &row {
        Some(row) => (row.password_hash.as_str(), Some(row.role)),
        None => (dummy_hash(), None),
    };
    // Argon2 is deliberately slow: run it off the async workers, two at a time at most, so a
    // burst of logins cannot stall the API and the pollers.
    static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = HASHING.acquire().await.map_err(|e| AuthError::Password(e.to_string()))?;
    let (stored, password) = (stored.to_owned(), password.to_owned());
    let matches = tokio::task::spawn_blocking(move || {
        Argon2::default().verify_password(password.as_bytes(), stored.as_str()).is_ok()
    })
    .await
    .map_err(|e| AuthError::Password(e.to_string()))?;
    Ok(if matches { role } else { None })
}

/// A dashboard user as admins see it: never the password hash.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub username: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Live dashboard sessions.
    pub sessions: i64,
}

pub async fn list(pool: &PgPool) -> Result<Vec<UserInfo>, AuthError> {
    Ok(sqlx::query_as!(
        UserInfo,
        r#"SELECT u.username, u.role AS "role: Role", u.created_at, u.disabled_at IS NOT NULL AS "disabled!", u.disabled_at,
                  (SELECT count(*) FROM sessions s WHERE s.principal = 'user:' || u.username AND s.expires_at > now()) AS "sessions!"
           FROM users u ORDER BY u.username"#
    )
    .fetch_all(pool)
    .await?)
}

/// Disables a user and ends their sessions at once (in one transaction), or enables them
/// again. `NotFound` if there is no such user; disabling a disabled user changes nothing.
pub async fn set_disabled(pool: &PgPool, username: &str, disabled: bool) -> Result<(), AuthError> {
    let mut tx = crate::db::begin(pool).await?;
    let found = sqlx::query!(
        "UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END WHERE username = $1",
        username,
        disabled
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if found == 0 {
        return Err(AuthError::NoUser(username.to_owned()));
    }
    if disabled {
        sqlx::query!("DELETE FROM sessions WHERE principal = 'user:' || $1", username).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether a text is a well-formed user name (the API checks path segments with it).
pub fn is_username(name: &str) -> bool {
    valid_username(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_salt_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(Argon2::default().verify_password(b"correct horse battery", a.as_str()).is_ok());
        assert!(Argon2::default().verify_password(b"wrong", a.as_str()).is_err());
    }

    #[test]
    fn user_names_are_plain() {
        assert!(valid_username("alice.smith@corp"));
        assert!(!valid_username("alice smith"));
        assert!(!valid_username(""));
    }
}
