//! The notifications config file (`SKYWARDEN_NOTIFICATIONS`, YAML): channels and routes kept in
//! version control. Secrets in it are references (`env:NAME`, `file:/path`), never values. On
//! start the file's channels and routes replace those it owned before; the API cannot change
//! them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sqlx::PgPool;

use super::channels::{self, ChannelError, ChannelKind, ChannelSpec, SecretInput};
use super::network::NetworkPolicy;
use super::routes::{self, RouteSpec};
use super::secrets::SecretKey;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: ChannelError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileChannel {
    name: String,
    kind: ChannelKind,
    #[serde(default)]
    settings: serde_json::Value,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsFile {
    #[serde(default)]
    channels: Vec<FileChannel>,
    #[serde(default)]
    routes: Vec<RouteSpec>,
}

impl NotificationsFile {
    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        let file: Self =
            yaml_serde::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        for channel in &file.channels {
            for (name, value) in &channel.secrets {
                if !value.starts_with("env:") && !value.starts_with("file:") {
                    return Err(ConfigError::Parse {
                        path: path.into(),
                        message: format!(
                            "channels.{}.secrets.{name}: secrets in this file are references (env:NAME or file:/path), not values",
                            channel.name
                        ),
                    });
                }
            }
        }
        Ok(file)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Self::parse(&shown, &text)
    }

    fn channel_specs(&self) -> Vec<ChannelSpec> {
        self.channels
            .iter()
            .map(|c| ChannelSpec {
                name: c.name.clone(),
                kind: c.kind,
                settings: c.settings.clone(),
                secrets: c.secrets.iter().map(|(k, v)| (k.clone(), SecretInput::Reference(v.clone()))).collect(),
                enabled: c.enabled,
            })
            .collect()
    }

    /// Makes the database's file-owned channels and routes match this file, all or nothing.
    pub async fn apply(
        &self,
        path: &str,
        pool: &PgPool,
        key: &SecretKey,
        policy: &NetworkPolicy,
    ) -> Result<(usize, usize), ConfigError> {
        let invalid = |source| ConfigError::Invalid { path: path.into(), source };
        let mut tx = crate::db::begin(pool).await.map_err(|e| invalid(e.into()))?;
        // Upserts by name keep ids, so queued deliveries and waiting digest items keep their
        // route; a channel that left the file takes its routes with it (ON DELETE CASCADE).
        channels::sync_file_channels(&mut tx, &self.channel_specs(), key, policy).await.map_err(invalid)?;
        routes::sync_file_routes(&mut tx, &self.routes).await.map_err(invalid)?;
        tx.commit().await.map_err(|e| invalid(e.into()))?;
        Ok((self.channels.len(), self.routes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_the_file_must_be_references() {
        let text = "channels:\n  - name: soc\n    kind: slack\n    secrets: {webhook_url: 'https://hooks.slack.com/services/T/B/X'}\n";
        let error = NotificationsFile::parse("notifications.yaml", text).unwrap_err();
        assert!(error.to_string().contains("channels.soc.secrets.webhook_url"), "{error}");
        let text = "channels:\n  - name: soc\n    kind: slack\n    secrets: {webhook_url: env:SLACK_URL}\nroutes:\n  - {name: all, channel: soc, min_severity: high}\n";
        let file = NotificationsFile::parse("notifications.yaml", text).unwrap();
        assert_eq!(file.channel_specs()[0].secrets["webhook_url"], SecretInput::Reference("env:SLACK_URL".into()));
        assert!(NotificationsFile::parse("n.yaml", "channels:\n  - name: x\n    kind: fax\n").is_err());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../deploy/notifications.example.yaml");
        let file = NotificationsFile::parse("notifications.example.yaml", text).unwrap();
        let public = NetworkPolicy::public_only();
        for spec in file.channel_specs() {
            channels::validate(&spec, &public).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        }
        for route in &file.routes {
            routes::validate(route).unwrap();
            let channel = file.channels.iter().find(|c| c.name == route.channel).expect("the route's channel");
            assert!(route.digest_minutes.is_none() || channel.kind.takes_digests(), "{}", route.name);
        }
    }
}
