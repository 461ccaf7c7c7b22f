//! Console login detectors, fed one principal's (or one source's) logins in event-time order:
//!
//! - `aws-account-hijacking-attempt`: a successful login from a country that is not in the
//!   principal's baseline (the countries of its successful logins in the last N days), once the
//!   principal has enough earlier logins to have a baseline.
//! - `aws-impossible-travel`: two successful logins whose implied speed is too high, using city
//!   coordinates when the GeoIP data has them and country centroids otherwise.
//! - `aws-excessive-login-failures`: too many failed logins for one principal in a window, or
//!   from one source against several principals (password spraying); see [`super::failures`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};

use super::failures::FailureBursts;
use super::{Detectors, HIJACK, IMPOSSIBLE_TRAVEL, LOGIN_FAILURES, PASSWORD_SPRAY};
use crate::detect::PolicyEvent;
use crate::geo::centroids::country_centroid;
use crate::model::Finding;

#[derive(Clone)]
struct SuccessfulLogin {
    time: DateTime<Utc>,
    country: Option<String>,
    position: Option<(f64, f64)>,
    city_level: bool,
    source: Option<String>,
}

/// One principal's successful logins: those within the baseline, with a count per country (so
/// a login is judged without walking its history), and the latest however old.
#[derive(Default)]
struct History {
    recent: VecDeque<SuccessfulLogin>,
    countries: BTreeMap<String, usize>,
    last: Option<SuccessfulLogin>,
}

impl History {
    /// Forgets logins before `since`.
    fn prune(&mut self, since: DateTime<Utc>) {
        while let Some(oldest) = self.recent.front().filter(|l| l.time < since) {
            if let Some(country) = &oldest.country
                && let Some(count) = self.countries.get_mut(country)
            {
                *count -= 1;
                if *count == 0 {
                    self.countries.remove(country);
                }
            }
            self.recent.pop_front();
        }
    }

    /// How many kept logins came before `time`, and their countries.
    fn before(&self, time: DateTime<Utc>) -> (usize, BTreeSet<&str>) {
        // Logins are pushed in time order: only the newest can share `time`.
        let same_time: Vec<&SuccessfulLogin> = self.recent.iter().rev().take_while(|l| l.time >= time).collect();
        let countries = self
            .countries
            .iter()
            .filter(|(country, count)| {
                **count > same_time.iter().filter(|l| l.country.as_deref() == Some(country.as_str())).count()
            })
            .map(|(country, _)| country.as_str())
            .collect();
        (self.recent.len() - same_time.len(), countries)
    }

    fn push(&mut self, login: SuccessfulLogin) {
        if let Some(country) = &login.country {
            *self.countries.entry(country.clone()).or_default() += 1;
        }
        self.last = Some(login.clone());
        self.recent.push_back(login);
    }
}

fn position(event: &PolicyEvent) -> (Option<(f64, f64)>, bool) {
    match (event.geo_latitude, event.geo_longitude) {
        (Some(lat), Some(lon)) if event.geo_city.is_some() => (Some((lat, lon)), true),
        _ => (event.geo_country.as_deref().and_then(country_centroid), false),
    }
}

/// Great-circle distance in kilometres.
pub fn haversine_km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let d_phi = (lat2 - lat1).to_radians();
    let d_lambda = (lon2 - lon1).to_radians();
    let a = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

/// Runs the login detectors over `logins` (sorted by time). Findings are produced only for
/// successful logins at or after `emit_from`, and for failure bursts that reach within a window
/// of it; earlier logins build state.
pub fn evaluate(
    detectors: &Detectors,
    logins: &[PolicyEvent],
    emit_from: DateTime<Utc>,
    only_policy: Option<&str>,
) -> Vec<Finding> {
    let mut state = LoginDetectors::new(detectors, emit_from, None, only_policy);
    for event in logins {
        state.push(event);
    }
    state.finish()
}

/// How far around new logins the detectors must see: successful logins a baseline (at least a
/// day, for travel) each side, failed ones [`FailureBursts::reach`] each side.
pub fn reach(detectors: &Detectors) -> (Duration, Duration) {
    let baseline = Duration::days(detectors.settings.account_hijacking.baseline_days).max(Duration::days(1));
    (baseline, FailureBursts::reach(detectors))
}

