//! The shipped sample incident (`samples/`), imported through the real binary as a user would.

use std::path::{Path, PathBuf};

use super::{TestDb, mmdb};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Imports the sample incident's logs, with a country database for its addresses (written to
/// `dir`).
pub fn import_incident(db: &TestDb, dir: &Path) {
    let geo = mmdb::sample_incident_countries(dir);
    let incident = samples().join("incident");
    let imported = db.skywarden(&["import", "--geoip", geo.to_str().unwrap(), incident.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
}

/// Imports the sample incident's two configuration snapshots.
pub fn import_snapshots(db: &TestDb) {
    let config = samples().join("incident.config.json");
    let snapshots = db.skywarden(&["posture", "import", config.to_str().unwrap()]);
    assert!(snapshots.status.success(), "{}", String::from_utf8_lossy(&snapshots.stderr));
}
