//! A representative point per country, for distances when a GeoIP database has no city
//! coordinates (the CC0 country database, say). Data: `data/country_centroids.csv` (ODbL).

use std::collections::HashMap;
use std::sync::OnceLock;

const CSV: &str = include_str!("data/country_centroids.csv");

fn table() -> &'static HashMap<&'static str, (f64, f64)> {
    static TABLE: OnceLock<HashMap<&'static str, (f64, f64)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        CSV.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split(',');
                let code = fields.next()?;
                let lat = fields.next()?.parse().ok()?;
                let lon = fields.next()?.parse().ok()?;
                Some((code, (lat, lon)))
            })
            .collect()
    })
}

/// Latitude and longitude of a country's representative point, by ISO alpha-2 code.
pub fn country_centroid(code: &str) -> Option<(f64, f64)> {
    table().get(code.to_ascii_uppercase().as_str()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_countries() {
        assert_eq!(country_centroid("ua"), Some((49.0, 32.0)));
        assert!(country_centroid("US").is_some());
        assert_eq!(country_centroid("ZZ"), None);
        assert!(table().len() > 240);
    }
}
