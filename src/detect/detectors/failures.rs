//! `aws-excessive-login-failures`: too many failed console logins of one principal within a
//! sliding window; `aws-password-spray`: failed logins from one source address against many
//! principals within a window, and from one AS (several of its addresses) against many
//! principals: a spray spread over a provider's addresses. An AS spray is not raised in an hour
//! in which one of its addresses raised a spray of its own (that alert already tells it).
//!
//! A failure belongs to a burst when some window that holds it qualifies (`threshold` failures
//! for a principal; `min_principals` distinct principals for a source). Each window keeps only
//! the failures inside it and counts as it slides, so the work per failure does not grow with the
//! attack. The failures of a burst fold per alert (subject and the policy's hour) into one
//! finding that carries the count, the span, where they came from and a bounded sample of
//! evidence: a million failures make one alert an hour, not a million evidence rows.
//!
//! A burst only grows as more failures arrive (windows only gain failures), so a finding is the
//! whole alert as far as the failures seen say; the alert store keeps the largest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::{Detectors, LOGIN_FAILURES, PASSWORD_SPRAY};
use crate::alerts::store::Burst;
use crate::detect::PolicyEvent;
use crate::detect::event::RawJson;
use crate::model::Finding;

/// How many source addresses or principals an alert names (with how many failures each).
const NAMED: usize = 10;

/// How many (principal, address) pairs a spray keeps for linking (`details.link_principals`):
/// IAM's quota of users per account, so every principal of a real spray (CloudTrail hides names
/// that are no IAM user), while a stored alert stays bounded.
const MAX_LINK_PRINCIPALS: usize = 5_000;

/// One policy's bursts: per principal (excessive failures) or per source (spraying).
struct Kind {
    on: bool,
    policy: &'static str,
    window: Duration,
    /// Failures a window needs (per principal), or distinct principals (per source).
    needs: usize,
    bucket_seconds: i64,
}

impl Kind {
    /// Failures from one AS: `asn_min_principals` principals from `asn_min_addresses` addresses.
    fn asn(detectors: &Detectors, on: bool) -> Self {
        let settings = &detectors.settings.password_spray;
        let bucket_seconds = detectors.meta(PASSWORD_SPRAY).dedup_window.num_seconds().max(1);
        Self {
            on: on && settings.by_asn,
            policy: PASSWORD_SPRAY,
            window: Duration::minutes(settings.window_minutes.max(0)),
            needs: settings.asn_min_principals.max(2),
            bucket_seconds,
        }
    }

    fn new(detectors: &Detectors, spray: bool, on: bool) -> Self {
        let (policy, minutes, needs) = if spray {
            let settings = &detectors.settings.password_spray;
            // One principal failing is the per-principal detector's; a spray is two at least.
            (PASSWORD_SPRAY, settings.window_minutes, settings.min_principals.max(2))
        } else {
            let settings = &detectors.settings.login_failures;
            (LOGIN_FAILURES, settings.window_minutes, settings.threshold)
        };
        let bucket_seconds = detectors.meta(policy).dedup_window.num_seconds().max(1);
        Self { on, policy, window: Duration::minutes(minutes.max(0)), needs: needs.max(1), bucket_seconds }
    }

    /// How far around new failures the failures must be seen to report whole alerts: a failure
    /// can change the verdict on those a window either side, whose alert bucket spans an hour,
    /// whose failures need a window either side again.
    fn reach(&self) -> Duration {
        self.window * 2 + Duration::seconds(self.bucket_seconds)
    }
}

/// The failure windows and the bursts found so far.
pub(super) struct FailureBursts<'d> {
    detectors: &'d Detectors,
    principal: Kind,
    spray: Kind,
    asn: Kind,
    /// Distinct addresses an AS window needs.
    asn_addresses: usize,
    /// Failures in this span can change a burst (new failures, and a window either side of
    /// them): only the alerts of such bursts are reported.
    changed: (DateTime<Utc>, Option<DateTime<Utc>>),
    by_principal: HashMap<(String, String), Window>,
    by_source: HashMap<(String, String), Window>,
    by_asn: HashMap<(String, i64), Window>,
    /// (account, AS, alert bucket) of address sprays: no AS spray there.
    sprayed: HashSet<(String, i64, i64)>,
    /// When windows with nothing inside the window length were last dropped.
    swept: Option<DateTime<Utc>>,
    /// Per account, spraying or not, subject and alert bucket.
    bursts: BTreeMap<(String, bool, String, i64), Accumulated>,
}

