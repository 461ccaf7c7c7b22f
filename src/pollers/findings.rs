//! GuardDuty and Security Hub findings of one account and region, imported as alerts (the
//! `guardduty-findings` and `securityhub-findings` jobs). The conversion is `ingest::findings`;
//! this module pages through the services and folds each page into alerts with its checkpoint,
//! in one transaction, so a crash never loses or repeats a page.
//!
//! Each listing reads the findings updated since a keyset cursor (the latest `updatedAt` folded,
//! and the ids folded at that instant), oldest update first, in bounded pages. Each page after
//! one that moved the cursor is a new listing from the cursor, so a finding updated while a
//! listing is under way (which moves to its end and shifts the others) is never skipped; a page
//! token is followed only through findings that share one instant. Security Hub documents
//! nothing about its tokens (they may be offsets): there such an instant is walked in a window
//! closed on it, and the cursor passes it only after a walk answered in one page or two
//! complete walks that returned the same findings ([`GroupWalk`]); each request asks from 1 ms
//! before the cursor (whether `Start` is inclusive is observed, not documented), sorts ties by
//! `Id`, and a listing ends an hour before it began, a day every 6 hours (a provider sets
//! `UpdatedAt` and may import a finding later than that). GuardDuty lists ids and
//! reads findings in two calls: the cursor passes only findings read as they were listed
//! ([`proven_ids`]), never one updated in between. A saved token the service no
//! longer accepts restarts the listing at the cursor, with a warning and a count in the job's
//! state. A region where the service is not enabled (no GuardDuty detector; Security Hub
//! answering that the account is not subscribed) is a state the job records (`state:
//! not-enabled` in its checkpoint and status), not an error.
//!
//! The findings are read from the answer's JSON as the service sent it (captured after the SDK
//! read it): the alert keeps the finding as AWS wrote it, and a file saved from the same call
//! converts the same way.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeDeserializationInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Job, PollContext, PollError, RunOutcome};
use crate::accounts::schedule::WITHOUT_GUARDDUTY_TARGET;
use crate::aws::{AccountSession, AwsError};
use crate::ingest::findings::{ExternalFinding, FindingError, FindingSource, findings_of};

/// Finding ids per GuardDuty page (ListFindings and GetFindings take at most 50).
const GUARDDUTY_PAGE: i32 = 50;
/// Findings per Security Hub page (GetFindings allows 100).
const SECURITY_HUB_PAGE: i32 = 100;
/// The largest answer one page may be: 100 findings of the largest kind fit well within it.
pub const MAX_PAGE_BYTES: usize = 32 << 20;
/// How far ahead of GuardDuty's clock ours may be: a finding read with an `updatedAt` later
/// than the listing's send time less this was (or may have been) updated after it was listed.
const CLOCK_MARGIN: chrono::Duration = chrono::Duration::seconds(5);
/// Longest malformed-finding note kept in a job's state.
const MAX_NOTE_CHARS: usize = 500;
/// Most ids kept of the findings folded at the cursor's instant: beyond it (more findings
/// updated in one millisecond than this) the rest may be folded again, idempotently, and a
/// warning says so.
const MAX_SEEN_AT_CURSOR: usize = 10_000;
/// Most (id, `updatedAt`) pairs of malformed findings kept, so one re-read in the overlap is
/// counted once.
const MAX_MALFORMED_SEEN: usize = 1_000;
/// How long a malformed or rejected finding stays named in the job's state.
const NOTE_FOR: chrono::Duration = chrono::Duration::hours(24);
/// Security Hub findings re-read by `Id` per run ([`recheck_security_hub`]), and per call
/// (Security Hub takes at most 20 values for one filter field).
const RECHECK_PER_RUN: i64 = 100;
const RECHECK_BATCH: usize = 20;
/// A status message for a reopen is left out when the service itself closed the alert this
/// recently: the close was silent, so the reopen is too (flapping findings would flood routes).
const SILENT_REOPEN_WITHIN: chrono::Duration = chrono::Duration::hours(24);
/// Security Hub's overlap at a listing's end: at least this, as a provider sets `UpdatedAt` and
/// may import a finding into Security Hub well after it.
const SECURITY_HUB_OVERLAP: chrono::Duration = chrono::Duration::hours(1);
/// Every this long, a Security Hub listing ends with its cursor [`WIDE_RELIST_SPAN`] back, so
/// a finding imported later than the overlap is read within a few hours (folding is idempotent).
const WIDE_RELIST_EVERY: chrono::Duration = chrono::Duration::hours(6);
const WIDE_RELIST_SPAN: chrono::Duration = chrono::Duration::hours(24);
/// Complete walks of one instant ([`GroupWalk`]) before one that finds nothing new is taken as
/// complete even when no two walks agreed (a service that reorders ties per request).
const MAX_WALKS: u32 = 4;
/// The checkpoint's state for a region where the service is not enabled.
pub const NOT_ENABLED: &str = "not-enabled";
pub const ENABLED: &str = "enabled";

/// Where a job's listing is: the keyset cursor `from_ms` (epoch milliseconds) and the ids
/// already folded whose update is at `from_ms` exactly; `next_token` only while the listing
/// walks findings that share one instant; `started_ms` is when the listing began, from which
/// the next one starts (less the overlap) once this one ends.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Listing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "HashSet::is_empty")]
    seen_at_from: HashSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
    /// The lower bound of the listing `next_token` belongs to: a token goes on only with the
    /// request that gave it (the services refuse it with other filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_from_ms: Option<i64>,
    /// `enabled` or `not-enabled`, for `accounts status` (with the token restarts, if any).
    #[serde(default)]
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detector_id: Option<String>,
    /// Saved page tokens the service refused (expired), each restarting the listing at the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_restarts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_restarted_at: Option<DateTime<Utc>>,
    /// Findings skipped because a field was missing or malformed (the rest of their page was
    /// imported), and the last one: `finding ID: field `F`: reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    malformed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    malformed_last: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    malformed_at: Option<DateTime<Utc>>,
    /// `id@updatedAt` of the malformed findings counted (bounded, oldest dropped first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    malformed_seen: Vec<String>,
    /// GetFindings answers of another account, region or id than asked for: dropped, counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected_last: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected_at: Option<DateTime<Utc>>,
    /// Set by a run stopped at the page cap, cleared when a listing reaches its end: the state
    /// names the cap only while the job is behind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    behind: bool,
    /// The last alert re-checked by id (Security Hub), from which the next run's re-check goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recheck_after: Option<String>,
    /// Runs that stopped at `max_pages_per_run` with more to read (the next run resumes at the
    /// cursor), and the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capped_runs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capped_at: Option<DateTime<Utc>>,
    /// Security Hub: the walk of the findings at the cursor's instant under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    walk: Option<GroupWalk>,
    /// Security Hub: when the last wide re-listing began (or the first listing ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wide_at_ms: Option<i64>,
}

/// A walk by page token through the findings of one instant `at_ms` of Security Hub's listing,
/// in a window closed on it (from 1 ms before, to its last nanosecond). A page token may name an
/// offset: a finding of the window updated between two pages leaves it and the next page skips
/// one. Such a walk returns a set of findings the previous complete walk did not (the one that
/// left is gone for good, `UpdatedAt` never goes back), so the cursor passes the instant only
/// after a walk answered in one page, or two complete walks in a row returned the same findings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct GroupWalk {
    at_ms: i64,
    /// This walk so far: pages, findings, the sum of their ids' hashes, whether any was new.
    #[serde(default)]
    pages: u32,
    #[serde(default)]
    count: u64,
    #[serde(default)]
    digest: i64,
    #[serde(default)]
    added: bool,
    /// Complete walks before this one, and the last one's `(count, digest)`.
    #[serde(default)]
    walks: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<(u64, i64)>,
}

impl GroupWalk {
    fn at(at_ms: i64) -> Self {
        GroupWalk { at_ms, ..GroupWalk::default() }
    }

    /// The walk starts over (a refused token): what it read so far counts for nothing.
    fn restart(&mut self) {
        *self = GroupWalk { at_ms: self.at_ms, walks: self.walks, last: self.last, ..GroupWalk::default() };
    }

    fn contains(&self, finding: &ExternalFinding) -> bool {
        (self.at_ms - 1..=self.at_ms).contains(&finding.updated_at.timestamp_millis())
    }
}

/// A hash of a finding id that stays the same across builds and processes (FNV-1a).
fn id_hash(id: &str) -> i64 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    hash as i64
}

/// What one page changed in the listing: how many findings were new to it, whether more pages
/// follow, and how far the findings are covered (when the listing ended).
struct PageStep {
    checkpoint: Value,
    fresh: u64,
    more: bool,
    covered: Option<DateTime<Utc>>,
}

impl Listing {
    fn load(checkpoint: &Value, ctx: &PollContext, now: DateTime<Utc>) -> Self {
        let mut listing: Listing = serde_json::from_value(checkpoint.clone()).unwrap_or_default();
        let lookback = chrono::Duration::from_std(ctx.options.lookback).unwrap_or(chrono::Duration::days(90));
        listing.from_ms.get_or_insert((now - lookback).timestamp_millis());
        listing
    }

    fn since_ms(&self) -> i64 {
        self.from_ms.unwrap_or_default()
    }

    /// The lower bound of the next request: the cursor, or the bound of the listing whose token
    /// it follows.
    fn request_since_ms(&self) -> i64 {
        match (&self.next_token, self.token_from_ms) {
            (Some(_), Some(from)) => from,
            _ => self.since_ms(),
        }
    }

