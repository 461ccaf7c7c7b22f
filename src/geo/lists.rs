//! Address lists the user supplies as files: Tor exit nodes, VPN and hosting providers, AWS's
//! published `ip-ranges.json`. Each is read whole into a sorted range table; a file is read
//! again when its modification time changes, looked at no more than once a minute, so a list
//! can be refreshed without a restart. A line that does not parse is an error naming the file
//! and the line; a file too large or too long is refused.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::net::Cidr;

/// Largest list file read.
pub const MAX_LIST_BYTES: u64 = 64 * 1024 * 1024;
/// Most lines (or prefixes) a list may hold.
pub const MAX_LIST_LINES: usize = 2_000_000;
/// How often a list file's modification time is looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: more than {limit} lines")]
    TooLong { path: PathBuf, limit: usize },
    #[error("{path}, line {line}: {message}")]
    BadLine { path: PathBuf, line: usize, message: String },
}

/// What a list file holds and so how its lines read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// One address per line (the Tor Project's bulk exit list), or the `exit-addresses`
    /// format (`ExitAddress 192.0.2.1 2026-11-30 12:00:00` among `ExitNode`/`Published` lines).
    TorExits,
    /// A CIDR (or a bare address) or `AS<number>` per line: VPN or hosting providers.
    Ranges,
    /// AWS's `ip-ranges.json` (`prefixes[].ip_prefix`, `ipv6_prefixes[].ipv6_prefix`).
    AwsIpRanges,
}

/// Addresses as merged ranges per family, and AS numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddressSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    asns: HashSet<u32>,
}

impl AddressSet {
    pub fn from_parts(cidrs: &[Cidr], asns: impl IntoIterator<Item = u32>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in cidrs {
            match cidr.address {
                IpAddr::V4(a) => {
                    let mask = if cidr.prefix == 0 { 0 } else { u32::MAX << (32 - cidr.prefix) };
                    let start = u32::from(a) & mask;
                    v4.push((start, start | !mask));
                }
                IpAddr::V6(a) => {
                    let mask = if cidr.prefix == 0 { 0 } else { u128::MAX << (128 - cidr.prefix) };
                    let start = u128::from(a) & mask;
                    v6.push((start, start | !mask));
                }
            }
        }
        Self { v4: merge(v4), v6: merge(v6), asns: asns.into_iter().collect() }
    }

    /// Whether `ip` lies in a range, or `asn` (the address's AS, when known) is listed.
    pub fn contains(&self, ip: IpAddr, asn: Option<u32>) -> bool {
        asn.is_some_and(|asn| self.asns.contains(&asn))
            || match ip {
                IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    Some(v4) => in_ranges(&self.v4, u32::from(v4)),
                    None => in_ranges(&self.v6, u128::from(a)),
                },
            }
    }

    /// Ranges and AS numbers held.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len() + self.asns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn merge<T: Ord + Copy + num_like::Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1.next_or_max() => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], value: T) -> bool {
    let after = ranges.partition_point(|(start, _)| *start <= value);
    after > 0 && ranges[after - 1].1 >= value
}

mod num_like {
    /// The next integer, saturating (adjacent ranges merge).
    pub trait Step {
        fn next_or_max(self) -> Self;
    }
    impl Step for u32 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Step for u128 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
}

/// Parses a list's text. `path` names the file in errors.
pub fn parse_list(kind: ListKind, text: &str, path: &Path) -> Result<AddressSet, ListError> {
    if kind == ListKind::AwsIpRanges {
        return parse_aws_ip_ranges(text, path);
    }
    let mut cidrs = Vec::new();
    let mut asns = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if index >= MAX_LIST_LINES {
            return Err(ListError::TooLong { path: path.to_owned(), limit: MAX_LIST_LINES });
        }
        let bad = |message: String| ListError::BadLine { path: path.to_owned(), line: index + 1, message };
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let entry = match kind {
            ListKind::TorExits => match tor_line(line) {
                Some(address) => address,
                None => continue,
            },
            _ => line,
        };
        if kind == ListKind::Ranges
            && let Some(number) = entry.strip_prefix("AS").or_else(|| entry.strip_prefix("as"))
        {
            asns.push(number.parse::<u32>().map_err(|_| bad(format!("{entry:?} is not an AS number")))?);
            continue;
        }
        if kind == ListKind::TorExits && entry.contains('/') {
            return Err(bad(format!("{entry:?}: a Tor exit list holds addresses, not ranges")));
        }
        cidrs.push(entry.parse::<Cidr>().map_err(|e| bad(format!("{e}: expected an address, a CIDR or AS<number>")))?);
    }
    Ok(AddressSet::from_parts(&cidrs, asns))
}

