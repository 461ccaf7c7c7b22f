//! The rollup `aws-rare-sensitive-api` reads its baseline from (`api_call_days`, migration
//! 0033): per account, identity, API and UTC day, the first and last successful call that is
//! not read-only, and per identity and day the first and last event of any kind (its history).
//!
//! Filled where CloudTrail rows are stored, in the same transaction: the batch's COPY rows are
//! read back here (a few columns of each), aggregated in memory and written with one upsert per
//! distinct key. First and last seen are idempotent, so a re-import or a batch that goes the
//! deduplicating way changes nothing.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sqlx::PgConnection;

use crate::ingest::cloudtrail::COLUMNS;

/// Whom a baseline belongs to: the principal, or for a role session its role
/// (`arn:aws:sts::…:assumed-role/ROLE`), so every session of a role shares one. The sessions of
/// an IAM Identity Center permission set (`AWSReservedSSO_…`) stay apart: the role is shared by
/// everyone given the permission set, the session name is the human. (The migration's
/// `skywarden_baseline_identity` is the same in SQL.)
pub fn baseline_identity(principal: &str) -> &str {
    match principal.rsplit_once('/') {
        Some((role, _session))
            if role.contains(":assumed-role/") && !role.contains(":assumed-role/AWSReservedSSO_") =>
        {
            role
        }
        _ => principal,
    }
}

/// (account, identity, day, event source, event name): empty source and name for "any event".
type Key = (String, String, NaiveDate, String, String);

/// The rollup of one batch.
#[derive(Debug, Default)]
pub struct ApiRollup {
    days: BTreeMap<Key, (DateTime<Utc>, DateTime<Utc>)>,
}

/// Where the columns the rollup reads sit in a COPY row.
struct Positions {
    account: usize,
    time: usize,
    source: usize,
    name: usize,
    arn: usize,
    user: usize,
    error: usize,
    read_only: usize,
}

fn positions() -> &'static Positions {
    static POSITIONS: OnceLock<Positions> = OnceLock::new();
    POSITIONS.get_or_init(|| {
        let names: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
        let at = |name: &str| names.iter().position(|n| *n == name).expect("a column of cloudtrail::COLUMNS");
        Positions {
            account: at("account_id"),
            time: at("event_time"),
            source: at("event_source"),
            name: at("event_name"),
            arn: at("principal_arn"),
            user: at("user_name"),
            error: at("error_code"),
            read_only: at("read_only"),
        }
    })
}

/// A COPY text field: `None` for `\N`, else unescaped.
fn field(raw: &[u8]) -> Option<String> {
    if raw == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    String::from_utf8(out).ok()
}

impl ApiRollup {
    /// The rollup of `data`, COPY text rows of `cloudtrail_events` in [`COLUMNS`] order. A row it
    /// cannot read adds nothing (PostgreSQL judges the row itself).
    pub fn of_copy_rows(data: &[u8]) -> Self {
        let mut rollup = Self::default();
        let p = positions();
        let last = [p.account, p.time, p.source, p.name, p.arn, p.user, p.error, p.read_only].into_iter().max();
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let fields: Vec<&[u8]> = line.splitn(last.unwrap_or(0) + 2, |b| *b == b'\t').collect();
            if fields.len() <= last.unwrap_or(0) {
                continue;
            }
            let text = |i: usize| field(fields[i]);
            let (Some(account), Some(time)) = (text(p.account), text(p.time)) else { continue };
            let Some(principal) = text(p.arn).or_else(|| text(p.user)) else { continue };
            let Ok(time) = DateTime::parse_from_rfc3339(&time) else { continue };
            let time = time.with_timezone(&Utc);
            let identity = baseline_identity(&principal).to_string();
            rollup.add((account.clone(), identity.clone(), time.date_naive(), String::new(), String::new()), time);
            let succeeded_write = text(p.error).is_none() && text(p.read_only).as_deref() != Some("t");
            if let (true, Some(source), Some(name)) = (succeeded_write, text(p.source), text(p.name)) {
                rollup.add((account, identity, time.date_naive(), source, name), time);
            }
        }
        rollup
    }

    fn add(&mut self, key: Key, time: DateTime<Utc>) {
        let entry = self.days.entry(key).or_insert((time, time));
        *entry = (entry.0.min(time), entry.1.max(time));
    }

    pub fn len(&self) -> usize {
        self.days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    /// Writes the rollup: one statement, keys in order (concurrent imports lock rows in the same
    /// order), rows rewritten only when they widen.
    pub async fn upsert(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.days.is_empty() {
            return Ok(());
        }
        let n = self.days.len();
        let (mut accounts, mut identities, mut days) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut sources, mut names) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut firsts, mut lasts) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for ((account, identity, day, source, name), (first, last)) in &self.days {
            accounts.push(account.as_str());
            identities.push(identity.as_str());
            days.push(*day);
            sources.push(source.as_str());
            names.push(name.as_str());
            firsts.push(*first);
            lasts.push(*last);
        }
        sqlx::query!(
            r#"INSERT INTO api_call_days AS d (account_id, identity, day, event_source, event_name, first_seen, last_seen)
               SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[])
               ON CONFLICT (account_id, identity, day, event_source, event_name) DO UPDATE
               SET first_seen = least(d.first_seen, EXCLUDED.first_seen), last_seen = greatest(d.last_seen, EXCLUDED.last_seen)
               WHERE EXCLUDED.first_seen < d.first_seen OR EXCLUDED.last_seen > d.last_seen"#,
            &accounts as &[&str],
            &identities as &[&str],
            &days,
            &sources as &[&str],
            &names as &[&str],
            &firsts,
            &lasts,
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Where the backfill of events stored before migration 0033 stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Backfill {
    Done,
    /// Months done so far, and the next one to do.
    Building {
        months_done: i32,
        next_month: NaiveDate,
    },
}

