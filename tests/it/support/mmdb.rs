//! A small MaxMind DB writer, so tests build their own GeoIP databases instead of shipping
//! third-party ones. Implements the parts of the MaxMind DB 2.0 format the tests need: an IPv6
//! search tree (IPv4 networks under ::/96) with 32-bit records, and maps of strings, doubles,
//! unsigned integers and booleans.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// A value in a record.
#[derive(Clone, Debug)]
pub enum Value {
    Str(String),
    Double(f64),
    U32(u32),
    Bool(bool),
    Map(BTreeMap<String, Value>),
}

pub fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A GeoIP2-City-shaped record.
pub fn city_record(country: &str, city: &str, latitude: f64, longitude: f64) -> Value {
    map([
        ("country", map([("iso_code", s(country))])),
        ("city", map([("names", map([("en", s(city))]))])),
        ("location", map([("latitude", Value::Double(latitude)), ("longitude", Value::Double(longitude))])),
    ])
}

/// A GeoLite2-ASN-shaped record.
pub fn asn_record(asn: u32, organisation: &str) -> Value {
    map([("autonomous_system_number", Value::U32(asn)), ("autonomous_system_organization", s(organisation))])
}

/// What a GeoIP2 Anonymous-IP record says of an address.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anonymous {
    pub vpn: bool,
    pub hosting: bool,
    pub tor_exit: bool,
    pub public_proxy: bool,
}

/// A GeoIP2-Anonymous-IP-shaped record: `is_anonymous` and the flags that are set (MaxMind
/// leaves out the false ones).
pub fn anonymous_ip_record(flags: Anonymous) -> Value {
    let set = [
        ("is_anonymous_vpn", flags.vpn),
        ("is_hosting_provider", flags.hosting),
        ("is_tor_exit_node", flags.tor_exit),
        ("is_public_proxy", flags.public_proxy),
    ];
    let mut record: BTreeMap<String, Value> =
        set.into_iter().filter(|(_, on)| *on).map(|(name, _)| (name.to_string(), Value::Bool(true))).collect();
    record.insert("is_anonymous".into(), Value::Bool(true));
    Value::Map(record)
}

/// An ip-location-db-shaped (flat) record.
pub fn flat_country_record(country: &str) -> Value {
    map([("country_code", s(country))])
}

#[derive(Clone, Copy)]
enum Slot {
    Empty,
    Node(u32),
    Data(u32),
}

pub struct MmdbWriter {
    database_type: String,
    nodes: Vec<[Slot; 2]>,
    data: Vec<u8>,
}

impl MmdbWriter {
    pub fn new(database_type: &str) -> Self {
        Self { database_type: database_type.to_string(), nodes: vec![[Slot::Empty, Slot::Empty]], data: Vec::new() }
    }