    /// Whether a finding is new to this listing: not below the cursor (a server that ignores
    /// the filter sends those too) and not already folded at the cursor's instant.
    fn is_fresh(&self, finding: &ExternalFinding) -> bool {
        let at = finding.updated_at.timestamp_millis();
        at > self.since_ms() || (at == self.since_ms() && !self.seen_at_from.contains(&finding.id))
    }

    /// The saved token was refused: the listing (or walk) goes on from the cursor, and says so.
    fn restart_at_cursor(&mut self, job: &Job, error: &AwsError) {
        self.next_token = None;
        if let Some(walk) = &mut self.walk {
            walk.restart();
        }
        self.token_restarts = Some(self.token_restarts.unwrap_or(0) + 1);
        self.token_restarted_at = Some(Utc::now());
        tracing::warn!(job_id = job.job_id, account_id = %job.account_id, region = %job.region,
            source = job.source.as_str(), %error, "the saved page token was refused; listing again from the cursor");
    }

    fn state_line(&self) -> String {
        let when = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut notes = Vec::new();
        if let (Some(n), Some(at)) = (self.token_restarts, self.token_restarted_at) {
            notes.push(format!("{n} expired page token(s), the listing restarted at its cursor (last {})", when(at)));
        }
        let recent = |at: Option<DateTime<Utc>>| at.is_some_and(|at| Utc::now() - at < NOTE_FOR);
        if let Some(n) = self.malformed.filter(|_| recent(self.malformed_at)) {
            let last = self.malformed_last.as_deref().unwrap_or_default();
            notes.push(format!("{n} malformed finding(s) skipped (last: {last})"));
        }
        if let Some(n) = self.rejected.filter(|_| recent(self.rejected_at)) {
            let last = self.rejected_last.as_deref().unwrap_or_default();
            notes.push(format!("{n} finding(s) of another account, region or id dropped (last: {last})"));
        }
        if let (Some(n), Some(at), true) = (self.capped_runs, self.capped_at, self.behind) {
            notes.push(format!(
                "{n} run(s) stopped at the page cap with more to read, resumed from the cursor (last {})",
                when(at)
            ));
        }
        std::iter::once(ENABLED.to_owned()).chain(notes).collect::<Vec<_>>().join("; ")
    }

    /// A finding of the page could not be converted: skipped, counted and named, once per
    /// version (`id@updatedAt`, as `raw` gives them): a re-read in the overlap is not counted again.
    fn malformed(&mut self, job: &Job, raw: &Value, error: &FindingError) {
        let field = |names: [&str; 2]| names.iter().find_map(|n| raw.get(*n)).map(Value::to_string).unwrap_or_default();
        let key = bounded_note(&format!("{}@{}", field(["id", "Id"]), field(["updatedAt", "UpdatedAt"])));
        if self.malformed_seen.contains(&key) {
            return;
        }
        if self.malformed_seen.len() >= MAX_MALFORMED_SEEN {
            self.malformed_seen.remove(0);
        }
        self.malformed_seen.push(key);
        self.malformed = Some(self.malformed.unwrap_or(0) + 1);
        self.malformed_last = Some(bounded_note(&error.to_string()));
        self.malformed_at = Some(Utc::now());
        tracing::warn!(job_id = job.job_id, account_id = %job.account_id, region = %job.region,
            source = job.source.as_str(), %error, "malformed finding skipped; the rest of the page is imported");
    }

    /// The run read `max_pages_per_run` pages and more remain: the cursor is saved with the last
    /// page, the job runs again at once, and the state says so.
    fn capped(&mut self, job: &Job, pages: usize) {
        self.capped_runs = Some(self.capped_runs.unwrap_or(0) + 1);
        self.capped_at = Some(Utc::now());
        self.behind = true;
        self.state = self.state_line();
        tracing::warn!(job_id = job.job_id, account_id = %job.account_id, region = %job.region,
            source = job.source.as_str(), pages, "page cap of the run reached; the rest is read from the cursor next run");
    }

    /// Moves the cursor past a page: `page` holds every finding the page converted, `fresh`
    /// those new to the listing, `proven` (all when `None`) those whose `updatedAt` as read is
    /// the one the listing ordered them by. The cursor advances only over proven findings: one
    /// updated after it was listed is folded now and read again when the listing reaches its new
    /// time. The next page follows the token only when a listing from the cursor would return
    /// this page again (it stayed on one instant, or did not move).
    fn after_page(
        &mut self,
        page: &[&ExternalFinding],
        fresh: &[&ExternalFinding],
        proven: Option<&HashSet<String>>,
        next_token: Option<String>,
        overlap: std::time::Duration,
    ) -> PageStep {
        self.state = self.state_line();
        let requested = self.request_since_ms();
        let is_proven = |f: &&&ExternalFinding| proven.is_none_or(|p| p.contains(&f.id));
        let moved = self.advance(fresh.iter().filter(is_proven).copied());
        let spans = page.iter().filter(is_proven).any(|f| f.updated_at.timestamp_millis() < self.since_ms());
        let (more, covered) = match next_token {
            Some(token) => {
                self.next_token = (!spans || !moved).then_some(token);
                self.token_from_ms = self.next_token.as_ref().map(|_| requested);
                (true, None)
            }
            None => (false, self.end_listing(overlap.as_millis() as i64)),
        };
        let checkpoint = serde_json::to_value(&*self).unwrap_or_default();
        // An unproven finding is read again by the next listing from the cursor, and counted
        // then; a page token walks on past it, so it is counted now.
        let counted = if self.next_token.is_some() { fresh.len() } else { fresh.iter().filter(is_proven).count() };
        let fresh = counted as u64;
        PageStep { checkpoint, fresh, more, covered }
    }

    /// Moves the cursor to the newest of `fresh` (proven findings new to the listing), keeping
    /// the ids at its instant. Whether the cursor (or the ids at it) changed.
    fn advance<'f>(&mut self, fresh: impl Iterator<Item = &'f ExternalFinding> + Clone) -> bool {
        let before = (self.since_ms(), self.seen_at_from.len());
        if let Some(newest) = fresh.clone().map(|f| f.updated_at.timestamp_millis()).max() {
            if newest > self.since_ms() {
                self.from_ms = Some(newest);
                self.seen_at_from.clear();
            }
            let at_cursor = fresh.filter(|f| f.updated_at.timestamp_millis() == newest);
            for finding in at_cursor {
                if self.seen_at_from.len() >= MAX_SEEN_AT_CURSOR {
                    tracing::warn!(
                        newest,
                        kept = MAX_SEEN_AT_CURSOR,
                        "more findings share the cursor's instant than are kept; the rest may be folded again"
                    );
                    break;
                }
                self.seen_at_from.insert(finding.id.clone());
            }
        }
        (self.since_ms(), self.seen_at_from.len()) != before
    }

    /// The listing reached its end: the next one starts where this one began, less `back_ms`.
    /// How far the findings are covered.
    fn end_listing(&mut self, back_ms: i64) -> Option<DateTime<Utc>> {
        let started = self.started_ms.take().unwrap_or_else(|| Utc::now().timestamp_millis());
        self.from_ms = Some(started - back_ms);
        self.seen_at_from.clear();
        self.next_token = None;
        self.token_from_ms = None;
        self.behind = false;
        self.walk = None;
        DateTime::from_timestamp_millis(started)
    }

    /// The window of the next Security Hub request (`Start`, `End`): the walk's instant, from
    /// 1 ms before it to its last nanosecond; else from 1 ms before the cursor (or the bound of
    /// the listing whose token it follows) on. Whether `Start` is inclusive is observed, not
    /// documented: 1 ms earlier covers the cursor's instant either way, and [`Self::is_fresh`]
    /// drops what was folded.
    fn hub_window(&self) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        match &self.walk {
            Some(walk) => (at(walk.at_ms - 1), Some(at(walk.at_ms + 1) - chrono::Duration::nanoseconds(1))),
            None => (at(self.request_since_ms() - 1), None),
        }
    }

    /// Whether a Security Hub finding of the page is to be folded now: new to the listing, and
    /// within the walk's instant while one is under way (a later one is read by the listing).
    fn hub_foldable(&self, finding: &ExternalFinding) -> bool {
        self.is_fresh(finding) && self.walk.as_ref().is_none_or(|walk| walk.contains(finding))
    }

    /// [`Self::after_page`] for Security Hub, where one answer lists and reads at once (every
    /// finding proven). A listing from the cursor never follows a token across a page it read:
    /// a page that reached past the next request's lower bound is followed by a new listing
    /// from the cursor; one that did not (all at the cursor's instant or 1 ms before) by a
    /// [`GroupWalk`] of that instant; a page token is followed only through an empty page, or
    /// when the service answered below the lower bound asked (nothing else makes progress).
    fn after_hub_page(
        &mut self,
        page: &[&ExternalFinding],
        fresh: &[&ExternalFinding],
        next_token: Option<String>,
        overlap_ms: i64,
    ) -> PageStep {
        self.state = self.state_line();
        let (more, covered) = match self.walk.take() {
            Some(walk) => (self.after_walk_page(walk, page, fresh, next_token), None),
            None => {
                let requested = self.request_since_ms();
                let moved = self.advance(fresh.iter().copied());
                let bound = self.since_ms() - 1;
                let spans = page.iter().any(|f| f.updated_at.timestamp_millis() < bound);
                match next_token {
                    Some(token) if page.is_empty() || (spans && !moved) => {
                        self.next_token = Some(token);
                        self.token_from_ms = Some(requested);
                        (true, None)
                    }
                    Some(_) => {
                        self.next_token = None;
                        self.token_from_ms = None;
                        self.walk = (!spans).then(|| GroupWalk::at(self.since_ms()));
                        (true, None)
                    }
                    None => (false, self.end_hub_listing(overlap_ms)),
                }
            }
        };
        let checkpoint = serde_json::to_value(&*self).unwrap_or_default();
        PageStep { checkpoint, fresh: fresh.len() as u64, more, covered }
    }

    /// A page of a [`GroupWalk`]: its new findings join those seen at the cursor; at the walk's
    /// end the cursor passes the instant if the walk is proven complete, else the walk starts
    /// again. Always more to read.
    fn after_walk_page(
        &mut self,
        mut walk: GroupWalk,
        page: &[&ExternalFinding],
        fresh: &[&ExternalFinding],
        next_token: Option<String>,
    ) -> bool {
        walk.pages += 1;
        walk.added |= !fresh.is_empty();
        self.advance(fresh.iter().copied());
        let within: Vec<i64> = page.iter().filter(|f| walk.contains(f)).map(|f| id_hash(&f.id)).collect();
        walk.count += within.len() as u64;
        walk.digest = within.into_iter().fold(walk.digest, i64::wrapping_add);
        self.next_token = next_token;
        if self.next_token.is_some() {
            self.walk = Some(walk);
            return true;
        }
        let this = (walk.count, walk.digest);
        let proven = walk.pages == 1 || walk.last == Some(this);
        if proven || (walk.walks + 1 >= MAX_WALKS && !walk.added) {
            if !proven {
                tracing::warn!(
                    at_ms = walk.at_ms,
                    walks = walk.walks + 1,
                    "no two walks of the findings at one instant agreed; the last found nothing new, so the listing goes on"
                );
            }
            self.from_ms = Some(walk.at_ms + 1);
            self.seen_at_from.clear();
        } else {
            self.walk = Some(GroupWalk { walks: walk.walks + 1, last: Some(this), ..GroupWalk::at(walk.at_ms) });
        }
        true
    }

    /// A Security Hub listing ended: the next starts [`SECURITY_HUB_OVERLAP`] (or the job's
    /// overlap, if longer) before this one began, and every [`WIDE_RELIST_EVERY`]
    /// [`WIDE_RELIST_SPAN`] before it.
    fn end_hub_listing(&mut self, overlap_ms: i64) -> Option<DateTime<Utc>> {
        let started = self.started_ms.unwrap_or_else(|| Utc::now().timestamp_millis());
        let overlap = overlap_ms.max(SECURITY_HUB_OVERLAP.num_milliseconds());
        let back = match self.wide_at_ms {
            None => {
                self.wide_at_ms = Some(started);
                overlap
            }
            Some(at) if started - at >= WIDE_RELIST_EVERY.num_milliseconds() => {
                self.wide_at_ms = Some(started);
                WIDE_RELIST_SPAN.num_milliseconds().max(overlap)
            }
            Some(_) => overlap,
        };
        self.end_listing(back)
    }
}

