//! `skywarden incidents`: list them, show one (its merged timeline and response actions), change
//! one's status or owner.

use std::process::ExitCode;

use anyhow::{Context, bail};
use skywarden::alerts::incident_pages::{self, IncidentEntry, IncidentFilter, IncidentUpdate, IncidentView};
use skywarden::alerts::incident_story::{self, IncidentStory};
use skywarden::alerts::incident_timeline::{IncidentResponse, TimelineEntry};
use skywarden::alerts::incidents::{IncidentStatus, is_incident_id};
use skywarden::db::DbOptions;
use skywarden::report::ReportFormat;

use super::with_db;
use crate::cli::{IncidentsAction, IncidentsArgs};

/// Incidents read per page while listing them all.
const PAGE: i64 = 200;
/// Merged-timeline entries `incidents show` prints, at most (`--json` and the report hold all
/// the story has).
const SHOWN_TIMELINE: usize = 200;

pub(crate) async fn run(db_options: &DbOptions, args: IncidentsArgs) -> anyhow::Result<ExitCode> {
    with_db(db_options, async |db| match args.action {
        None => list(&db.pool, args.open, args.json).await,
        Some(IncidentsAction::Show { id, json }) => show(&db.pool, &id, json).await,
        Some(IncidentsAction::Report { id, format, output, public_url }) => {
            report(&db.pool, &id, &format, output.as_deref(), &public_url).await
        }
        Some(IncidentsAction::Set { id, status, owner, reason, actor }) => {
            set(&db.pool, &id, status.as_deref(), owner, &reason, &actor).await
        }
    })
    .await
}

