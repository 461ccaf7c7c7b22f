//! Channels: where notifications go. Each kind has its own settings (stored as shown) and
//! secrets (sealed, or referenced from the config file); both are validated here, once, so a
//! stored channel is always well formed.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

use super::http_client::{HttpError, check_url};
use super::network::NetworkPolicy;
use super::secrets::{Secret, SecretError, SecretKey, resolve_reference};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Slack,
    Teams,
    Pagerduty,
    Webhook,
    Jira,
    Servicenow,
    Email,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 7] =
        [Self::Slack, Self::Teams, Self::Pagerduty, Self::Webhook, Self::Jira, Self::Servicenow, Self::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Teams => "teams",
            Self::Pagerduty => "pagerduty",
            Self::Webhook => "webhook",
            Self::Jira => "jira",
            Self::Servicenow => "servicenow",
            Self::Email => "email",
        }
    }

    /// The secrets a channel of this kind needs (`true`: required).
    pub fn secret_names(self) -> &'static [(&'static str, bool)] {
        match self {
            Self::Slack | Self::Teams => &[("webhook_url", true)],
            Self::Pagerduty => &[("routing_key", true)],
            Self::Webhook => &[("signing_secret", true), ("url", false)],
            Self::Jira => &[("api_token", true)],
            Self::Servicenow => &[("password", true)],
            Self::Email => &[("password", false)],
        }
    }

    /// The settings that say where this kind's secrets go: changing one moves the channel, and
    /// its stored secrets do not follow it.
    pub fn target_settings(self) -> &'static [&'static str] {
        match self {
            Self::Slack | Self::Teams => &[],
            Self::Pagerduty => &["events_url"],
            Self::Webhook => &["url"],
            Self::Jira => &["base_url"],
            Self::Servicenow => &["instance_url"],
            // Where the password goes, and how it is protected on the way.
            Self::Email => &["host", "port", "security", "ca_file"],
        }
    }

    /// Secrets that are themselves the target (a URL): a new value moves the channel.
    fn is_target_secret(self, name: &str) -> bool {
        matches!((self, name), (Self::Slack | Self::Teams, "webhook_url") | (Self::Webhook, "url"))
    }

    /// Whether a digest (one message for many alerts) makes sense here; paging and ticketing
    /// want one incident per alert.
    pub fn takes_digests(self) -> bool {
        matches!(self, Self::Slack | Self::Teams | Self::Webhook | Self::Email)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = ChannelError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == text).ok_or_else(|| {
            ChannelError::invalid("kind", "kind is slack, teams, pagerduty, webhook, jira, servicenow or email")
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("channel secrets")]
    Secret(#[from] SecretError),
    #[error("no channel {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl ChannelError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

// Per-kind settings: what the API accepts and stores. Unknown fields are errors, so a typo does
// not silently drop a setting.

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutySettings {
    #[serde(default = "default_pagerduty_url")]
    pub events_url: String,
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Skywarden's own documented schema.
    #[default]
    Skywarden,
    /// An OCSF 1.1 Detection Finding (class 2004).
    Ocsf,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The receiver's URL, when it carries no credential; one that does (a token in the path
    /// or query) goes in the `url` secret instead, sealed and never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub format: WebhookFormat,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JiraSettings {
    /// `https://yourcompany.atlassian.net`
    pub base_url: String,
    pub project_key: String,
    #[serde(default = "default_issue_type")]
    pub issue_type: String,
    /// The account the API token belongs to (basic auth user).
    pub email: String,
    /// REST API 2 (plain text descriptions) or 3 (Atlassian Document Format).
    #[serde(default = "default_jira_api")]
    pub api_version: u8,
    #[serde(default)]
    pub labels: Vec<String>,
}

fn default_issue_type() -> String {
    "Task".into()
}

fn default_jira_api() -> u8 {
    3
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowSettings {
    /// `https://yourinstance.service-now.com`
    pub instance_url: String,
    pub username: String,
    #[serde(default)]
    pub assignment_group: Option<String>,
    /// Resolve the incident (state 6) when the alert is resolved or dismissed.
    #[serde(default)]
    pub close_on_resolve: bool,
    #[serde(default = "default_close_code")]
    pub close_code: String,
}

fn default_close_code() -> String {
    super::targets::servicenow::DEFAULT_CLOSE_CODE.into()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on an allowed private network.
    None,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// A PEM file with the CA that signed the relay's certificate, for a private CA.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}

/// A channel as submitted: settings and secret values (or references).
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub name: String,
    pub kind: ChannelKind,
    pub settings: Value,
    pub secrets: BTreeMap<String, SecretInput>,
    pub enabled: bool,
}

/// A secret as given: a value (API) or a reference (config file).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretInput {
    Value(Secret),
    Reference(String),
}

impl fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(***)"),
            Self::Reference(reference) => write!(f, "Reference({reference})"),
        }
    }
}

