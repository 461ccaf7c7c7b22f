//! IP geolocation and network context at ingest, from MaxMind DB files (GeoIP2/GeoLite2 City,
//! Country, ASN and Anonymous-IP, and the flat `country_code` schema of the CC0 ip-location-db
//! databases), the ip-location-db ASN tables (CSV, [`asn_csv`]) and address lists the user
//! supplies ([`lists`]: Tor exits, VPN and hosting providers, AWS's `ip-ranges.json`). Several
//! databases can be loaded at once (say City and ASN); each field comes from the first database
//! that has it. See docs/network-context.md.
//!
//! Enrichment only: imports `net` (which addresses are public), nothing that stores or decides.

pub mod asn_csv;
pub mod centroids;
pub mod lists;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use maxminddb::Reader;
use serde::Deserialize;

use crate::net::is_public;

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot open GeoIP database {path}")]
    Open { path: PathBuf, source: maxminddb::MaxMindDbError },
    #[error(transparent)]
    AsnTable(#[from] asn_csv::AsnTableError),
    #[error(transparent)]
    List(#[from] lists::ListError),
}

/// What the databases know about one address.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 country code.
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
    /// A Tor exit node (the Tor list, or an Anonymous-IP database). `None`: nothing loaded
    /// could say; `Some(false)`: looked up, not listed.
    pub is_tor: Option<bool>,
    /// A VPN or an anonymising proxy (the VPN list, or an Anonymous-IP database).
    pub is_vpn: Option<bool>,
    /// A hosting provider (the hosting list, or an Anonymous-IP database).
    pub is_hosting: Option<bool>,
    /// In AWS's published ranges (`ip-ranges.json`, when given).
    pub is_aws: Option<bool>,
}

impl GeoInfo {
    pub fn is_empty(&self) -> bool {
        *self == GeoInfo::default()
    }

    /// The flags of a GeoIP2 Anonymous-IP record.
    fn fill_flags(&mut self, record: &MmdbRecord<'_>) {
        if record.is_anonymous_ip_record() {
            let any = |flags: &[Option<bool>]| flags.contains(&Some(true));
            Self::flag(&mut self.is_tor, Some(any(&[record.is_tor_exit_node])));
            let proxies = [record.is_anonymous_vpn, record.is_public_proxy, record.is_residential_proxy];
            Self::flag(&mut self.is_vpn, Some(any(&proxies)));
            Self::flag(&mut self.is_hosting, Some(any(&[record.is_hosting_provider])));
        }
    }

    /// ORs `listed` into a flag, once something could say.
    fn flag(flag: &mut Option<bool>, listed: Option<bool>) {
        if let Some(listed) = listed {
            *flag = Some(flag.unwrap_or(false) || listed);
        }
    }

    fn fill_from(&mut self, record: MmdbRecord<'_>) {
        self.fill_flags(&record);
        let country = record.country.and_then(|c| c.iso_code).or(record.country_code).filter(|c| !c.is_empty());
        if self.country.is_none() {
            self.country = country.map(str::to_ascii_uppercase);
        }
        if self.city.is_none() {
            self.city = record.city.and_then(|c| c.names).and_then(|n| n.get("en").map(|s| s.to_string()));
        }
        if let Some(location) = record.location
            && self.latitude.is_none()
            && location.latitude.is_some()
            && location.longitude.is_some()
        {
            self.latitude = location.latitude;
            self.longitude = location.longitude;
        }
        if self.asn.is_none() {
            self.asn = record.autonomous_system_number;
        }
        if self.as_org.is_none() {
            self.as_org = record.autonomous_system_organization.map(str::to_string);
        }
    }
}

/// The union of the fields Skywarden reads from the schemas it supports.
#[derive(Deserialize)]
struct MmdbRecord<'a> {
    #[serde(borrow)]
    country: Option<MmdbCountry<'a>>,
    #[serde(borrow)]
    city: Option<MmdbCity<'a>>,
    location: Option<MmdbLocation>,
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
    /// ip-location-db's flat schema.
    #[serde(borrow)]
    country_code: Option<&'a str>,
    /// GeoIP2 Anonymous-IP.
    is_anonymous: Option<bool>,
    is_anonymous_vpn: Option<bool>,
    is_hosting_provider: Option<bool>,
    is_tor_exit_node: Option<bool>,
    is_public_proxy: Option<bool>,
    is_residential_proxy: Option<bool>,
}

