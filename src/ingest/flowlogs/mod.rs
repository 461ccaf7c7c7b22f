//! VPC flow log records, versions 2 to 5 and custom formats. The field order comes from the
//! header line that S3 delivery writes; without one, the AWS default order is assumed (v2's 14
//! fields, or all v2–v5 fields when a line has 29). Pure: no I/O here.

use std::net::IpAddr;

use chrono::{DateTime, TimeZone, Utc};

use crate::db::copy::CopyBuffer;
use crate::geo::GeoCache;

pub mod layout;
pub mod parquet;

/// Columns written by [`FlowRecord::write_row`], in order.
pub const COLUMNS: &str = "account_id, bucket_time, record_hash, version, interface_id, srcaddr, dstaddr, \
    srcport, dstport, protocol, packets, bytes, start_time, end_time, action, log_status, vpc_id, \
    subnet_id, instance_id, tcp_flags, traffic_type, pkt_srcaddr, pkt_dstaddr, region, az_id, \
    flow_direction, traffic_path, pkt_src_aws_service, pkt_dst_aws_service, src_country, dst_country, extra";

/// Every field of versions 2 to 5, in the order AWS documents them.
const ALL_V5: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
    "region",
    "az-id",
    "sublocation-type",
    "sublocation-id",
    "pkt-src-aws-service",
    "pkt-dst-aws-service",
    "flow-direction",
    "traffic-path",
];

/// The default format (version 2): the first 14 fields.
const DEFAULT_V2: &[&str] = ALL_V5.split_at(14).0;

/// Field names that show a line is a header rather than a record (the v2 and v3 fields).
const CORE_FIELDS: &[&str] = ALL_V5.split_at(21).0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FlowError {
    #[error("expected {expected} fields ({format}), found {found}")]
    FieldCount { expected: usize, found: usize, format: String },
    #[error(
        "{found} fields and no header line: not the default v2 (14) or v5 (29) layout; give the format with --flow-format"
    )]
    UnknownLayout { found: usize },
    #[error("field {field}: invalid {kind} {value:?}")]
    BadValue { field: String, kind: &'static str, value: String },
    #[error("empty flow log format")]
    EmptyFormat,
}

/// The ordered field names of a flow log.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowFormat {
    fields: Vec<String>,
    /// Worked out once per format rather than per line (issue 18: the parser's share of import).
    plan: FieldPlan,
}

/// What each field of a format is, and the order its values are hashed in.
#[derive(Clone, Debug, PartialEq)]
struct FieldPlan {
    kinds: Vec<Field>,
    /// Field positions sorted by name, the order of the record identity's hash; `None` when
    /// a name repeats (values then break the tie, so each line sorts its own pairs).
    hash_order: Option<Vec<usize>>,
}

impl FieldPlan {
    fn new(fields: &[String]) -> Self {
        let kinds = fields.iter().map(|f| Field::of(f)).collect();
        let mut order: Vec<usize> = (0..fields.len()).collect();
        order.sort_by(|a, b| fields[*a].cmp(&fields[*b]));
        let unique = order.windows(2).all(|w| fields[w[0]] != fields[w[1]]);
        Self { kinds, hash_order: unique.then_some(order) }
    }
}

/// A field with a column of its own, or `Extra`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field {
    Version,
    AccountId,
    InterfaceId,
    Srcaddr,
    Dstaddr,
    Srcport,
    Dstport,
    Protocol,
    Packets,
    Bytes,
    Start,
    End,
    Action,
    LogStatus,
    VpcId,
    SubnetId,
    InstanceId,
    TcpFlags,
    Type,
    PktSrcaddr,
    PktDstaddr,
    Region,
    AzId,
    FlowDirection,
    TrafficPath,
    PktSrcAwsService,
    PktDstAwsService,
    Extra,
}

