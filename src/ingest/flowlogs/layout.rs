//! Where AWS delivers log files in S3, and how their keys sort. Two layouts:
//! - classic: `AWSLogs/ACCOUNT/vpcflowlogs/REGION/YYYY/MM/DD/[HH/]FILE` (CloudTrail alike, with
//!   `CloudTrail` for the service, and `AWSLogs/o-ORG/ACCOUNT/...` for organisation trails);
//! - Hive-compatible (flow logs only): `AWSLogs/aws-account-id=ACCOUNT/aws-service=vpcflowlogs/
//!   aws-region=REGION/year=YYYY/month=MM/day=DD/[hour=HH/]FILE`.
//!
//! Under one prefix, keys sort by day (then hour), so a day is a listing position: S3's
//! `StartAfter` set to the prefix and the day lists that day and everything after it. Pure.

use chrono::NaiveDate;

/// How the folders after `AWSLogs/` are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLayout {
    Classic,
    Hive,
}

/// The partition a log file's key names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub layout: KeyLayout,
    pub account_id: String,
    /// `vpcflowlogs` or `CloudTrail`.
    pub service: String,
    pub region: String,
    pub date: NaiveDate,
    /// Set when the flow log partitions per hour.
    pub hour: Option<u32>,
}

impl Partition {
    /// Reads the partition of a full key, in either layout; `None` when the key follows neither
    /// (a key outside `AWSLogs/`, a digest folder with no date ...).
    pub fn parse(key: &str) -> Option<Self> {
        let (_, rest) = key.split_once("AWSLogs/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.first()?.starts_with("aws-account-id=") {
            return Self::parse_hive(&segments);
        }
        // An organisation trail puts the organisation id before the account.
        let segments = match segments.first() {
            Some(first) if first.starts_with("o-") => &segments[1..],
            _ => &segments[..],
        };
        let [account, service, region, year, month, day, more @ ..] = segments else { return None };
        let date = date_from(year, month, day)?;
        // An hour folder is two digits followed by more; a file name is the last segment.
        let hour = match more {
            [hour, _, ..] if hour.len() == 2 => hour.parse().ok().filter(|h| *h < 24),
            _ => None,
        };
        Some(Self {
            layout: KeyLayout::Classic,
            account_id: (*account).to_owned(),
            service: (*service).to_owned(),
            region: (*region).to_owned(),
            date,
            hour,
        })
    }

    fn parse_hive(segments: &[&str]) -> Option<Self> {
        let value = |segment: Option<&&str>, name: &str| {
            segment.and_then(|s| s.strip_prefix(name)).and_then(|s| s.strip_prefix('=')).map(str::to_owned)
        };
        let date = date_from(
            &value(segments.get(3), "year")?,
            &value(segments.get(4), "month")?,
            &value(segments.get(5), "day")?,
        )?;
        Some(Self {
            layout: KeyLayout::Hive,
            account_id: value(segments.first(), "aws-account-id")?,
            service: value(segments.get(1), "aws-service")?,
            region: value(segments.get(2), "aws-region")?,
            date,
            hour: value(segments.get(6), "hour").and_then(|h| h.parse().ok()).filter(|h| *h < 24),
        })
    }
}

fn date_from(year: &str, month: &str, day: &str) -> Option<NaiveDate> {
    let number = |text: &str| text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse::<u32>().ok()).flatten();
    if year.len() != 4 {
        return None;
    }
    NaiveDate::from_ymd_opt(number(year)? as i32, number(month)?, number(day)?)
}

/// The Hive-compatible prefix of the flow logs a classic prefix names (the same bucket prefix,
/// account and region): `…AWSLogs/ACCOUNT/vpcflowlogs/REGION/` →
/// `…AWSLogs/aws-account-id=ACCOUNT/aws-service=vpcflowlogs/aws-region=REGION/`.
pub fn hive_prefix(classic: &str) -> Option<String> {
    let (base, rest) = classic.rsplit_once("AWSLogs/")?;
    let [account, "vpcflowlogs", region, ""] = rest.split('/').collect::<Vec<_>>()[..] else { return None };
    Some(format!("{base}AWSLogs/aws-account-id={account}/aws-service=vpcflowlogs/aws-region={region}/"))
}

/// The day of a key, from the part after the listing prefix (`2026/11/29/…` or
/// `year=2026/month=11/day=29/…`).
pub fn day_of(layout: KeyLayout, after_prefix: &str) -> Option<NaiveDate> {
    let mut parts = after_prefix.split('/');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    match layout {
        KeyLayout::Classic => date_from(year, month, day),
        KeyLayout::Hive => {
            date_from(year.strip_prefix("year=")?, month.strip_prefix("month=")?, day.strip_prefix("day=")?)
        }
    }
}