/// The login detectors fed one console login at a time, in event-time order, so a caller can
/// stream logins from storage. State per principal stays within the baseline and per failure
/// window within the window, whatever the number of logins.
pub struct LoginDetectors<'d> {
    detectors: &'d Detectors,
    emit_from: DateTime<Utc>,
    hijack_on: bool,
    travel_on: bool,
    baseline: Duration,
    successes: HashMap<(String, String), History>,
    failures: Option<FailureBursts<'d>>,
    findings: Vec<Finding>,
}

impl<'d> LoginDetectors<'d> {
    /// Findings for logins at or after `emit_from`; failure bursts for the alerts that failures
    /// between `emit_from` and `emit_until` (open-ended without it) can change.
    pub fn new(
        detectors: &'d Detectors,
        emit_from: DateTime<Utc>,
        emit_until: Option<DateTime<Utc>>,
        only_policy: Option<&str>,
    ) -> Self {
        let wants = |id: &str| only_policy.is_none_or(|p| p == id);
        let settings = &detectors.settings;
        let per_principal = settings.login_failures.enabled && wants(LOGIN_FAILURES);
        let per_source = settings.password_spray.enabled && wants(PASSWORD_SPRAY);
        Self {
            detectors,
            emit_from,
            hijack_on: settings.account_hijacking.enabled && wants(HIJACK),
            travel_on: settings.impossible_travel.enabled && wants(IMPOSSIBLE_TRAVEL),
            baseline: Duration::days(settings.account_hijacking.baseline_days),
            successes: HashMap::new(),
            failures: (per_principal || per_source)
                .then(|| FailureBursts::new(detectors, (per_principal, per_source), emit_from, emit_until)),
            findings: Vec::new(),
        }
    }

    /// The next console login (not earlier than the one before).
    pub fn push(&mut self, event: &PolicyEvent) {
        let (Some(succeeded), Some(principal)) = (event.login_succeeded(), event.principal()) else { return };
        if !succeeded {
            if let Some(failures) = &mut self.failures {
                failures.push(event);
            }
            return;
        }
        let key = (event.account_id.clone(), principal.to_string());
        let emit = event.event_time >= self.emit_from;
        let history = self.successes.entry(key).or_default();
        history.prune(event.event_time - self.baseline);
        let (here, city_level) = position(event);
        if emit
            && self.hijack_on
            && let Some(finding) = hijack(self.detectors, event, history)
        {
            self.findings.push(finding);
        }
        if emit
            && self.travel_on
            && let (Some(previous), Some(here)) = (&history.last, here)
            && let Some(finding) = travel(self.detectors, event, previous, here, city_level)
        {
            self.findings.push(finding);
        }
        history.push(SuccessfulLogin {
            time: event.event_time,
            country: event.geo_country.clone(),
            position: here,
            city_level,
            source: event.source_ip_text.clone(),
        });
    }

    /// What the detectors found.
    pub fn finish(mut self) -> Vec<Finding> {
        if let Some(failures) = self.failures {
            self.findings.extend(failures.finish());
        }
        self.findings
    }
}

/// A login from a country outside the principal's baseline (`history`, pruned to it).
fn hijack(detectors: &Detectors, event: &PolicyEvent, history: &History) -> Option<Finding> {
    let settings = &detectors.settings.account_hijacking;
    let country = event.geo_country.as_deref()?;
    let principal = event.principal()?;
    if hijack_allowed(detectors, event, country, principal) {
        return None;
    }
    let (prior, countries) = history.before(event.event_time);
    if prior < settings.min_prior_logins {
        return None;
    }
    if countries.contains(country) {
        return None;
    }
    let meta = detectors.meta(HIJACK);
    let who = event.user_name.as_deref().unwrap_or(principal);
    let title = format!(
        "Account hijacking attempt: {who} logged in to the console from {country} ({}), never seen in {} days (usual: {})",
        event.source_ip_text.as_deref().unwrap_or("?"),
        settings.baseline_days,
        countries.iter().copied().collect::<Vec<_>>().join(", ")
    );
    let mut finding = meta.finding_for(event, settings.severity, title);
    finding.details = serde_json::json!({
        "baseline_countries": countries,
        "baseline_logins": prior,
        "baseline_days": settings.baseline_days,
        "city": event.geo_city,
        "asn": event.geo_asn,
        "latitude": event.geo_latitude,
        "longitude": event.geo_longitude,
        "mfa_used": event.raw.value().pointer("/additionalEventData/MFAUsed"),
    });
    Some(finding)
}