impl Field {
    fn of(name: &str) -> Self {
        match name {
            "version" => Self::Version,
            "account-id" => Self::AccountId,
            "interface-id" => Self::InterfaceId,
            "srcaddr" => Self::Srcaddr,
            "dstaddr" => Self::Dstaddr,
            "srcport" => Self::Srcport,
            "dstport" => Self::Dstport,
            "protocol" => Self::Protocol,
            "packets" => Self::Packets,
            "bytes" => Self::Bytes,
            "start" => Self::Start,
            "end" => Self::End,
            "action" => Self::Action,
            "log-status" => Self::LogStatus,
            "vpc-id" => Self::VpcId,
            "subnet-id" => Self::SubnetId,
            "instance-id" => Self::InstanceId,
            "tcp-flags" => Self::TcpFlags,
            "type" => Self::Type,
            "pkt-srcaddr" => Self::PktSrcaddr,
            "pkt-dstaddr" => Self::PktDstaddr,
            "region" => Self::Region,
            "az-id" => Self::AzId,
            "flow-direction" => Self::FlowDirection,
            "traffic-path" => Self::TrafficPath,
            "pkt-src-aws-service" => Self::PktSrcAwsService,
            "pkt-dst-aws-service" => Self::PktDstAwsService,
            _ => Self::Extra,
        }
    }
}

impl FlowFormat {
    /// Parses a space-separated field list, as in a header line or `--flow-format`
    /// (`${srcaddr}` placeholders, as in the AWS console, are accepted too).
    pub fn parse(spec: &str) -> Result<Self, FlowError> {
        let fields: Vec<String> = spec
            .split_ascii_whitespace()
            .map(|f| f.trim_start_matches("${").trim_end_matches('}').to_string())
            .collect();
        if fields.is_empty() {
            return Err(FlowError::EmptyFormat);
        }
        Ok(Self::new(fields))
    }

    fn new(fields: Vec<String>) -> Self {
        let plan = FieldPlan::new(&fields);
        Self { fields, plan }
    }

    pub fn default_v2() -> Self {
        Self::new(DEFAULT_V2.iter().map(|s| s.to_string()).collect())
    }

    /// The format for a line with no header: known layouts by field count.
    pub fn for_field_count(count: usize) -> Result<Self, FlowError> {
        match count {
            14 => Ok(Self::default_v2()),
            29 => Ok(Self::new(ALL_V5.iter().map(|s| s.to_string()).collect())),
            found => Err(FlowError::UnknownLayout { found }),
        }
    }

