//! An incident as OCSF 1.1.0: an Incident Finding (class 2005) that lists every alert's finding
//! info, its ATT&CK chain, status, owner and span, followed by each alert as a Detection Finding
//! (class 2004, as the OCSF webhook sends them), then each response action taken on its alerts
//! as an Entity Management event (class 3004: OCSF 1.1.0 has no remediation class; the action
//! changes one AWS entity, asked for by an actor, with a comment saying why), in one JSON array.
//! The incident's configuration diffs and flows ride in its `unmapped.skywarden`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::alerts::incident_pages::IncidentView;
use crate::alerts::incident_story::IncidentStory;
use crate::alerts::incident_timeline::IncidentResponse;
use crate::alerts::incidents::IncidentStatus;
use crate::notify::message::AlertMessage;
use crate::notify::targets::webhook::{ocsf_finding, ocsf_severity};

/// OCSF incident status: New, In Progress, On Hold, Resolved, Closed (and Other).
fn status(status: IncidentStatus) -> (i64, &'static str) {
    match status {
        IncidentStatus::Open => (1, "New"),
        IncidentStatus::Investigating => (2, "In Progress"),
        IncidentStatus::Contained => (99, "Contained"),
        IncidentStatus::Resolved => (4, "Resolved"),
        IncidentStatus::Dismissed | IncidentStatus::Merged => (5, "Closed"),
    }
}

/// The incident and its alerts as OCSF events; `public_url` makes the links back.
pub fn incident_findings(story: &IncidentStory, public_url: &str, now: DateTime<Utc>) -> Value {
    let mut events = vec![incident_finding(story, public_url, now)];
    for alert in &story.alerts {
        let message = AlertMessage::from_alert(alert, public_url);
        events.push(ocsf_finding(&message, (1, "Create"), alert.status, now));
    }
    for response in &story.responses {
        events.push(response_event(response, &story.incident.id));
    }
    Value::Array(events)
}

fn incident_finding(story: &IncidentStory, public_url: &str, now: DateTime<Utc>) -> Value {
    let incident = &story.incident;
    let (severity_id, severity) = ocsf_severity(incident.severity);
    let (status_id, status_name) = status(incident.status);
    let findings: Vec<Value> = incident
        .timeline
        .iter()
        .map(|step| {
            json!({
                "uid": step.alert_id,
                "title": step.title,
                "types": [step.policy_id],
                "created_time": step.time.timestamp_millis(),
                "first_seen_time": step.time.timestamp_millis(),
                "analytic": {"uid": step.policy_id, "name": step.policy_id, "type_id": 1, "type": "Rule"},
                "desc": step.link_reason.as_deref().map(|r| format!("joined the incident by: {r}")),
            })
        })
        .collect();
    let mut finding = json!({
        "class_uid": 2005,
        "class_name": "Incident Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200501,
        "time": now.timestamp_millis(),
        "start_time": incident.first_seen.timestamp_millis(),
        "end_time": incident.last_seen.timestamp_millis(),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status_name,
        "count": story.alert_count,
        "desc": summary(incident, story.alert_count),
        "src_url": format!("{}/#/incident/{}", public_url.trim_end_matches('/'), incident.id),
        "finding_info_list": findings,
        "attacks": attacks(incident),
        "metadata": {
            "version": "1.1.0",
            "product": {"name": "Skywarden", "vendor_name": "Skywarden", "version": env!("CARGO_PKG_VERSION")},
            "uid": incident.id,
        },
    });
    // OCSF 1.1.0 has no place for configuration diffs or flow summaries on an Incident
    // Finding: they travel as Skywarden's own data, whole, so the evidence is handed over too.
    finding["unmapped"] = json!({"skywarden": {
        "config_changes": story.config_changes,
        "flows": story.flows,
    }});
    // OCSF needs an assignee or a group: an incident nobody owns yet says so.
    match &incident.owner {
        Some(owner) => finding["assignee"] = json!({"name": owner}),
        None => finding["assignee_group"] = json!({"name": "unassigned", "desc": "no owner set in Skywarden yet"}),
    }
    finding
}

fn summary(incident: &IncidentView, alerts: i64) -> String {
    let chain: Vec<&str> = incident.tactics.iter().map(|t| t.name.as_str()).collect();
    format!(
        "{alerts} alerts in account {} from {} ({}), {} to {}; tactics: {}",
        incident.account_id,
        incident.principal.as_deref().unwrap_or("an unknown principal"),
        incident.source_ip.as_deref().unwrap_or("no address"),
        incident.first_seen.to_rfc3339(),
        incident.last_seen.to_rfc3339(),
        if chain.is_empty() { "none".to_string() } else { chain.join(" -> ") }
    )
}

