//! Pacing of rate-limited AWS APIs across every worker process: a request takes the next free
//! slot of its API, account and region in PostgreSQL (one row, updated atomically), then waits
//! for it. Workers on several hosts polling log groups of one account and region therefore stay
//! within the quota together, not each on its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A reserved request slot: when it is, and how long the caller waits for it.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub at: DateTime<Utc>,
    pub wait: Duration,
}

/// Takes the next slot of `api` in the account and region, at least `interval` after the one
/// before it (by the database's clock, which every worker shares).
pub async fn reserve(
    pool: &PgPool,
    api: &str,
    account_id: &str,
    region: &str,
    interval: Duration,
) -> Result<Slot, sqlx::Error> {
    let row = sqlx::query!(
        r#"INSERT INTO api_request_slots AS s (api, account_id, region, next_slot)
           VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4))
           ON CONFLICT (api, account_id, region)
           DO UPDATE SET next_slot = GREATEST(s.next_slot, clock_timestamp()) + make_interval(secs => $4)
           RETURNING next_slot - make_interval(secs => $4) AS "at!",
                     GREATEST(EXTRACT(EPOCH FROM next_slot - make_interval(secs => $4) - clock_timestamp()), 0)::float8
                         AS "wait!""#,
        api,
        account_id,
        region,
        interval.as_secs_f64()
    )
    .fetch_one(pool)
    .await?;
    Ok(Slot { at: row.at, wait: Duration::from_secs_f64(row.wait) })
}

/// Reserves the next slot and waits for it.
pub async fn pace(
    pool: &PgPool,
    api: &str,
    account_id: &str,
    region: &str,
    interval: Duration,
) -> Result<(), sqlx::Error> {
    let slot = reserve(pool, api, account_id, region, interval).await?;
    if !slot.wait.is_zero() {
        tokio::time::sleep(slot.wait).await;
    }
    Ok(())
}