fn parse_settings<T: serde::de::DeserializeOwned + Serialize>(settings: &Value) -> Result<Value, ChannelError> {
    let settings = if settings.is_null() { Value::Object(Default::default()) } else { settings.clone() };
    let typed: T = serde_json::from_value(settings).map_err(|e| ChannelError::invalid("settings", e.to_string()))?;
    Ok(serde_json::to_value(typed).expect("settings serialise"))
}

fn check_target(policy: &NetworkPolicy, field: &str, url: &str) -> Result<(), ChannelError> {
    check_url(policy, url).map(|_| ()).map_err(|error| match error {
        HttpError::Refused(refused) => ChannelError::invalid(field, refused.to_string()),
        other => ChannelError::invalid(field, other.to_string()),
    })
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ChannelError> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ChannelError::invalid(field, format!("1 to {max} characters, without control characters")));
    }
    Ok(())
}

/// The largest settings object, as JSON, and the longest text in it.
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;
pub const MAX_SETTING_BYTES: usize = 2 * 1024;

/// Bounds the settings before anything reads them: each text in it (a member's name too),
/// which must also be free of control characters, then the whole object.
fn check_settings_size(settings: &Value) -> Result<(), ChannelError> {
    check_setting_texts("settings", settings)?;
    let size = serde_json::to_string(settings).map_or(usize::MAX, |text| text.len());
    if size > MAX_SETTINGS_BYTES {
        return Err(ChannelError::invalid(
            "settings",
            format!("at most {MAX_SETTINGS_BYTES} bytes as JSON, not {size}"),
        ));
    }
    Ok(())
}

fn check_setting_texts(path: &str, value: &Value) -> Result<(), ChannelError> {
    let bad = |path: &str| {
        ChannelError::invalid(path, format!("at most {MAX_SETTING_BYTES} bytes, without control characters"))
    };
    match value {
        Value::String(text) if text.len() > MAX_SETTING_BYTES || text.chars().any(char::is_control) => Err(bad(path)),
        Value::Array(items) => items.iter().try_for_each(|item| check_setting_texts(path, item)),
        Value::Object(members) => members.iter().try_for_each(|(name, member)| {
            let inner = format!("{path}.{name}");
            if name.len() > MAX_SETTING_BYTES || name.chars().any(char::is_control) {
                return Err(bad(path));
            }
            check_setting_texts(&inner, member)
        }),
        _ => Ok(()),
    }
}

/// Validates a channel and returns its settings with defaults filled in. Secret values that are
/// URLs (chat webhooks) are checked against the network policy like any target.
pub fn validate(spec: &ChannelSpec, policy: &NetworkPolicy) -> Result<Value, ChannelError> {
    check_text("name", &spec.name, 128)?;
    check_settings_size(&spec.settings)?;
    let settings = match spec.kind {
        ChannelKind::Slack | ChannelKind::Teams => parse_settings::<ChatSettings>(&spec.settings)?,
        ChannelKind::Pagerduty => validate_pagerduty(&spec.settings, policy)?,
        ChannelKind::Webhook => validate_webhook(spec, policy)?,
        ChannelKind::Jira => validate_jira(&spec.settings, policy)?,
        ChannelKind::Servicenow => validate_servicenow(&spec.settings, policy)?,
        ChannelKind::Email => validate_email(&spec.settings, policy)?,
    };
    validate_secrets(spec, policy)?;
    Ok(settings)
}

