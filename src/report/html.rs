//! An incident as one HTML file an analyst can hand over: no script, no outside request (a
//! Content-Security-Policy says so), every value escaped. It prints to PDF from any browser.
//! The merged timeline (alerts, events, changes, flows, response actions) comes first; the
//! tables after it hold the evidence in full.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::map::{Place, world_map};
use crate::alerts::incident_story::IncidentStory;
use crate::alerts::incident_timeline::{IncidentPlace, IncidentResponse};

/// Text as HTML text or attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn opt(text: Option<&str>) -> String {
    escape(text.unwrap_or("—"))
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1b1f24}h1{font-size:1.5rem}\
h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccd}table{border-collapse:collapse;width:100%;font-size:12px}\
th,td{border:1px solid #ccd;padding:3px 6px;text-align:left;vertical-align:top}th{background:#eef}\
.mono,pre{font-family:ui-monospace,monospace}pre{white-space:pre-wrap;margin:0;max-height:24em;overflow:auto}\
.map{width:100%;max-width:960px;background:#dfeaf5}.land{fill:#c9d3c0;stroke:#fff;stroke-width:.5}\
.place{fill:#c0392b}.map text{font-size:11px}.chain li{display:inline}.chain li+li:before{content:' → '}\
.meta td:first-child{width:12em;font-weight:600}#timeline td:first-child,#responses td:first-child{white-space:nowrap}\
tr.alert td{background:#fff4e0}tr.response td{background:#e6f4ea}@media print{.map{max-width:100%}}";

/// The report: everything the story holds, in the order an analyst reads it.
pub fn report(story: &IncidentStory, generated: DateTime<Utc>) -> String {
    let incident = &story.incident;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>Incident {id}</title><style>{STYLE}</style></head><body><h1>Incident {id}</h1>",
        id = escape(&incident.id)
    );
    html.push_str(&summary(story, generated));
    html.push_str(&merged_timeline(story));
    html.push_str(&responses(story));
    html.push_str(&timeline(story));
    html.push_str(&map(&story.places));
    html.push_str(&events(story));
    html.push_str(&config_changes(story));
    html.push_str(&flows(story));
    html.push_str(&resources(story));
    html.push_str(&history(story));
    html.push_str("</body></html>");
    html
}

fn summary(story: &IncidentStory, generated: DateTime<Utc>) -> String {
    let i = &story.incident;
    let chain: String = i.tactics.iter().map(|t| format!("<li>{} {}</li>", escape(&t.id), escape(&t.name))).collect();
    let rows = [
        ("Status", escape(i.status.as_str())),
        ("Severity", escape(&i.severity.to_string())),
        ("Owner", opt(i.owner.as_deref())),
        ("Account", escape(&i.account_id)),
        ("First principal", opt(i.principal.as_deref())),
        ("First address", opt(i.source_ip.as_deref())),
        ("From", time(i.first_seen)),
        ("To", time(i.last_seen)),
        ("Alerts", format!("{} ({} open)", story.alert_count, story.open_count)),
        ("Tactics, in the order reached", format!("<ol class=\"chain\">{chain}</ol>")),
        ("Report generated", time(generated)),
    ];
    let body: String = rows.iter().map(|(k, v)| format!("<tr><td>{k}</td><td>{v}</td></tr>")).collect();
    format!("<table class=\"meta\">{body}</table>")
}

fn table(title: &str, id: &str, headers: &[&str], rows: Vec<String>, note: Option<&str>) -> String {
    if rows.is_empty() {
        return format!("<h2>{title}</h2><p id=\"{id}\">None.</p>");
    }
    let head: String = headers.iter().map(|h| format!("<th>{h}</th>")).collect();
    let note = note.map(|n| format!("<p>{}</p>", escape(n))).unwrap_or_default();
    format!("<h2>{title}</h2><table id=\"{id}\"><tr>{head}</tr>{}</table>{note}", rows.concat())
}

fn timeline(story: &IncidentStory) -> String {
    let rows = story
        .alerts
        .iter()
        .map(|a| {
            let step = story.incident.timeline.iter().find(|s| s.alert_id == a.id);
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}<br><span class=\"mono\">{} · {}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(a.first_seen),
                escape(&a.severity.to_string()),
                escape(&a.title),
                escape(&a.policy_id),
                escape(&a.id),
                escape(a.status.as_str()),
                opt(a.principal.as_deref()),
                opt(a.source_ip.as_deref()),
                escape(&a.mitre.join(", ")),
                opt(step.and_then(|s| s.link_reason.as_deref())),
            )
        })
        .collect();
    let headers = ["Started", "Severity", "Alert", "Status", "Principal", "Address", "ATT&amp;CK", "Joined because"];
    table("Alerts, in order", "alerts", &headers, rows, None)
}

fn map(found: &[IncidentPlace]) -> String {
    let places: Vec<Place> = found
        .iter()
        .filter_map(|p| {
            let (latitude, longitude) = p.latitude.zip(p.longitude)?;
            let network = p.network_label();
            let label = [Some(p.address.as_str()), p.city.as_deref(), p.country.as_deref(), network.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            Some(Place { latitude, longitude, label })
        })
        .collect();
    let addresses = addresses(found);
    if places.is_empty() {
        return format!("<h2>Map</h2><p>No located address.</p>{addresses}");
    }
    let unplaced = found.len() - places.len();
    let note =
        if unplaced > 0 { format!("<p>{unplaced} outside addresses have no known place.</p>") } else { String::new() };
    format!("<h2>Map</h2>{}{note}{addresses}", world_map(&places, escape))
}

/// Every outside address with its place and network, placed or not: the AS and the Tor, VPN
/// and hosting flags tell an analyst as much as the map.
fn addresses(found: &[IncidentPlace]) -> String {
    let rows = found
        .iter()
        .map(|p| {
            let place = [p.city.as_deref(), p.country.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", ");
            format!(
                "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.address),
                escape(&place),
                p.asn.map(|a| format!("AS{a}")).unwrap_or_else(|| "—".into()),
                opt(p.as_org.as_deref()),
                escape(&p.flags().join(", ")),
                escape(&p.seen_in.join(", ")),
            )
        })
        .collect();
    let headers = ["Address", "Place", "AS", "Organisation", "Anonymising", "Seen in"];
    table("Outside addresses", "addresses", &headers, rows, None)
}

/// Alerts, events, changes, flows and response actions in one time order, as the story cut it.
fn merged_timeline(story: &IncidentStory) -> String {
    let merged = &story.merged_timeline;
    let rows = merged
        .entries
        .iter()
        .map(|e| {
            format!(
                "<tr class=\"{kind}\"><td>{}</td><td>{kind}</td><td>{}</td><td>{}<br><span class=\"mono\">{}</span></td><td>{}</td><td>{}</td></tr>",
                time(e.time),
                opt(e.status.as_deref()),
                escape(&e.title),
                opt(e.ref_id.as_deref()),
                opt(e.actor.as_deref()),
                opt(e.detail.as_deref()),
                kind = escape(&e.kind),
            )
        })
        .collect();
    let note = merged.truncated.then(|| {
        format!(
            "Cut: {} of {} entries shown; events, then flows, were left out first (the tables below hold them).",
            merged.entries.len(),
            merged.total
        )
    });
    let headers = ["When", "What", "Status", "Entry", "Who", "Detail"];
    table("Timeline", "timeline", &headers, rows, note.as_deref())
}

fn response_row(r: &IncidentResponse) -> String {
    let approved = match (&r.approved_by, r.approved_at) {
        (Some(by), Some(at)) => format!("{} at {}<br>{}", escape(by), time(at), opt(r.approval_reason.as_deref())),
        _ => "—".to_string(),
    };
    let mut when = format!("asked {}", time(r.created_at));
    for (label, at) in [("applied", r.applied_at), ("undone", r.undone_at), ("abandoned", r.abandoned_at)] {
        if let Some(at) = at {
            let _ = write!(when, "<br>{label} {}", time(at));
        }
    }
    let why = match &r.automatic_rule {
        Some(rule) => format!("{} (rule {})", escape(&r.reason), escape(rule)),
        None => escape(&r.reason),
    };
    let errors: String = [r.error.as_deref(), r.undo_error.as_deref()]
        .into_iter()
        .flatten()
        .map(|e| format!("<br>{}", escape(e)))
        .collect();
    let undo = r.undone_by.as_deref().or(r.undo_requested_by.as_deref()).map(|by| {
        let reason = r.undo_reason.as_deref().or(r.undo_request_reason.as_deref());
        format!("<br>undo: {} ({})", escape(by), opt(reason))
    });
    format!(
        "<tr><td>{when}</td><td>{}</td><td class=\"mono\">{}<br>{} {}</td><td>{}{errors}</td><td>{}</td><td>{approved}</td><td>{why}{}</td><td class=\"mono\">{}<br>{}</td></tr>",
        escape(&r.kind),
        escape(&r.target),
        escape(&r.account_id),
        escape(&r.region),
        escape(&r.status),
        escape(&r.actor),
        undo.unwrap_or_default(),
        escape(&r.id),
        opt(r.alert_id.as_deref()),
    )
}

/// The response actions on the incident's alerts: what, on what, how it went, who asked, who
/// approved, why, when.
fn responses(story: &IncidentStory) -> String {
    let rows = story.responses.iter().map(response_row).collect();
    let note = story.responses_truncated.then_some("The newest 200 response actions only.");
    let headers = ["When", "Action", "Target", "Status", "Asked by", "Approved by", "Why", "Action · alert"];
    table("Response actions", "responses", &headers, rows, note)
}

fn events(story: &IncidentStory) -> String {
    let rows = story
        .events
        .iter()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}<br><span class=\"mono\">{}</span></td><td>{}</td><td>{} {}</td><td class=\"mono\">{}</td><td>{}{}</td><td class=\"mono\">{}</td></tr>",
                time(e.event_time),
                opt(e.event_name.as_deref()),
                escape(&e.event_id),
                opt(e.principal_arn.as_deref().or(e.user_name.as_deref())),
                opt(e.source_ip.as_deref()),
                escape(&[e.city.as_deref(), e.country.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", ")),
                opt(e.request.as_deref()),
                escape(&e.outcome),
                e.error_code.as_deref().map(|c| format!(" {}", escape(c))).unwrap_or_default(),
                escape(&e.alert_ids.join(" ")),
            )
        })
        .collect();
    let note = story.events_truncated.then_some("The first 500 events only.");
    let headers = ["Time", "Event", "Who", "From", "Request", "Outcome", "Evidence of"];
    table("Evidence events", "events", &headers, rows, note)
}