impl MmdbRecord<'_> {
    fn is_anonymous_ip_record(&self) -> bool {
        [
            self.is_anonymous,
            self.is_anonymous_vpn,
            self.is_hosting_provider,
            self.is_tor_exit_node,
            self.is_public_proxy,
            self.is_residential_proxy,
        ]
        .iter()
        .any(Option::is_some)
    }

    /// What an Anonymous-IP database says of an address it does not list.
    fn not_listed() -> Self {
        Self {
            country: None,
            city: None,
            location: None,
            autonomous_system_number: None,
            autonomous_system_organization: None,
            country_code: None,
            is_anonymous: Some(false),
            is_anonymous_vpn: None,
            is_hosting_provider: None,
            is_tor_exit_node: None,
            is_public_proxy: None,
            is_residential_proxy: None,
        }
    }
}

#[derive(Deserialize)]
struct MmdbCountry<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct MmdbCity<'a> {
    #[serde(borrow)]
    names: Option<HashMap<&'a str, &'a str>>,
}

#[derive(Deserialize)]
struct MmdbLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// One source of address data.
enum Source {
    Mmdb { path: PathBuf, reader: Reader<Vec<u8>>, anonymous_ip: bool },
    AsnTable { path: PathBuf, table: asn_csv::AsnTable },
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Mmdb { path, .. } | Source::AsnTable { path, .. } => path,
        }
    }

    /// Opens a MaxMind DB, or an ip-location-db ASN table (`.csv`).
    fn open(path: &Path) -> Result<Self, GeoError> {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            let table = asn_csv::AsnTable::open(path)?;
            tracing::info!(path = %path.display(), ranges = table.len(), "ASN table loaded");
            return Ok(Source::AsnTable { path: path.to_owned(), table });
        }
        let reader = Reader::open_readfile(path).map_err(|source| GeoError::Open { path: path.to_owned(), source })?;
        tracing::info!(path = %path.display(), kind = %reader.metadata().database_type, "GeoIP database loaded");
        let anonymous_ip = reader.metadata().database_type.contains("Anonymous-IP");
        Ok(Source::Mmdb { path: path.to_owned(), reader, anonymous_ip })
    }

    fn fill(&self, ip: IpAddr, info: &mut GeoInfo) {
        match self {
            Source::Mmdb { path, reader, anonymous_ip } => {
                let record = reader.lookup(ip).and_then(|result| result.decode::<MmdbRecord<'_>>());
                match record {
                    Ok(Some(record)) => info.fill_from(record),
                    Ok(None) => {}
                    Err(error) => tracing::debug!(%ip, path = %path.display(), %error, "GeoIP lookup failed"),
                }
                // An Anonymous-IP database holds listed addresses only: absent is "not listed".
                if *anonymous_ip {
                    info.fill_flags(&MmdbRecord::not_listed());
                }
            }
            Source::AsnTable { table, .. } => {
                if info.asn.is_none()
                    && let Some((asn, org)) = table.lookup(ip)
                {
                    info.asn = Some(asn);
                    info.as_org = Some(org.to_string());
                }
            }
        }
    }
}

/// The address lists the user supplies (each optional), kept current from their files.
#[derive(Debug, Default)]
pub struct NetworkLists {
    pub tor_exits: Option<lists::ListFile>,
    pub vpn: Option<lists::ListFile>,
    pub hosting: Option<lists::ListFile>,
    pub aws_ranges: Option<lists::ListFile>,
}

impl NetworkLists {
    /// Reads the files given (a bad line is an error naming file and line).
    pub fn open(
        tor_exits: Option<&Path>,
        vpn: Option<&Path>,
        hosting: Option<&Path>,
        aws_ranges: Option<&Path>,
    ) -> Result<Self, GeoError> {
        let open = |path: Option<&Path>, kind| path.map(|p| lists::ListFile::open(kind, p)).transpose();
        Ok(Self {
            tor_exits: open(tor_exits, lists::ListKind::TorExits)?,
            vpn: open(vpn, lists::ListKind::Ranges)?,
            hosting: open(hosting, lists::ListKind::Ranges)?,
            aws_ranges: open(aws_ranges, lists::ListKind::AwsIpRanges)?,
        })
    }

    fn all(&self) -> impl Iterator<Item = &lists::ListFile> {
        [&self.tor_exits, &self.vpn, &self.hosting, &self.aws_ranges].into_iter().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.all().next().is_none()
    }