impl<'d> FailureBursts<'d> {
    /// Bursts (per principal, per source: which are on) that failures from `from` to `until`
    /// (open-ended without it) can change.
    pub(super) fn new(
        detectors: &'d Detectors,
        (per_principal, per_source): (bool, bool),
        from: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Self {
        let principal = Kind::new(detectors, false, per_principal);
        let spray = Kind::new(detectors, true, per_source);
        let asn = Kind::asn(detectors, per_source);
        let window = principal.window.max(spray.window);
        Self {
            detectors,
            principal,
            spray,
            asn,
            asn_addresses: detectors.settings.password_spray.asn_min_addresses.max(2),
            changed: (from - window, until.map(|until| until + window)),
            by_principal: HashMap::new(),
            by_source: HashMap::new(),
            by_asn: HashMap::new(),
            sprayed: HashSet::new(),
            swept: None,
            bursts: BTreeMap::new(),
        }
    }

    /// How far around new failures the failures must be seen to report whole alerts.
    pub(super) fn reach(detectors: &Detectors) -> Duration {
        Kind::new(detectors, false, true).reach().max(Kind::new(detectors, true, true).reach())
    }

    /// The next failed login (not earlier than the one before).
    pub(super) fn push(&mut self, event: &PolicyEvent) {
        let Some(principal) = event.principal() else { return };
        self.sweep(event.event_time);
        let failure = Arc::new(compact(event));
        // A name that is no IAM user is hidden by CloudTrail: such failures are not one principal.
        if self.principal.on && !is_hidden(event) {
            let window = self.by_principal.entry((event.account_id.clone(), principal.to_string())).or_default();
            window.slide(&failure, self.principal.window, false);
            for qualified in window.take_burst(self.principal.needs, 0, 0) {
                self.add(false, principal, &qualified);
            }
        }
        if self.spray.on
            && let Some(source) = &event.source_ip_text
        {
            let window = self.by_source.entry((event.account_id.clone(), source.clone())).or_default();
            window.slide(&failure, self.spray.window, true);
            let subject = format!("source:{source}");
            for qualified in window.take_burst(1, self.spray.needs, 0) {
                self.add(true, &subject, &qualified);
            }
        }
        if self.asn.on
            && let Some(asn) = event.geo_asn
            && event.source_ip_text.is_some()
            && !self.asn_allowed(asn)
        {
            let window = self.by_asn.entry((event.account_id.clone(), asn)).or_default();
            window.slide(&failure, self.asn.window, true);
            let subject = format!("asn:{asn}");
            for qualified in window.take_burst(1, self.asn.needs, self.asn_addresses) {
                self.add(true, &subject, &qualified);
            }
        }
    }

    /// Whether `asn` is one `password_spray.allow_asns` keeps out of AS sprays.
    fn asn_allowed(&self, asn: i64) -> bool {
        self.detectors.settings.password_spray.allow_asns.iter().any(|&allowed| i64::from(allowed) == asn)
    }

    /// Drops the windows whose failures all lie before `now`'s window (the next failure of their
    /// key would empty them anyway), once per window length: failures from many addresses must
    /// not keep a window each for the whole run.
    fn sweep(&mut self, now: DateTime<Utc>) {
        let every = self.principal.window.min(self.spray.window);
        if self.swept.is_some_and(|at| now - at < every) {
            return;
        }
        self.swept = Some(now);
        let live = |start: DateTime<Utc>| {
            move |_: &_, window: &mut Window| window.failures.back().is_some_and(|f| f.event_time >= start)
        };
        self.by_principal.retain(live(now - self.principal.window));
        self.by_source.retain(live(now - self.spray.window));
        let asn_start = now - self.asn.window;
        self.by_asn.retain(|_, window| window.failures.back().is_some_and(|f| f.event_time >= asn_start));
    }

    fn add(&mut self, spray: bool, subject: &str, failure: &PolicyEvent) {
        let kind = if spray { &self.spray } else { &self.principal };
        let time = failure.event_time;
        let bucket = time.timestamp().div_euclid(kind.bucket_seconds) * kind.bucket_seconds;
        let changed = time >= self.changed.0 && self.changed.1.is_none_or(|until| time <= until);
        if spray
            && subject.starts_with("source:")
            && let Some(asn) = failure.geo_asn
        {
            self.sprayed.insert((failure.account_id.clone(), asn, bucket));
        }
        let detectors = self.detectors;
        let policy = kind.policy;
        self.bursts
            .entry((failure.account_id.clone(), spray, subject.to_string(), bucket))
            .or_insert_with(|| {
                let meta = detectors.meta(policy);
                let mut finding = meta.finding_for(failure, meta.severity, String::new());
                // Per-principal bursts fold with the principal's other alerts; sprays by source.
                finding.subject = subject.to_string();
                if subject.starts_with("asn:") {
                    finding.details = serde_json::json!({ "as_org": failure.network.as_org });
                }
                let who = failure.user_name.as_deref().or(failure.principal()).unwrap_or("?").to_string();
                Accumulated::new(finding, spray, who)
            })
            .add(failure, changed);
    }

    /// One finding per alert that the failures in the changed span reached.
    pub(super) fn finish(self) -> Vec<Finding> {
        let (principal, spray, asn, sprayed) = (self.principal, self.spray, self.asn, self.sprayed);
        self.bursts
            .into_iter()
            .filter(|(_, burst)| burst.changed)
            .filter(|((account, _, subject, bucket), _)| {
                let of_asn = subject.strip_prefix("asn:").and_then(|a| a.parse::<i64>().ok());
                of_asn.is_none_or(|a| !sprayed.contains(&(account.clone(), a, *bucket)))
            })
            .map(|((_, _, subject, _), burst)| {
                let kind = match (burst.spray, subject.starts_with("asn:")) {
                    (true, true) => &asn,
                    (true, false) => &spray,
                    _ => &principal,
                };
                burst.into_finding(kind.needs, kind.window.num_minutes())
            })
            .collect()
    }
}

/// The user name CloudTrail writes for a failed console login whose name is no IAM user (so a
/// log does not collect the passwords people type into the user name field).
const HIDDEN_USER: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

fn is_hidden(event: &PolicyEvent) -> bool {
    event.principal_arn.is_none() && event.user_name.as_deref() == Some(HIDDEN_USER)
}

/// Whom a failure counts as for spraying: its principal, or, for a hidden name, a name of its
/// own (a spray of guessed names is many principals, not one).
fn distinct_principal(failure: &PolicyEvent) -> Option<String> {
    if is_hidden(failure) {
        return Some(format!("{HIDDEN_USER}:{}", failure.event_id));
    }
    failure.principal().map(str::to_owned)
}

/// What a window keeps of a failure: the fields a finding names, not the raw event.
fn compact(event: &PolicyEvent) -> PolicyEvent {
    PolicyEvent {
        account_id: event.account_id.clone(),
        event_id: event.event_id.clone(),
        event_time: event.event_time,
        event_source: None,
        event_name: event.event_name.clone(),
        principal_arn: event.principal_arn.clone(),
        principal_type: event.principal_type.clone(),
        user_name: event.user_name.clone(),
        access_key_id: None,
        source_ip: event.source_ip,
        source_ip_text: event.source_ip_text.clone(),
        user_agent: None,
        error_code: None,
        resource_ids: event.resource_ids.clone(),
        geo_country: event.geo_country.clone(),
        geo_city: event.geo_city.clone(),
        geo_latitude: event.geo_latitude,
        geo_longitude: event.geo_longitude,
        geo_asn: event.geo_asn,
        network: event.network.clone(),
        console_session: event.console_session,
        raw: RawJson::new(String::new()),
    }
}

/// The failures of one principal, or from one source, within the window length.
#[derive(Default)]
struct Window {
    failures: VecDeque<Arc<PolicyEvent>>,
    /// How many of the newest failures no window of a burst has held yet.
    pending: usize,
    /// Failures per principal (kept for sources: spraying means more than one).
    principals: HashMap<String, usize>,
    /// Failures per source address (kept with the principals: an AS spray needs several).
    sources: HashMap<String, usize>,
}

impl Window {
    fn slide(&mut self, failure: &Arc<PolicyEvent>, length: Duration, count_principals: bool) {
        self.failures.push_back(Arc::clone(failure));
        self.pending += 1;
        if count_principals && let Some(principal) = distinct_principal(failure) {
            *self.principals.entry(principal).or_default() += 1;
        }
        if count_principals && let Some(source) = &failure.source_ip_text {
            *self.sources.entry(source.clone()).or_default() += 1;
        }
        let start = failure.event_time - length;
        while let Some(oldest) = self.failures.front().filter(|f| f.event_time < start) {
            if self.pending == self.failures.len() {
                self.pending -= 1;
            }
            if count_principals
                && let Some(principal) = distinct_principal(oldest)
                && let Some(count) = self.principals.get_mut(&principal)
            {
                *count -= 1;
                if *count == 0 {
                    self.principals.remove(&principal);
                }
            }
            if count_principals
                && let Some(source) = &oldest.source_ip_text
                && let Some(count) = self.sources.get_mut(source)
            {
                *count -= 1;
                if *count == 0 {
                    self.sources.remove(source);
                }
            }
            self.failures.pop_front();
        }
    }