fn hijack_allowed(detectors: &Detectors, event: &PolicyEvent, country: &str, principal: &str) -> bool {
    let settings = &detectors.settings.account_hijacking;
    settings.allow_countries.iter().any(|c| c.eq_ignore_ascii_case(country))
        || settings.allow_principals.iter().any(|p| p == principal || event.user_name.as_deref() == Some(p.as_str()))
        || event.source_ip.is_some_and(|ip| detectors.hijack_allowed.iter().any(|c| c.contains(ip)))
}

/// With `include_api_activity`: an API call from a country the principal has not used (for
/// logins or calls) in the baseline window. `baseline` holds those countries and how many
/// earlier events there were; the caller reads them from storage.
pub fn api_activity_from_new_country(
    detectors: &Detectors,
    event: &PolicyEvent,
    baseline_countries: &BTreeSet<String>,
    prior_events: usize,
) -> Option<Finding> {
    let settings = &detectors.settings.account_hijacking;
    let country = event.geo_country.as_deref()?;
    let principal = event.principal()?;
    if !settings.enabled
        || !settings.include_api_activity
        || event.is_console_login()
        || prior_events < settings.min_prior_logins
        || baseline_countries.contains(country)
        || hijack_allowed(detectors, event, country, principal)
    {
        return None;
    }
    let who = event.user_name.as_deref().unwrap_or(principal);
    let title = format!(
        "Account hijacking attempt: {who} called {} from {country} ({}), never seen in {} days (usual: {})",
        event.event_name.as_deref().unwrap_or("the API"),
        event.source_ip_text.as_deref().unwrap_or("?"),
        settings.baseline_days,
        baseline_countries.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
    );
    let mut finding = detectors.meta(HIJACK).finding_for(event, settings.severity, title);
    finding.details = serde_json::json!({
        "baseline_countries": baseline_countries,
        "baseline_events": prior_events,
        "baseline_days": settings.baseline_days,
        "activity": "api",
    });
    Some(finding)
}

fn travel(
    detectors: &Detectors,
    event: &PolicyEvent,
    previous: &SuccessfulLogin,
    here: (f64, f64),
    city_level: bool,
) -> Option<Finding> {
    let settings = &detectors.settings.impossible_travel;
    let there = previous.position?;
    let distance = haversine_km(there, here);
    if distance < settings.min_distance_km {
        return None;
    }
    let hours = (event.event_time - previous.time).num_seconds().max(60) as f64 / 3600.0;
    let speed = distance / hours;
    if speed <= settings.max_speed_kmh {
        return None;
    }
    let meta = detectors.meta(IMPOSSIBLE_TRAVEL);
    let who = event.user_name.as_deref().or(event.principal()).unwrap_or("?");
    let title = format!(
        "Impossible travel: {who} logged in from {} and {} ({:.0} km) {:.1} hours apart ({:.0} km/h)",
        previous.country.as_deref().unwrap_or("?"),
        event.geo_country.as_deref().unwrap_or("?"),
        distance,
        hours,
        speed
    );
    let mut finding = meta.finding_for(event, settings.severity, title);
    finding.details = serde_json::json!({
        "previous_login": previous.time,
        "previous_country": previous.country,
        "previous_source_ip": previous.source,
        "distance_km": distance.round(),
        "hours": (hours * 100.0).round() / 100.0,
        "speed_kmh": speed.round(),
        "precision": if city_level && previous.city_level { "city" } else { "country" },
    });
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_distances() {
        // London to New York is about 5,570 km.
        let d = haversine_km((51.5074, -0.1278), (40.7128, -74.0060));
        assert!((5500.0..5650.0).contains(&d), "{d}");
        assert!(haversine_km((10.0, 10.0), (10.0, 10.0)) < 1e-9);
    }
}