    /// Reads a header line (`version account-id interface-id ...`), if `line` is one.
    pub fn from_header(line: &str) -> Option<Self> {
        // Every line comes through here: a record (a version number, an id, `-`) is turned
        // away on its first byte, before the tokens are collected and matched (issue 18).
        if !line.trim_start().bytes().next().is_some_and(|b| b.is_ascii_lowercase()) {
            return None;
        }
        let tokens: Vec<&str> = line.split_ascii_whitespace().collect();
        if tokens.is_empty() {
            return None;
        }
        let identifier = |t: &&str| {
            t.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let known = tokens.iter().filter(|t| CORE_FIELDS.contains(t)).count();
        (tokens.iter().all(identifier) && known * 2 >= tokens.len().min(4))
            .then(|| Self::new(tokens.iter().map(|s| s.to_string()).collect()))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn describe(&self) -> String {
        self.fields.join(" ")
    }
}

/// One flow log record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FlowRecord {
    pub account_id: Option<String>,
    pub version: Option<i16>,
    pub interface_id: Option<String>,
    pub srcaddr: Option<IpAddr>,
    pub dstaddr: Option<IpAddr>,
    pub srcport: Option<i32>,
    pub dstport: Option<i32>,
    pub protocol: Option<i16>,
    pub packets: Option<i64>,
    pub bytes: Option<i64>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub action: Option<String>,
    pub log_status: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub instance_id: Option<String>,
    pub tcp_flags: Option<i32>,
    pub traffic_type: Option<String>,
    pub pkt_srcaddr: Option<IpAddr>,
    pub pkt_dstaddr: Option<IpAddr>,
    pub region: Option<String>,
    pub az_id: Option<String>,
    pub flow_direction: Option<String>,
    pub traffic_path: Option<i16>,
    pub pkt_src_aws_service: Option<String>,
    pub pkt_dst_aws_service: Option<String>,
    /// Fields without a column of their own, in format order.
    pub extra: Vec<(String, String)>,
    /// Identity of the record: a hash of all its named values.
    pub hash: [u8; 16],
}

impl FlowRecord {
    /// Parses one record line in `format`.
    pub fn parse(line: &str, format: &FlowFormat) -> Result<Self, FlowError> {
        let values: Vec<&str> = line.split_ascii_whitespace().collect();
        if values.len() != format.len() {
            return Err(FlowError::FieldCount {
                expected: format.len(),
                found: values.len(),
                format: format.describe(),
            });
        }
        let Some(order) = &format.plan.hash_order else {
            return Self::from_fields(format.fields.iter().map(String::as_str).zip(values));
        };
        // As `from_fields`, with each field's kind and the hash order taken from the format.
        let mut record = FlowRecord::default();
        for ((name, kind), value) in format.fields.iter().zip(&format.plan.kinds).zip(&values) {
            record.set_kind(*kind, name, value)?;
        }
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        for &i in order {
            if values[i] != "-" {
                hash_pair(&mut hasher, &format.fields[i], values[i]);
            }
        }
        record.hash = hasher.digest128().to_be_bytes();
        Ok(record)
    }

    /// A record from (field name, value) pairs, `-` for a missing value: the text layouts and
    /// Parquet columns all come through here, so a record has one identity whatever its layout.
    pub fn from_fields<'v>(fields: impl IntoIterator<Item = (&'v str, &'v str)>) -> Result<Self, FlowError> {
        let mut record = FlowRecord::default();
        let mut canonical: Vec<(&str, &str)> = Vec::new();
        for (name, value) in fields {
            if value != "-" {
                canonical.push((name, value));
            }
            record.set(name, value)?;
        }
        canonical.sort_unstable();
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        for (name, value) in canonical {
            hash_pair(&mut hasher, name, value);
        }
        record.hash = hasher.digest128().to_be_bytes();
        Ok(record)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), FlowError> {
        self.set_kind(Field::of(name), name, value)
    }

    fn set_kind(&mut self, kind: Field, name: &str, value: &str) -> Result<(), FlowError> {
        if value == "-" {
            return Ok(());
        }
        let text = || Some(value.to_string());
        match kind {
            Field::Version => self.version = Some(number(name, value)?),
            Field::AccountId => self.account_id = text(),
            Field::InterfaceId => self.interface_id = text(),
            Field::Srcaddr => self.srcaddr = Some(address(name, value)?),
            Field::Dstaddr => self.dstaddr = Some(address(name, value)?),
            Field::Srcport => self.srcport = Some(number(name, value)?),
            Field::Dstport => self.dstport = Some(number(name, value)?),
            Field::Protocol => self.protocol = Some(number(name, value)?),
            Field::Packets => self.packets = Some(number(name, value)?),
            Field::Bytes => self.bytes = Some(number(name, value)?),
            Field::Start => self.start = Some(epoch(name, value)?),
            Field::End => self.end = Some(epoch(name, value)?),
            Field::Action => self.action = text(),
            Field::LogStatus => self.log_status = text(),
            Field::VpcId => self.vpc_id = text(),
            Field::SubnetId => self.subnet_id = text(),
            Field::InstanceId => self.instance_id = text(),
            Field::TcpFlags => self.tcp_flags = Some(number(name, value)?),
            Field::Type => self.traffic_type = text(),
            Field::PktSrcaddr => self.pkt_srcaddr = Some(address(name, value)?),
            Field::PktDstaddr => self.pkt_dstaddr = Some(address(name, value)?),
            Field::Region => self.region = text(),
            Field::AzId => self.az_id = text(),
            Field::FlowDirection => self.flow_direction = text(),
            Field::TrafficPath => self.traffic_path = Some(number(name, value)?),
            Field::PktSrcAwsService => self.pkt_src_aws_service = text(),
            Field::PktDstAwsService => self.pkt_dst_aws_service = text(),
            Field::Extra => self.extra.push((name.to_string(), value.to_string())),
        }
        Ok(())
    }