    /// When the window holds a burst (`failures` failures of `principals` distinct principals
    /// from `sources` distinct addresses at least), the failures in it not yet part of one (the
    /// newest).
    fn take_burst(&mut self, failures: usize, principals: usize, sources: usize) -> Vec<Arc<PolicyEvent>> {
        if self.failures.len() < failures || self.principals.len() < principals || self.sources.len() < sources {
            return Vec::new();
        }
        let pending = std::mem::take(&mut self.pending);
        self.failures.range(self.failures.len() - pending..).cloned().collect()
    }
}

/// One alert's burst so far.
struct Accumulated {
    /// The finding of its first failure.
    finding: Finding,
    spray: bool,
    /// Whom the first failure names (its user name, else its principal).
    who: String,
    /// The failures: count, span and sample.
    burst: Burst,
    sources: HashMap<String, i64>,
    principals: HashMap<String, i64>,
    /// A spray's principals, each at the address it was tried from: each one's own alerts from
    /// there (a login from an anonymising network, say) are part of the spray's intrusion.
    link_principals: BTreeSet<(String, String)>,
    /// Whether a failure in the changed span is part of it.
    changed: bool,
}

impl Accumulated {
    fn new(finding: Finding, spray: bool, who: String) -> Self {
        Self {
            burst: Burst::starting(finding.time),
            finding,
            spray,
            who,
            sources: HashMap::new(),
            principals: HashMap::new(),
            link_principals: BTreeSet::new(),
            changed: false,
        }
    }

