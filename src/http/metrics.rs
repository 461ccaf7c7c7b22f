//! Prometheus metrics, served on a listener of their own so they are never exposed by accident
//! with the API: HTTP requests and latency per route template, open alerts by severity, and
//! (estimated) stored events and flow records.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;

use sqlx::PgPool;

use super::ApiContext;
use crate::pollers::jobs::JobStatus;

/// Request counters, by route template and status (never the raw path: ids stay out).
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
}

impl Metrics {
    fn observe(&self, route: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().expect("metrics lock");
        let entry = requests.entry((route.to_string(), status)).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }
}

/// Middleware: a span per request with the route template, and the counters above.
pub async fn track(State(context): State<ApiContext>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    context.metrics.observe(&route, status, seconds);
    if route.starts_with("/healthz") || route.starts_with("/readyz") {
        tracing::debug!(%method, %route, status, seconds, "request");
    } else {
        tracing::info!(%method, %route, status, seconds, "request");
    }
    response
}

pub fn router(context: ApiContext) -> Router {
    Router::new().route("/metrics", get(render)).with_state(context)
}

async fn render(State(context): State<ApiContext>) -> String {
    let mut out = String::new();
    write_requests(&mut out, &context.metrics);
    let open = open_alerts(&context.db).await;
    let stored = stored_rows(&context.db).await;
    out.push_str("# HELP skywarden_up Whether the database answered this scrape.\n# TYPE skywarden_up gauge\n");
    let _ = writeln!(out, "skywarden_up {}", u8::from(open.is_ok() && stored.is_ok()));
    if let Ok(rows) = open {
        out.push_str("# HELP skywarden_alerts_open Open alerts by severity.\n# TYPE skywarden_alerts_open gauge\n");
        for (severity, count) in rows {
            let _ = writeln!(out, "skywarden_alerts_open{{severity=\"{severity}\"}} {count}");
        }
    }
    write_alerts_raised(&mut out, &context.db).await;
    if let Ok(jobs) = crate::pollers::jobs::statuses(&context.db, None).await {
        write_notifications(&mut out, &context.db).await;
        write_poll_jobs(&mut out, &jobs);
    }
    if let Ok(counts) = crate::pollers::s3_objects::failure_counts(&context.db).await {
        write_s3_failures(&mut out, &counts);
    }
    write_posture_problems(&mut out, &context.db).await;
    crate::archive::status::write_metrics(&mut out, &context.db).await;
    crate::archive::read::write_metrics(&mut out, &context.db).await;
    if let Ok(counters) = crate::pollers::findings::listing_counters(&context.db).await {
        write_findings_counters(&mut out, &counters);
    }
    if let Ok(health) = crate::detect::health::read(&context.db).await {
        write_detection_health(&mut out, &health);
    }
    write_detection_stages(&mut out);
    match crate::search::index::lag(&context.db).await {
        Ok(lag) => write_search_index_lag(&mut out, &lag),
        Err(error) => crate::search::index::note_lag_failure(&error),
    }
    write_search_index_health(&mut out);
    if let Ok((queued, cap_hits)) = crate::alerts::incidents::relink_backlog(&context.db).await {
        write_relink_backlog(&mut out, queued, cap_hits);
    }
    if let Ok((events, flows)) = stored {
        out.push_str("# HELP skywarden_events_stored Stored CloudTrail events (planner estimate).\n# TYPE skywarden_events_stored gauge\n");
        let _ = writeln!(out, "skywarden_events_stored {events}");
        out.push_str("# HELP skywarden_flow_records_stored Stored flow records (planner estimate).\n# TYPE skywarden_flow_records_stored gauge\n");
        let _ = writeln!(out, "skywarden_flow_records_stored {flows}");
    }
    out
}