/// The address of a Tor exit list line: the line itself, or the address of an `ExitAddress`
/// line of the `exit-addresses` format (its other lines carry none).
fn tor_line(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    match words.next()? {
        "ExitAddress" => Some(words.next().unwrap_or("")),
        "ExitNode" | "Published" | "LastStatus" => None,
        address => Some(address),
    }
}

fn parse_aws_ip_ranges(text: &str, path: &Path) -> Result<AddressSet, ListError> {
    #[derive(serde::Deserialize)]
    struct IpRanges {
        #[serde(default)]
        prefixes: Vec<V4Prefix>,
        #[serde(default)]
        ipv6_prefixes: Vec<V6Prefix>,
    }
    #[derive(serde::Deserialize)]
    struct V4Prefix {
        ip_prefix: String,
    }
    #[derive(serde::Deserialize)]
    struct V6Prefix {
        ipv6_prefix: String,
    }
    let ranges: IpRanges = serde_json::from_str(text).map_err(|e| ListError::BadLine {
        path: path.to_owned(),
        line: e.line(),
        message: format!("not AWS's ip-ranges.json: {e}"),
    })?;
    let count = ranges.prefixes.len() + ranges.ipv6_prefixes.len();
    if count > MAX_LIST_LINES {
        return Err(ListError::TooLong { path: path.to_owned(), limit: MAX_LIST_LINES });
    }
    let texts = ranges.prefixes.iter().map(|p| &p.ip_prefix).chain(ranges.ipv6_prefixes.iter().map(|p| &p.ipv6_prefix));
    let mut cidrs = Vec::with_capacity(count);
    for prefix in texts {
        let cidr = prefix.parse::<Cidr>().map_err(|message| {
            // JSON has no line per prefix that serde reports: name the prefix instead.
            let line = text.find(prefix.as_str()).map_or(0, |at| text[..at].lines().count().max(1));
            ListError::BadLine { path: path.to_owned(), line, message }
        })?;
        cidrs.push(cidr);
    }
    Ok(AddressSet::from_parts(&cidrs, []))
}