    /// Adds `network/prefix` (networks must not overlap).
    pub fn insert(&mut self, network: &str, prefix: u8, value: &Value) -> &mut Self {
        let (bits, prefix) = match network.parse::<IpAddr>().expect("a network address") {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), prefix + 96),
            IpAddr::V6(v6) => (u128::from(v6), prefix),
        };
        let offset = self.data.len() as u32;
        encode(value, &mut self.data);
        let mut node = 0usize;
        for depth in 0..prefix {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth + 1 == prefix {
                self.nodes[node][bit] = Slot::Data(offset);
                break;
            }
            node = match self.nodes[node][bit] {
                Slot::Node(next) => next as usize,
                _ => {
                    self.nodes.push([Slot::Empty, Slot::Empty]);
                    let next = self.nodes.len() - 1;
                    self.nodes[node][bit] = Slot::Node(next as u32);
                    next
                }
            };
        }
        self
    }

    pub fn write(&self, path: &Path) {
        let node_count = self.nodes.len() as u32;
        let mut out = Vec::new();
        for node in &self.nodes {
            for slot in node {
                let record = match *slot {
                    Slot::Empty => node_count,
                    Slot::Node(n) => n,
                    Slot::Data(offset) => node_count + 16 + offset,
                };
                out.extend_from_slice(&record.to_be_bytes());
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let metadata = Value::Map(BTreeMap::from([
            ("binary_format_major_version".to_string(), Value::U32(2)),
            ("binary_format_minor_version".to_string(), Value::U32(0)),
            ("build_epoch".to_string(), Value::U32(1_700_000_000)),
            ("database_type".to_string(), s(&self.database_type)),
            ("description".to_string(), map([("en", s("Skywarden test database"))])),
            ("ip_version".to_string(), Value::U32(6)),
            ("languages".to_string(), Value::Map(BTreeMap::new())),
            ("node_count".to_string(), Value::U32(node_count)),
            ("record_size".to_string(), Value::U32(32)),
        ]));
        encode_metadata(&metadata, &mut out);
        std::fs::write(path, out).expect("writing the test database");
    }
}

/// Metadata uses the same encoding, except `languages` must be an array and integer widths
/// follow the spec (uint16 for versions, record size and ip version; uint64 for the epoch).
fn encode_metadata(value: &Value, out: &mut Vec<u8>) {
    let Value::Map(entries) = value else { unreachable!("metadata is a map") };
    control(7, entries.len(), out);
    for (key, value) in entries {
        encode(&Value::Str(key.clone()), out);
        match (key.as_str(), value) {
            ("languages", _) => {
                // Extended type 11 (array) with no elements.
                out.push(0);
                out.push(11 - 7);
            }
            ("build_epoch", Value::U32(n)) => {
                out.push(0x08); // extended type, size 8
                out.push(9 - 7); // uint64
                out.extend_from_slice(&u64::from(*n).to_be_bytes());
            }
            ("node_count", Value::U32(n)) => {
                control(6, 4, out);
                out.extend_from_slice(&n.to_be_bytes());
            }
            (_, Value::U32(n)) => {
                control(5, 2, out);
                out.extend_from_slice(&(*n as u16).to_be_bytes());
            }
            (_, other) => encode(other, out),
        }
    }
}

fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
    match size {
        0..=28 => out.push((kind << 5) | size as u8),
        29..=284 => {
            out.push((kind << 5) | 29);
            out.push((size - 29) as u8);
        }
        _ => {
            let rest = size - 285;
            assert!(rest < 65_536, "value too large for the test writer");
            out.push((kind << 5) | 30);
            out.extend_from_slice(&(rest as u16).to_be_bytes());
        }
    }
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(text) => {
            control(2, text.len(), out);
            out.extend_from_slice(text.as_bytes());
        }
        Value::Double(number) => {
            control(3, 8, out);
            out.extend_from_slice(&number.to_be_bytes());
        }
        Value::U32(number) => {
            control(6, 4, out);
            out.extend_from_slice(&number.to_be_bytes());
        }
        // Extended type 14: the value is the size field (0 or 1), no payload.
        Value::Bool(flag) => {
            out.push(u8::from(*flag));
            out.push(14 - 7);
        }
        Value::Map(entries) => {
            control(7, entries.len(), out);
            for (key, value) in entries {
                encode(&Value::Str(key.clone()), out);
                encode(value, out);
            }
        }
    }
}

/// A country database for the sample incident's addresses (what the demo's CC0 database says
/// of them): the attacker in Ukraine, the users in the US and the UK.
pub fn sample_incident_countries(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("country.mmdb");
    MmdbWriter::new("geo-whois-asn-country")
        .insert("176.36.0.0", 14, &flat_country_record("UA"))
        .insert("73.202.0.0", 16, &flat_country_record("US"))
        .insert("24.5.0.0", 16, &flat_country_record("US"))
        .insert("81.2.69.0", 24, &flat_country_record("GB"))
        .insert("52.94.0.0", 16, &flat_country_record("US"))
        .write(&path);
    path
}