fn config_changes(story: &IncidentStory) -> String {
    let rows = story
        .config_changes
        .iter()
        .map(|c| {
            let diff = serde_json::to_string_pretty(&c.diff).unwrap_or_default();
            format!(
                "<tr><td>{}</td><td class=\"mono\">{}<br>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                time(c.event_time.unwrap_or(c.detected_at)),
                escape(&c.resource_type),
                escape(&c.resource_id),
                escape(&c.kind),
                opt(c.event_name.as_deref()),
                opt(c.principal_arn.as_deref()),
                escape(&diff),
            )
        })
        .collect();
    table("Configuration changes", "config-changes", &["When", "Resource", "Change", "Call", "By", "Diff"], rows, None)
}

fn flows(story: &IncidentStory) -> String {
    let rows = story
        .flows
        .iter()
        .map(|f| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                opt(f.srcaddr.as_deref()),
                opt(f.dstaddr.as_deref()),
                f.dstport.map(|p| p.to_string()).unwrap_or_default(),
                opt(f.action.as_deref()),
                f.bytes,
                f.first_seen.map(time).unwrap_or_default(),
                f.last_seen.map(time).unwrap_or_default(),
                opt(f.interface_id.as_deref()),
            )
        })
        .collect();
    let headers = ["From", "To", "Port", "Action", "Bytes", "First", "Last", "Interface"];
    table("Flows of its addresses", "flows", &headers, rows, None)
}

fn resources(story: &IncidentStory) -> String {
    let rows = story
        .resources
        .iter()
        .map(|r| {
            let mut config = serde_json::to_string_pretty(&r.config).unwrap_or_default();
            if config.len() > 4000 {
                let cut = (0..=4000).rev().find(|i| config.is_char_boundary(*i)).unwrap_or(0);
                config.truncate(cut);
                config.push_str("\n…");
            }
            format!(
                "<tr><td class=\"mono\">{}<br>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                escape(&r.resource_type),
                escape(&r.resource_id),
                time(r.snapshot_at),
                escape(&config)
            )
        })
        .collect();
    table("Resources touched (latest snapshot)", "resources", &["Resource", "Snapshot", "Configuration"], rows, None)
}

fn history(story: &IncidentStory) -> String {
    let rows = story
        .history
        .iter()
        .map(|c| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td></tr>",
                time(c.changed_at),
                escape(&c.actor),
                escape(&c.field),
                opt(c.old_value.as_deref()),
                opt(c.new_value.as_deref()),
                escape(&c.reason)
            )
        })
        .collect();
    table("History", "history", &["When", "Who", "Field", "Change", "Why"], rows, None)
}