/// Backfills one more month of stored events into the rollup (the migration left it to runs):
/// a month a call, by event-time partition, then once the months up to the migration are done,
/// the rows ingested since it began (workers of the old version may have stored some without
/// rolling them up). Resumable: the progress row says where it stands. Idempotent upserts.
pub async fn backfill_step(pool: &sqlx::PgPool) -> Result<Backfill, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(row) =
        sqlx::query!("SELECT started_at, next_month, months_done, done_at FROM api_call_days_backfill FOR UPDATE")
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(Backfill::Done);
    };
    if row.done_at.is_some() {
        return Ok(Backfill::Done);
    }
    let month = match row.next_month {
        Some(month) => Some(month),
        None => {
            sqlx::query_scalar!(
                "SELECT (date_trunc('month', min(event_time) AT TIME ZONE 'UTC'))::date FROM cloudtrail_events"
            )
            .fetch_one(&mut *tx)
            .await?
        }
    };
    let last = row.started_at.date_naive().with_day(1).unwrap_or(row.started_at.date_naive());
    let state = match month.filter(|m| *m <= last) {
        Some(month) => {
            let next = month.checked_add_months(Months::new(1)).unwrap_or(NaiveDate::MAX);
            backfill(&mut tx, at_midnight(month), at_midnight(next), DateTime::<Utc>::UNIX_EPOCH).await?;
            sqlx::query!("UPDATE api_call_days_backfill SET next_month = $1, months_done = months_done + 1", next)
                .execute(&mut *tx)
                .await?;
            Backfill::Building { months_done: row.months_done + 1, next_month: next }
        }
        None => {
            // The months are done: what was ingested since the migration began, whatever its time.
            let (from, until) = (at_midnight(NaiveDate::MIN_SAFE), at_midnight(NaiveDate::MAX_SAFE));
            backfill(&mut tx, from, until, row.started_at).await?;
            sqlx::query!("UPDATE api_call_days_backfill SET done_at = now()").execute(&mut *tx).await?;
            tracing::info!(months = row.months_done, "the rare-API baseline backfill is done");
            Backfill::Done
        }
    };
    tx.commit().await?;
    Ok(state)
}

trait SafeDates {
    const MIN_SAFE: NaiveDate;
    const MAX_SAFE: NaiveDate;
}

impl SafeDates for NaiveDate {
    // Within PostgreSQL's timestamptz range.
    const MIN_SAFE: NaiveDate = NaiveDate::from_ymd_opt(1, 1, 1).expect("a date");
    const MAX_SAFE: NaiveDate = NaiveDate::from_ymd_opt(9999, 12, 31).expect("a date");
}

fn at_midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).map_or(DateTime::<Utc>::UNIX_EPOCH, |t| t.and_utc())
}