    fn add(&mut self, failure: &PolicyEvent, changed: bool) {
        self.burst.push(failure.event_id.clone(), failure.event_time);
        self.changed |= changed;
        let source = failure.source_ip_text.clone().unwrap_or_else(|| "?".into());
        *self.sources.entry(source).or_default() += 1;
        let who = if is_hidden(failure) {
            "(names that are no IAM user)"
        } else {
            failure.user_name.as_deref().or(failure.principal()).unwrap_or("?")
        };
        if let Some(count) = self.principals.get_mut(who) {
            *count += 1;
        } else {
            self.principals.insert(who.to_string(), 1);
        }
        if self.spray
            && !is_hidden(failure)
            && self.link_principals.len() < MAX_LINK_PRINCIPALS
            && let (Some(principal), Some(address)) = (failure.principal(), &failure.source_ip_text)
        {
            self.link_principals.insert((principal.to_string(), address.clone()));
        }
    }

    /// The finding of the whole burst; `needs` is what a window needed (failures of a
    /// principal, or distinct principals of a source).
    fn into_finding(self, needs: usize, window_minutes: i64) -> Finding {
        let Self { mut finding, spray, who, burst, sources, principals, link_principals, .. } = self;
        let count = burst.count;
        let (sources, source_count) = most(sources);
        let (principals, principal_count) = most(principals);
        finding.title = if let Some(asn) = finding.subject.strip_prefix("asn:").filter(|_| spray) {
            let org = finding.details.get("as_org").and_then(|o| o.as_str()).unwrap_or("");
            let within = format!("at least {needs} principals within {window_minutes} minutes");
            format!(
                "{count} failed console logins from {source_count} addresses of AS{asn} {org} against \
                 {principal_count} principals ({within})"
            )
            .replace("  against", " against")
        } else if spray {
            let source = finding.subject.trim_start_matches("source:");
            let within = format!("at least {needs} principals within {window_minutes} minutes");
            format!("{count} failed console logins from {source} against {principal_count} principals ({within})")
        } else {
            let within = format!("at least {needs} within {window_minutes} minutes");
            let from = match sources.as_slice() {
                [(only, _)] => only.clone(),
                _ => format!("{source_count} addresses"),
            };
            format!("{count} failed console logins for {who} from {from} ({within})")
        };
        let named = |list: Vec<(String, i64)>, what: &str| -> Vec<serde_json::Value> {
            list.into_iter().map(|(name, failures)| serde_json::json!({ what: name, "failures": failures })).collect()
        };
        finding.details = serde_json::json!({
            "failures": count,
            "burst_start": finding.time,
            "burst_end": burst.last,
            "threshold": needs,
            "window_minutes": window_minutes,
            "sources": named(sources, "address"),
            "source_count": source_count,
            "principals": named(principals, "principal"),
            "principal_count": principal_count,
        });
        if spray {
            let pairs: Vec<serde_json::Value> = link_principals
                .into_iter()
                .map(|(principal, address)| serde_json::json!({ "principal": principal, "address": address }))
                .collect();
            finding.details["link_principals"] = pairs.into();
        }
        if let Some(asn) = finding.subject.strip_prefix("asn:").and_then(|a| a.parse::<i64>().ok()) {
            finding.details["asn"] = asn.into();
        }
        burst.attach(&mut finding);
        finding
    }
}

/// The [`NAMED`] names with the most failures (ties by name), and how many names there are.
fn most(counts: HashMap<String, i64>) -> (Vec<(String, i64)>, usize) {
    let total = counts.len();
    let mut list: Vec<(String, i64)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(NAMED);
    (list, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(user: &str, source: &str, time: DateTime<Utc>) -> PolicyEvent {
        PolicyEvent {
            account_id: "111122223333".into(),
            event_id: format!("{user}-{}", time.timestamp()),
            event_time: time,
            event_source: Some("signin.amazonaws.com".into()),
            event_name: Some("ConsoleLogin".into()),
            principal_arn: Some(format!("arn:aws:iam::111122223333:user/{user}")),
            principal_type: Some("IAMUser".into()),
            user_name: Some(user.into()),
            access_key_id: None,
            source_ip: source.parse().ok(),
            source_ip_text: Some(source.into()),
            user_agent: None,
            error_code: None,
            resource_ids: Vec::new(),
            geo_country: None,
            geo_city: None,
            geo_latitude: None,
            geo_longitude: None,
            geo_asn: None,
            network: Default::default(),
            console_session: None,
            raw: RawJson::new(r#"{"responseElements":{"ConsoleLogin":"Failure"}}"#.into()),
        }
    }

    /// Failures of `users` distinct users from `sources` addresses of AS64500, one a minute.
    fn asn_spray(users: usize, sources: &[&str], start: DateTime<Utc>) -> Vec<PolicyEvent> {
        (0..users)
            .map(|i| {
                let mut event =
                    failure(&format!("user{i}"), sources[i % sources.len()], start + Duration::minutes(i as i64));
                event.geo_asn = Some(64500);
                event.network.as_org = Some("Example Hosting".into());
                event
            })
            .collect()
    }

    fn run(events: &[PolicyEvent], start: DateTime<Utc>) -> Vec<Finding> {
        let set = crate::detect::PolicySet::builtin();
        let mut bursts = FailureBursts::new(&set.detectors, (true, true), start, None);
        events.iter().for_each(|event| bursts.push(event));
        bursts.finish()
    }

    #[test]
    fn a_spray_spread_over_an_as_is_one_alert_and_not_a_second_one_beside_an_address_spray() {
        let start: DateTime<Utc> = "2026-11-12T05:00:00Z".parse().unwrap();
        let spread = ["45.137.21.9", "45.137.21.77", "45.137.22.130"];
        // Nine users, three per address: no address reaches five principals; the AS does.
        let found = run(&asn_spray(9, &spread, start), start);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].subject, "asn:64500");
        assert_eq!(found[0].details["asn"], 64500);
        assert_eq!(found[0].details["source_count"], 3);
        assert_eq!(
            found[0].title,
            "9 failed console logins from 3 addresses of AS64500 Example Hosting against 9 principals \
             (at least 8 principals within 30 minutes)"
        );
        // Eight users from two addresses: too few addresses for an AS spray (and too few users
        // per address for an address spray).
        assert!(run(&asn_spray(8, &spread[..2], start), start).is_empty());
        // One address tries six users: its own spray is the alert, the AS adds none.
        let mut events = asn_spray(9, &spread, start);
        events.extend((0..6).map(|i| {
            let mut event = failure(&format!("admin{i}"), "45.137.21.200", start + Duration::seconds(30 + i));
            event.geo_asn = Some(64500);
            event
        }));
        events.sort_by_key(|e| e.event_time);
        let found = run(&events, start);
        let subjects: Vec<&str> = found.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["source:45.137.21.200"]);
    }