/// How far the full-text index is behind: events stored but not indexed (searched by a scan
/// meanwhile), and how old the oldest of them is.
fn write_search_index_lag(out: &mut String, lag: &crate::search::index::IndexLag) {
    out.push_str(
        "# HELP skywarden_search_index_rows_behind Stored events not yet in the full-text index (counted up to 100000).\n# TYPE skywarden_search_index_rows_behind gauge\n",
    );
    let _ = writeln!(out, "skywarden_search_index_rows_behind {}", lag.rows_behind);
    out.push_str(
        "# HELP skywarden_search_index_lag_seconds Age of the oldest stored event not yet in the full-text index (0: none).\n# TYPE skywarden_search_index_lag_seconds gauge\n",
    );
    let age = lag
        .oldest_unindexed
        .map_or(0.0, |oldest| (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0);
    let _ = writeln!(out, "skywarden_search_index_lag_seconds {age}");
    if let Some(until) = lag.indexed_until {
        out.push_str("# HELP skywarden_search_index_watermark_age_seconds How far the full-text index watermark is behind now (a stalled watermark grows).\n# TYPE skywarden_search_index_watermark_age_seconds gauge\n");
        let age = (chrono::Utc::now() - until).num_milliseconds().max(0) as f64 / 1000.0;
        let _ = writeln!(out, "skywarden_search_index_watermark_age_seconds {age}");
    }
    if let Some(last) = lag.last_run_at {
        out.push_str("# HELP skywarden_search_index_last_run_timestamp_seconds When the full-text indexer last ran.\n# TYPE skywarden_search_index_last_run_timestamp_seconds gauge\n");
        let _ = writeln!(out, "skywarden_search_index_last_run_timestamp_seconds {}", last.timestamp());
    }
}

/// The full-text indexer's health in this process: lag queries that failed, runs locked out in
/// a row by another process's lease, and whether the role sees every session (0: the watermark
/// is blind to other roles' idle transactions; see docs/scaling.md).
fn write_search_index_health(out: &mut String) {
    use crate::search::index;
    out.push_str("# HELP skywarden_search_index_lag_errors_total Full-text index lag queries that failed.\n# TYPE skywarden_search_index_lag_errors_total counter\n");
    let _ = writeln!(out, "skywarden_search_index_lag_errors_total {}", index::lag_failures());
    out.push_str("# HELP skywarden_search_index_lockouts_in_a_row Full-text indexer runs of this process locked out in a row by another's lease.\n# TYPE skywarden_search_index_lockouts_in_a_row gauge\n");
    let _ = writeln!(out, "skywarden_search_index_lockouts_in_a_row {}", index::lockouts_in_a_row());
    if let Some(sees) = index::sees_all_sessions() {
        out.push_str("# HELP skywarden_search_index_sees_all_sessions 1 if the role may read every session (superuser or pg_read_all_stats), 0 if not.\n# TYPE skywarden_search_index_sees_all_sessions gauge\n");
        let _ = writeln!(out, "skywarden_search_index_sees_all_sessions {}", u8::from(sees));
    }
}

/// Whether detection after imports and polls keeps up: failed runs in a row (0 when the last
/// succeeded) and when one last succeeded.
fn write_detection_health(out: &mut String, health: &crate::detect::health::DetectionHealth) {
    out.push_str(
        "# HELP skywarden_detection_consecutive_failures Detection runs that failed in a row (0: the last one succeeded).\n",
    );
    out.push_str("# TYPE skywarden_detection_consecutive_failures gauge\n");
    let _ = writeln!(out, "skywarden_detection_consecutive_failures {}", health.consecutive_failures);
    if let Some(lease) = &health.lease {
        write_detection_lease(out, lease);
    }
    if let Some(success) = health.last_success_at {
        out.push_str("# HELP skywarden_detection_last_success_timestamp_seconds When a detection run last succeeded (Unix time).\n");
        out.push_str("# TYPE skywarden_detection_last_success_timestamp_seconds gauge\n");
        let _ = writeln!(out, "skywarden_detection_last_success_timestamp_seconds {}", success.timestamp());
    }
    if !health.skips.is_empty() {
        out.push_str("# HELP skywarden_detection_skipped_total Work detectors skipped or deferred at a per-run bound, by policy.\n");
        out.push_str("# TYPE skywarden_detection_skipped_total counter\n");
        for skip in &health.skips {
            let _ = writeln!(
                out,
                "skywarden_detection_skipped_total{{policy=\"{}\"}} {}",
                label(&skip.policy_id),
                skip.skipped_total
            );
        }
        out.push_str(
            "# HELP skywarden_detection_behind Detectors with work left for a later run (1) or none (0), by policy.\n",
        );
        out.push_str("# TYPE skywarden_detection_behind gauge\n");
        for skip in &health.skips {
            let _ = writeln!(
                out,
                "skywarden_detection_behind{{policy=\"{}\"}} {}",
                label(&skip.policy_id),
                u8::from(skip.outstanding)
            );
        }
    }
}

/// Where this process's detection passes spent their time, by stage.
fn write_detection_stages(out: &mut String) {
    out.push_str(
        "# HELP skywarden_detection_stage_seconds_total Time this process's detection passes spent in each stage.\n",
    );
    out.push_str("# TYPE skywarden_detection_stage_seconds_total counter\n");
    for (stage, seconds) in crate::detect::stage_seconds_total() {
        let _ = writeln!(out, "skywarden_detection_stage_seconds_total{{stage=\"{stage}\"}} {seconds:.6}");
    }
}

/// The detection lease (one pass at a time over every process): whether it is held and by
/// which process, passes finished and failed, requests waiting, and how often callers found it
/// held and left their rows to the holder.
fn write_detection_lease(out: &mut String, lease: &crate::detect::lease::LeaseState) {
    let counters = [
        (
            "skywarden_detection_lease_skips_total",
            "Detection calls that found another process's pass running and left their rows to it.",
            lease.skips_total,
        ),
        (
            "skywarden_detection_lease_takeovers_total",
            "Detection leases taken over from a holder that stopped renewing.",
            lease.takeovers_total,
        ),
        ("skywarden_detection_passes_total", "Detection passes that finished under the lease.", lease.passes_total),
        (
            "skywarden_detection_passes_failed_total",
            "Detection passes that failed or were cut short (their requests wait for the next).",
            lease.passes_failed_total,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    out.push_str("# HELP skywarden_detection_lease_held 1 while a process runs a detection pass, 0 when none does.\n");
    out.push_str("# TYPE skywarden_detection_lease_held gauge\n");
    let _ = writeln!(out, "skywarden_detection_lease_held {}", u8::from(lease.holder.is_some()));
    if let Some(holder) = &lease.holder {
        // The owner is `host/pid/run`: the run part changes every pass, so it is left out.
        let mut parts = holder.split('/');
        let (host, pid) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        out.push_str("# HELP skywarden_detection_lease_holder_info The process running a detection pass now.\n");
        out.push_str("# TYPE skywarden_detection_lease_holder_info gauge\n");
        let _ =
            writeln!(out, "skywarden_detection_lease_holder_info{{host=\"{}\",pid=\"{}\"}} 1", label(host), label(pid));
    }
    out.push_str("# HELP skywarden_detection_requests_waiting Detection requests no successful pass covered yet.\n");
    out.push_str("# TYPE skywarden_detection_requests_waiting gauge\n");
    let _ = writeln!(out, "skywarden_detection_requests_waiting {}", lease.waiting_requests);
    out.push_str("# HELP skywarden_detection_oldest_request_age_seconds How long the oldest waiting detection request has waited (0: none waits).\n");
    out.push_str("# TYPE skywarden_detection_oldest_request_age_seconds gauge\n");
    let _ = writeln!(
        out,
        "skywarden_detection_oldest_request_age_seconds {}",
        lease.oldest_request_age_secs.unwrap_or(0.0)
    );
}

/// Alerts waiting to be linked again around late bridging events, and passes that stopped at
/// their cap (the rest waits for the next pass: a backlog that keeps growing means incidents
/// stay split).
fn write_relink_backlog(out: &mut String, queued: i64, cap_hits: i64) {
    out.push_str(
        "# HELP skywarden_incident_relink_backlog Alerts queued to be linked again around late bridging events.\n",
    );
    out.push_str("# TYPE skywarden_incident_relink_backlog gauge\n");
    let _ = writeln!(out, "skywarden_incident_relink_backlog {queued}");
    out.push_str("# HELP skywarden_incident_relink_cap_hits_total Relinking passes that stopped at their cap, leaving the rest queued.\n");
    out.push_str("# TYPE skywarden_incident_relink_cap_hits_total counter\n");
    let _ = writeln!(out, "skywarden_incident_relink_cap_hits_total {cap_hits}");
}

/// A label value with its backslashes and quotes escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Requests and the time spent answering them, from this process's counters.
fn write_requests(out: &mut String, metrics: &Metrics) {
    out.push_str("# HELP skywarden_http_requests_total HTTP requests by route template and status.\n");
    out.push_str("# TYPE skywarden_http_requests_total counter\n");
    let requests = metrics.requests.lock().expect("metrics lock").clone();
    for ((route, status), (count, _)) in &requests {
        let _ = writeln!(out, "skywarden_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}");
    }
    out.push_str("# HELP skywarden_http_request_duration_seconds_sum Time spent answering, by route template.\n");
    out.push_str("# TYPE skywarden_http_request_duration_seconds_sum counter\n");
    for ((route, status), (_, seconds)) in &requests {
        let _ = writeln!(
            out,
            "skywarden_http_request_duration_seconds_sum{{route=\"{route}\",status=\"{status}\"}} {seconds}"
        );
    }
}

/// Open alerts (and snoozes that ran out) by severity.
async fn open_alerts(db: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT severity::text AS "severity!", count(*) AS "count!" FROM alerts
           WHERE status = 'open' OR (status = 'snoozed' AND snoozed_until <= now()) GROUP BY 1"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.severity, row.count)).collect())
}

/// Stored events and flow records, as the planner estimates them (a count would scan).
async fn stored_rows(db: &PgPool) -> Result<(f64, f64), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT coalesce(sum(reltuples) FILTER (WHERE c.relname LIKE 'cloudtrail\_events\_p%'), 0)::float8 AS "events!",
                  coalesce(sum(reltuples) FILTER (WHERE c.relname LIKE 'flow\_records\_p%'), 0)::float8 AS "flows!"
           FROM pg_class c WHERE c.relkind = 'r' AND c.reltuples > 0"#
    )
    .fetch_one(db)
    .await?;
    Ok((row.events, row.flows))
}

async fn write_alerts_raised(out: &mut String, db: &PgPool) {
    let raised =
        sqlx::query!(r#"SELECT policy_id, count(*) AS "count!" FROM alerts GROUP BY policy_id ORDER BY policy_id"#)
            .fetch_all(db)
            .await;
    if let Ok(rows) = raised {
        out.push_str("# HELP skywarden_alerts_raised_total Alerts raised, by policy.\n# TYPE skywarden_alerts_raised_total counter\n");
        for row in rows {
            let _ = writeln!(
                out,
                "skywarden_alerts_raised_total{{policy=\"{}\"}} {}",
                row.policy_id.replace('"', ""),
                row.count
            );
        }
    }
}

async fn write_notifications(out: &mut String, db: &PgPool) {
    // Dead letters are what an operator alerts on: deliveries that gave up.
    if let Ok(counts) = crate::notify::outbox::counts(db).await {
        out.push_str("# HELP skywarden_notifications Notification deliveries by state (dead: gave up).\n# TYPE skywarden_notifications gauge\n");
        for state in ["pending", "sending", "delivered", "dead"] {
            let count = counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "skywarden_notifications{{state=\"{state}\"}} {count}");
        }
    }
}

/// Lag, failures and items of each enabled poll job.
fn write_poll_jobs(out: &mut String, jobs: &[JobStatus]) {
    out.push_str("# HELP skywarden_poll_lag_seconds Age of the newest data a poll job has covered.\n# TYPE skywarden_poll_lag_seconds gauge\n");
    let labels = |job: &JobStatus| {
        format!(
            "account=\"{}\",region=\"{}\",source=\"{}\",target=\"{}\"",
            label(&job.account_id),
            label(&job.region),
            label(&job.source),
            label(&job.target)
        )
    };
    for job in jobs.iter().filter(|j| j.enabled) {
        if let Some(lag) = job.lag_seconds {
            let _ = writeln!(out, "skywarden_poll_lag_seconds{{{}}} {lag}", labels(job));
        }
    }
    out.push_str(
        "# HELP skywarden_poll_failures Consecutive failed runs of a poll job.\n# TYPE skywarden_poll_failures gauge\n",
    );
    for job in jobs.iter().filter(|j| j.enabled) {
        let _ = writeln!(out, "skywarden_poll_failures{{{}}} {}", labels(job), job.consecutive_failures);
    }
    out.push_str(
        "# HELP skywarden_poll_items_total Records a poll job has stored.\n# TYPE skywarden_poll_items_total counter\n",
    );
    for job in jobs.iter().filter(|j| j.enabled) {
        let _ = writeln!(out, "skywarden_poll_items_total{{{}}} {}", labels(job), job.items_total);
    }
    write_parked_jobs(out, jobs);
}

/// Jobs parked after panicking, by account and source (0 where none is): they do not run until
/// someone asks, so an operator alerts on any above 0.
fn write_parked_jobs(out: &mut String, jobs: &[JobStatus]) {
    let mut parked: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for job in jobs.iter().filter(|j| j.enabled) {
        *parked.entry((&job.account_id, &job.source)).or_default() += u64::from(job.parked_at.is_some());
    }
    out.push_str(
        "# HELP skywarden_poll_jobs_parked Poll jobs parked after panicking in a row; poll-now runs them again.\n",
    );
    out.push_str("# TYPE skywarden_poll_jobs_parked gauge\n");
    for ((account, source), count) in parked {
        let _ = writeln!(
            out,
            "skywarden_poll_jobs_parked{{account=\"{}\",source=\"{}\"}} {count}",
            label(account),
            label(source)
        );
    }
}

/// What each GuardDuty / Security Hub findings job had to work around: malformed findings
/// skipped (the rest of their page imported), expired page tokens, runs stopped at the page cap.
fn write_findings_counters(out: &mut String, counters: &[crate::pollers::findings::ListingCounters]) {
    type Counter = fn(&crate::pollers::findings::ListingCounters) -> i64;
    let metrics: [(&str, &str, Counter); 4] = [
        ("skywarden_findings_malformed_total", "Findings skipped as malformed (named in the job's state).", |c| {
            c.malformed
        }),
        ("skywarden_findings_token_restarts_total", "Expired page tokens; the listing restarted at its cursor.", |c| {
            c.token_restarts
        }),
        (
            "skywarden_findings_capped_runs_total",
            "Runs stopped at the page cap; the rest follows from the cursor.",
            |c| c.capped_runs,
        ),
        ("skywarden_findings_rejected_total", "GetFindings answers of another account, region or id; dropped.", |c| {
            c.rejected
        }),
    ];
    for (name, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for counter in counters {
            let _ = writeln!(
                out,
                "{name}{{account=\"{}\",region=\"{}\",source=\"{}\"}} {}",
                label(&counter.account_id),
                label(&counter.region),
                label(&counter.source),
                value(counter)
            );
        }
    }
}

/// Problems of the last posture evaluation a worker ran after a snapshot, by account: checks
/// that failed or panicked on a resource, or an evaluation that stopped.
async fn write_posture_problems(out: &mut String, db: &PgPool) {
    let rows = sqlx::query!("SELECT account_id, problems FROM posture_evaluation_problems ORDER BY account_id")
        .fetch_all(db)
        .await;
    let Ok(rows) = rows else { return };
    out.push_str("# HELP skywarden_posture_check_problems Problems of the last posture evaluation after a snapshot (checks not evaluated).\n");
    out.push_str("# TYPE skywarden_posture_check_problems gauge\n");
    for row in rows {
        let _ = writeln!(
            out,
            "skywarden_posture_check_problems{{account=\"{}\"}} {}",
            label(&row.account_id),
            row.problems
        );
    }
}

/// S3 objects that could not be read, by account and source: being retried, and given up
/// (an operator alerts on the latter; `s3_objects::failed_objects` names them).
fn write_s3_failures(out: &mut String, counts: &[(String, String, i64, i64)]) {
    out.push_str("# HELP skywarden_s3_objects_failed S3 objects given up after every try.\n");
    out.push_str("# TYPE skywarden_s3_objects_failed gauge\n");
    for (account, source, _, failed) in counts {
        let _ = writeln!(
            out,
            "skywarden_s3_objects_failed{{account=\"{}\",source=\"{}\"}} {failed}",
            label(account),
            label(source)
        );
    }
    out.push_str("# HELP skywarden_s3_objects_retrying S3 objects that failed and will be tried again.\n");
    out.push_str("# TYPE skywarden_s3_objects_retrying gauge\n");
    for (account, source, retrying, _) in counts {
        let _ = writeln!(
            out,
            "skywarden_s3_objects_retrying{{account=\"{}\",source=\"{}\"}} {retrying}",
            label(account),
            label(source)
        );
    }
}