/// The ATT&CK tactics in the order reached, each with the techniques its alerts named.
fn attacks(incident: &IncidentView) -> Vec<Value> {
    let mut attacks = Vec::new();
    for tactic in &incident.tactics {
        let mut techniques: Vec<&str> = incident
            .timeline
            .iter()
            .flat_map(|s| s.mitre.iter())
            .filter_map(|label| label.split_once('/').filter(|(t, _)| *t == tactic.id).map(|(_, tech)| tech))
            .filter(|tech| !tech.is_empty())
            .collect();
        techniques.sort_unstable();
        techniques.dedup();
        let tactic_object = json!({"uid": tactic.id, "name": tactic.name});
        if techniques.is_empty() {
            attacks.push(json!({"tactic": tactic_object, "version": "14"}));
        }
        for technique in techniques {
            attacks.push(json!({"tactic": tactic_object, "technique": {"uid": technique}, "version": "14"}));
        }
    }
    attacks
}

/// The OCSF status of a response action: applied is a success, failed a failure, anything else
/// (awaiting approval, planned, dry run, undone, undo awaiting approval) is named as it is.
fn response_status(status: &str) -> (i64, String) {
    match status {
        "applied" => (1, "Success".to_string()),
        "failed" => (2, "Failure".to_string()),
        other => (99, other.to_string()),
    }
}

/// What a response action does to its entity: removes it (a rule, a console password) or
/// changes it.
fn response_activity(kind: &str) -> (i64, &'static str) {
    match kind {
        "revoke-ingress-rule" | "delete-login-profile" => (4, "Delete"),
        _ => (3, "Update"),
    }
}

/// The kind of AWS entity a response action's target is.
fn entity_type(kind: &str) -> &'static str {
    match kind {
        "revoke-ingress-rule" => "Security Group Rule",
        "deactivate-access-key" => "Access Key",
        "delete-login-profile" => "Login Profile",
        "quarantine" => "IAM Principal",
        "detach-role-policy" => "Role Policy Attachment",
        "disassociate-instance-profile" | "stop-instance" => "EC2 Instance",
        "start-logging" => "CloudTrail Trail",
        _ => "AWS Resource",
    }
}

/// One response action as an Entity Management event: the entity it acted on, who asked and
/// why (`actor`, `comment`), its outcome; the second person who approved it, its undo and the
/// alert it answered, which OCSF 1.1.0 has no attribute for, under `unmapped.skywarden`.
fn response_event(r: &IncidentResponse, incident_id: &str) -> Value {
    let (activity_id, activity) = response_activity(&r.kind);
    let (status_id, status) = response_status(&r.status);
    let finished = r.undone_at.or(r.applied_at);
    let mut event = json!({
        "class_uid": 3004,
        "class_name": "Entity Management",
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 3004 * 100 + activity_id,
        "type_name": format!("Entity Management: {activity}"),
        "time": r.updated_at.timestamp_millis(),
        "start_time": r.created_at.timestamp_millis(),
        "severity_id": 1,
        "severity": "Informational",
        "status_id": status_id,
        "status": status,
        "message": format!("{} {} ({}), asked by {}", r.kind, r.target, r.status, r.actor),
        "comment": r.reason,
        "entity": {"uid": r.target, "name": r.target, "type": entity_type(&r.kind)},
        "actor": {"user": {"name": r.actor, "type": if r.actor == "automatic" { "System" } else { "Skywarden user" }}},
        "cloud": {"provider": "AWS", "region": r.region, "account": {"uid": r.account_id, "type_id": 10, "type": "AWS Account"}},
        "unmapped": {"skywarden": response_details(r, incident_id)},
        "metadata": {
            "version": "1.1.0",
            "product": {"name": "Skywarden", "vendor_name": "Skywarden", "version": env!("CARGO_PKG_VERSION")},
            "uid": r.id,
            "correlation_uid": incident_id,
            // `cloud` comes with the cloud profile, `actor` with the host profile.
            "profiles": ["cloud", "host"],
        },
    });
    if let Some(finished) = finished {
        event["end_time"] = json!(finished.timestamp_millis());
    }
    if let Some(error) = r.error.as_deref().or(r.undo_error.as_deref()) {
        event["status_detail"] = json!(error);
    }
    event
}

/// What OCSF has no place for: the approval, the undo, the alert and rule behind the action.
fn response_details(r: &IncidentResponse, incident_id: &str) -> Value {
    let millis = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
    json!({
        "incident_uid": incident_id,
        "alert_uid": r.alert_id,
        "kind": r.kind,
        "status": r.status,
        "automatic_rule": r.automatic_rule,
        "approved_by": r.approved_by,
        "approval_reason": r.approval_reason,
        "approved_time": millis(r.approved_at),
        "applied_time": millis(r.applied_at),
        "error": r.error,
        "undo_requested_by": r.undo_requested_by,
        "undo_request_reason": r.undo_request_reason,
        "undo_approved_by": r.undo_approved_by,
        "undone_by": r.undone_by,
        "undo_reason": r.undo_reason,
        "undone_time": millis(r.undone_at),
        "undo_error": r.undo_error,
        "abandoned_time": millis(r.abandoned_at),
    })
}