/// Whether the service refused a request because of its page token (expired, or from another
/// listing): a client error to a request that carried one.
fn refuses_token(error: &AwsError) -> bool {
    let refusal = matches!(
        error.code.as_deref(),
        Some("BadRequestException" | "InvalidInputException" | "ValidationException" | "InvalidNextTokenException")
    );
    let message = error.message.to_ascii_lowercase();
    // Not "the security token included in the request is expired": that is the credentials.
    refusal || ["nexttoken", "next token", "pagination token"].iter().any(|t| message.contains(t))
}

/// Captures the body of an answer as the SDK read it, so the findings are kept as AWS sent them,
/// and bounds the answer before the SDK parses it.
#[derive(Clone, Debug, Default)]
struct RawBody(Arc<Mutex<Captured>>);

#[derive(Debug, Default)]
struct Captured {
    body: Option<Vec<u8>>,
    /// The length an answer announced beyond [`MAX_PAGE_BYTES`]: refused unread.
    too_large: Option<u64>,
    /// The answer's `Date` header: when the service answered, by its own clock.
    date: Option<DateTime<Utc>>,
}

impl Intercept for RawBody {
    fn name(&self) -> &'static str {
        "skywarden-raw-findings"
    }

    /// Refuses an answer announced larger than [`MAX_PAGE_BYTES`], and caps one that does not
    /// announce its length, before anything reads it.
    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        let date = response.headers().get("date").and_then(|v| DateTime::parse_from_rfc2822(v.trim()).ok());
        self.lock().date = date.map(|d| d.with_timezone(&Utc));
        let announced = response.headers().get("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(length) = announced.filter(|length| *length > MAX_PAGE_BYTES as u64) {
            self.lock().too_large = Some(length);
            return Err(format!("an answer of {length} bytes is larger than the {MAX_PAGE_BYTES} allowed").into());
        }
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() =
            body.map(|inner| SdkBody::from_body_1_x(http_body_util::Limited::new(inner, MAX_PAGE_BYTES)));
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.response().body().bytes().map(<[u8]>::to_vec);
        self.lock().body = body;
        Ok(())
    }
}

impl RawBody {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When the service answered, by its `Date` header, if it sent one.
    fn date(&self) -> Option<DateTime<Utc>> {
        self.lock().date
    }

    /// The refusal of an answer too large to read, if that is why the call failed.
    fn refusal(&self, operation: &str) -> Option<PollError> {
        let length = self.lock().too_large?;
        Some(PollError::Target(format!(
            "{operation}: an answer of {length} bytes is larger than the {MAX_PAGE_BYTES} allowed; not read"
        )))
    }

    /// The findings array of the captured answer.
    fn findings(&self, operation: &str) -> Result<Vec<Value>, PollError> {
        Ok(findings_of(&self.document(operation)?).cloned().unwrap_or_default())
    }

    fn document(&self, operation: &str) -> Result<Value, PollError> {
        let body = self.lock().body.take().unwrap_or_default();
        serde_json::from_slice(&body)
            .map_err(|error| PollError::Target(format!("{operation}: the answer is not JSON: {error}")))
    }

    /// The findings of a successful answer the SDK could not read as a whole, and its page
    /// token: one finding with a field of the wrong type (a string severity) fails the SDK's
    /// typed reading of the page, and would hold the job on that page for good. Read here
    /// from the JSON, each finding is converted on its own and only the bad one is skipped
    /// (and named). `None` when the failure was no such answer.
    fn unread_page<E>(
        &self,
        operation: &str,
        error: &SdkError<E, HttpResponse>,
    ) -> Option<(Vec<Value>, Option<String>)> {
        let answered = matches!(error, SdkError::ServiceError(service) if service.raw().status().is_success());
        let document = self.document(operation).ok().filter(|_| answered)?;
        let findings = findings_of(&document)?.clone();
        let token = ["NextToken", "nextToken"].iter().find_map(|name| document[*name].as_str());
        tracing::warn!(operation, %error, "the SDK could not read the answer; its findings are read one by one");
        Some((findings, token.filter(|t| !t.is_empty()).map(str::to_owned)))
    }
}

/// Stack for the threads that read findings answers: the SDK's typed deserializers of a
/// finding (ASFF's resource details nest hundreds of types) need more than a runtime thread's
/// 2 MiB in debug builds. Only the pages touched are ever committed.
const FINDINGS_STACK_BYTES: usize = 64 << 20;

/// Runs an SDK call on the findings runtime, whose threads have [`FINDINGS_STACK_BYTES`] of
/// stack. It lives as long as the process, so the connections its calls open stay usable.
async fn on_large_stack<F>(call: F) -> Result<F::Output, PollError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("skywarden-findings")
            .thread_stack_size(FINDINGS_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|error| error.to_string())
    });
    let runtime =
        runtime.as_ref().map_err(|error| PollError::Target(format!("cannot start the findings runtime: {error}")))?;
    runtime.spawn(call).await.map_err(|error| PollError::Target(format!("the findings call failed: {error}")))
}

/// One GuardDuty run: the region's detector, then its findings updated since the cursor.
pub async fn run_guardduty(
    ctx: &PollContext,
    session: &AccountSession,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let client = session.guardduty(&job.region);
    let mut listing = Listing::load(&job.checkpoint, ctx, Utc::now());
    let detectors = client
        .list_detectors()
        .max_results(50)
        .send()
        .await
        .map_err(|error| AwsError::from_sdk("guardduty:ListDetectors", &job.region, error))?;
    // GuardDuty has at most one detector per account and region.
    let Some(detector) = detectors.detector_ids().first().cloned() else {
        return record_not_enabled(ctx, job, listing).await;
    };
    if listing.detector_id.as_deref() != Some(detector.as_str()) {
        listing.next_token = None;
    }
    listing.detector_id = Some(detector.clone());
    let mut outcome = RunOutcome::default();
    let pages = ctx.options.max_pages_per_run.max(1);
    for _ in 0..pages {
        let (listed, next_token) = match list_guardduty_page(&client, job, &detector, &listing).await {
            Err(PollError::Aws(error)) if listing.next_token.is_some() && refuses_token(&error) => {
                listing.restart_at_cursor(job, &error);
                list_guardduty_page(&client, job, &detector, &listing).await?
            }
            listed => listed?,
        };
        let findings = if listed.ids.is_empty() {
            Vec::new()
        } else {
            let answered = get_guardduty_findings(&client, job, &detector, listed.ids.clone()).await?;
            keep_asked(job, &mut listing, &listed.ids, answered)
        };
        listing.started_ms.get_or_insert(listed.sent_at.timestamp_millis());
        let (stored, more) =
            store_page(ctx, job, FindingSource::GuardDuty, &findings, &mut listing, next_token, Some(&listed)).await?;
        outcome.stored += stored;
        if !more {
            return Ok(outcome);
        }
    }
    capped(ctx, job, &mut listing, pages).await?;
    outcome.more_pending = true;
    Ok(outcome)
}