fn validate_pagerduty(settings: &Value, policy: &NetworkPolicy) -> Result<Value, ChannelError> {
    let settings = parse_settings::<PagerDutySettings>(settings)?;
    check_target(policy, "settings.events_url", settings["events_url"].as_str().unwrap_or_default())?;
    Ok(settings)
}

/// The URL is in the settings, or in the `url` secret when it carries a token: once.
fn validate_webhook(spec: &ChannelSpec, policy: &NetworkPolicy) -> Result<Value, ChannelError> {
    let settings = parse_settings::<WebhookSettings>(&spec.settings)?;
    match (settings.get("url").and_then(Value::as_str), spec.secrets.contains_key("url")) {
        (Some(url), false) => check_target(policy, "settings.url", url)?,
        (None, true) => {} // checked with the other secrets
        (Some(_), true) => {
            return Err(ChannelError::invalid("settings.url", "give the URL once: in settings, or as the url secret"));
        }
        (None, false) => {
            return Err(ChannelError::invalid(
                "settings.url",
                "required (or as the url secret when it carries a token)",
            ));
        }
    }
    Ok(settings)
}

fn validate_jira(settings: &Value, policy: &NetworkPolicy) -> Result<Value, ChannelError> {
    let settings = parse_settings::<JiraSettings>(settings)?;
    check_target(policy, "settings.base_url", settings["base_url"].as_str().unwrap_or_default())?;
    let typed: JiraSettings = serde_json::from_value(settings.clone()).expect("just parsed");
    if !typed.project_key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || typed.project_key.is_empty() {
        return Err(ChannelError::invalid("settings.project_key", "a Jira project key is letters, digits and _"));
    }
    if ![2, 3].contains(&typed.api_version) {
        return Err(ChannelError::invalid("settings.api_version", "the Jira REST API version is 2 or 3"));
    }
    check_text("settings.email", &typed.email, 256)?;
    check_text("settings.issue_type", &typed.issue_type, 64)?;
    for label in &typed.labels {
        if label.is_empty() || label.chars().any(char::is_whitespace) {
            return Err(ChannelError::invalid("settings.labels", "Jira labels have no spaces"));
        }
    }
    Ok(settings)
}

fn validate_servicenow(settings: &Value, policy: &NetworkPolicy) -> Result<Value, ChannelError> {
    let settings = parse_settings::<ServiceNowSettings>(settings)?;
    check_target(policy, "settings.instance_url", settings["instance_url"].as_str().unwrap_or_default())?;
    check_text("settings.username", settings["username"].as_str().unwrap_or_default(), 256)?;
    Ok(settings)
}

fn validate_email(settings: &Value, policy: &NetworkPolicy) -> Result<Value, ChannelError> {
    let settings = parse_settings::<EmailSettings>(settings)?;
    let typed: EmailSettings = serde_json::from_value(settings.clone()).expect("just parsed");
    check_text("settings.host", &typed.host, 253)?;
    if typed.to.is_empty() {
        return Err(ChannelError::invalid("settings.to", "at least one recipient"));
    }
    for (field, address) in
        std::iter::once(("settings.from", &typed.from)).chain(typed.to.iter().map(|a| ("settings.to", a)))
    {
        address
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| ChannelError::invalid(field, format!("{address:?} is not an email address ({e})")))?;
    }
    if typed.security == SmtpSecurity::None
        && let Ok(address) = typed.host.parse::<std::net::IpAddr>()
        && !policy.is_allowed(address)
    {
        return Err(ChannelError::invalid(
            "settings.security",
            "unencrypted SMTP is only for a relay on a network allowed in SKYWARDEN_NOTIFY_ALLOW_NETWORKS",
        ));
    }
    if let Ok(address) = typed.host.parse::<std::net::IpAddr>() {
        policy.check(address).map_err(|refused| ChannelError::invalid("settings.host", refused.to_string()))?;
    }
    if let Some(ca_file) = &typed.ca_file
        && !std::path::Path::new(ca_file).is_absolute()
        && !is_file_name(ca_file)
    {
        return Err(ChannelError::invalid(
            "settings.ca_file",
            "the name of a file in SKYWARDEN_NOTIFY_CA_DIR (or, in the config file, an absolute path)",
        ));
    }
    Ok(settings)
}

