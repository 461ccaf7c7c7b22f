//! `skywarden incidents`: list them, show one, change one's status or owner.

use std::process::ExitCode;

use anyhow::{Context, bail};
use skywarden::alerts::incident_pages::{self, IncidentEntry, IncidentFilter, IncidentUpdate};
use skywarden::alerts::incident_story;
use skywarden::alerts::incidents::{IncidentStatus, is_incident_id};
use skywarden::db::DbOptions;
use skywarden::report::ReportFormat;

use super::with_db;
use crate::cli::{IncidentsAction, IncidentsArgs};

/// Incidents read per page while listing them all.
const PAGE: i64 = 200;

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
    println!(
        "{}  {:<8} {:<13} {} from {}  {} .. {}  {} alerts ({} open){}",
        incident.id,
        incident.severity,
        incident.status.as_str(),
        incident.principal.as_deref().unwrap_or("?"),
        incident.source_ip.as_deref().unwrap_or("?"),
        incident.first_seen.format("%Y-%m-%d %H:%M"),
        incident.last_seen.format("%Y-%m-%d %H:%M"),
        entry.alert_count,
        entry.open_count,
        incident.owner.as_deref().map(|o| format!("  owner {o}")).unwrap_or_default(),
    );
    if !incident.tactics.is_empty() {
        let chain: Vec<&str> = incident.tactics.iter().map(|t| t.name.as_str()).collect();
        println!("    tactics: {}", chain.join(" -> "));
    }
    for step in &incident.timeline {
        let why = step.link_reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default();
        println!("    {}  {:<8} {}{why}", step.time.format("%Y-%m-%d %H:%M:%S"), step.severity, step.title);
    }
    Ok(())
}

async fn show(pool: &sqlx::PgPool, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let entry = find(pool, id).await?;
    let history = incident_pages::history(pool, &entry.incident.id).await?;
    if json {
        let mut value = serde_json::to_value(&entry.incident)?;
        value["alert_count"] = entry.alert_count.into();
        value["open_count"] = entry.open_count.into();
        value["history"] = serde_json::to_value(&history)?;
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    if entry.incident.id != id {
        println!("{id} was merged into {}", entry.incident.id);
    }
    print_entry(&entry, false)?;
    for change in &history {
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
