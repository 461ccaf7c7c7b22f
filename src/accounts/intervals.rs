//! How often each source's jobs run: every source has a default, and an account may choose its
//! own per source (`accounts add --poll-interval cloudtrail-lookup=1m`, or `intervals` in the
//! API). The choice is stored on the account, so jobs created later (a region enabled months
//! after onboarding) get it too, and on each job (`interval_seconds`), which is what runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::AccountError;
use super::schedule::Source;

/// Shortest interval an account may choose: LookupEvents allows 2 requests a second per account
/// and region, and a run reads at least one page.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Longest: a job that runs less than weekly leaves its lag alarm meaningless.
pub const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// An account's own poll intervals; sources it does not name use [`Source::default_interval`].
/// As JSON, seconds by source name: `{"cloudtrail-lookup": 60, "config-snapshot": 3600}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollIntervals {
    chosen: BTreeMap<Source, Duration>,
}

impl PollIntervals {
    /// The interval of `source`'s jobs.
    pub fn get(&self, source: Source) -> Duration {
        self.chosen.get(&source).copied().unwrap_or_else(|| source.default_interval())
    }

    /// Chooses `interval` for `source`, within [`MIN_INTERVAL`] and [`MAX_INTERVAL`].
    pub fn set(&mut self, source: Source, interval: Duration) -> Result<(), AccountError> {
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            return Err(AccountError::Invalid {
                field: "intervals",
                reason: format!(
                    "{}: {} s is outside {} s to {} s",
                    source.as_str(),
                    interval.as_secs(),
                    MIN_INTERVAL.as_secs(),
                    MAX_INTERVAL.as_secs()
                ),
            });
        }
        self.chosen.insert(source, interval);
        Ok(())
    }

    /// Reads one `SOURCE=DURATION` setting (`cloudtrail-lookup=90s`, `config-snapshot=1h`; a
    /// bare number is seconds), as the command line gives it.
    pub fn set_from_text(&mut self, setting: &str) -> Result<(), AccountError> {
        let invalid = |reason: String| AccountError::Invalid { field: "intervals", reason };
        let (source, duration) = setting
            .split_once('=')
            .ok_or_else(|| invalid(format!("`{setting}` is not SOURCE=DURATION (e.g. cloudtrail-lookup=2m)")))?;
        let source = parse_source(source.trim())?;
        let interval = parse_duration(duration.trim())
            .ok_or_else(|| invalid(format!("`{duration}` is not a duration (e.g. 90s, 5m, 1h, 1d)")))?;
        self.set(source, interval)
    }

    /// The sources the account chose an interval for.
    pub fn chosen(&self) -> impl Iterator<Item = (Source, Duration)> + '_ {
        self.chosen.iter().map(|(source, interval)| (*source, *interval))
    }

    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty()
    }

    /// From stored or sent JSON: seconds by source name.
    fn from_seconds(seconds: BTreeMap<String, u64>) -> Result<Self, AccountError> {
        let mut intervals = Self::default();
        for (name, value) in seconds {
            intervals.set(parse_source(&name)?, Duration::from_secs(value))?;
        }
        Ok(intervals)
    }

    fn to_seconds(&self) -> BTreeMap<&'static str, u64> {
        self.chosen.iter().map(|(source, interval)| (source.as_str(), interval.as_secs())).collect()
    }

    /// The stored value (`accounts.poll_intervals`). A source this release does not know (a
    /// newer one wrote it) is left out rather than stopping the account's polling.
    pub(super) fn from_stored(value: serde_json::Value) -> Self {
        let seconds: BTreeMap<String, u64> = serde_json::from_value(value).unwrap_or_default();
        let mut intervals = Self::default();
        for (name, value) in seconds {
            if let Some(source) = Source::parse(&name) {
                let _ = intervals.set(source, Duration::from_secs(value));
            }
        }
        intervals
    }

    pub(super) fn to_stored(&self) -> serde_json::Value {
        serde_json::to_value(self.to_seconds()).expect("a map of numbers serialises")
    }
}

fn parse_source(name: &str) -> Result<Source, AccountError> {
    Source::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
        AccountError::Invalid {
            field: "intervals",
            reason: format!("`{name}` is not a poll source (one of {})", known.join(", ")),
        }
    })
}

/// `90`, `90s`, `5m`, `2h` or `1d`.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return None,
    };
    number.checked_mul(scale).map(Duration::from_secs)
}

impl Serialize for PollIntervals {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_seconds().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PollIntervals {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let seconds = BTreeMap::<String, u64>::deserialize(deserializer)?;
        Self::from_seconds(seconds).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_until_a_source_is_chosen() {
        let mut intervals = PollIntervals::default();
        assert_eq!(intervals.get(Source::CloudTrailLookup), Duration::from_secs(300));
        assert_eq!(intervals.get(Source::Regions), Duration::from_secs(86_400));
        intervals.set_from_text("cloudtrail-lookup=90s").unwrap();
        intervals.set_from_text("config-snapshot = 1h").unwrap();
        assert_eq!(intervals.get(Source::CloudTrailLookup), Duration::from_secs(90));
        assert_eq!(intervals.get(Source::ConfigSnapshot), Duration::from_secs(3600));
        assert_eq!(intervals.get(Source::FlowLogsS3), Duration::from_secs(300));
        let json = serde_json::to_value(&intervals).unwrap();
        assert_eq!(json, serde_json::json!({"cloudtrail-lookup": 90, "config-snapshot": 3600}));
        assert_eq!(serde_json::from_value::<PollIntervals>(json).unwrap(), intervals);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let mut intervals = PollIntervals::default();
        for (setting, expected) in [
            ("cloudtrail-lookup", "SOURCE=DURATION"),
            ("lookup=5m", "not a poll source"),
            ("cloudtrail-lookup=5 minutes", "not a duration"),
            ("cloudtrail-lookup=10s", "outside 30 s"),
            ("regions=30d", "outside"),
        ] {
            let error = intervals.set_from_text(setting).unwrap_err().to_string();
            assert!(error.starts_with("intervals: ") && error.contains(expected), "{setting}: {error}");
        }
        assert!(intervals.is_empty());
        let refused = serde_json::from_value::<PollIntervals>(serde_json::json!({"regions": 5}));
        assert!(refused.unwrap_err().to_string().contains("outside"));
        let stored = PollIntervals::from_stored(serde_json::json!({"nope": 60, "flowlogs-s3": 120}));
        assert_eq!(stored.get(Source::FlowLogsS3), Duration::from_secs(120));
    }
}