/// A plain file name: no folder, no way out of one.
pub fn is_file_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// Through the API, a CA file is only ever the name of a file an admin of the server put in
/// SKYWARDEN_NOTIFY_CA_DIR: never a path, so no API user can make the server read its files.
fn check_api_ca_file(settings: &Value, previous: Option<&Value>, policy: &NetworkPolicy) -> Result<(), ChannelError> {
    let Some(ca_file) = settings.get("ca_file").filter(|v| !v.is_null()) else { return Ok(()) };
    // A channel keeps the CA file it had (set before this rule) until it changes.
    if previous.and_then(|p| p.get("ca_file")) == Some(ca_file) {
        return Ok(());
    }
    if policy.ca_dir().is_none() {
        return Err(ChannelError::invalid(
            "settings.ca_file",
            "no CA directory is configured: an admin of the server sets SKYWARDEN_NOTIFY_CA_DIR, then channels name a file in it",
        ));
    }
    if !ca_file.as_str().is_some_and(is_file_name) {
        return Err(ChannelError::invalid(
            "settings.ca_file",
            "the name of a file in SKYWARDEN_NOTIFY_CA_DIR, not a path",
        ));
    }
    Ok(())
}

/// Only the kind's secrets, the required ones present, values of sane length (URLs allowed by
/// the network policy), references in a known form.
fn validate_secrets(spec: &ChannelSpec, policy: &NetworkPolicy) -> Result<(), ChannelError> {
    let known = spec.kind.secret_names();
    for name in spec.secrets.keys() {
        if !known.iter().any(|(known, _)| known == name) {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            return Err(ChannelError::invalid(
                format!("secrets.{name}"),
                format!("a {} channel takes the secrets {}", spec.kind, names.join(", ")),
            ));
        }
    }
    for (name, required) in known {
        match spec.secrets.get(*name) {
            None if *required => {
                return Err(ChannelError::invalid(format!("secrets.{name}"), "required"));
            }
            Some(SecretInput::Value(value)) if value.expose().is_empty() || value.expose().len() > 4096 => {
                return Err(ChannelError::invalid(format!("secrets.{name}"), "1 to 4096 characters"));
            }
            Some(SecretInput::Value(value)) if *name == "webhook_url" || *name == "url" => {
                check_target(policy, &format!("secrets.{name}"), value.expose())?;
            }
            Some(SecretInput::Reference(reference))
                if !reference.starts_with("env:") && !reference.starts_with("file:") =>
            {
                return Err(ChannelError::invalid(
                    format!("secrets.{name}"),
                    "a secret reference is env:NAME or file:/path",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A channel as the API shows it: settings, and the names of its secrets (never their values).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub id: i64,
    pub name: String,
    pub kind: ChannelKind,
    pub settings: Value,
    /// Which secrets are set (by value or by reference).
    pub secrets: Vec<String>,
    pub managed_by: String,
    pub enabled: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A channel ready to send: settings and opened secrets.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: i64,
    pub name: String,
    pub enabled: bool,
    pub kind: ChannelKind,
    pub settings: Value,
    pub secrets: BTreeMap<String, Secret>,
}

impl Channel {
    pub fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, ChannelError> {
        serde_json::from_value(self.settings.clone()).map_err(|e| ChannelError::invalid("settings", e.to_string()))
    }

    pub fn secret(&self, name: &str) -> Result<&Secret, ChannelError> {
        self.secrets.get(name).ok_or_else(|| ChannelError::invalid(format!("secrets.{name}"), "not set"))
    }
}

/// Where sealed secrets may go (the kind's target settings, as JSON text). It is sealed with
/// them, so that secrets never reach a target they were not given for, even if the settings
/// change behind the API's back.
fn target_of(kind: ChannelKind, settings: &Value) -> String {
    let target: Vec<Value> =
        kind.target_settings().iter().map(|name| settings.get(*name).cloned().unwrap_or(Value::Null)).collect();
    Value::Array(target).to_string()
}

/// The member of the sealed object that holds the target; no secret has this name.
const SEALED_TARGET: &str = "@target";

/// Sealed secret values (bound to the target in `settings`), references, and the names of all
/// secrets.
fn split_secrets(spec: &ChannelSpec, settings: &Value, key: &SecretKey) -> (Option<Vec<u8>>, Value, Vec<String>) {
    let mut values = serde_json::Map::new();
    let mut references = serde_json::Map::new();
    for (name, input) in &spec.secrets {
        match input {
            SecretInput::Value(secret) => {
                values.insert(name.clone(), Value::String(secret.expose().to_string()));
            }
            SecretInput::Reference(reference) => {
                references.insert(name.clone(), Value::String(reference.clone()));
            }
        }
    }
    let sealed = (!values.is_empty()).then(|| {
        values.insert(SEALED_TARGET.into(), Value::String(target_of(spec.kind, settings)));
        key.seal(&serde_json::to_vec(&Value::Object(values)).expect("JSON"))
    });
    (sealed, Value::Object(references), spec.secrets.keys().cloned().collect())
}

/// Creates a channel owned by the API.
pub async fn create(
    pool: &PgPool,
    spec: &ChannelSpec,
    key: &SecretKey,
    policy: &NetworkPolicy,
) -> Result<ChannelView, ChannelError> {
    let settings = validate(spec, policy)?;
    if spec.kind == ChannelKind::Email {
        check_api_ca_file(&settings, None, policy)?;
    }
    let (sealed, references, names) = split_secrets(spec, &settings, key);
    let id = sqlx::query_scalar!(
        "INSERT INTO notification_channels (name, kind, settings, sealed_secrets, secret_refs, secret_names, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING RETURNING id",
        spec.name.trim(),
        spec.kind.as_str(),
        settings,
        sealed,
        references,
        &names,
        spec.enabled,
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ChannelError::Conflict(format!("a channel named {:?} exists", spec.name.trim())))?;
    view(pool, id).await
}

/// What a change to a channel may touch; `None` leaves a part as it is. Secrets given replace
/// those of the same name; the others stay.
#[derive(Debug, Default, Clone)]
pub struct ChannelUpdate {
    pub name: Option<String>,
    pub settings: Option<Value>,
    pub secrets: BTreeMap<String, SecretInput>,
    pub enabled: Option<bool>,
}

/// Changes a channel owned by the API. A change of target (see
/// [`ChannelKind::target_settings`]) must give the stored secrets again: they never follow a
/// channel to a new target.
pub async fn update(
    pool: &PgPool,
    id: i64,
    change: &ChannelUpdate,
    key: &SecretKey,
    policy: &NetworkPolicy,
) -> Result<ChannelView, ChannelError> {
    let mut tx = crate::db::begin(pool).await?;
    let row = sqlx::query!(
        "SELECT name, kind, settings, sealed_secrets, managed_by, enabled FROM notification_channels WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ChannelError::NotFound(id.to_string()))?;
    if row.managed_by == "file" {
        return Err(ChannelError::Conflict(format!(
            "channel {:?} comes from the notifications config file; change it there",
            row.name
        )));
    }
    let kind: ChannelKind = row.kind.parse()?;
    let (stored, sealed_for) = match &row.sealed_secrets {
        Some(sealed) => open_values(key, sealed)?,
        None => (BTreeMap::new(), None),
    };
    // Sealed before targets were sealed with them: bound to the stored settings.
    let sealed_for = sealed_for.unwrap_or_else(|| target_of(kind, &row.settings));
    let mut secrets: BTreeMap<String, SecretInput> =
        stored.iter().map(|(k, v)| (k.clone(), SecretInput::Value(v.clone()))).collect();
    secrets.extend(change.secrets.clone());
    let spec = ChannelSpec {
        name: change.name.clone().unwrap_or(row.name),
        kind,
        settings: change.settings.clone().unwrap_or_else(|| row.settings.clone()),
        secrets,
        enabled: change.enabled.unwrap_or(row.enabled),
    };
    let settings = validate(&spec, policy)?;
    if kind == ChannelKind::Email {
        check_api_ca_file(&settings, Some(&row.settings), policy)?;
    }
    check_secrets_follow(kind, &sealed_for, &settings, &stored, &change.secrets)?;
    let (sealed, _, names) = split_secrets(&spec, &settings, key);
    let renamed = sqlx::query!(
        "UPDATE notification_channels SET name = $2, settings = $3, sealed_secrets = $4, secret_names = $5, enabled = $6
         WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM notification_channels o WHERE o.name = $2 AND o.id <> $1)",
        id,
        spec.name.trim(),
        settings,
        sealed,
        &names,
        spec.enabled,
    )
    .execute(&mut *tx)
    .await?;
    if renamed.rows_affected() == 0 {
        return Err(ChannelError::Conflict(format!("a channel named {:?} exists", spec.name.trim())));
    }
    tx.commit().await?;
    view(pool, id).await
}

/// Refuses a change that moves the channel (new target settings, or a new target URL secret)
/// while keeping a stored secret: each must be given again in the same change.
fn check_secrets_follow(
    kind: ChannelKind,
    sealed_for: &str,
    settings: &Value,
    stored: &BTreeMap<String, Secret>,
    given: &BTreeMap<String, SecretInput>,
) -> Result<(), ChannelError> {
    let mut moved: Vec<String> = Vec::new();
    if target_of(kind, settings) != sealed_for {
        moved.extend(kind.target_settings().iter().map(|name| format!("settings.{name}")));
    }
    for (name, input) in given {
        let same = matches!(input, SecretInput::Value(new) if stored.get(name) == Some(new));
        if kind.is_target_secret(name) && !same {
            moved.push(format!("secrets.{name}"));
        }
    }
    let kept: Vec<String> =
        stored.keys().filter(|name| !given.contains_key(*name)).map(|name| format!("secrets.{name}")).collect();
    match kept.first() {
        Some(first) if !moved.is_empty() => Err(ChannelError::invalid(
            first.clone(),
            format!(
                "the channel's target changes ({}): give {} again in the same request; stored secrets never follow a channel to a new target",
                moved.join(", "),
                kept.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

pub async fn delete(pool: &PgPool, id: i64) -> Result<String, ChannelError> {
    let row = sqlx::query!("SELECT name, managed_by FROM notification_channels WHERE id = $1", id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ChannelError::NotFound(id.to_string()))?;
    if row.managed_by == "file" {
        return Err(ChannelError::Conflict(format!(
            "channel {:?} comes from the notifications config file; remove it there",
            row.name
        )));
    }
    sqlx::query!("DELETE FROM notification_channels WHERE id = $1", id).execute(pool).await?;
    Ok(row.name)
}

/// The sealed secrets, and the target they were sealed for (none if sealed before targets were).
fn open_values(key: &SecretKey, sealed: &[u8]) -> Result<(BTreeMap<String, Secret>, Option<String>), ChannelError> {
    let plaintext = key.open(sealed)?;
    let mut values: BTreeMap<String, String> =
        serde_json::from_slice(&plaintext).map_err(|_| SecretError::CannotOpen)?;
    let target = values.remove(SEALED_TARGET);
    Ok((values.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(), target))
}

pub async fn list(pool: &PgPool) -> Result<Vec<ChannelView>, ChannelError> {
    let rows = sqlx::query!(
        r#"SELECT id, name, kind, settings, secret_names, managed_by, enabled, created_at, updated_at
           FROM notification_channels ORDER BY name"#
    )
    .fetch_all(pool)
    .await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(ChannelView {
            id: row.id,
            name: row.name,
            kind: row.kind.parse()?,
            settings: row.settings,
            secrets: row.secret_names,
            managed_by: row.managed_by,
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        });
    }
    Ok(views)
}

pub async fn view(pool: &PgPool, id: i64) -> Result<ChannelView, ChannelError> {
    list(pool).await?.into_iter().find(|c| c.id == id).ok_or_else(|| ChannelError::NotFound(id.to_string()))
}

/// Loads a channel with its secrets opened, to send.
pub async fn load(pool: &PgPool, id: i64, key: &SecretKey) -> Result<Channel, ChannelError> {
    let row = sqlx::query!(
        "SELECT id, name, kind, enabled, settings, sealed_secrets, secret_refs FROM notification_channels WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ChannelError::NotFound(id.to_string()))?;
    let kind: ChannelKind = row.kind.parse()?;
    let mut secrets = match &row.sealed_secrets {
        Some(sealed) => {
            let (values, sealed_for) = open_values(key, sealed)?;
            if sealed_for.is_some_and(|target| target != target_of(kind, &row.settings)) {
                return Err(ChannelError::invalid(
                    "secrets",
                    "the channel's target changed after its secrets were given; they are not sent there: give them again",
                ));
            }
            values
        }
        None => BTreeMap::new(),
    };
    if let Some(references) = row.secret_refs.as_object() {
        for (name, reference) in references {
            secrets.insert(name.clone(), resolve_reference(reference.as_str().unwrap_or_default())?);
        }
    }
    Ok(Channel { id: row.id, name: row.name, enabled: row.enabled, kind, settings: row.settings, secrets })
}

/// Replaces the channels owned by the config file with `specs`, keeping the ids (and so the
/// delivery history) of channels whose name is unchanged.
pub async fn sync_file_channels(
    tx: &mut sqlx::PgConnection,
    specs: &[ChannelSpec],
    key: &SecretKey,
    policy: &NetworkPolicy,
) -> Result<(), ChannelError> {
    let names: Vec<String> = specs.iter().map(|s| s.name.trim().to_string()).collect();
    sqlx::query!("DELETE FROM notification_channels WHERE managed_by = 'file' AND NOT (name = ANY($1))", &names)
        .execute(&mut *tx)
        .await?;
    for spec in specs {
        let settings = validate(spec, policy).map_err(|error| match error {
            ChannelError::Invalid { field, message } => {
                ChannelError::Invalid { field: format!("channels.{}.{field}", spec.name), message }
            }
            other => other,
        })?;
        let (sealed, references, names) = split_secrets(spec, &settings, key);
        let updated = sqlx::query!(
            "INSERT INTO notification_channels (name, kind, settings, sealed_secrets, secret_refs, secret_names, enabled, managed_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'file')
             ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, settings = EXCLUDED.settings,
                 sealed_secrets = EXCLUDED.sealed_secrets, secret_refs = EXCLUDED.secret_refs,
                 secret_names = EXCLUDED.secret_names, enabled = EXCLUDED.enabled
             WHERE notification_channels.managed_by = 'file'",
            spec.name.trim(),
            spec.kind.as_str(),
            settings,
            sealed,
            references,
            &names,
            spec.enabled,
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(ChannelError::Conflict(format!(
                "channel {:?} in the config file has the name of a channel made through the API",
                spec.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(kind: ChannelKind, settings: Value, secrets: &[(&str, &str)]) -> ChannelSpec {
        ChannelSpec {
            name: "ops".into(),
            kind,
            settings,
            secrets: secrets.iter().map(|(k, v)| (k.to_string(), SecretInput::Value(Secret::new(*v)))).collect(),
            enabled: true,
        }
    }

    fn field_of(result: Result<Value, ChannelError>) -> String {
        match result {
            Err(ChannelError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn each_kind_names_what_is_missing_or_wrong() {
        let public = NetworkPolicy::public_only();
        assert_eq!(field_of(validate(&spec(ChannelKind::Slack, json!({}), &[]), &public)), "secrets.webhook_url");
        assert_eq!(
            field_of(validate(
                &spec(ChannelKind::Slack, json!({}), &[("webhook_url", "http://169.254.169.254/")]),
                &public
            )),
            "secrets.webhook_url"
        );
        assert_eq!(
            field_of(validate(
                &spec(
                    ChannelKind::Webhook,
                    json!({"url": "https://x.example.com", "fromat": "ocsf"}),
                    &[("signing_secret", "s")]
                ),
                &public
            )),
            "settings"
        );
        assert_eq!(
            field_of(validate(
                &spec(
                    ChannelKind::Jira,
                    json!({"base_url": "https://a.atlassian.net", "project_key": "S C", "email": "a@b.c"}),
                    &[("api_token", "t")]
                ),
                &public
            )),
            "settings.project_key"
        );
        assert_eq!(
            field_of(validate(
                &spec(
                    ChannelKind::Email,
                    json!({"host": "smtp.example.com", "from": "x", "to": ["soc@example.com"]}),
                    &[]
                ),
                &public
            )),
            "settings.from"
        );
        assert_eq!(
            field_of(validate(
                &spec(ChannelKind::Pagerduty, json!({}), &[("routing_key", "k"), ("token", "t")]),
                &public
            )),
            "secrets.token"
        );
    }

    #[test]
    fn a_webhook_url_is_a_setting_or_a_secret_but_not_both() {
        let public = NetworkPolicy::public_only();
        let as_secret = spec(
            ChannelKind::Webhook,
            json!({}),
            &[("signing_secret", "s"), ("url", "https://hooks.example.com/t/abc")],
        );
        let settings = validate(&as_secret, &public).unwrap();
        assert!(settings.get("url").is_none(), "the secret URL is not stored in the settings");
        let both = spec(
            ChannelKind::Webhook,
            json!({"url": "https://a.example.com"}),
            &[("signing_secret", "s"), ("url", "https://b.example.com")],
        );
        assert_eq!(field_of(validate(&both, &public)), "settings.url");
        assert_eq!(
            field_of(validate(&spec(ChannelKind::Webhook, json!({}), &[("signing_secret", "s")]), &public)),
            "settings.url"
        );
        let internal = spec(ChannelKind::Webhook, json!({}), &[("signing_secret", "s"), ("url", "http://10.0.0.1/")]);
        assert_eq!(field_of(validate(&internal, &public)), "secrets.url");
    }

    #[test]
    fn defaults_are_filled_in() {
        let public = NetworkPolicy::public_only();
        let settings = validate(&spec(ChannelKind::Pagerduty, json!({}), &[("routing_key", "k")]), &public).unwrap();
        assert_eq!(settings["events_url"], "https://events.pagerduty.com/v2/enqueue");
        let settings = validate(
            &spec(
                ChannelKind::Email,
                json!({"host": "smtp.example.com", "from": "skywarden@example.com", "to": ["soc@example.com"]}),
                &[],
            ),
            &public,
        )
        .unwrap();
        assert_eq!(settings["port"], 587);
        assert_eq!(settings["security"], "starttls");
    }

    #[test]
    fn secret_inputs_do_not_print_values() {
        let input = SecretInput::Value(Secret::new("xoxb-secret"));
        assert_eq!(format!("{input:?}"), "Value(***)");
    }
}