/// One ListFindings answer: the ids in the listing's order (`updatedAt` ascending), when the
/// listing was made (the answer's `Date`, by GuardDuty's clock; else ours when it was sent),
/// and whether a next page follows.
struct ListedPage {
    ids: Vec<String>,
    sent_at: DateTime<Utc>,
    more: bool,
}

/// Keeps the GetFindings answers this job asked for: of its account and region, and among the
/// ids listed. Any other is dropped, counted and named in the job's state (a GuardDuty
/// administrator answering for a member, or an endpoint answering more than asked).
fn keep_asked(job: &Job, listing: &mut Listing, ids: &[String], answered: Vec<Value>) -> Vec<Value> {
    let asked: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let (kept, rejected): (Vec<Value>, Vec<Value>) = answered.into_iter().partition(|f| {
        let field = |name: &str| f.get(name).and_then(Value::as_str);
        field("accountId") == Some(job.account_id.as_str())
            && field("region") == Some(job.region.as_str())
            && field("id").is_some_and(|id| asked.contains(id))
    });
    if let Some(first) = rejected.first() {
        let note = format!(
            "finding {} of account {} in {}",
            first.get("id").and_then(Value::as_str).unwrap_or("?"),
            first.get("accountId").and_then(Value::as_str).unwrap_or("?"),
            first.get("region").and_then(Value::as_str).unwrap_or("?"),
        );
        listing.rejected = Some(listing.rejected.unwrap_or(0) + rejected.len() as u64);
        listing.rejected_last = Some(bounded_note(&note));
        listing.rejected_at = Some(Utc::now());
        tracing::warn!(job_id = job.job_id, account_id = %job.account_id, region = %job.region,
            count = rejected.len(), first = %note, "GetFindings answered findings not asked for; dropped");
    }
    kept
}

/// The ids of a listed page whose `updatedAt`, as GetFindings read it, is proven to be the one
/// ListFindings ordered them by. GetFindings reads each finding as it is now; one updated in
/// between comes back newer, and advancing the cursor to it would pass findings listed after it
/// with an `updatedAt` in between, for good. Not proven: a finding read newer than the listing
/// was sent (less [`CLOCK_MARGIN`]), or newer than one listed after it (out of the ascending
/// order it was listed in, so it changed since). The last id of a page with more to follow has
/// no later one to be checked against here: never proven (the next listing reads it again).
fn proven_ids(listed: &ListedPage, read: &[ExternalFinding]) -> HashSet<String> {
    let updated: HashMap<&str, DateTime<Utc>> = read.iter().map(|f| (f.id.as_str(), f.updated_at)).collect();
    let limit = listed.sent_at - CLOCK_MARGIN;
    let mut proven = HashSet::new();
    let mut later_min: Option<DateTime<Utc>> = None;
    let checked = if listed.more { listed.ids.len().saturating_sub(1) } else { listed.ids.len() };
    if let Some(last) = listed.ids[checked..].first() {
        later_min = updated.get(last.as_str()).copied();
    }
    for id in listed.ids[..checked].iter().rev() {
        let Some(&at) = updated.get(id.as_str()) else { continue };
        if at <= limit && later_min.is_none_or(|later| at <= later) {
            proven.insert(id.clone());
        }
        later_min = Some(later_min.map_or(at, |later| later.min(at)));
    }
    proven
}

/// Records that a run stopped at its page cap with more to read (the checkpoint of the last
/// page already holds the cursor the next run resumes from).
async fn capped(ctx: &PollContext, job: &mut Job, listing: &mut Listing, pages: usize) -> Result<(), PollError> {
    listing.capped(job, pages);
    let checkpoint = serde_json::to_value(&*listing).unwrap_or_default();
    let mut tx = crate::db::begin(&ctx.pool).await?;
    job.save_checkpoint(&mut tx, checkpoint, None, 0).await?;
    tx.commit().await?;
    Ok(())
}

fn bounded_note(text: &str) -> String {
    text.chars().take(MAX_NOTE_CHARS).collect()
}

async fn list_guardduty_page(
    client: &aws_sdk_guardduty::Client,
    job: &Job,
    detector: &str,
    listing: &Listing,
) -> Result<(ListedPage, Option<String>), PollError> {
    use aws_sdk_guardduty::types::{Condition, FindingCriteria, OrderBy, SortCriteria};
    let criteria = FindingCriteria::builder()
        .criterion("updatedAt", Condition::builder().greater_than_or_equal(listing.request_since_ms()).build())
        // A GuardDuty administrator account sees its members' findings too: each is its own account's.
        .criterion("accountId", Condition::builder().equals(&job.account_id).build())
        .build();
    let sent_at = Utc::now();
    let raw = RawBody::default();
    let page = client
        .list_findings()
        .detector_id(detector)
        .finding_criteria(criteria)
        .sort_criteria(SortCriteria::builder().attribute_name("updatedAt").order_by(OrderBy::Asc).build())
        .max_results(GUARDDUTY_PAGE)
        .set_next_token(listing.next_token.clone())
        .customize()
        .interceptor(raw.clone())
        .send()
        .await
        .map_err(|error| AwsError::from_sdk("guardduty:ListFindings", &job.region, error))?;
    // The service's clock, when it says: the proof of a read ([`proven_ids`]) compares with
    // `updatedAt`, which GuardDuty stamps by its clock.
    let sent_at = raw.date().unwrap_or(sent_at);
    let next = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
    let ids = page.finding_ids().to_vec();
    // More ids than asked for would not fit one GetFindings: refused rather than cut.
    if ids.len() > GUARDDUTY_PAGE as usize {
        return Err(PollError::Target(format!(
            "guardduty:ListFindings answered {} finding ids, more than the {GUARDDUTY_PAGE} asked for; not read",
            ids.len()
        )));
    }
    let more = next.is_some();
    Ok((ListedPage { ids, sent_at, more }, next))
}

async fn get_guardduty_findings(
    client: &aws_sdk_guardduty::Client,
    job: &Job,
    detector: &str,
    ids: Vec<String>,
) -> Result<Vec<Value>, PollError> {
    let raw = RawBody::default();
    let call =
        client.get_findings().detector_id(detector).set_finding_ids(Some(ids)).customize().interceptor(raw.clone());
    match on_large_stack(call.send()).await? {
        Ok(_) => raw.findings("guardduty:GetFindings"),
        Err(error) => match (raw.refusal("guardduty:GetFindings"), raw.unread_page("guardduty:GetFindings", &error)) {
            (Some(refused), _) => Err(refused),
            (None, Some((findings, _))) => Ok(findings),
            (None, None) => Err(AwsError::from_sdk("guardduty:GetFindings", &job.region, error).into()),
        },
    }
}

fn ascending(field: &str) -> aws_sdk_securityhub::types::SortCriterion {
    use aws_sdk_securityhub::types::{SortCriterion, SortOrder};
    SortCriterion::builder().field(field).sort_order(SortOrder::Ascending).build()
}

/// One Security Hub page: the findings of this account and region updated since the cursor,
/// and the next page's token.
async fn security_hub_page(
    client: &aws_sdk_securityhub::Client,
    job: &Job,
    listing: &Listing,
) -> Result<(Vec<Value>, Option<String>, DateTime<Utc>), PollError> {
    let sent_at = Utc::now();
    let raw = RawBody::default();
    let sent = client
        .get_findings()
        .filters(security_hub_filters(job, listing))
        .sort_criteria(ascending("UpdatedAt"))
        // Ties broken by `Id`, so a walk through one instant pages through one order (that
        // Security Hub honours a second criterion is not verified against AWS).
        .sort_criteria(ascending("Id"))
        .max_results(SECURITY_HUB_PAGE)
        .set_next_token(listing.next_token.clone())
        .customize()
        .interceptor(raw.clone());
    const OPERATION: &str = "securityhub:GetFindings";
    let (findings, next_token) = match on_large_stack(sent.send()).await? {
        Ok(page) => (raw.findings(OPERATION)?, page.next_token().filter(|t| !t.is_empty()).map(str::to_owned)),
        Err(error) => match (raw.refusal(OPERATION), raw.unread_page(OPERATION, &error)) {
            (Some(refused), _) => return Err(refused),
            (None, Some(page)) => page,
            // Spelled out: the role template test reads the calls made from the literals given to from_sdk.
            (None, None) => return Err(AwsError::from_sdk("securityhub:GetFindings", &job.region, error).into()),
        },
    };
    Ok((keep_hub_findings(job, findings), next_token, raw.date().unwrap_or(sent_at)))
}

/// One Security Hub run: the findings of this account and region updated since the cursor
/// (without those GuardDuty relays when the account imports GuardDuty's own).
pub async fn run_security_hub(
    ctx: &PollContext,
    session: &AccountSession,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let client = session.securityhub(&job.region);
    let mut listing = Listing::load(&job.checkpoint, ctx, Utc::now());
    let mut outcome = RunOutcome::default();
    let pages = ctx.options.max_pages_per_run.max(1);
    for _ in 0..pages {
        let page = match security_hub_page(&client, job, &listing).await {
            Err(PollError::Aws(error)) if listing.next_token.is_some() && refuses_token(&error) => {
                listing.restart_at_cursor(job, &error);
                security_hub_page(&client, job, &listing).await
            }
            page => page,
        };
        let (findings, next_token, answered_at) = match page {
            Ok(page) => page,
            Err(PollError::Aws(error)) if is_not_subscribed(&error) => {
                return record_not_enabled(ctx, job, listing).await;
            }
            Err(error) => return Err(error),
        };
        listing.started_ms.get_or_insert(answered_at.timestamp_millis());
        // One GetFindings answer reads each finding as it lists it: every one is proven.
        let (stored, more) =
            store_page(ctx, job, FindingSource::SecurityHub, &findings, &mut listing, next_token, None).await?;
        outcome.stored += stored;
        if !more {
            outcome.stored += recheck_security_hub(ctx, &client, job, &mut listing).await?;
            return Ok(outcome);
        }
    }
    capped(ctx, job, &mut listing, pages).await?;
    outcome.more_pending = true;
    Ok(outcome)
}

