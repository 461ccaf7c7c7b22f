//! What the benchmarks that run the product as a child process share: the `skywarden` binary of
//! the bench's own build, a URL to a scratch database for it, and a free loopback port.

use std::path::PathBuf;

use sqlx::postgres::PgConnectOptions;

/// `skywarden` of the same build as this benchmark (the same profile's folder).
pub fn skywarden_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let binary = me.with_file_name("skywarden");
    if !binary.is_file() {
        return Err(format!(
            "no skywarden binary at {} (build it in the same profile: cargo build -p skywarden --bin skywarden)",
            binary.display()
        ));
    }
    Ok(binary)
}

/// A URL for `database` on the benchmark's server: the URL it was given with the database
/// replaced, or one built from the connection options (the embedded cluster's socket).
pub fn scratch_url(server: &PgConnectOptions, given: Option<&str>, database: &str) -> String {
    if let Some(given) = given {
        return with_database(given, database);
    }
    let (user, port) = (server.get_username(), server.get_port());
    let socket = server.get_socket().map(|dir| dir.display().to_string());
    match socket.or_else(|| server.get_host().starts_with('/').then(|| server.get_host().to_owned())) {
        Some(dir) => format!("postgres://{user}@localhost/{database}?host={dir}&port={port}"),
        None => format!("postgres://{user}@{}:{port}/{database}", server.get_host()),
    }
}

/// `url` naming `database` instead of its own.
fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let path_start = rest.find(['/', '?']).map_or(url.len(), |i| authority_start + i);
    let query_start = url[path_start..].find('?').map_or(url.len(), |i| path_start + i);
    format!("{}/{database}{}", &url[..path_start], &url[query_start..])
}

/// A port nobody listens on now, on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Percentile `p` of `values` (nearest rank), 0 when empty.
pub fn percentile(values: &[f64], p: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = (sorted.len() * p).div_ceil(100).saturating_sub(1).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_url_keeps_its_server_and_parameters() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/skywarden?sslmode=disable", "scratch"),
            "postgres://u:p@127.0.0.1:5432/scratch?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "scratch"), "postgres://u@h/scratch");
        assert_eq!(with_database("postgres://u@/skywarden?host=/tmp&port=5", "x"), "postgres://u@/x?host=/tmp&port=5");
        assert_eq!(with_database("postgres://u@h?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50), 10.0);
        assert_eq!(percentile(&values, 95), 19.0);
        assert_eq!(percentile(&[], 95), 0.0);
    }
}