/// Reads a list file, bounded.
pub fn read_list(kind: ListKind, path: &Path) -> Result<(AddressSet, Option<SystemTime>), ListError> {
    let read = |source| ListError::Read { path: path.to_owned(), source };
    let metadata = std::fs::metadata(path).map_err(read)?;
    if metadata.len() > MAX_LIST_BYTES {
        return Err(ListError::TooLarge { path: path.to_owned(), limit: MAX_LIST_BYTES });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    Ok((parse_list(kind, &text, path)?, metadata.modified().ok()))
}

/// A list file kept current: read again when its modification time changes.
#[derive(Debug)]
pub struct ListFile {
    path: PathBuf,
    kind: ListKind,
    set: RwLock<Arc<AddressSet>>,
    /// The file's modification time when read, and when it was last looked at.
    seen: Mutex<(Option<SystemTime>, Instant)>,
}

impl ListFile {
    pub fn open(kind: ListKind, path: &Path) -> Result<Self, ListError> {
        let (set, modified) = read_list(kind, path)?;
        tracing::info!(path = %path.display(), ?kind, entries = set.len(), "address list loaded");
        Ok(Self {
            path: path.to_owned(),
            kind,
            set: RwLock::new(Arc::new(set)),
            seen: Mutex::new((modified, Instant::now())),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn current(&self) -> Arc<AddressSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the file again if [`RELOAD_CHECK`] has passed and its modification time changed.
    /// Returns whether the list changed. A file that now fails to read keeps the list it had
    /// (logged with the file and line).
    pub fn refresh(&self, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(seen.1) < RELOAD_CHECK {
            return false;
        }
        seen.1 = now;
        self.reload_if_changed(&mut seen.0)
    }

    /// Reads the file again now if its modification time changed (tests and [`Self::refresh`]).
    pub fn reload_now(&self) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_if_changed(&mut seen.0)
    }

    fn reload_if_changed(&self, modified: &mut Option<SystemTime>) -> bool {
        let current = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if current == *modified {
            return false;
        }
        match read_list(self.kind, &self.path) {
            Ok((set, when)) => {
                tracing::info!(path = %self.path.display(), entries = set.len(), "address list reloaded");
                *modified = when;
                *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                true
            }
            Err(error) => {
                tracing::error!(%error, "address list not reloaded; keeping the previous one");
                *modified = current;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_and_as_numbers() {
        let set = parse_list(
            ListKind::Ranges,
            "# VPN providers\n198.51.100.0/24\nAS9009  # M247\n2001:db8::/32\n203.0.113.7\n",
            Path::new("vpn.txt"),
        )
        .unwrap();
        assert!(set.contains(ip("198.51.100.200"), None));
        assert!(!set.contains(ip("198.51.101.1"), None));
        assert!(set.contains(ip("203.0.113.7"), None));
        assert!(!set.contains(ip("203.0.113.8"), None));
        assert!(set.contains(ip("2001:db8::5"), None));
        assert!(set.contains(ip("192.0.2.1"), Some(9009)));
        assert!(!set.contains(ip("192.0.2.1"), Some(9008)));
        assert!(set.contains(ip("::ffff:198.51.100.3"), None), "mapped IPv4 reads as IPv4");
    }

    #[test]
    fn tor_lists_in_both_formats() {
        let bulk = parse_list(ListKind::TorExits, "185.220.101.1\n185.220.101.2\n", Path::new("t")).unwrap();
        assert!(bulk.contains(ip("185.220.101.2"), None));
        let exit_addresses = "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\nPublished 2026-11-29 19:15:18\n\
                              LastStatus 2026-11-29 20:00:00\nExitAddress 162.247.74.201 2026-11-29 20:04:13\n";
        let set = parse_list(ListKind::TorExits, exit_addresses, Path::new("t")).unwrap();
        assert!(set.contains(ip("162.247.74.201"), None));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_bad_line_names_the_file_and_line() {
        let error = parse_list(ListKind::Ranges, "10.0.0.0/8\n\nnot-an-address\n", Path::new("/etc/vpn.txt"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("/etc/vpn.txt, line 3:"), "{error}");
        let error = parse_list(ListKind::Ranges, "ASx1\n", Path::new("h")).unwrap_err().to_string();
        assert!(error.contains("line 1") && error.contains("AS number"), "{error}");
        assert!(parse_list(ListKind::TorExits, "192.0.2.0/24\n", Path::new("t")).is_err());
    }

    #[test]
    fn aws_ip_ranges_json() {
        let text = r#"{"syncToken":"1","createDate":"2026-11-30-00-00-00",
            "prefixes":[{"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"AMAZON","network_border_group":"ap-northeast-2"}],
            "ipv6_prefixes":[{"ipv6_prefix":"2600:1f14::/35","region":"us-west-2","service":"EC2","network_border_group":"us-west-2"}]}"#;
        let set = parse_list(ListKind::AwsIpRanges, text, Path::new("ip-ranges.json")).unwrap();
        assert!(set.contains(ip("3.5.141.9"), None));
        assert!(set.contains(ip("2600:1f14::1"), None));
        assert!(!set.contains(ip("3.5.144.1"), None));
        let broken = text.replace("3.5.140.0/22", "3.5.140.0/40");
        let error = parse_list(ListKind::AwsIpRanges, &broken, Path::new("ip-ranges.json")).unwrap_err().to_string();
        assert!(error.starts_with("ip-ranges.json, line 2:"), "{error}");
    }

    #[test]
    fn adjacent_and_overlapping_ranges_merge() {
        let cidrs: Vec<Cidr> =
            ["10.0.0.0/25", "10.0.0.128/25", "10.0.0.64/26"].iter().map(|c| c.parse().unwrap()).collect();
        let set = AddressSet::from_parts(&cidrs, []);
        assert_eq!(set.v4.len(), 1);
        assert!(set.contains(ip("10.0.0.255"), None));
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_old_list() {
        let dir = std::env::temp_dir().join(format!("skywarden-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tor.txt");
        std::fs::write(&path, "192.0.2.1\n").unwrap();
        let list = ListFile::open(ListKind::TorExits, &path).unwrap();
        assert!(!list.refresh(Instant::now()), "not looked at again within a minute");
        let set_mtime = |secs: u64| {
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
        };
        std::fs::write(&path, "192.0.2.2\n").unwrap();
        set_mtime(1_000_000);
        assert!(list.refresh(Instant::now() + RELOAD_CHECK));
        assert!(list.current().contains(ip("192.0.2.2"), None));
        assert!(!list.current().contains(ip("192.0.2.1"), None));
        std::fs::write(&path, "garbage\n").unwrap();
        set_mtime(2_000_000);
        assert!(!list.reload_now());
        assert!(list.current().contains(ip("192.0.2.2"), None), "the previous list stays");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