/// Re-reads by `Id` the Security Hub findings of this job's alerts that are open, or closed
/// less than 7 days ago, at most [`RECHECK_PER_RUN`] a run, going on from the last alert
/// re-checked (by alert id, wrapping round). `BatchUpdateFindings`, how the console and most
/// tools set a workflow status, leaves `UpdatedAt` as it was, so the listing (by `UpdatedAt`)
/// sees such a change only inside its overlap; this sees it within a few runs. Returns how many
/// findings it folded.
async fn recheck_security_hub(
    ctx: &PollContext,
    client: &aws_sdk_securityhub::Client,
    job: &mut Job,
    listing: &mut Listing,
) -> Result<u64, PollError> {
    let after = listing.recheck_after.clone().unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".to_owned());
    let since = Utc::now() - chrono::Duration::days(7);
    let due = sqlx::query!(
        r#"SELECT a.alert_id::text AS "alert_id!", a.details->>'finding_id' AS "finding_id!"
           FROM alerts a
           WHERE a.account_id = $1 AND a.details->>'source' = 'securityhub' AND a.details->>'region' = $2
             AND a.details ? 'finding_id' AND a.alert_id > $3::text::uuid
             AND (a.status IN ('open', 'acknowledged', 'snoozed')
                  OR EXISTS (SELECT 1 FROM alert_status_changes c WHERE c.account_id = a.account_id
                               AND c.alert_id = a.alert_id AND c.changed_at > $4))
           ORDER BY a.alert_id LIMIT $5"#,
        job.account_id,
        job.region,
        after,
        since,
        RECHECK_PER_RUN,
    )
    .fetch_all(&ctx.pool)
    .await?;
    let wrapped = (due.len() as i64) < RECHECK_PER_RUN;
    let mut folded = 0;
    for batch in due.chunks(RECHECK_BATCH) {
        let ids: Vec<String> = batch.iter().map(|row| row.finding_id.clone()).collect();
        let findings = security_hub_by_id(client, job, &ids).await?;
        let mut converted = Vec::with_capacity(findings.len());
        for value in &findings {
            match FindingSource::SecurityHub.convert(value) {
                Ok(finding) => converted.push(finding),
                Err(error) => listing.malformed(job, value, &error),
            }
        }
        listing.recheck_after = batch.last().map(|row| row.alert_id.clone());
        let mut tx = crate::db::begin(&ctx.pool).await?;
        folded += fold_findings(&mut tx, &converted).await?.folded;
        let checkpoint = serde_json::to_value(&*listing).unwrap_or_default();
        job.save_checkpoint(&mut tx, checkpoint, None, 0).await?;
        tx.commit().await?;
    }
    if wrapped {
        listing.recheck_after = None;
        let checkpoint = serde_json::to_value(&*listing).unwrap_or_default();
        let mut tx = crate::db::begin(&ctx.pool).await?;
        job.save_checkpoint(&mut tx, checkpoint, None, 0).await?;
        tx.commit().await?;
    }
    Ok(folded)
}

/// The Security Hub findings with these ids (at most [`RECHECK_BATCH`]) of this job's account
/// and region, as they are now; any other finding an answer holds is left out.
async fn security_hub_by_id(
    client: &aws_sdk_securityhub::Client,
    job: &Job,
    ids: &[String],
) -> Result<Vec<Value>, PollError> {
    use aws_sdk_securityhub::types::{AwsSecurityFindingFilters, StringFilter, StringFilterComparison};
    let equals = |value: &str| StringFilter::builder().value(value).comparison(StringFilterComparison::Equals).build();
    let filters = AwsSecurityFindingFilters::builder()
        .set_id(Some(ids.iter().map(|id| equals(id)).collect()))
        .aws_account_id(equals(&job.account_id))
        .region(equals(&job.region));
    let filters = without_guardduty(job, filters).build();
    let raw = RawBody::default();
    let sent =
        client.get_findings().filters(filters).max_results(SECURITY_HUB_PAGE).customize().interceptor(raw.clone());
    const OPERATION: &str = "securityhub:GetFindings";
    let findings = match on_large_stack(sent.send()).await? {
        Ok(_) => raw.findings(OPERATION)?,
        Err(error) => match (raw.refusal(OPERATION), raw.unread_page(OPERATION, &error)) {
            (Some(refused), _) => return Err(refused),
            (None, Some((findings, _))) => findings,
            (None, None) => return Err(AwsError::from_sdk("securityhub:GetFindings", &job.region, error).into()),
        },
    };
    let asked: HashSet<&str> = ids.iter().map(String::as_str).collect();
    Ok(keep_hub_findings(job, findings)
        .into_iter()
        .filter(|f| f["Id"].as_str().is_some_and(|id| asked.contains(id)))
        .collect())
}

fn security_hub_filters(job: &Job, listing: &Listing) -> aws_sdk_securityhub::types::AwsSecurityFindingFilters {
    use aws_sdk_securityhub::types::{AwsSecurityFindingFilters, DateFilter, StringFilter, StringFilterComparison};
    let equals = |value: &str| StringFilter::builder().value(value).comparison(StringFilterComparison::Equals).build();
    let (from, to) = listing.hub_window();
    // Security Hub refuses a date range without its end: a fixed far one keeps every page's
    // request of a listing the same.
    let to = to.map_or_else(
        || "2999-12-31T23:59:59.999Z".to_owned(),
        |to| to.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    );
    let filters = AwsSecurityFindingFilters::builder()
        .updated_at(
            DateFilter::builder().start(from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).end(to).build(),
        )
        .aws_account_id(equals(&job.account_id))
        .region(equals(&job.region));
    without_guardduty(job, filters).build()
}

/// When the account imports GuardDuty's own findings, the Security Hub job leaves out those
/// GuardDuty relays, by their product ARN (its name is a display string).
fn without_guardduty(
    job: &Job,
    filters: aws_sdk_securityhub::types::builders::AwsSecurityFindingFiltersBuilder,
) -> aws_sdk_securityhub::types::builders::AwsSecurityFindingFiltersBuilder {
    use aws_sdk_securityhub::types::{StringFilter, StringFilterComparison};
    if job.target != WITHOUT_GUARDDUTY_TARGET {
        return filters;
    }
    let prefix = format!("arn:{}:securityhub:{}::product/aws/guardduty", partition(&job.region), job.region);
    filters
        .product_arn(StringFilter::builder().value(prefix).comparison(StringFilterComparison::PrefixNotEquals).build())
}

/// The partition of a region's ARNs.
fn partition(region: &str) -> &'static str {
    match region {
        r if r.starts_with("cn-") => "aws-cn",
        r if r.starts_with("us-gov-") => "aws-us-gov",
        r if r.starts_with("us-isob-") => "aws-iso-b",
        r if r.starts_with("us-iso-") => "aws-iso",
        _ => "aws",
    }
}

/// What a Security Hub answer holds for this job: findings of its account and region (an
/// aggregation region answers for its linked regions, an administrator for its members, and not
/// every endpoint honours every filter), without GuardDuty's relays when it imports those.
fn keep_hub_findings(job: &Job, findings: Vec<Value>) -> Vec<Value> {
    let excluded = job.target == WITHOUT_GUARDDUTY_TARGET;
    let relayed = |f: &Value| f["ProductArn"].as_str().is_some_and(|arn| arn.ends_with("::product/aws/guardduty"));
    findings
        .into_iter()
        .filter(|f| f["AwsAccountId"] == job.account_id.as_str() && f["Region"] == job.region.as_str())
        .filter(|f| !(excluded && relayed(f)))
        .collect()
}

/// Security Hub's answer in a region where the account has not enabled it.
/// ("Account 111122223333 is not subscribed to AWS Security Hub"). The error type alone does not
/// say: AWS answers `InvalidAccessException` to a missing permission too.
fn is_not_subscribed(error: &AwsError) -> bool {
    error.code.as_deref() == Some("InvalidAccessException")
        && error.message.to_ascii_lowercase().contains("not subscribed")
}

/// The service is not enabled in this region: a state, recorded with the job's checkpoint
/// (the listing is kept, so enabling it later resumes where it was).
async fn record_not_enabled(ctx: &PollContext, job: &mut Job, mut listing: Listing) -> Result<RunOutcome, PollError> {
    listing.state = NOT_ENABLED.into();
    listing.detector_id = None;
    listing.next_token = None;
    if let Some(walk) = &mut listing.walk {
        walk.restart();
    }
    let checkpoint = serde_json::to_value(&listing).unwrap_or_default();
    let mut tx = crate::db::begin(&ctx.pool).await?;
    job.save_checkpoint(&mut tx, checkpoint, Some(Utc::now()), 0).await?;
    tx.commit().await?;
    tracing::info!(job_id = job.job_id, account_id = %job.account_id, region = %job.region,
        source = job.source.as_str(), "not enabled in this region; nothing to import");
    Ok(RunOutcome::default())
}

