//! IP geolocation at ingest, from MaxMind DB files: GeoIP2/GeoLite2 City, Country and ASN, and
//! the flat `country_code` schema of the CC0 ip-location-db databases. Several databases can be
//! loaded at once (say City and ASN); each field comes from the first database that has it.
//!
//! Enrichment only: imports `net` (which addresses are public), nothing that stores or decides.

pub mod centroids;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxminddb::Reader;
use serde::Deserialize;

use crate::net::is_public;

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot open GeoIP database {path}")]
    Open { path: PathBuf, source: maxminddb::MaxMindDbError },
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
}

impl GeoInfo {
    pub fn is_empty(&self) -> bool {
        *self == GeoInfo::default()
    }

    fn fill_from(&mut self, record: MmdbRecord<'_>) {
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

/// One or more opened databases.
pub struct GeoDb {
    readers: Vec<(PathBuf, Reader<Vec<u8>>)>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.readers.iter().map(|(p, _)| p)).finish()
    }
}

impl GeoDb {
    pub fn open(paths: &[PathBuf]) -> Result<Self, GeoError> {
        let readers = paths
            .iter()
            .map(|path| {
                Reader::open_readfile(path)
                    .map(|reader| (path.clone(), reader))
                    .map_err(|source| GeoError::Open { path: path.clone(), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (path, reader) in &readers {
            tracing::info!(path = %path.display(), kind = %reader.metadata().database_type, "GeoIP database loaded");
        }
        Ok(Self { readers })
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.readers.iter().map(|(p, _)| p.as_path())
    }

    /// Looks an address up in every database. A database that cannot decode its record for
    /// this address is skipped (logged), never fatal.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let mut info = GeoInfo::default();
        for (path, reader) in &self.readers {
            let record = reader.lookup(ip).and_then(|result| result.decode::<MmdbRecord<'_>>());
            match record {
                Ok(Some(record)) => info.fill_from(record),
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%ip, path = %path.display(), %error, "GeoIP lookup failed")
                }
            }
        }
        info
    }
}

/// A per-thread memo in front of [`GeoDb`]: logs repeat the same few addresses.
pub struct GeoCache {
    db: Option<Arc<GeoDb>>,
    memo: HashMap<IpAddr, Option<Arc<GeoInfo>>>,
}

impl GeoCache {
    const MAX_ENTRIES: usize = 100_000;

    pub fn new(db: Option<Arc<GeoDb>>) -> Self {
        Self { db, memo: HashMap::new() }
    }

    /// Geo data for a public address; `None` for private, loopback and other special ranges
    /// and for addresses no database knows.
    pub fn lookup(&mut self, ip: IpAddr) -> Option<Arc<GeoInfo>> {
        let db = self.db.as_ref()?;
        if !is_public(ip) {
            return None;
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