    /// Sets the flags the lists can answer for `ip` (whose AS `info` may already hold).
    fn apply(&self, ip: IpAddr, info: &mut GeoInfo) {
        let listed =
            |list: &Option<lists::ListFile>, asn: Option<u32>| list.as_ref().map(|l| l.current().contains(ip, asn));
        GeoInfo::flag(&mut info.is_tor, listed(&self.tor_exits, None));
        GeoInfo::flag(&mut info.is_vpn, listed(&self.vpn, info.asn));
        GeoInfo::flag(&mut info.is_hosting, listed(&self.hosting, info.asn));
        GeoInfo::flag(&mut info.is_aws, listed(&self.aws_ranges, None));
    }
}

/// One or more opened databases and lists.
pub struct GeoDb {
    sources: Vec<Source>,
    lists: NetworkLists,
    /// Bumped whenever a list is read again, so memos forget what they knew.
    generation: AtomicU64,
    opened: Instant,
    /// When the list files were last looked at, in milliseconds since `opened`.
    lists_checked_ms: AtomicU64,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.paths()).finish()
    }
}

impl GeoDb {
    pub fn open(paths: &[PathBuf]) -> Result<Self, GeoError> {
        Self::open_with(paths, NetworkLists::default())
    }

    /// The databases at `paths` (MaxMind DB files, or ip-location-db ASN tables ending in
    /// `.csv`) and the user's address lists.
    pub fn open_with(paths: &[PathBuf], lists: NetworkLists) -> Result<Self, GeoError> {
        let sources = paths.iter().map(|path| Source::open(path)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            sources,
            lists,
            generation: AtomicU64::new(0),
            opened: Instant::now(),
            lists_checked_ms: AtomicU64::new(0),
        })
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.sources.iter().map(Source::path).chain(self.lists.all().map(lists::ListFile::path))
    }

    /// Whether anything loaded can tell a Tor exit: the Tor list or an Anonymous-IP database.
    /// Looking for Tor in every flow is wasted work without one.
    pub fn knows_tor_exits(&self) -> bool {
        self.lists.tor_exits.is_some()
            || self.sources.iter().any(|source| matches!(source, Source::Mmdb { anonymous_ip: true, .. }))
    }

    /// Changes each time a list file is read again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Looks at the list files (at most once per [`lists::RELOAD_CHECK`]) and reads the changed
    /// ones again.
    pub fn refresh_lists(&self) {
        if self.lists.is_empty() {
            return;
        }
        let now = self.opened.elapsed().as_millis() as u64;
        let last = self.lists_checked_ms.load(Ordering::Relaxed);
        let due = now >= last + lists::RELOAD_CHECK.as_millis() as u64;
        // One thread looks; the others carry on with what they have.
        if due && self.lists_checked_ms.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.reload_lists_now();
        }
    }

    /// Reads the list files whose modification time changed, now.
    pub fn reload_lists_now(&self) -> bool {
        let changed = self.lists.all().filter(|list| list.reload_now()).count() > 0;
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    /// Looks an address up in every database and list. A database that cannot decode its
    /// record for this address is skipped (logged), never fatal.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let mut info = GeoInfo::default();
        for source in &self.sources {
            source.fill(ip, &mut info);
        }
        self.lists.apply(ip, &mut info);
        info
    }
}

/// A per-thread memo in front of [`GeoDb`]: logs repeat the same few addresses.
pub struct GeoCache {
    db: Option<Arc<GeoDb>>,
    memo: HashMap<IpAddr, Option<Arc<GeoInfo>>>,
    /// The lists' generation the memo was filled under.
    generation: u64,
}

impl GeoCache {
    const MAX_ENTRIES: usize = 100_000;

    pub fn new(db: Option<Arc<GeoDb>>) -> Self {
        Self { db, memo: HashMap::new(), generation: 0 }
    }

    /// Geo data for a public address; `None` for private, loopback and other special ranges
    /// and for addresses no database knows.
    pub fn lookup(&mut self, ip: IpAddr) -> Option<Arc<GeoInfo>> {
        let db = self.db.as_ref()?;
        if !is_public(ip) {
            return None;
        }
        db.refresh_lists();
        if db.generation() != self.generation {
            self.generation = db.generation();
            self.memo.clear();
        }
        if let Some(hit) = self.memo.get(&ip) {
            return hit.clone();
        }
        let info = db.lookup(ip);
        let value = (!info.is_empty()).then(|| Arc::new(info));
        if self.memo.len() >= Self::MAX_ENTRIES {
            self.memo.clear();
        }
        self.memo.insert(ip, value.clone());
        value
    }
}
