//! `aws-reconnaissance-burst`: one principal refused (AccessDenied, UnauthorizedOperation) on
//! many distinct APIs within a short window: stolen credentials probing what they may do, the
//! way enumeration tools walk the API list.
//!
//! Like the login failures, each principal's window keeps only the refusals inside it, with a
//! count per API, so the work per refusal stays constant; the refusals of a burst fold per alert
//! (principal and the policy's hour) into one finding with the count, the span, the APIs tried
//! and a bounded sample of evidence.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};

use super::{Detectors, RECON_BURST};
use crate::alerts::store::Burst;
use crate::detect::PolicyEvent;
use crate::model::Finding;

/// How many APIs an alert names (with how many refusals each).
const NAMED: usize = 15;

/// Error codes AWS gives a call the caller was not allowed to make (`refusals` in
/// `detect::runner` repeats the test in SQL).
pub fn is_refusal(error_code: &str) -> bool {
    matches!(error_code, "AccessDenied" | "AccessDeniedException" | "UnauthorizedAccess" | "AuthorizationError")
        || error_code.ends_with("UnauthorizedOperation")
}

/// Whether AWS itself made the call (a service principal, or a service calling on someone's
/// behalf): services probe what they may read, and refusals of theirs are configuration, not an
/// intruder.
fn by_aws(event: &PolicyEvent) -> bool {
    event.principal_type.as_deref() == Some("AWSService")
        || event
            .source_ip_text
            .as_deref()
            .is_some_and(|source| source.ends_with(".amazonaws.com") || source == "AWS Internal")
}

/// One refusal as a window keeps it.
#[derive(Clone)]
struct Refusal {
    time: DateTime<Utc>,
    event_id: String,
    api: String,
}

#[derive(Default)]
struct Window {
    refusals: VecDeque<Refusal>,
    apis: HashMap<String, usize>,
    /// How many of the newest refusals no burst has taken yet.
    pending: usize,
}

impl Window {
    fn slide(&mut self, refusal: Refusal, length: Duration) {
        let start = refusal.time - length;
        *self.apis.entry(refusal.api.clone()).or_default() += 1;
        self.refusals.push_back(refusal);
        self.pending += 1;
        while let Some(oldest) = self.refusals.front().filter(|r| r.time < start) {
            if let Some(count) = self.apis.get_mut(&oldest.api) {
                *count -= 1;
                if *count == 0 {
                    self.apis.remove(&oldest.api);
                }
            }
            self.pending = self.pending.min(self.refusals.len() - 1);
            self.refusals.pop_front();
        }
    }

    /// When the window holds a burst, its refusals not yet part of one (the newest).
    fn take_burst(&mut self, min_apis: usize) -> Vec<Refusal> {
        if self.apis.len() < min_apis {
            return Vec::new();
        }
        let pending = std::mem::take(&mut self.pending);
        self.refusals.range(self.refusals.len() - pending..).cloned().collect()
    }
}

/// One alert's burst so far.
struct Accumulated {
    finding: Finding,
    /// The refusals: count, span and sample.
    burst: Burst,
    apis: HashMap<String, i64>,
    changed: bool,
}

impl Accumulated {
    fn add(&mut self, refusal: Refusal, changed: bool) {
        self.burst.push(refusal.event_id, refusal.time);
        self.changed |= changed;
        *self.apis.entry(refusal.api).or_default() += 1;
    }

    fn into_finding(self, who: &str, min_apis: usize, window_minutes: i64) -> Finding {
        let Self { mut finding, burst, apis, .. } = self;
        let count = burst.count;
        let api_count = apis.len();
        let mut named: Vec<(String, i64)> = apis.into_iter().collect();
        named.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        named.truncate(NAMED);
        finding.title = format!(
            "{who} was refused {count} calls to {api_count} different APIs \
             (at least {min_apis} APIs within {window_minutes} minutes)"
        );
        finding.details = serde_json::json!({
            "refusals": count,
            "api_count": api_count,
            "apis": named.into_iter().map(|(api, refusals)| serde_json::json!({"api": api, "refusals": refusals})).collect::<Vec<_>>(),
            "burst_start": finding.time,
            "burst_end": burst.last,
            "min_apis": min_apis,
            "window_minutes": window_minutes,
        });
        burst.attach(&mut finding);
        finding
    }
}

/// The refusal windows and the bursts found so far, fed refusals in event-time order.
pub struct ReconBursts<'d> {
    detectors: &'d Detectors,
    window: Duration,
    min_apis: usize,
    bucket_seconds: i64,
    /// Only bursts with a refusal in this span are reported (the rest were reported before).
    changed: (DateTime<Utc>, DateTime<Utc>),
    windows: HashMap<(String, String), Window>,
    swept: Option<DateTime<Utc>>,
    /// Per account, principal and alert bucket: the principal's name for the title, and the burst.
    bursts: BTreeMap<(String, String, i64), (String, Accumulated)>,
}

