//! The checkpoint of pollers that read a time window page by page (LookupEvents,
//! FilterLogEvents): each run reads from the last covered time less an overlap (the source can
//! make records visible late) up to the run's start; after each page the window and the page
//! token are saved, so a run that dies between pages resumes at the next page.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PollOptions;
use crate::aws::{AwsError, AwsErrorKind};

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowCheckpoint {
    /// Every record before this time has been read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_until: Option<DateTime<Utc>>,
    /// The window being read, if a run stopped inside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

impl Window {
    /// Whether `error` is the service refusing the saved page token (page tokens expire: a
    /// FilterLogEvents token after 24 hours). If so the token is dropped and the window is read
    /// again from its start (records read twice are dropped by their keys); a refusal without a
    /// token is a real error.
    pub fn refused_token(&mut self, error: &AwsError, job_id: i64) -> bool {
        const TOKEN_REFUSALS: &[&str] = &["InvalidNextTokenException", "InvalidParameterException", "InvalidNextToken"];
        let refused =
            error.kind == AwsErrorKind::Rejected && error.code.as_deref().is_some_and(|c| TOKEN_REFUSALS.contains(&c));
        if !refused || self.next_token.is_none() {
            return false;
        }
        tracing::warn!(job_id, error = %error, "page token refused; reading the window again from its start");
        self.next_token = None;
        true
    }
}

impl WindowCheckpoint {
    /// The job's checkpoint; an unreadable one starts over (records read twice are dropped by
    /// their keys).
    pub fn load(checkpoint: &Value) -> Self {
        serde_json::from_value(checkpoint.clone()).unwrap_or_default()
    }

    /// The window to read: the one a run stopped in, or a new one up to now.
    pub fn window(&self, options: &PollOptions, now: DateTime<Utc>) -> Window {
        self.window.clone().unwrap_or_else(|| {
            let start = match self.covered_until {
                Some(covered) => covered - options.overlap,
                None => now - options.lookback,
            };
            Window { start, end: now, next_token: None }
        })
    }

    /// The checkpoint after a page of `window`, and the time it now covers up to (when the
    /// window is done).
    pub fn after_page(&self, window: &Window, next_token: Option<&str>) -> (Value, Option<DateTime<Utc>>) {
        let (next, covered) = match next_token {
            Some(token) => (
                Self {
                    covered_until: self.covered_until,
                    window: Some(Window { next_token: Some(token.to_owned()), ..window.clone() }),
                },
                None,
            ),
            None => (Self { covered_until: Some(window.end), window: None }, Some(window.end)),
        };
        (serde_json::to_value(next).expect("checkpoint serialises"), covered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_at_the_lookback_then_overlap_and_resume_mid_window() {
        let options = PollOptions::default();
        let now: DateTime<Utc> = "2026-11-29T12:00:00Z".parse().unwrap();
        let first = WindowCheckpoint::default().window(&options, now);
        assert_eq!(now - first.start, chrono::Duration::days(90));
        let (saved, covered) = WindowCheckpoint::default().after_page(&first, Some("t2"));
        assert_eq!(covered, None);
        let resumed = WindowCheckpoint::load(&saved);
        assert_eq!(resumed.window(&options, now + chrono::Duration::hours(1)).next_token.as_deref(), Some("t2"));
        let (done, covered) = resumed.after_page(&first, None);
        assert_eq!(covered, Some(now));
        let next = WindowCheckpoint::load(&done).window(&options, now + chrono::Duration::hours(1));
        assert_eq!(next.start, now - chrono::Duration::minutes(15));
        assert_eq!(next.next_token, None);
    }
}