/// Folds the findings of a page new to the listing into alerts and saves the checkpoint, in
/// one transaction. A malformed finding is skipped, counted and named in the job's state; the
/// rest of the page is imported. Returns how many findings raised or updated an alert, and
/// whether more pages follow.
async fn store_page(
    ctx: &PollContext,
    job: &mut Job,
    source: FindingSource,
    raw: &[Value],
    listing: &mut Listing,
    next_token: Option<String>,
    listed: Option<&ListedPage>,
) -> Result<(u64, bool), PollError> {
    let mut converted = Vec::with_capacity(raw.len());
    for value in raw {
        match source.convert(value) {
            Ok(finding) => converted.push(finding),
            Err(error) => listing.malformed(job, value, &error),
        }
    }
    let proven = listed.map(|listed| proven_ids(listed, &converted));
    let page: Vec<&ExternalFinding> = converted.iter().collect();
    let hub = source == FindingSource::SecurityHub;
    let fresh: Vec<&ExternalFinding> =
        converted.iter().filter(|f| if hub { listing.hub_foldable(f) } else { listing.is_fresh(f) }).collect();
    let to_fold: Vec<ExternalFinding> = fresh.iter().map(|f| (*f).clone()).collect();
    let step = if hub {
        listing.after_hub_page(&page, &fresh, next_token, ctx.options.overlap.as_millis() as i64)
    } else {
        listing.after_page(&page, &fresh, proven.as_ref(), next_token, ctx.options.overlap)
    };
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let folded = fold_findings(&mut tx, &to_fold).await?;
    job.save_checkpoint(&mut tx, step.checkpoint, step.covered, step.fresh).await?;
    tx.commit().await?;
    Ok((folded.folded, step.more))
}

/// What folding findings into alerts did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Folded {
    /// Findings that raised or updated an alert.
    pub folded: u64,
    /// Older versions of a finding than the one its alert holds: they change nothing.
    pub stale: u64,
    /// Alerts reopened because their finding is active again.
    pub reopened: u64,
}

/// Folds findings into alerts inside `tx`. Only the newest version of each finding counts:
/// one older than what its alert holds (`updatedAt`) changes nothing, whatever order they are
/// imported in. An active finding raises or updates its alert (a rise in severity is routed),
/// and reopens it when [`reopen_reason`] says so. An inactive one (archived, resolved,
/// suppressed) raises nothing and notifies no one: it updates the alert it raised before and
/// closes it if it is still open; an analyst's resolved or dismissed alert stays as it is. The
/// alert is the finding's, whatever policy the finding names now (Security Hub can change it).
pub async fn fold_findings(tx: &mut sqlx::PgConnection, converted: &[ExternalFinding]) -> Result<Folded, PollError> {
    use crate::alerts::store::AlertChange;
    let mut converted = newest_per_finding(converted);
    keep_alert_identity(tx, &mut converted).await?;
    let before = stored_states(tx, &converted).await?;
    let mut outcome = Folded::default();
    let (mut active, mut inactive, mut undetermined) = (Vec::new(), Vec::new(), Vec::new());
    for external in &converted {
        let prior = before.get(&external.finding.alert_id());
        match prior {
            Some(prior) if prior.updated_at.is_some_and(|at| at > external.updated_at) => outcome.stale += 1,
            Some(prior) if external.undetermined => undetermined.push((external, prior)),
            _ if external.active => active.push((external, prior)),
            _ => inactive.push((external, prior)),
        }
    }
    let reopen: HashMap<String, String> = active
        .iter()
        .filter_map(|(f, prior)| prior.and_then(|p| reopen_reason(f, p)).map(|reason| (f.finding.alert_id(), reason)))
        .collect();
    let findings: Vec<_> = active.iter().map(|(f, _)| f.finding.clone()).collect();
    let recorded = crate::alerts::store::record_in(tx, &findings).await.map_err(store_error)?;
    // A closed alert that stays closed is no news to a route, whatever its finding's severity.
    let changes: Vec<AlertChange> = recorded
        .changes
        .into_iter()
        .filter(|change| match change {
            AlertChange::Raised { alert_id, .. } => {
                before.get(alert_id).is_none_or(|p| !is_closed(p.status) || reopen.contains_key(alert_id))
            }
            AlertChange::StatusChanged { .. } => true,
        })
        .collect();
    crate::notify::outbox::enqueue(tx, &changes).await?;
    for (external, _) in active {
        let alert_id = external.finding.alert_id();
        refresh_alert(tx, external, &alert_id).await?;
        outcome.folded += 1;
        if let Some(reason) = reopen.get(&alert_id) {
            reopen_alert(tx, external, &alert_id, reason).await?;
            outcome.reopened += 1;
        }
    }
    for (external, prior) in inactive {
        let alert_id = external.finding.alert_id();
        if refresh_alert(tx, external, &alert_id).await? {
            // Only a change closes: a version read again leaves an analyst's reopen alone.
            if prior.is_none_or(|p| is_new_version(external, p)) {
                close_alert(tx, external, &alert_id).await?;
            }
            outcome.folded += 1;
        }
    }
    // NOT_AVAILABLE (Security Hub could not evaluate the control): recorded, no status change,
    // and the alert keeps whether its finding was active, so the next verdict compares with it.
    for (external, prior) in undetermined {
        let mut kept = external.clone();
        kept.finding.details["active"] = Value::Bool(prior.active);
        if refresh_alert(tx, &kept, &kept.finding.alert_id()).await? {
            outcome.folded += 1;
        }
    }
    Ok(outcome)
}

fn is_closed(status: crate::model::AlertStatus) -> bool {
    matches!(status, crate::model::AlertStatus::Resolved | crate::model::AlertStatus::Dismissed)
}

/// Whether a version of a finding is newer than the one its alert holds: a later `updatedAt`,
/// or the same one with another state (Security Hub's `BatchUpdateFindings` sets a workflow
/// status without changing `UpdatedAt`).
fn is_new_version(external: &ExternalFinding, prior: &Stored) -> bool {
    prior.updated_at.is_none_or(|at| {
        external.updated_at > at || (external.updated_at == at && prior.version_state != external.version_state())
    })
}

/// The newest version of each finding (by account and id; the later of equals), in the order
/// they first appear: a file or page holding two versions folds the newest only.
fn newest_per_finding(findings: &[ExternalFinding]) -> Vec<ExternalFinding> {
    let mut newest: Vec<ExternalFinding> = Vec::with_capacity(findings.len());
    let mut position: HashMap<(&str, &str), usize> = HashMap::new();
    for finding in findings {
        let key = (finding.finding.account_id.as_str(), finding.id.as_str());
        match position.get(&key) {
            Some(&at) if newest[at].updated_at <= finding.updated_at => newest[at] = finding.clone(),
            Some(_) => {}
            None => {
                position.insert(key, newest.len());
                newest.push(finding.clone());
            }
        }
    }
    newest
}

/// An alert of a finding as it was before a fold, locked for the fold (an analyst's change
/// waits for it, or it for the analyst's): its status, severity, and the version of the
/// finding it holds (`updatedAt`, its state, and whether it was active).
#[derive(Clone, Debug)]
struct Stored {
    status: crate::model::AlertStatus,
    severity: crate::model::Severity,
    updated_at: Option<DateTime<Utc>>,
    active: bool,
    /// [`ExternalFinding::version_state`] of the version it holds.
    version_state: String,
}

async fn stored_states(
    tx: &mut sqlx::PgConnection,
    findings: &[ExternalFinding],
) -> Result<HashMap<String, Stored>, sqlx::Error> {
    let accounts: Vec<String> = findings.iter().map(|f| f.finding.account_id.clone()).collect();
    let ids: Vec<String> = findings.iter().map(|f| f.finding.alert_id()).collect();
    // Alerts from before `active` was kept: read it from the fields each service names.
    let rows = sqlx::query!(
        r#"SELECT a.alert_id::text AS "alert_id!", a.status AS "status: crate::model::AlertStatus",
                  a.severity AS "severity: crate::model::Severity",
                  (a.details->>'updated_at')::timestamptz AS updated_at,
                  coalesce((a.details->>'active')::boolean,
                           NOT coalesce((a.details->>'archived')::boolean, false)
                           AND coalesce(a.details->>'record_state', 'ACTIVE') = 'ACTIVE'
                           AND coalesce(a.details->>'workflow_status', 'NEW') NOT IN ('RESOLVED', 'SUPPRESSED')
                           AND coalesce(a.details->>'compliance_status', 'FAILED') IN ('FAILED', 'WARNING'))
                      AS "active!",
                  concat_ws('|', a.details->>'record_state', a.details->>'workflow_status',
                            a.details->>'compliance_status', a.details->>'archived') AS "version_state!"
           FROM alerts a JOIN unnest($1::text[], $2::text[]) AS k(account_id, alert_id)
             ON a.account_id = k.account_id AND a.alert_id = k.alert_id::uuid
           ORDER BY a.alert_id
           FOR UPDATE OF a"#,
        &accounts,
        &ids,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let stored = Stored {
                status: r.status,
                severity: r.severity,
                updated_at: r.updated_at,
                active: r.active,
                version_state: r.version_state,
            };
            (r.alert_id, stored)
        })
        .collect())
}

/// Whether a newer, active version of a finding reopens its closed alert, and why. An alert is
/// the SOC's: an update of a finding that stayed active at the same severity never reopens a
/// resolved or dismissed alert. A finding active again after it was archived or resolved
/// (inactive in the version the alert holds) reopens a resolved alert, whoever resolved it. A
/// rise in severity above the alert's reopens a resolved or dismissed one.
fn reopen_reason(external: &ExternalFinding, prior: &Stored) -> Option<String> {
    use crate::model::AlertStatus;
    if !external.active || !is_new_version(external, prior) || !is_closed(prior.status) {
        return None;
    }
    let source = external.finding.details["source"].as_str().unwrap_or("aws");
    let id = &external.id;
    if prior.status == AlertStatus::Resolved && !prior.active {
        return Some(format!("reopened: {source} reports finding {id} active again after it was archived or resolved"));
    }
    (external.finding.severity > prior.severity).then(|| {
        format!(
            "reopened: {source} now rates finding {id} {}, above the {} it had when {}",
            external.finding.severity,
            prior.severity,
            prior.status.as_str()
        )
    })
}