impl<'d> ReconBursts<'d> {
    /// Bursts that refusals from `from` to `until` can change.
    pub fn new(detectors: &'d Detectors, from: DateTime<Utc>, until: DateTime<Utc>) -> Self {
        let settings = &detectors.settings.reconnaissance;
        let window = Duration::minutes(settings.window_minutes.max(0));
        Self {
            detectors,
            window,
            min_apis: settings.min_apis.max(1),
            bucket_seconds: detectors.meta(RECON_BURST).dedup_window.num_seconds().max(1),
            changed: (from - window, until + window),
            windows: HashMap::new(),
            swept: None,
            bursts: BTreeMap::new(),
        }
    }

    /// How far around new refusals the refusals must be read to report whole alerts: a window
    /// either side, the alert's hour, and a window again.
    pub fn reach(detectors: &Detectors) -> Duration {
        Duration::minutes(detectors.settings.reconnaissance.window_minutes.max(0)) * 2
            + detectors.meta(RECON_BURST).dedup_window
    }

    /// The next refused call (not earlier than the one before); other events are ignored.
    pub fn push(&mut self, event: &PolicyEvent) {
        let (Some(principal), Some(code)) = (event.principal(), event.error_code.as_deref()) else { return };
        if !is_refusal(code) || by_aws(event) {
            return;
        }
        self.sweep(event.event_time);
        let api = format!(
            "{}:{}",
            event.event_source.as_deref().unwrap_or("?").trim_end_matches(".amazonaws.com"),
            event.event_name.as_deref().unwrap_or("?")
        );
        let key = (event.account_id.clone(), principal.to_owned());
        let window = self.windows.entry(key).or_default();
        window.slide(Refusal { time: event.event_time, event_id: event.event_id.clone(), api }, self.window);
        for refusal in window.take_burst(self.min_apis) {
            self.add(principal, event, refusal);
        }
    }

    fn sweep(&mut self, now: DateTime<Utc>) {
        if self.swept.is_some_and(|at| now - at < self.window) {
            return;
        }
        self.swept = Some(now);
        let start = now - self.window;
        self.windows.retain(|_, window| window.refusals.back().is_some_and(|r| r.time >= start));
    }

    /// Adds `refusal` to its alert's burst; `event` (the refusal that completed a window) names
    /// who and from where.
    fn add(&mut self, principal: &str, event: &PolicyEvent, refusal: Refusal) {
        let time = refusal.time;
        let bucket = time.timestamp().div_euclid(self.bucket_seconds) * self.bucket_seconds;
        let changed = time >= self.changed.0 && time <= self.changed.1;
        let detectors = self.detectors;
        let (_, burst) =
            self.bursts.entry((event.account_id.clone(), principal.to_owned(), bucket)).or_insert_with(|| {
                let meta = detectors.meta(RECON_BURST);
                let mut finding = meta.finding_for(event, meta.severity, String::new());
                finding.time = time;
                finding.evidence_id = refusal.event_id.clone();
                let who = event.user_name.as_deref().unwrap_or(principal).to_owned();
                let burst = Accumulated { finding, burst: Burst::starting(time), apis: HashMap::new(), changed: false };
                (who, burst)
            });
        burst.add(refusal, changed);
    }