/// Rolls up the stored events with `from <= event_time < until` ingested from `ingested` on.
async fn backfill(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    ingested: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO api_call_days AS d (account_id, identity, day, event_source, event_name, first_seen, last_seen)
           SELECT account_id, skywarden_baseline_identity(coalesce(principal_arn, user_name)),
                  (event_time AT TIME ZONE 'UTC')::date, event_source, event_name, min(event_time), max(event_time)
           FROM cloudtrail_events
           WHERE event_time >= $1 AND event_time < $2 AND ingested_at >= $3
             AND coalesce(principal_arn, user_name) IS NOT NULL AND error_code IS NULL AND read_only IS NOT TRUE
             AND event_source IS NOT NULL AND event_name IS NOT NULL AND event_source || event_name <> ''
           GROUP BY 1, 2, 3, 4, 5
           UNION ALL
           SELECT account_id, skywarden_baseline_identity(coalesce(principal_arn, user_name)),
                  (event_time AT TIME ZONE 'UTC')::date, '', '', min(event_time), max(event_time)
           FROM cloudtrail_events
           WHERE event_time >= $1 AND event_time < $2 AND ingested_at >= $3
             AND coalesce(principal_arn, user_name) IS NOT NULL
           GROUP BY 1, 2, 3
           ORDER BY 1, 2, 3, 4, 5
           ON CONFLICT (account_id, identity, day, event_source, event_name) DO UPDATE
           SET first_seen = least(d.first_seen, EXCLUDED.first_seen), last_seen = greatest(d.last_seen, EXCLUDED.last_seen)
           WHERE EXCLUDED.first_seen < d.first_seen OR EXCLUDED.last_seen > d.last_seen"#,
        from,
        until,
        ingested,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Rolls up and writes the CloudTrail rows of `data` (inside the caller's transaction).
pub async fn record(conn: &mut PgConnection, data: &[u8]) -> Result<(), sqlx::Error> {
    ApiRollup::of_copy_rows(data).upsert(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::copy::CopyBuffer;
    use crate::ingest::cloudtrail::CloudTrailEvent;

    fn row(arn: &str, name: &str, time: &str, read_only: bool, error: Option<&str>, out: &mut CopyBuffer) {
        let error = error.map_or(String::new(), |e| format!(r#""errorCode":"{e}","#));
        let raw = format!(
            r#"{{"eventVersion":"1.08","userIdentity":{{"type":"AssumedRole","arn":"{arn}","accountId":"111122223333"}},
            "eventTime":"{time}","eventSource":"iam.amazonaws.com","eventName":"{name}","awsRegion":"us-east-1",
            "sourceIPAddress":"198.51.100.7",{error}"eventID":"e-{name}-{time}","readOnly":{read_only},
            "eventType":"AwsApiCall","recipientAccountId":"111122223333"}}"#
        );
        CloudTrailEvent::parse(&raw, None).unwrap().write_row(None, out);
    }

    #[test]
    fn roles_share_a_baseline_but_sso_permission_sets_do_not() {
        let ci = "arn:aws:sts::111122223333:assumed-role/ci_deploy/i-0a1b2c3d4e5f60718";
        assert_eq!(baseline_identity(ci), "arn:aws:sts::111122223333:assumed-role/ci_deploy");
        let sso = "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/alice@example.com";
        assert_eq!(baseline_identity(sso), sso);
        assert_eq!(baseline_identity("arn:aws:iam::111122223333:user/bob"), "arn:aws:iam::111122223333:user/bob");
    }

    #[test]
    fn a_batch_rolls_up_per_identity_api_and_day() {
        let mut rows = CopyBuffer::with_capacity(4096);
        // A backslash in the name (escaped in JSON and again in COPY text) is read back as one.
        let a = "arn:aws:sts::111122223333:assumed-role/ci\\\\deploy/build-1";
        let b = "arn:aws:sts::111122223333:assumed-role/ci\\\\deploy/build-2";
        row(a, "CreateRole", "2026-11-12T05:00:00Z", false, None, &mut rows);
        row(b, "CreateRole", "2026-11-12T07:30:00Z", false, None, &mut rows);
        row(b, "CreateRole", "2026-11-13T01:00:00Z", false, None, &mut rows);
        row(a, "GetRole", "2026-11-12T06:00:00Z", true, None, &mut rows);
        row(a, "DeleteRole", "2026-11-12T06:00:00Z", false, Some("AccessDenied"), &mut rows);
        let rollup = ApiRollup::of_copy_rows(rows.as_bytes());
        let role = "arn:aws:sts::111122223333:assumed-role/ci\\deploy".to_string();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let key = |d, name: &str| {
            let source = if name.is_empty() { "" } else { "iam.amazonaws.com" };
            ("111122223333".to_string(), role.clone(), day(d), source.to_string(), name.to_string())
        };
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(rollup.days[&key(12, "CreateRole")], (at("2026-11-12T05:00:00Z"), at("2026-11-12T07:30:00Z")));
        assert_eq!(rollup.days[&key(12, "")], (at("2026-11-12T05:00:00Z"), at("2026-11-12T07:30:00Z")));
        assert!(rollup.days.contains_key(&key(13, "CreateRole")));
        // Reads and refusals are history, not baseline.
        assert!(!rollup.days.contains_key(&key(12, "GetRole")) && !rollup.days.contains_key(&key(12, "DeleteRole")));
        assert_eq!(rollup.len(), 4);
    }
}