/// Reopens the alert of a finding active again, recorded in its history with the service as
/// the actor and told to the channels that heard of it (a status message, as a reopen), unless
/// the service itself closed it less than [`SILENT_REOPEN_WITHIN`] ago: that close told no
/// one, so neither does the reopen (a flapping finding would flood the routes).
async fn reopen_alert(
    tx: &mut sqlx::PgConnection,
    external: &ExternalFinding,
    alert_id: &str,
    reason: &str,
) -> Result<(), PollError> {
    let source = external.finding.details["source"].as_str().unwrap_or("aws");
    let since = Utc::now() - SILENT_REOPEN_WITHIN;
    let silent = sqlx::query_scalar!(
        r#"SELECT (actor = $3 AND new_status = 'resolved' AND changed_at > $4) AS "silent!"
           FROM alert_status_changes WHERE account_id = $1 AND alert_id = $2::text::uuid
           ORDER BY changed_at DESC LIMIT 1"#,
        external.finding.account_id,
        alert_id,
        source,
        since,
    )
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(false);
    let outcome =
        crate::alerts::store::set_status_in(tx, alert_id, crate::model::AlertStatus::Open, None, source, reason)
            .await
            .map_err(store_error)?;
    if !silent {
        crate::notify::outbox::enqueue(tx, outcome.change.as_slice()).await?;
    }
    Ok(())
}

fn store_error(error: crate::alerts::store::AlertStoreError) -> PollError {
    match error {
        crate::alerts::store::AlertStoreError::Db(error) => PollError::Database(error),
        other => PollError::Target(other.to_string()),
    }
}

/// Gives each finding the policy of the alert it raised before, so its alert id (which the
/// policy is part of) stays the finding's: the subject (the finding id) and the creation time
/// identify it, and Security Hub may rename a finding's control or generator later.
async fn keep_alert_identity(tx: &mut sqlx::PgConnection, findings: &mut [ExternalFinding]) -> Result<(), sqlx::Error> {
    let accounts: Vec<String> = findings.iter().map(|f| f.finding.account_id.clone()).collect();
    let keys: Vec<String> = findings.iter().map(|f| f.finding.dedup_key()).collect();
    let known = sqlx::query!(
        r#"SELECT a.account_id, a.dedup_key, min(a.policy_id) AS "policy_id!"
           FROM alerts a JOIN unnest($1::text[], $2::text[]) AS k(account_id, dedup_key)
             ON a.account_id = k.account_id AND a.dedup_key = k.dedup_key
           GROUP BY a.account_id, a.dedup_key"#,
        &accounts,
        &keys,
    )
    .fetch_all(&mut *tx)
    .await?;
    for finding in findings.iter_mut() {
        let key = finding.finding.dedup_key();
        let earlier = known.iter().find(|k| k.account_id == finding.finding.account_id && k.dedup_key == key);
        if let Some(earlier) = earlier.filter(|k| k.policy_id != finding.finding.policy_id) {
            finding.finding.policy_id = earlier.policy_id.clone();
        }
    }
    Ok(())
}

