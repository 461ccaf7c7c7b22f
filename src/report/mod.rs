//! Evidence to hand over: one incident as a self-contained HTML report ([`html`]: merged
//! timeline, response actions, alerts, map, evidence events, configuration diffs, flows,
//! history; no script, no outside request, prints to PDF from any browser) or as OCSF 1.1.0 JSON
//! ([`ocsf`]: an Incident Finding, a Detection Finding per alert, an Entity Management event per
//! response action). Both render an [`IncidentStory`](crate::alerts::incident_story::IncidentStory)
//! read from the database; nothing here writes.

pub mod html;
pub mod map;
pub mod ocsf;

/// The formats an incident report comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Ocsf,
}

impl ReportFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "html" => Some(Self::Html),
            "ocsf" | "json" => Some(Self::Ocsf),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Html => "text/html; charset=utf-8",
            Self::Ocsf => "application/json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Html => "html",
            Self::Ocsf => "ocsf.json",
        }
    }
}
