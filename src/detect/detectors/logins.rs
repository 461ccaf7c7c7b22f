//! Console login detectors, fed one principal's (or one source's) logins in event-time order:
//!
//! - `aws-account-hijacking-attempt`: a successful login from a country that is not in the
//!   principal's baseline (the countries of its successful logins in the last N days), once the
//!   principal has enough earlier logins to have a baseline.
//! - `aws-impossible-travel`: two successful logins whose implied speed is too high, using city
//!   coordinates when the GeoIP data has them and country centroids otherwise.
//! - `aws-excessive-login-failures`: too many failed logins for one principal in a window, or
//!   from one source against several principals (password spraying).

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};

use super::{Detectors, HIJACK, IMPOSSIBLE_TRAVEL, LOGIN_FAILURES};
use crate::detect::PolicyEvent;
use crate::geo::centroids::country_centroid;
use crate::model::Finding;

struct SuccessfulLogin {
    time: DateTime<Utc>,
    country: Option<String>,
    position: Option<(f64, f64)>,
    city_level: bool,
    source: Option<String>,
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
/// logins at or after `emit_from`; earlier ones build state.
pub fn evaluate(
    detectors: &Detectors,
    logins: &[PolicyEvent],
    emit_from: DateTime<Utc>,
    only_policy: Option<&str>,
) -> Vec<Finding> {
    let wants = |id: &str| only_policy.is_none_or(|p| p == id);
    let settings = &detectors.settings;
    let hijack_on = settings.account_hijacking.enabled && wants(HIJACK);
    let travel_on = settings.impossible_travel.enabled && wants(IMPOSSIBLE_TRAVEL);
    let failures_on = settings.login_failures.enabled && wants(LOGIN_FAILURES);
    let baseline = Duration::days(settings.account_hijacking.baseline_days);
    let failure_window = Duration::minutes(settings.login_failures.window_minutes);

    let mut successes: HashMap<(String, String), Vec<SuccessfulLogin>> = HashMap::new();
    let mut failures_by_principal: HashMap<(String, String), VecDeque<&PolicyEvent>> = HashMap::new();
    let mut failures_by_source: HashMap<(String, String), VecDeque<&PolicyEvent>> = HashMap::new();
    let mut findings = Vec::new();

    for event in logins {
        let (Some(succeeded), Some(principal)) = (event.login_succeeded(), event.principal()) else { continue };
        let key = (event.account_id.clone(), principal.to_string());
        let emit = event.event_time >= emit_from;
        if !succeeded {
            if !failures_on {
                continue;
            }
            let window = failures_by_principal.entry(key.clone()).or_default();
            slide(window, event, failure_window);
            if emit && window.len() >= settings.login_failures.threshold {
                let who = event.user_name.as_deref().unwrap_or(principal);
                findings.extend(failure_findings(detectors, window, who, None, settings.login_failures.threshold));
            }
            if let Some(source) = &event.source_ip_text {
                let window = failures_by_source.entry((event.account_id.clone(), source.clone())).or_default();
                slide(window, event, failure_window);
                let principals: BTreeSet<&str> = window.iter().filter_map(|e| e.principal()).collect();
                if emit && window.len() >= settings.login_failures.threshold && principals.len() > 1 {
                    let threshold = settings.login_failures.threshold;
                    findings.extend(failure_findings(detectors, window, source, Some(principals.len()), threshold));
                }
            }
            continue;
        }

        let history = successes.entry(key).or_default();
        let (here, city_level) = position(event);
        if emit
            && hijack_on
            && let Some(finding) = hijack(detectors, event, history, baseline)
        {
            findings.push(finding);
        }
        if emit
            && travel_on
            && let (Some(previous), Some(here)) = (history.last(), here)
            && let Some(finding) = travel(detectors, event, previous, here, city_level)
        {
            findings.push(finding);
        }
        history.push(SuccessfulLogin {
            time: event.event_time,
            country: event.geo_country.clone(),
            position: here,
            city_level,
            source: event.source_ip_text.clone(),
        });
    }
    findings
}

fn slide<'a>(window: &mut VecDeque<&'a PolicyEvent>, event: &'a PolicyEvent, length: Duration) {
    window.push_back(event);
    while window.front().is_some_and(|first| first.event_time < event.event_time - length) {
        window.pop_front();
    }
}

fn failure_findings(
    detectors: &Detectors,
    window: &VecDeque<&PolicyEvent>,
    subject: &str,
    spraying_principals: Option<usize>,
    threshold: usize,
) -> Vec<Finding> {
    let settings = &detectors.settings.login_failures;
    let meta = detectors.meta(LOGIN_FAILURES);
    let first = window.front().expect("window is not empty");
    let title = match spraying_principals {
        None => {
            format!("{} failed console logins for {subject} within {} minutes", window.len(), settings.window_minutes)
        }
        Some(n) => format!(
            "{} failed console logins from {subject} against {n} principals within {} minutes",
            window.len(),
            settings.window_minutes
        ),
    };
    // Every failure in the window is evidence; they fold into one alert per subject and hour.
    // When the threshold is first reached the whole window is evidence, after that each new
    // failure (the earlier ones are recorded already).
    let newest = if window.len() == threshold { window.len() } else { 1 };
    window
        .iter()
        .skip(window.len() - newest)
        .map(|event| {
            let mut finding = meta.finding_for(event, settings.severity, title.clone());
            // Per-principal bursts fold with the principal's other alerts; sprays by source.
            if spraying_principals.is_some() {
                finding.subject = format!("source:{subject}");
            }
            finding.details = serde_json::json!({
                "failures_in_window": window.len(),
                "window_minutes": settings.window_minutes,
                "window_start": first.event_time,
            });
            finding
        })
        .collect()
}

fn hijack(
    detectors: &Detectors,
    event: &PolicyEvent,
    history: &[SuccessfulLogin],
    baseline: Duration,
) -> Option<Finding> {
    let settings = &detectors.settings.account_hijacking;
    let country = event.geo_country.as_deref()?;
    let principal = event.principal()?;
    if hijack_allowed(detectors, event, country, principal) {
        return None;
    }
    let since = event.event_time - baseline;
    let prior: Vec<&SuccessfulLogin> =
        history.iter().filter(|l| l.time >= since && l.time < event.event_time).collect();
    if prior.len() < settings.min_prior_logins {
        return None;
    }
    let countries: BTreeSet<&str> = prior.iter().filter_map(|l| l.country.as_deref()).collect();
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
        "baseline_logins": prior.len(),
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