async fn list(pool: &sqlx::PgPool, open_only: bool, json: bool) -> anyhow::Result<ExitCode> {
    let filter = IncidentFilter { id: None, open_only };
    let mut after = None;
    loop {
        let entries = incident_pages::incidents(pool, &filter, after.as_ref(), PAGE).await?;
        for entry in &entries {
            print_entry(entry, json)?;
        }
        match entries.last() {
            Some(last) if entries.len() as i64 == PAGE => after = Some(last.key.clone()),
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn print_entry(entry: &IncidentEntry, json: bool) -> anyhow::Result<()> {
    let incident = &entry.incident;
    if json {
        println!("{}", serde_json::to_string(incident)?);
        return Ok(());
    }
    print_header(incident, entry.alert_count, entry.open_count);
    for step in &incident.timeline {
        let why = step.link_reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default();
        println!("    {}  {:<8} {}{why}", step.time.format("%Y-%m-%d %H:%M:%S"), step.severity, step.title);
    }
    Ok(())
}

fn print_header(incident: &IncidentView, alert_count: i64, open_count: i64) {
    println!(
        "{}  {:<8} {:<13} {} from {}  {} .. {}  {} alerts ({} open){}",
        incident.id,
        incident.severity,
        incident.status.as_str(),
        incident.principal.as_deref().unwrap_or("?"),
        incident.source_ip.as_deref().unwrap_or("?"),
        incident.first_seen.format("%Y-%m-%d %H:%M"),
        incident.last_seen.format("%Y-%m-%d %H:%M"),
        alert_count,
        open_count,
        incident.owner.as_deref().map(|o| format!("  owner {o}")).unwrap_or_default(),
    );
    if !incident.tactics.is_empty() {
        let chain: Vec<&str> = incident.tactics.iter().map(|t| t.name.as_str()).collect();
        println!("    tactics: {}", chain.join(" -> "));
    }
}

async fn show(pool: &sqlx::PgPool, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    if !is_incident_id(id) {
        bail!("{id:?} is not an incident id (`inc-` and 16 hex digits)");
    }
    let story = incident_story::story(pool, id).await?.with_context(|| format!("no incident {id}"))?;
    if json {
        println!("{}", serde_json::to_string(&story)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(from) = &story.merged_from {
        println!("{from} was merged into {}", story.incident.id);
    }
    print_header(&story.incident, story.alert_count, story.open_count);
    print_timeline(&story);
    print_responses(&story);
    println!("  history:");
    for change in &story.history {
        println!(
            "    {}  {} set {} {} -> {}: {}",
            change.changed_at.format("%Y-%m-%d %H:%M:%S"),
            change.actor,
            change.field,
            change.old_value.as_deref().unwrap_or("-"),
            change.new_value.as_deref().unwrap_or("-"),
            change.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where an entry goes when the timeline is cut: what people and the detectors did is kept
/// first, then flows, then events (as the story cuts it).
fn keep_rank(entry: &TimelineEntry) -> u8 {
    match entry.kind.as_str() {
        "event" => 2,
        "flow" => 1,
        _ => 0,
    }
}

/// The entries printed, oldest first: at most `limit`, the lowest ranks kept first.
fn shown(entries: &[TimelineEntry], limit: usize) -> Vec<&TimelineEntry> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (keep_rank(&entries[i]), i));
    order.truncate(limit);
    order.sort_unstable();
    order.into_iter().map(|i| &entries[i]).collect()
}

fn print_timeline(story: &IncidentStory) {
    let merged = &story.merged_timeline;
    let lines = shown(&merged.entries, SHOWN_TIMELINE);
    println!("  timeline:");
    for e in &lines {
        let who = e.actor.as_deref().map(|a| format!(" by {}", one_line(a, 160))).unwrap_or_default();
        let detail = e.detail.as_deref().map(|d| format!(": {}", one_line(d, 160))).unwrap_or_default();
        println!(
            "    {}  {:<13} {:<17} {}{who}{detail}",
            e.time.format("%Y-%m-%d %H:%M:%S"),
            e.kind,
            e.status.as_deref().unwrap_or("-"),
            one_line(&e.title, 160)
        );
    }
    if lines.len() < merged.total {
        println!(
            "    (cut: {} of {} entries shown, events then flows left out first; --json or `incidents report` has {})",
            lines.len(),
            merged.total,
            merged.entries.len()
        );
    }
}

fn print_responses(story: &IncidentStory) {
    println!("  response actions:");
    if story.responses.is_empty() {
        println!("    none");
    }
    for r in &story.responses {
        print_response(r);
    }
    if story.responses_truncated {
        println!("    (cut: the newest {} only)", story.responses.len());
    }
}

fn print_response(r: &IncidentResponse) {
    let rule = r.automatic_rule.as_deref().map(|rule| format!(" (rule {rule})")).unwrap_or_default();
    println!(
        "    {}  {} {} on {} {}: {}  asked by {}: {}{rule}",
        r.created_at.format("%Y-%m-%d %H:%M:%S"),
        r.kind,
        r.target,
        r.account_id,
        r.region,
        r.status,
        r.actor,
        one_line(&r.reason, 160)
    );
    if let (Some(by), Some(at)) = (&r.approved_by, r.approved_at) {
        let why = r.approval_reason.as_deref().map(|w| format!(": {}", one_line(w, 160))).unwrap_or_default();
        println!("      approved by {by} at {}{why}", at.format("%Y-%m-%d %H:%M:%S"));
    }
    for (label, at) in [("applied", r.applied_at), ("undone", r.undone_at), ("abandoned", r.abandoned_at)] {
        if let Some(at) = at {
            println!("      {label} at {}", at.format("%Y-%m-%d %H:%M:%S"));
        }
    }
    for error in [r.error.as_deref(), r.undo_error.as_deref()].into_iter().flatten() {
        println!("      error: {}", one_line(error, 300));
    }
    println!("      action {}  alert {}", r.id, r.alert_id.as_deref().unwrap_or("-"));
}

/// Text on one terminal line: control characters (a newline in a reason) shown as spaces, at
/// most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

async fn report(
    pool: &sqlx::PgPool,
    id: &str,
    format: &str,
    output: Option<&std::path::Path>,
    public_url: &str,
) -> anyhow::Result<ExitCode> {
    let format = ReportFormat::parse(format).with_context(|| format!("unknown format {format:?}: html or ocsf"))?;
    if !is_incident_id(id) {
        bail!("{id:?} is not an incident id (`inc-` and 16 hex digits)");
    }
    let story = incident_story::story(pool, id).await?.with_context(|| format!("no incident {id}"))?;
    let now = chrono::Utc::now();
    let body = match format {
        ReportFormat::Html => skywarden::report::html::report(&story, now),
        ReportFormat::Ocsf => {
            serde_json::to_string_pretty(&skywarden::report::ocsf::incident_findings(&story, public_url, now))?
        }
    };
    match output {
        Some(path) => {
            std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("incident {} written to {}", story.incident.id, path.display());
        }
        None => println!("{body}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The incident an id names, or the one it was merged into.
async fn find(pool: &sqlx::PgPool, id: &str) -> anyhow::Result<IncidentEntry> {
    if !is_incident_id(id) {
        bail!("{id:?} is not an incident id (`inc-` and 16 hex digits)");
    }
    let found = incident_story::find(pool, id).await?.with_context(|| format!("no incident {id}"))?;
    Ok(found.0)
}

async fn set(
    pool: &sqlx::PgPool,
    id: &str,
    status: Option<&str>,
    owner: Option<String>,
    reason: &str,
    actor: &str,
) -> anyhow::Result<ExitCode> {
    if reason.trim().is_empty() {
        bail!("--reason must say why");
    }
    let status = status
        .map(|s| {
            IncidentStatus::parse(s)
                .filter(|s| IncidentStatus::SETTABLE.contains(s))
                .with_context(|| format!("unknown status {s:?}: open, investigating, contained, resolved or dismissed"))
        })
        .transpose()?;
    let owner = owner.map(|o| (!o.trim().is_empty()).then(|| o.trim().to_string()));
    if status.is_none() && owner.is_none() {
        bail!("say what changes: --status, --owner or both");
    }
    let entry = find(pool, id).await?;
    if entry.incident.id != id {
        bail!("{id} was merged into {}: change that one", entry.incident.id);
    }
    let update = IncidentUpdate { status, owner };
    incident_pages::update(pool, id, &update, &format!("cli:{actor}"), reason).await?;
    let entry = find(pool, id).await?;
    println!(
        "incident {id}: {}{}",
        entry.incident.status.as_str(),
        entry.incident.owner.map(|o| format!(", owner {o}")).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use skywarden::alerts::incident_timeline::TimelineEntry;

    use super::{one_line, shown};

    fn line(minute: u32, kind: &str) -> TimelineEntry {
        TimelineEntry {
            time: Utc.with_ymd_and_hms(2026, 11, 12, 4, minute, 0).unwrap(),
            kind: kind.into(),
            status: None,
            title: format!("{kind} at {minute}"),
            actor: None,
            detail: None,
            ref_id: None,
        }
    }

    #[test]
    fn a_cut_timeline_keeps_alerts_and_responses_then_flows_in_time_order() {
        let kinds = ["event", "alert", "event", "flow", "response", "event", "config_change"];
        let entries: Vec<TimelineEntry> = kinds.iter().enumerate().map(|(i, k)| line(i as u32, k)).collect();
        let kept: Vec<&str> = shown(&entries, 4).iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kept, ["alert", "flow", "response", "config_change"]);
        assert_eq!(shown(&entries, 100).len(), entries.len());
    }

    #[test]
    fn a_line_of_text_stays_one_line_and_bounded() {
        assert_eq!(one_line("a\nb\u{1b}[2Jc", 100), "a b [2Jc");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