    #[test]
    fn a_spray_names_each_principal_it_tried_at_its_address() {
        let start: DateTime<Utc> = "2026-11-12T05:00:00Z".parse().unwrap();
        let mut events: Vec<PolicyEvent> =
            (0..6).map(|i| failure(&format!("user{i}"), "45.137.21.40", start + Duration::minutes(i))).collect();
        let mut guessed = failure("guessed", "45.137.21.40", start + Duration::minutes(7));
        (guessed.principal_arn, guessed.user_name) = (None, Some(HIDDEN_USER.into()));
        events.push(guessed);
        let found = run(&events, start);
        assert_eq!(found.len(), 1, "{found:?}");
        let named: Vec<(&str, &str)> = found[0].details["link_principals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["principal"].as_str().unwrap(), p["address"].as_str().unwrap()))
            .collect();
        let expected: Vec<String> = (0..6).map(|i| format!("arn:aws:iam::111122223333:user/user{i}")).collect();
        let expected: Vec<(&str, &str)> = expected.iter().map(|p| (p.as_str(), "45.137.21.40")).collect();
        assert_eq!(named, expected, "every principal but the name CloudTrail hid");
        // An AS spray names each principal at the address it was tried from.
        let spread = ["45.137.21.9", "45.137.21.77", "45.137.22.130"];
        let found = run(&asn_spray(9, &spread, start), start);
        let named = found[0].details["link_principals"].as_array().unwrap();
        assert_eq!(named.len(), 9);
        assert!(
            named.iter().any(|p| p["principal"].as_str().unwrap().ends_with("user4") && p["address"] == "45.137.21.77")
        );
    }

    #[test]
    fn an_allowed_as_makes_no_as_spray() {
        let start: DateTime<Utc> = "2026-11-12T05:00:00Z".parse().unwrap();
        let spread = ["45.137.21.9", "45.137.21.77", "45.137.22.130"];
        let yaml = "password_spray:\n  allow_asns: [64500]\n";
        let file = crate::policy_files::PolicyFile::new("detectors.yaml", yaml, crate::policy_files::Origin::Builtin);
        let mut problems = Vec::new();
        let detectors = Detectors::new(yaml_serde::from_str(yaml).unwrap(), &file, &Default::default(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let mut bursts = FailureBursts::new(&detectors, (true, true), start, None);
        asn_spray(9, &spread, start).iter().for_each(|event| bursts.push(event));
        assert!(bursts.finish().is_empty(), "the corporate VPN's AS");
        // Another AS doing the same is still a spray.
        let mut bursts = FailureBursts::new(&detectors, (true, true), start, None);
        for mut event in asn_spray(9, &spread, start) {
            event.geo_asn = Some(64501);
            bursts.push(&event);
        }
        assert_eq!(bursts.finish().len(), 1);
    }

    #[test]
    fn windows_that_ended_are_dropped_and_live_ones_kept() {
        let set = crate::detect::PolicySet::builtin();
        let start: DateTime<Utc> = "2026-11-12T05:00:00Z".parse().unwrap();
        // For an hour, one failure a second of a new user from a new address; alice fails five
        // times from minute 5 and five more from minute 11, across a sweep at minute 10.
        let mut events: Vec<PolicyEvent> = (0..3600)
            .map(|s| {
                failure(&format!("user{s}"), &format!("10.0.{}.{}", s / 250, s % 250), start + Duration::seconds(s))
            })
            .collect();
        let alice =
            [5, 6, 7, 8, 9, 11, 12, 13, 14, 15].map(|m| failure("alice", "176.36.10.20", start + Duration::minutes(m)));
        events.extend(alice);
        events.sort_by_key(|e| e.event_time);
        let mut bursts = FailureBursts::new(&set.detectors, (true, true), start, None);
        let mut most = 0;
        for event in &events {
            bursts.push(event);
            most = most.max(bursts.by_source.len() + bursts.by_principal.len());
        }
        // A window's failures either side of the last sweep: 600 s for principals, 1,800 s for
        // sources (one failure a second, one key each).
        assert!(most <= 2 * 602 + 2 * 1802, "{most} windows at most for 7,200 keys");
        let found = bursts.finish();
        assert_eq!(found.len(), 1, "{found:?}");
        let (burst, _) = Burst::of(&found[0]).unwrap();
        assert_eq!((burst.count, burst.first), (10, start + Duration::minutes(5)), "the live window was kept");
    }
}