    /// The record's partition time: start, else end, else `fallback` (the CloudWatch Logs
    /// event time), else the Unix epoch for formats that carry no time at all.
    pub fn bucket_time(&self, fallback: Option<DateTime<Utc>>) -> DateTime<Utc> {
        self.start.or(self.end).or(fallback).unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// Appends this record as one COPY row in [`COLUMNS`] order.
    pub fn write_row(
        &self,
        default_account: &str,
        fallback_time: Option<DateTime<Utc>>,
        geo: &mut GeoCache,
        out: &mut CopyBuffer,
    ) {
        out.text(self.account_id.as_deref().unwrap_or(default_account));
        write_time(out, self.bucket_time(fallback_time), chrono::SecondsFormat::Millis);
        write_hash(out, &self.hash);
        write_number(out, self.version.map(i64::from));
        out.opt_text(self.interface_id.as_deref());
        write_address(out, self.srcaddr);
        write_address(out, self.dstaddr);
        write_number(out, self.srcport.map(i64::from));
        write_number(out, self.dstport.map(i64::from));
        write_number(out, self.protocol.map(i64::from));
        write_number(out, self.packets);
        write_number(out, self.bytes);
        match self.start {
            Some(start) => write_time(out, start, chrono::SecondsFormat::Secs),
            None => out.null(),
        }
        match self.end {
            Some(end) => write_time(out, end, chrono::SecondsFormat::Secs),
            None => out.null(),
        }
        out.opt_text(self.action.as_deref());
        out.opt_text(self.log_status.as_deref());
        out.opt_text(self.vpc_id.as_deref());
        out.opt_text(self.subnet_id.as_deref());
        out.opt_text(self.instance_id.as_deref());
        write_number(out, self.tcp_flags.map(i64::from));
        out.opt_text(self.traffic_type.as_deref());
        write_address(out, self.pkt_srcaddr);
        write_address(out, self.pkt_dstaddr);
        out.opt_text(self.region.as_deref());
        out.opt_text(self.az_id.as_deref());
        out.opt_text(self.flow_direction.as_deref());
        write_number(out, self.traffic_path.map(i64::from));
        out.opt_text(self.pkt_src_aws_service.as_deref());
        out.opt_text(self.pkt_dst_aws_service.as_deref());
        let country =
            |ip: Option<IpAddr>, geo: &mut GeoCache| ip.and_then(|ip| geo.lookup(ip)).and_then(|g| g.country.clone());
        out.opt_text(country(self.srcaddr, geo).as_deref());
        out.opt_text(country(self.dstaddr, geo).as_deref());
        if self.extra.is_empty() {
            out.null();
        } else {
            let map: serde_json::Map<String, serde_json::Value> =
                self.extra.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            out.text(&serde_json::Value::Object(map).to_string());
        }
        out.end_row();
    }
}

// Row encoding without a heap string per value (issue 18: a row has up to a dozen numbers,
// addresses and times). None of them ever needs COPY escaping.

fn write_number(out: &mut CopyBuffer, value: Option<i64>) {
    let Some(value) = value else { return out.null() };
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let text = std::str::from_utf8(&digits[at..]).unwrap_or("0");
    if value < 0 {
        out.raw(&format!("-{text}"));
    } else {
        out.raw(text);
    }
}

/// The record hash as a COPY `bytea` (`\\x` and hex), as `CopyBuffer::bytea` writes it.
fn write_hash(out: &mut CopyBuffer, hash: &[u8; 16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 35];
    text[..3].copy_from_slice(b"\\\\x");
    for (i, byte) in hash.iter().enumerate() {
        text[3 + 2 * i] = HEX[usize::from(byte >> 4)];
        text[4 + 2 * i] = HEX[usize::from(byte & 15)];
    }
    out.raw(std::str::from_utf8(&text).unwrap_or_default());
}

fn write_address(out: &mut CopyBuffer, value: Option<IpAddr>) {
    use std::io::Write as _;
    let Some(address) = value else { return out.null() };
    let mut text = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    match write!(cursor, "{address}") {
        Ok(()) => {
            let length = cursor.position() as usize;
            out.raw(std::str::from_utf8(&text[..length]).unwrap_or_default());
        }
        Err(_) => out.display(address),
    }
}

/// `time` as `YYYY-MM-DD HH:MM:SS+00`; through chrono (at `precision`) when it has a fraction
/// of a second or a year outside 0–9999.
fn write_time(out: &mut CopyBuffer, time: DateTime<Utc>, precision: chrono::SecondsFormat) {
    use chrono::{Datelike as _, Timelike as _};
    let year = time.year();
    if time.nanosecond() != 0 || !(0..=9999).contains(&year) {
        return out.raw(&time.to_rfc3339_opts(precision, true));
    }
    let mut text = *b"0000-00-00 00:00:00+00";
    let mut put = |at: usize, value: u32, width: usize| {
        let mut rest = value;
        for i in (at..at + width).rev() {
            text[i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, time.month(), 2);
    put(8, time.day(), 2);
    put(11, time.hour(), 2);
    put(14, time.minute(), 2);
    put(17, time.second(), 2);
    out.raw(std::str::from_utf8(&text).unwrap_or_default());
}

/// One `name=value` pair of the record identity's hash.
fn hash_pair(hasher: &mut xxhash_rust::xxh3::Xxh3Default, name: &str, value: &str) {
    hasher.update(name.as_bytes());
    hasher.update(b"=");
    hasher.update(value.as_bytes());
    hasher.update(b"\n");
}

fn number<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, FlowError> {
    value.parse().map_err(|_| FlowError::BadValue {
        field: field.to_string(),
        kind: "number",
        value: value.to_string(),
    })
}

fn address(field: &str, value: &str) -> Result<IpAddr, FlowError> {
    value.parse().map_err(|_| FlowError::BadValue {
        field: field.to_string(),
        kind: "address",
        value: value.to_string(),
    })
}

fn epoch(field: &str, value: &str) -> Result<DateTime<Utc>, FlowError> {
    let seconds: i64 = number(field, value)?;
    Utc.timestamp_opt(seconds, 0).single().ok_or_else(|| FlowError::BadValue {
        field: field.to_string(),
        kind: "time",
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_default_v2_records() {
        let format = FlowFormat::default_v2();
        let record = FlowRecord::parse(
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
            &format,
        )
        .unwrap();
        assert_eq!(record.account_id.as_deref(), Some("123456789010"));
        assert_eq!(record.dstport, Some(22));
        assert_eq!(record.bytes, Some(4249));
        assert_eq!(record.start.unwrap().timestamp(), 1_418_530_010);
        assert_eq!(record.action.as_deref(), Some("ACCEPT"));
        let nodata =
            FlowRecord::parse("2 123456789010 eni-1 - - - - - - - 1431280876 1431280934 - NODATA", &format).unwrap();
        assert_eq!(nodata.srcaddr, None);
        assert_eq!(nodata.log_status.as_deref(), Some("NODATA"));
        assert_ne!(record.hash, nodata.hash);
    }

    #[test]
    fn reads_headers_and_custom_orders() {
        let header = "instance-id interface-id srcaddr dstaddr pkt-srcaddr pkt-dstaddr";
        let format = FlowFormat::from_header(header).expect("a header");
        let record =
            FlowRecord::parse("- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5", &format).unwrap();
        assert_eq!(record.pkt_dstaddr, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(record.bucket_time(None), DateTime::UNIX_EPOCH);
        assert!(
            FlowFormat::from_header(
                "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA"
            )
            .is_none()
        );
        assert!(FlowFormat::from_header("i-0123 eni-1235b8ca123456789").is_none());
    }

    #[test]
    fn same_record_in_another_layout_has_the_same_identity() {
        let v2 =
            FlowRecord::parse("2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 3 4 100 200 ACCEPT OK", &FlowFormat::default_v2())
                .unwrap();
        let reordered = FlowFormat::parse("account-id version interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status").unwrap();
        let other = FlowRecord::parse("1 2 eni-1 10.0.0.1 10.0.0.2 1 2 6 3 4 100 200 ACCEPT OK", &reordered).unwrap();
        assert_eq!(v2.hash, other.hash);
    }

    #[test]
    fn encodes_rows_as_copy_text() {
        let format = FlowFormat::parse("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status tcp-flags pkt-dstaddr ecs-cluster-name").unwrap();
        let record = FlowRecord::parse(
            "2 1 eni-1 10.0.0.1 2001:db8::1 443 -1 6 3 4 1418530010 1418530070 ACCEPT OK 2 - c1",
            &format,
        )
        .unwrap();
        let mut out = CopyBuffer::with_capacity(256);
        record.write_row("9", None, &mut GeoCache::new(None), &mut out);
        let mut hash = CopyBuffer::with_capacity(64);
        hash.bytea(&record.hash);
        let hash = String::from_utf8(hash.as_bytes().to_vec()).unwrap();
        assert_eq!(
            String::from_utf8(out.as_bytes().to_vec()).unwrap(),
            format!(
                "1\t2014-12-14 04:06:50+00\t{hash}\t2\teni-1\t10.0.0.1\t2001:db8::1\t443\t-1\t6\t3\t4\t\
                 2014-12-14 04:06:50+00\t2014-12-14 04:07:50+00\tACCEPT\tOK\t\\N\t\\N\t\\N\t2\t\\N\t\\N\t\\N\t\\N\t\
                 \\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t{{\"ecs-cluster-name\":\"c1\"}}\n"
            )
        );
        // A fallback time with a fraction of a second keeps its milliseconds.
        let mut out = CopyBuffer::with_capacity(256);
        let fallback = Utc.timestamp_millis_opt(1_418_530_010_250).single();
        FlowRecord::default().write_row("9", fallback, &mut GeoCache::new(None), &mut out);
        assert!(String::from_utf8(out.as_bytes().to_vec()).unwrap().starts_with("9\t2014-12-14T04:06:50.250Z\t"));
    }

    #[test]
    fn names_the_bad_field() {
        let format = FlowFormat::default_v2();
        let error = FlowRecord::parse("2 1 eni-1 10.0.0.1 not-an-ip 1 2 6 3 4 100 200 ACCEPT OK", &format).unwrap_err();
        assert_eq!(error.to_string(), "field dstaddr: invalid address \"not-an-ip\"");
        let error = FlowRecord::parse("2 1 eni-1 - - - - - - - 1 2 -", &format).unwrap_err();
        assert!(matches!(error, FlowError::FieldCount { expected: 14, found: 13, .. }));
        assert_eq!(FlowFormat::for_field_count(4).unwrap_err(), FlowError::UnknownLayout { found: 4 });
    }

    #[test]
    fn unknown_fields_are_kept_as_extra() {
        let format = FlowFormat::parse("version srcaddr ecs-cluster-name tgw-id").unwrap();
        let record = FlowRecord::parse("5 10.0.0.1 my-cluster tgw-0abc", &format).unwrap();
        assert_eq!(
            record.extra,
            vec![("ecs-cluster-name".into(), "my-cluster".into()), ("tgw-id".into(), "tgw-0abc".into())]
        );
    }
}
