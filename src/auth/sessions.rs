//! Dashboard sessions: a random cookie value whose SHA-256 finds the session row, a CSRF token
//! the page sends back on every change, and an expiry. Failed logins are counted per user name
//! and per client, and refused for a while past a threshold; an attempt is counted before its
//! password is checked, so parallel guesses cannot outrun the count.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{AuthError, Caller, Role, hash, random_hex};

/// A session lasts this long without use, and at most `MAX_AGE_HOURS` in all.
pub const IDLE_MINUTES: i64 = 60;
pub const MAX_AGE_HOURS: i64 = 12;
/// Failed logins allowed per user name, and per client address, in `FAILURE_WINDOW_MINUTES`.
pub const MAX_FAILURES_PER_USER: i64 = 5;
pub const MAX_FAILURES_PER_CLIENT: i64 = 20;
pub const FAILURE_WINDOW_MINUTES: i64 = 15;

/// A new session: the cookie value (never stored) and the CSRF token.
pub struct NewSession {
    pub cookie: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn create(pool: &PgPool, principal: &str, display_name: &str, role: Role) -> Result<NewSession, AuthError> {
    let cookie = random_hex(32)?;
    let csrf_token = random_hex(32)?;
    let expires_at = sqlx::query_scalar!(
        r#"INSERT INTO sessions (session_hash, principal, display_name, role, csrf_token, expires_at)
           VALUES ($1, $2, $3, $4, $5, now() + make_interval(mins => $6))
           RETURNING expires_at"#,
        hash(&cookie),
        principal,
        display_name,
        role as Role,
        csrf_token,
        IDLE_MINUTES as i32
    )
    .fetch_one(pool)
    .await?;
    Ok(NewSession { cookie, csrf_token, expires_at })
}

/// A live session's caller and CSRF token; touching it extends its idle expiry (up to its
/// maximum age).
pub async fn verify(pool: &PgPool, cookie: &str) -> Result<Option<(Caller, String)>, AuthError> {
    if cookie.len() != 64 || !cookie.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let row = sqlx::query!(
        r#"UPDATE sessions SET last_seen_at = now(),
                  expires_at = LEAST(now() + make_interval(mins => $2), created_at + make_interval(hours => $3))
           WHERE session_hash = $1 AND expires_at > now()
             -- A session lives only as long as its user or token.
             AND (EXISTS (SELECT 1 FROM users u WHERE 'user:' || u.username = sessions.principal AND u.disabled_at IS NULL)
                  OR EXISTS (SELECT 1 FROM api_tokens t WHERE 'token:' || t.token_id = sessions.principal AND t.revoked_at IS NULL))
           RETURNING principal, display_name, role AS "role: Role", csrf_token"#,
        hash(cookie),
        IDLE_MINUTES as i32,
        MAX_AGE_HOURS as i32
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (Caller { token_id: r.principal, name: r.display_name, role: r.role }, r.csrf_token)))
}

pub async fn delete(pool: &PgPool, cookie: &str) -> Result<(), AuthError> {
    sqlx::query!("DELETE FROM sessions WHERE session_hash = $1 OR expires_at < now()", hash(cookie))
        .execute(pool)
        .await?;
    Ok(())
}

/// A login attempt counted before its password is checked: a failure already, until the
/// password proves right and [`release`] takes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation(i64);

/// Counts one attempt for this user name and client, or refuses it (`None`) when either has
/// reached its limit. Attempts for one name (and one client) are counted one at a time, under
/// transaction-scoped advisory locks, so that parallel guesses cannot all pass a check made
/// before any of them is recorded.
pub async fn reserve_attempt(pool: &PgPool, username: &str, client: &str) -> Result<Option<Reservation>, AuthError> {
    let mut tx = crate::db::begin(pool).await?;
    // Always user before client, so two attempts never wait for each other in a circle.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('skywarden.login.user:' || $1, 0)),
                pg_advisory_xact_lock(hashtextextended('skywarden.login.client:' || $2, 0))",
        username,
        client
    )
    .execute(&mut *tx)
    .await?;
    // A statement of its own, after the locks: its snapshot sees every attempt counted before.
    let reserved = sqlx::query_scalar!(
        "INSERT INTO login_failures (username, client)
         SELECT $1, $2 WHERE
             (SELECT count(*) FROM login_failures WHERE username = $1 AND at > now() - make_interval(mins => $3)) < $4
         AND (SELECT count(*) FROM login_failures WHERE client = $2 AND at > now() - make_interval(mins => $3)) < $5
         RETURNING id",
        username,
        client,
        FAILURE_WINDOW_MINUTES as i32,
        MAX_FAILURES_PER_USER,
        MAX_FAILURES_PER_CLIENT
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query!("DELETE FROM login_failures WHERE at < now() - interval '1 day'").execute(pool).await?;
    Ok(reserved.map(Reservation))
}

/// Takes back an attempt whose password was right: it was no failure.
pub async fn release(pool: &PgPool, reservation: Reservation) -> Result<(), AuthError> {
    sqlx::query!("DELETE FROM login_failures WHERE id = $1", reservation.0).execute(pool).await?;
    Ok(())
}