    /// One finding per alert that refusals in the changed span reached.
    pub fn finish(self) -> Vec<Finding> {
        let minutes = self.window.num_minutes();
        let min_apis = self.min_apis;
        self.bursts
            .into_values()
            .filter(|(_, burst)| burst.changed)
            .map(|(who, burst)| burst.into_finding(&who, min_apis, minutes))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::store::BURST_SAMPLE;
    use crate::detect::event::RawJson;

    const START: &str = "2026-11-12T05:00:00Z";

    /// A call of `user` to `api` (service:name) at `seconds` after [`START`], refused or not.
    fn call(user: &str, api: &str, seconds: i64, error: Option<&str>) -> PolicyEvent {
        let (service, name) = api.split_once(':').unwrap();
        let time = START.parse::<DateTime<Utc>>().unwrap() + Duration::seconds(seconds);
        PolicyEvent {
            account_id: "111122223333".into(),
            event_id: format!("{user}-{api}-{seconds}"),
            event_time: time,
            event_source: Some(format!("{service}.amazonaws.com")),
            event_name: Some(name.into()),
            principal_arn: Some(format!("arn:aws:iam::111122223333:user/{user}")),
            principal_type: Some("IAMUser".into()),
            user_name: Some(user.into()),
            access_key_id: Some("AKIAEXAMPLE".into()),
            source_ip: "176.36.10.20".parse().ok(),
            source_ip_text: Some("176.36.10.20".into()),
            user_agent: Some("aws-cli/2".into()),
            error_code: error.map(str::to_owned),
            resource_ids: Vec::new(),
            geo_country: Some("UA".into()),
            geo_city: None,
            geo_latitude: None,
            geo_longitude: None,
            geo_asn: None,
            network: Default::default(),
            console_session: None,
            raw: RawJson::new("{}".into()),
        }
    }

    const APIS: [&str; 12] = [
        "iam:ListUsers",
        "iam:ListRoles",
        "iam:GetAccountAuthorizationDetails",
        "s3:ListBuckets",
        "ec2:DescribeInstances",
        "ec2:DescribeSecurityGroups",
        "kms:ListKeys",
        "secretsmanager:ListSecrets",
        "lambda:ListFunctions",
        "rds:DescribeDBInstances",
        "cloudtrail:DescribeTrails",
        "guardduty:ListDetectors",
    ];

    fn run(events: &[PolicyEvent]) -> Vec<Finding> {
        let set = crate::detect::PolicySet::builtin();
        let (first, last) = (events[0].event_time, events[events.len() - 1].event_time);
        let mut bursts = ReconBursts::new(&set.detectors, first, last);
        for event in events {
            bursts.push(event);
        }
        bursts.finish()
    }

    #[test]
    fn one_principal_refused_on_many_apis_is_one_alert_with_every_refusal_counted() {
        let codes = ["AccessDenied", "Client.UnauthorizedOperation", "AccessDeniedException"];
        let events: Vec<PolicyEvent> =
            APIS.iter().enumerate().map(|(i, api)| call("mallory", api, i as i64 * 20, Some(codes[i % 3]))).collect();
        let found = run(&events);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].policy_id.as_str(), found[0].time), (RECON_BURST, events[0].event_time));
        assert_eq!(found[0].details["api_count"], 12);
        let (burst, _) = Burst::of(&found[0]).unwrap();
        assert_eq!((burst.count, burst.sample.len()), (12, 12), "the refusals before the tenth API count too");
        assert!(found[0].title.starts_with("mallory was refused 12 calls to 12 different APIs"), "{}", found[0].title);
    }

    #[test]
    fn retries_slow_probing_allowed_calls_and_many_principals_are_not_reconnaissance() {
        let same_api: Vec<_> = (0..30).map(|i| call("ci", "s3:GetObject", i * 5, Some("AccessDenied"))).collect();
        assert!(run(&same_api).is_empty(), "one API retried");
        let slow: Vec<_> = APIS
            .iter()
            .enumerate()
            .map(|(i, api)| call("mallory", api, i as i64 * 120, Some("AccessDenied")))
            .collect();
        assert!(run(&slow).is_empty(), "ten APIs never within ten minutes");
        let allowed: Vec<_> = APIS.iter().enumerate().map(|(i, api)| call("admin", api, i as i64 * 10, None)).collect();
        assert!(run(&allowed).is_empty(), "allowed calls");
        let throttled: Vec<_> = APIS
            .iter()
            .enumerate()
            .map(|(i, api)| call("admin", api, i as i64 * 10, Some("ThrottlingException")))
            .collect();
        assert!(run(&throttled).is_empty(), "throttling is not a refusal");
        let spread: Vec<_> = APIS
            .iter()
            .enumerate()
            .map(|(i, api)| call(&format!("user{i}"), api, i as i64 * 10, Some("AccessDenied")))
            .collect();
        assert!(run(&spread).is_empty(), "each principal refused once");
        let mut by_service: Vec<_> =
            APIS.iter().enumerate().map(|(i, api)| call("config", api, i as i64 * 10, Some("AccessDenied"))).collect();
        by_service.iter_mut().for_each(|e| e.source_ip_text = Some("config.amazonaws.com".into()));
        assert!(run(&by_service).is_empty(), "a service reading on the account's behalf");
    }

    #[test]
    fn a_long_probe_is_one_finding_an_hour_with_a_bounded_sample() {
        // Two hours of refusals, one every 10 s, cycling through the APIs.
        let events: Vec<_> =
            (0..720).map(|i| call("mallory", APIS[i % APIS.len()], i as i64 * 10, Some("AccessDenied"))).collect();
        let found = run(&events);
        assert_eq!(found.len(), 2, "one alert per hour");
        let counts: Vec<i64> = found.iter().map(|f| Burst::of(f).unwrap().0.count).collect();
        assert_eq!(counts, [360, 360]);
        assert!(found.iter().all(|f| Burst::of(f).unwrap().0.sample.len() == 2 * BURST_SAMPLE));
    }
}