/// The `StartAfter` key that lists `day` and every later day under `prefix`: it sorts just
/// before the day's first key.
pub fn day_position(layout: KeyLayout, prefix: &str, day: NaiveDate) -> String {
    match layout {
        KeyLayout::Classic => format!("{prefix}{}", day.format("%Y/%m/%d")),
        KeyLayout::Hive => format!("{prefix}{}", day.format("year=%Y/month=%m/day=%d")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn hive_keys_name_account_service_region_day_and_hour() {
        let key = "logs/AWSLogs/aws-account-id=111122223333/aws-service=vpcflowlogs/aws-region=eu-west-1/\
                   year=2026/month=11/day=30/hour=05/111122223333_vpcflowlogs_eu-west-1_fl-1_20261130T0500Z_ab.log.parquet";
        let partition = Partition::parse(key).unwrap();
        assert_eq!(partition.layout, KeyLayout::Hive);
        assert_eq!(partition.account_id, "111122223333");
        assert_eq!(partition.service, "vpcflowlogs");
        assert_eq!(partition.region, "eu-west-1");
        assert_eq!(partition.date, day("2026-11-30"));
        assert_eq!(partition.hour, Some(5));
        let daily = key.replace("hour=05/", "");
        assert_eq!(Partition::parse(&daily).unwrap().hour, None);
        for broken in [
            "AWSLogs/aws-account-id=1/aws-service=vpcflowlogs/aws-region=r/year=2026/month=13/day=01/f",
            "AWSLogs/aws-account-id=1/aws-service=vpcflowlogs/year=2026/month=11/day=01/f",
            "AWSLogs/aws-account-id=1/aws-service=vpcflowlogs/aws-region=r/year=26/month=11/day=01/f",
        ] {
            assert_eq!(Partition::parse(broken), None, "{broken}");
        }
    }

    #[test]
    fn classic_keys_with_and_without_hours_and_organisations() {
        let flow = Partition::parse("AWSLogs/111122223333/vpcflowlogs/us-east-1/2026/11/30/13/file.log.gz").unwrap();
        assert_eq!((flow.layout, flow.hour, flow.date), (KeyLayout::Classic, Some(13), day("2026-11-30")));
        let daily = Partition::parse("p/AWSLogs/111122223333/vpcflowlogs/us-east-1/2026/11/30/file.log.gz").unwrap();
        assert_eq!(daily.hour, None);
        let trail =
            Partition::parse("AWSLogs/o-abc123def4/111122223333/CloudTrail/eu-west-1/2026/01/02/x.json.gz").unwrap();
        assert_eq!((trail.account_id.as_str(), trail.service.as_str()), ("111122223333", "CloudTrail"));
        assert_eq!(Partition::parse("elsewhere/2026/11/30/file"), None);
    }

    #[test]
    fn hive_prefix_mirrors_the_classic_one() {
        assert_eq!(
            hive_prefix("flows/AWSLogs/111122223333/vpcflowlogs/us-east-1/").as_deref(),
            Some("flows/AWSLogs/aws-account-id=111122223333/aws-service=vpcflowlogs/aws-region=us-east-1/")
        );
        assert_eq!(hive_prefix("AWSLogs/111122223333/CloudTrail/us-east-1/"), None);
        assert_eq!(hive_prefix("somewhere/else/"), None);
    }

    #[test]
    fn day_positions_sort_just_before_the_days_keys() {
        let prefix = "AWSLogs/aws-account-id=1/aws-service=vpcflowlogs/aws-region=r/";
        let position = day_position(KeyLayout::Hive, prefix, day("2026-11-23"));
        let first_key = format!("{prefix}year=2026/month=11/day=23/hour=00/f.log.parquet");
        let day_before = format!("{prefix}year=2026/month=11/day=22/hour=23/f.log.parquet");
        assert!(position < first_key && day_before < position);
        assert_eq!(day_of(KeyLayout::Hive, &first_key[prefix.len()..]), Some(day("2026-11-23")));
        let classic = day_position(KeyLayout::Classic, "p/", day("2026-02-03"));
        assert_eq!(classic, "p/2026/02/03");
        assert_eq!(day_of(KeyLayout::Classic, "2026/02/03/x"), Some(day("2026-02-03")));
        assert_eq!(day_of(KeyLayout::Classic, "x/y"), None);
    }
}
