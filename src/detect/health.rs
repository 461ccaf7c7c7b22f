//! Whether detection keeps up: the durable mark of what still awaits detection, when a run last
//! succeeded, and since when runs fail. A detection run that fails after polling leaves its events
//! stored (the next run covers them again), but until then nothing alerts: `accounts status`, the
//! API and `/metrics` show it from here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The longest error kept: a cause chain, not a dump.
const MAX_ERROR_CHARS: i32 = 2000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DetectionHealth {
    /// Rows stored from this time on may not have been through detection yet.
    pub pending_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Set while the latest runs failed: when the first of them failed.
    pub failing_since: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
}

impl DetectionHealth {
    pub fn failing(&self) -> bool {
        self.consecutive_failures > 0
    }
}

pub async fn read(pool: &PgPool) -> Result<DetectionHealth, sqlx::Error> {
    let row = sqlx::query_as!(
        DetectionHealth,
        "SELECT pending_since AS \"pending_since?\", last_success_at, failing_since, consecutive_failures,
                last_error
         FROM detection_watermark"
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.unwrap_or_default())
}

/// Records a failed run (best effort: when the database itself is the failure, the log has it).
pub async fn record_failure(pool: &PgPool, error: &str) {
    let recorded = sqlx::query!(
        "INSERT INTO detection_watermark (pending_since, failing_since, consecutive_failures, last_error)
         VALUES (now(), now(), 1, left($1, $2))
         ON CONFLICT (only_row) DO UPDATE
         SET failing_since = COALESCE(detection_watermark.failing_since, now()),
             consecutive_failures = detection_watermark.consecutive_failures + 1,
             last_error = left($1, $2)",
        error,
        MAX_ERROR_CHARS,
    )
    .execute(pool)
    .await;
    if let Err(record_error) = recorded {
        tracing::warn!(%record_error, detection_error = %error, "cannot record the failed detection run");
    }
}