/// The alert follows the finding's latest update: its details (the finding as AWS last wrote
/// it), title and last-seen time; an older update arriving late changes nothing. Whether the
/// alert exists and took the update.
async fn refresh_alert(
    tx: &mut sqlx::PgConnection,
    external: &ExternalFinding,
    alert_id: &str,
) -> Result<bool, sqlx::Error> {
    let finding = &external.finding;
    let updated = sqlx::query!(
        r#"UPDATE alerts SET details = $3::jsonb || jsonb_build_object('first_evidence', details->'first_evidence'),
                  title = $4, last_seen = greatest(last_seen, $5)
           WHERE account_id = $1 AND alert_id = $2::text::uuid
             AND coalesce((details->>'updated_at')::timestamptz, '-infinity') <= $5"#,
        finding.account_id,
        alert_id,
        finding.details,
        finding.title,
        external.updated_at,
    )
    .execute(&mut *tx)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// AWS closed the finding: its alert, if still open (open, acknowledged or snoozed), is
/// resolved, recorded as the service's change; no route hears of it.
async fn close_alert(tx: &mut sqlx::PgConnection, external: &ExternalFinding, alert_id: &str) -> Result<(), PollError> {
    let open = sqlx::query_scalar!(
        r#"SELECT status::text AS "status!" FROM alerts WHERE account_id = $1 AND alert_id = $2::text::uuid FOR UPDATE"#,
        external.finding.account_id,
        alert_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some_and(|status| matches!(status.as_str(), "open" | "acknowledged" | "snoozed"));
    if !open {
        return Ok(());
    }
    let source = external.finding.details["source"].as_str().unwrap_or("aws");
    let reason = format!("{source} no longer reports finding {} as active", external.id);
    crate::alerts::store::set_status_in(tx, alert_id, crate::model::AlertStatus::Resolved, None, source, &reason)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// What a findings job had to work around, from its checkpoint, for `/metrics`: malformed
/// findings skipped, expired page tokens, runs stopped at the page cap, answers not asked for.
#[derive(Debug)]
pub struct ListingCounters {
    pub account_id: String,
    pub region: String,
    pub source: String,
    pub malformed: i64,
    pub token_restarts: i64,
    pub capped_runs: i64,
    /// GetFindings answers of another account, region or id than asked for, dropped.
    pub rejected: i64,
}

/// The [`ListingCounters`] of every enabled findings job.
pub async fn listing_counters(pool: &sqlx::PgPool) -> Result<Vec<ListingCounters>, sqlx::Error> {
    sqlx::query_as!(
        ListingCounters,
        r#"SELECT account_id, region, source,
                  coalesce((checkpoint->>'malformed')::bigint, 0) AS "malformed!",
                  coalesce((checkpoint->>'token_restarts')::bigint, 0) AS "token_restarts!",
                  coalesce((checkpoint->>'capped_runs')::bigint, 0) AS "capped_runs!",
                  coalesce((checkpoint->>'rejected')::bigint, 0) AS "rejected!"
           FROM poll_jobs WHERE enabled AND source IN ('guardduty-findings', 'securityhub-findings')
           ORDER BY account_id, source, region, target"#
    )
    .fetch_all(pool)
    .await
}

/// Largest findings file `skywarden import --findings` reads (a GetFindings answer is far smaller).
pub const MAX_FINDINGS_FILE_BYTES: u64 = 256 << 20;
/// Findings folded per transaction when importing a file.
const IMPORT_CHUNK: usize = 100;

/// What importing saved findings did.
#[derive(Debug, Default, Serialize)]
pub struct FindingsImport {
    pub files: u64,
    /// Findings read.
    pub findings: u64,
    /// Findings that raised or updated an alert (inactive ones without an alert do neither).
    pub folded: u64,
    /// Findings older than the version their alert holds: they changed nothing.
    pub stale: u64,
    /// Alerts reopened because their finding is active again.
    pub reopened: u64,
    /// `{file}: {problem}` for each file or finding skipped.
    pub errors: Vec<String>,
}

/// Which service wrote a finding: ASFF names `AwsAccountId`, GuardDuty `accountId`.
fn source_of(finding: &Value) -> FindingSource {
    if finding.get("AwsAccountId").is_some() { FindingSource::SecurityHub } else { FindingSource::GuardDuty }
}

/// Imports findings saved from GuardDuty's or Security Hub's `GetFindings` (`{"findings": [...]}`,
/// `{"Findings": [...]}` or a list) as alerts, like the pollers do. A bad file or finding is
/// listed in `errors` and skipped; only a database failure stops the import.
pub async fn import_files(pool: &sqlx::PgPool, paths: &[std::path::PathBuf]) -> Result<FindingsImport, PollError> {
    let mut summary = FindingsImport::default();
    for path in paths {
        let shown = path.display();
        let document = match read_bounded(path) {
            Ok(document) => document,
            Err(problem) => {
                summary.errors.push(format!("{shown}: {problem}"));
                continue;
            }
        };
        let Some(findings) = findings_of(&document) else {
            summary.errors.push(format!("{shown}: no `findings` or `Findings` list"));
            continue;
        };
        summary.files += 1;
        let mut converted = Vec::new();
        for (index, value) in findings.iter().enumerate() {
            summary.findings += 1;
            match source_of(value).convert(value) {
                Ok(finding) => converted.push(finding),
                Err(error) => summary.errors.push(format!("{shown}: finding {index}: {error}")),
            }
        }
        for chunk in converted.chunks(IMPORT_CHUNK) {
            let mut tx = crate::db::begin(pool).await?;
            let folded = fold_findings(&mut tx, chunk).await?;
            summary.folded += folded.folded;
            summary.stale += folded.stale;
            summary.reopened += folded.reopened;
            tx.commit().await?;
        }
    }
    Ok(summary)
}

fn read_bounded(path: &std::path::Path) -> Result<Value, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_FINDINGS_FILE_BYTES {
        return Err(format!("{size} bytes is more than the {MAX_FINDINGS_FILE_BYTES} a findings file may be"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e} (line {}, column {})", e.line(), e.column()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsErrorKind;

    fn refused(code: &str, message: &str) -> AwsError {
        let code = Some(code.to_owned()).filter(|c| !c.is_empty());
        AwsError {
            operation: "guardduty:ListFindings",
            region: "us-east-1".into(),
            kind: AwsErrorKind::Rejected,
            code,
            message: message.into(),
        }
    }

    fn guardduty(id: &str, updated: DateTime<Utc>, severity: f64, archived: bool) -> ExternalFinding {
        let value = serde_json::json!({
            "accountId": "111122223333", "id": id, "type": "Recon:EC2/PortProbeUnprotectedPort",
            "createdAt": "2026-11-20T10:00:00Z", "updatedAt": updated.to_rfc3339(), "severity": severity,
            "service": {"archived": archived}
        });
        FindingSource::GuardDuty.convert(&value).unwrap()
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_000_000, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    #[test]
    fn only_findings_read_as_they_were_listed_are_proven() {
        let listed = ListedPage { ids: ["a", "b", "c", "d"].map(String::from).to_vec(), sent_at: at(10), more: false };
        // b was updated after the listing, out of order; d, last, after the listing was sent.
        let read = [
            guardduty("a", at(1), 2.0, false),
            guardduty("b", at(11), 2.0, false),
            guardduty("c", at(3), 2.0, false),
            guardduty("d", at(10), 2.0, false),
        ];
        let proven = proven_ids(&listed, &read);
        let mut proven: Vec<&str> = proven.iter().map(String::as_str).collect();
        proven.sort();
        assert_eq!(proven, ["a", "c"], "d is within the clock margin of the listing, b out of order");
        let skewed = ListedPage { sent_at: at(20), ..listed };
        let proven = proven_ids(&skewed, &read);
        assert!(!proven.contains("b"), "newer than one listed after it");
        assert!(proven.contains("d"), "last, and no page follows: proven by the listing's time");
        // With a page after it, the last listed id has nothing listed later to be checked
        // against: never proven, whatever the clocks say.
        let followed = ListedPage { more: true, ..skewed };
        let proven = proven_ids(&followed, &read);
        assert!(!proven.contains("d") && proven.contains("c") && proven.contains("a"), "{proven:?}");
    }

    #[test]
    fn the_cursor_advances_only_over_proven_findings() {
        let mut listing = Listing { from_ms: Some(at(0).timestamp_millis()), ..Listing::default() };
        // b was updated to at(30) between the listing and the read: folded, but not passed.
        let page =
            [guardduty("a", at(1), 2.0, false), guardduty("c", at(2), 2.0, false), guardduty("b", at(30), 2.0, false)];
        let refs: Vec<&ExternalFinding> = page.iter().collect();
        let proven: HashSet<String> = ["a".to_owned(), "c".to_owned()].into();
        let overlap = std::time::Duration::from_secs(900);
        let step = listing.after_page(&refs, &refs, Some(&proven), Some("t1".into()), overlap);
        assert_eq!(listing.from_ms, Some(at(2).timestamp_millis()), "the cursor stops at c");
        assert_eq!((step.fresh, step.more), (2, true), "b is counted when it is read again, proven");
        assert_eq!(listing.next_token, None, "the next page is a listing from the cursor");
        // Nothing proven: the cursor stays, and the listing follows its token.
        let none = HashSet::new();
        listing.after_page(&refs[2..], &refs[2..], Some(&none), Some("t2".into()), overlap);
        assert_eq!(listing.from_ms, Some(at(2).timestamp_millis()));
        assert_eq!(listing.next_token.as_deref(), Some("t2"));
        // Without a listing apart from the read (Security Hub), every finding is proven.
        let mut hub = Listing { from_ms: Some(at(0).timestamp_millis()), ..Listing::default() };
        hub.after_page(&refs, &refs, None, Some("t3".into()), overlap);
        assert_eq!(hub.from_ms, Some(at(30).timestamp_millis()));
    }

    #[test]
    fn security_hub_passes_an_instant_only_after_two_walks_agree() {
        let c = at(5).timestamp_millis();
        let f = |id: &str| guardduty(id, at(5), 2.0, false);
        let (a, b, x, y) = (f("a"), f("b"), f("x"), f("y"));
        let mut listing = Listing { from_ms: Some(c), ..Listing::default() };
        // A full page all at the cursor's instant: a walk of it, no token followed.
        let step = listing.after_hub_page(&[&a, &b], &[&a, &b], Some("t0".into()), 0);
        assert!(step.more && listing.next_token.is_none());
        assert_eq!(listing.walk.as_ref().map(|w| w.at_ms), Some(c));
        let (from, to) = listing.hub_window();
        assert_eq!((from.timestamp_millis(), to.map(|t| t.timestamp_millis())), (c - 1, Some(c)));
        // Walk 1: two pages (a, b | x): not proven alone.
        listing.after_hub_page(&[&a, &b], &[], Some("t1".into()), 0);
        listing.after_hub_page(&[&x], &[&x], None, 0);
        assert_eq!(listing.walk.as_ref().map(|w| w.walks), Some(1), "walked again");
        // Walk 2 returns another set (b left, y was skipped before): again.
        listing.after_hub_page(&[&a, &x], &[], Some("t2".into()), 0);
        listing.after_hub_page(&[&y], &[&y], None, 0);
        assert_eq!(listing.from_ms, Some(c), "the cursor stays on the instant");
        // Walk 3 agrees with walk 2: the cursor passes the instant.
        listing.after_hub_page(&[&a, &x], &[], Some("t3".into()), 0);
        let step = listing.after_hub_page(&[&y], &[], None, 0);
        assert!(step.more && listing.walk.is_none());
        assert_eq!(listing.from_ms, Some(c + 1));
        // A walk answered in one page is proven at once.
        let mut one = Listing { from_ms: Some(c), walk: Some(GroupWalk::at(c)), ..Listing::default() };
        one.after_hub_page(&[&a], &[&a], None, 0);
        assert_eq!((one.from_ms, one.walk.is_none()), (Some(c + 1), true));
    }

    #[test]
    fn a_finding_active_again_reopens_by_the_documented_rule() {
        use crate::model::{AlertStatus, Severity};
        let stored = |status, severity, active| Stored {
            status,
            severity,
            updated_at: Some(at(0)),
            active,
            version_state: "false".into(),
        };
        let again = guardduty("f", at(5), 5.0, false);
        let reason = reopen_reason(&again, &stored(AlertStatus::Resolved, Severity::Medium, false)).unwrap();
        assert!(reason.contains("guardduty") && reason.contains("active again"), "{reason}");
        assert!(
            reopen_reason(&again, &stored(AlertStatus::Resolved, Severity::Medium, true)).is_none(),
            "an update of a finding that stayed active leaves the analyst's resolution"
        );
        assert!(
            reopen_reason(&again, &stored(AlertStatus::Dismissed, Severity::Medium, false)).is_none(),
            "a false positive stays dismissed at the same severity"
        );
        let higher = guardduty("f", at(5), 8.0, false);
        let reason = reopen_reason(&higher, &stored(AlertStatus::Dismissed, Severity::Medium, false)).unwrap();
        assert!(reason.contains("high") && reason.contains("medium") && reason.contains("dismissed"), "{reason}");
        let reason = reopen_reason(&higher, &stored(AlertStatus::Resolved, Severity::Medium, true))
            .expect("a rise reopens a resolved alert whose finding stayed active, as it does a dismissed one");
        assert!(reason.contains("high") && reason.contains("when resolved"), "{reason}");
        // The same instant, another state (BatchUpdateFindings keeps UpdatedAt): a new version.
        let same_time = guardduty("f", at(0), 5.0, false);
        let archived_then =
            Stored { version_state: "true".into(), ..stored(AlertStatus::Resolved, Severity::Medium, false) };
        assert!(reopen_reason(&same_time, &archived_then).is_some(), "a same-time change of state folds in");
        assert!(
            reopen_reason(&same_time, &stored(AlertStatus::Resolved, Severity::Medium, false)).is_none(),
            "the same instant and state is the version the alert holds"
        );
        assert!(reopen_reason(&again, &stored(AlertStatus::Open, Severity::Medium, false)).is_none());
        let older = guardduty("f", at(-5), 5.0, false);
        assert!(reopen_reason(&older, &stored(AlertStatus::Resolved, Severity::Medium, false)).is_none());
        let archived = guardduty("f", at(5), 5.0, true);
        assert!(reopen_reason(&archived, &stored(AlertStatus::Resolved, Severity::Medium, false)).is_none());
    }

    #[test]
    fn only_the_newest_version_of_a_finding_is_folded() {
        let versions =
            [guardduty("f", at(5), 8.0, false), guardduty("g", at(1), 2.0, false), guardduty("f", at(1), 2.0, true)];
        let newest = newest_per_finding(&versions);
        assert_eq!(newest.len(), 2);
        assert_eq!((newest[0].id.as_str(), newest[0].updated_at, newest[0].active), ("f", at(5), true));
    }

    #[test]
    fn the_state_names_each_workaround() {
        let listing = Listing {
            malformed: Some(2),
            malformed_last: Some("finding f9: field `severity`: missing or not a number".into()),
            malformed_at: Some(Utc::now()),
            capped_runs: Some(1),
            capped_at: Some(at(0)),
            behind: true,
            ..Listing::default()
        };
        let state = listing.state_line();
        assert!(
            state.starts_with("enabled; 2 malformed finding(s) skipped (last: finding f9: field `severity`"),
            "{state}"
        );
        assert!(state.contains("1 run(s) stopped at the page cap"), "{state}");
        // Caught up, and the malformed finding a day old: the counters stay (for /metrics),
        // the state no longer names them.
        let settled =
            Listing { behind: false, malformed_at: Some(Utc::now() - chrono::Duration::hours(25)), ..listing };
        assert_eq!(settled.state_line(), "enabled");
    }

    #[test]
    fn a_refused_page_token_is_told_from_refused_credentials() {
        assert!(refuses_token(&refused("BadRequestException", "The input nextToken is not valid.")));
        assert!(refuses_token(&refused("InvalidInputException", "Invalid parameter")));
        assert!(refuses_token(&refused("", "the NextToken has expired")));
        assert!(!refuses_token(&refused(
            "ExpiredTokenException",
            "The security token included in the request is expired"
        )));
        assert!(!refuses_token(&refused("AccessDeniedException", "not authorized")));
    }
}
