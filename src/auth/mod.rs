//! API tokens and roles. A token is `swk_<id>_<secret>`: the id finds the row, the secret is
//! checked against its stored SHA-256 hash in constant time. Tokens are shown once.
//!
//! Imports `db` only; `http` turns tokens and sessions into callers.

pub mod audit;
pub mod sessions;
pub mod users;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

const PREFIX: &str = "swk_";

/// What a token may do. Ordered: a viewer reads, an analyst also triages, an admin also
/// manages accounts, tokens and settings.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "api_role", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Analyst,
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Viewer => "viewer",
            Self::Analyst => "analyst",
            Self::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "viewer" => Ok(Self::Viewer),
            "analyst" => Ok(Self::Analyst),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {other:?} (viewer, analyst, admin)")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("cannot read random bytes from the operating system")]
    Random(#[from] getrandom::Error),
    #[error("no token with id {0}")]
    NotFound(String),
    #[error("no user {0}")]
    NoUser(String),
    #[error("{0}")]
    Invalid(String),
    #[error("password hashing failed: {0}")]
    Password(String),
}

/// A token that was checked: who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Who this is in the audit log: `token:ID`, `user:NAME`, or a session's principal.
    pub fn actor(&self) -> String {
        if self.token_id.contains(':') { self.token_id.clone() } else { format!("token:{}", self.token_id) }
    }
}

/// A random secret of `bytes` bytes, hex-encoded.
pub fn random_secret(bytes: usize) -> Result<String, AuthError> {
    Ok(random_hex(bytes)?)
}

fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates a token and returns (id, the full token). The token is not stored and cannot be
/// shown again.
pub async fn create(pool: &PgPool, name: &str, role: Role) -> Result<(String, String), AuthError> {
    let id = random_hex(8)?;
    let secret = random_hex(32)?;
    sqlx::query!(
        "INSERT INTO api_tokens (token_id, name, role, secret_hash) VALUES ($1, $2, $3, $4)",
        id,
        name,
        role as Role,
        hash(&secret),
    )
    .execute(pool)
    .await?;
    Ok((id.clone(), format!("{PREFIX}{id}_{secret}")))
}

/// The caller a presented token belongs to, if it is valid and not revoked.
pub async fn verify(pool: &PgPool, presented: &str) -> Result<Option<Caller>, AuthError> {
    let Some((id, secret)) = presented.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')) else {
        return Ok(None);
    };
    let row = sqlx::query!(
        r#"SELECT name, role AS "role: Role", secret_hash FROM api_tokens WHERE token_id = $1 AND revoked_at IS NULL"#,
        id
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row.filter(|r| constant_time_eq(&r.secret_hash, &hash(secret))) else { return Ok(None) };
    // Only a use with the right secret counts as use.
    sqlx::query!("UPDATE api_tokens SET last_used_at = now() WHERE token_id = $1", id).execute(pool).await?;
    Ok(Some(Caller { token_id: id.to_string(), name: row.name, role: row.role }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>, AuthError> {
    Ok(sqlx::query_as!(
        TokenInfo,
        r#"SELECT token_id, name, role AS "role: Role", created_at, last_used_at, revoked_at
           FROM api_tokens ORDER BY created_at"#
    )
    .fetch_all(pool)
    .await?)
}

pub async fn revoke(pool: &PgPool, token_id: &str) -> Result<(), AuthError> {
    let done =
        sqlx::query!("UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL", token_id)
            .execute(pool)
            .await?;
    if done.rows_affected() == 0 {
        return Err(AuthError::NotFound(token_id.to_string()));
    }
    // Dashboard sessions opened with the token end with it.
    sqlx::query!("DELETE FROM sessions WHERE principal = 'token:' || $1", token_id).execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_comparison() {
        assert!(Role::Admin > Role::Analyst && Role::Analyst > Role::Viewer);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(random_hex(8).unwrap().len(), 16);
    }
}
