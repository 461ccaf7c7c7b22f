//! The ASN tables of the CC-BY `@ip-location-db/asn` package (RouteViews, the RIRs and DB-IP):
//! `asn-ipv4.csv` and `asn-ipv6.csv`, one range a line,
//! `first_address,last_address,as_number,as_organisation` (the organisation quoted when it holds
//! a comma). Read once into a sorted table (no MaxMind DB of it is published).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest table file read.
pub const MAX_TABLE_BYTES: u64 = 256 * 1024 * 1024;
/// Most ranges a table file may hold.
pub const MAX_TABLE_LINES: usize = 5_000_000;

#[derive(Debug, thiserror::Error)]
pub enum AsnTableError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: larger than {limit} bytes or {lines} lines")]
    TooLarge { path: PathBuf, limit: u64, lines: usize },
    #[error("{path}, line {line}: {message}")]
    BadLine { path: PathBuf, line: usize, message: String },
}

struct Range {
    start: u128,
    end: u128,
    asn: u32,
    org: u32,
}

/// Address ranges and the AS that announces each.
pub struct AsnTable {
    v4: Vec<Range>,
    v6: Vec<Range>,
    orgs: Vec<Arc<str>>,
}

impl AsnTable {
    pub fn open(path: &Path) -> Result<Self, AsnTableError> {
        let read = |source| AsnTableError::Read { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(read)?;
        Self::read(BufReader::new(file.take(MAX_TABLE_BYTES + 1)), path)
    }

    /// Reads a table; `path` names it in errors.
    pub fn read(reader: impl BufRead, path: &Path) -> Result<Self, AsnTableError> {
        let mut table = Self { v4: Vec::new(), v6: Vec::new(), orgs: Vec::new() };
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut bytes = 0u64;
        for (index, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| AsnTableError::Read { path: path.to_owned(), source })?;
            bytes += line.len() as u64 + 1;
            if index >= MAX_TABLE_LINES || bytes > MAX_TABLE_BYTES {
                return Err(AsnTableError::TooLarge {
                    path: path.to_owned(),
                    limit: MAX_TABLE_BYTES,
                    lines: MAX_TABLE_LINES,
                });
            }
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| AsnTableError::BadLine { path: path.to_owned(), line: index + 1, message };
            let (start, end, asn, org) = parse_line(&line).map_err(bad)?;
            let next = table.orgs.len() as u32;
            let org = *interned.entry(org.clone()).or_insert_with(|| {
                table.orgs.push(Arc::from(org.as_str()));
                next
            });
            let range = Range { start: number(start), end: number(end), asn, org };
            if start.is_ipv4() { table.v4.push(range) } else { table.v6.push(range) }
        }
        table.v4.sort_unstable_by_key(|r| r.start);
        table.v6.sort_unstable_by_key(|r| r.start);
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The AS number and organisation announcing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<(u32, Arc<str>)> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ranges = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        let value = number(ip);
        let after = ranges.partition_point(|r| r.start <= value);
        let range = ranges.get(after.checked_sub(1)?).filter(|r| r.end >= value)?;
        Some((range.asn, self.orgs[range.org as usize].clone()))
    }
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn parse_line(line: &str) -> Result<(IpAddr, IpAddr, u32, String), String> {
    let mut fields = line.splitn(4, ',');
    let mut address = |what: &str| -> Result<IpAddr, String> {
        let text = fields.next().unwrap_or("").trim();
        text.parse().map_err(|_| format!("{what} {text:?} is not an address (the text form, asn-ipv4.csv, is read)"))
    };
    let (start, end) = (address("first address")?, address("last address")?);
    if start.is_ipv4() != end.is_ipv4() || number(start) > number(end) {
        return Err(format!("{start} to {end} is not a range"));
    }
    let asn_text = fields.next().unwrap_or("").trim();
    let asn = asn_text.parse::<u32>().map_err(|_| format!("AS number {asn_text:?} is not a number"))?;
    let org = fields.next().unwrap_or("").trim();
    let org = match org.strip_prefix('"').and_then(|o| o.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => org.to_string(),
    };
    Ok((start, end, asn, org))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n\
                          3.0.0.0,3.127.255.255,16509,\"Amazon.com, Inc.\"\n\
                          2001:200::,2001:200:1b9:ffff:ffff:ffff:ffff:ffff,2500,WIDE Project\n";

    #[test]
    fn looks_up_both_families_and_quoted_names() {
        let table = AsnTable::read(SAMPLE.as_bytes(), Path::new("asn.csv")).unwrap();
        assert_eq!(table.len(), 3);
        let (asn, org) = table.lookup("3.5.1.2".parse().unwrap()).unwrap();
        assert_eq!((asn, &*org), (16509, "Amazon.com, Inc."));
        assert_eq!(table.lookup("1.0.0.9".parse().unwrap()).unwrap().0, 13335);
        assert_eq!(table.lookup("2001:200:1::1".parse().unwrap()).unwrap().0, 2500);
        assert_eq!(table.lookup("::ffff:3.0.0.1".parse().unwrap()).unwrap().0, 16509);
        assert!(table.lookup("1.0.1.0".parse().unwrap()).is_none());
        assert!(table.lookup("0.255.255.255".parse().unwrap()).is_none());
    }

    #[test]
    fn a_bad_line_names_the_file_and_line() {
        let text = format!("{SAMPLE}16777216,16777471,13335,x\n");
        let error = AsnTable::read(text.as_bytes(), Path::new("asn-ipv4.csv")).err().unwrap().to_string();
        assert!(error.starts_with("asn-ipv4.csv, line 4: first address"), "{error}");
        let error = AsnTable::read("1.0.0.9,1.0.0.1,1,x\n".as_bytes(), Path::new("a")).err().unwrap().to_string();
        assert!(error.contains("not a range"), "{error}");
        let error = AsnTable::read("1.0.0.0,1.0.0.1,AS1,x\n".as_bytes(), Path::new("a")).err().unwrap().to_string();
        assert!(error.contains("AS number"), "{error}");
    }
}
