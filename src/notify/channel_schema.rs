//! The form of each channel kind, for the dashboard (`GET /api/v1/channels/schema`): which
//! settings and secrets it takes, how to ask for each, their choices, defaults and hints.
//!
//! Secrets come from [`ChannelKind::secret_names`] and defaults from the settings types in
//! [`super::channels`] themselves; the tests below check that every field listed here is one
//! the channel validation accepts, and that every setting it keeps is listed.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::channels::{ChannelKind, EmailSettings, JiraSettings, PagerDutySettings, SmtpSecurity, WebhookFormat};

/// How the form asks for a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldInput {
    Text,
    Number,
    /// One of `options`.
    Select,
    Checkbox,
    /// Values separated by commas, sent as a JSON array.
    List,
}

/// One field of a channel kind's form.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FieldSchema {
    /// The name in `settings`, or in `secrets`.
    pub name: &'static str,
    /// Goes in `secrets` (sealed; only its name ever comes back) rather than in `settings`.
    pub secret: bool,
    /// May be left out.
    pub optional: bool,
    pub input: FieldInput,
    /// The choices of a `select`, the one that applies when none is sent first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// The value filled in to start with.
    pub default: Option<String>,
    /// A hint shown in the empty field.
    pub placeholder: Option<String>,
}

impl FieldSchema {
    fn new(name: &'static str, input: FieldInput) -> Self {
        Self { name, secret: false, optional: false, input, options: None, default: None, placeholder: None }
    }

    fn text(name: &'static str) -> Self {
        Self::new(name, FieldInput::Text)
    }

    fn secret(name: &'static str, required: bool) -> Self {
        Self { secret: true, optional: !required, ..Self::text(name) }
    }

    fn select(name: &'static str, options: Vec<String>) -> Self {
        Self { options: Some(options), ..Self::new(name, FieldInput::Select) }
    }

    fn optional(self) -> Self {
        Self { optional: true, ..self }
    }

    fn placeholder(self, hint: impl Into<String>) -> Self {
        Self { placeholder: Some(hint.into()), ..self }
    }

    /// Starts with the value the settings type fills in when the field is left out.
    fn default_from(self, defaults: &Value) -> Self {
        Self { default: defaults.get(self.name).and_then(as_text), ..self }
    }
}

/// One channel kind and its fields: settings first, then secrets.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct KindSchema {
    pub kind: ChannelKind,
    pub fields: Vec<FieldSchema>,
}

/// Every channel kind's form.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelSchema {
    pub kinds: Vec<KindSchema>,
}

pub fn schema() -> ChannelSchema {
    ChannelSchema {
        kinds: ChannelKind::ALL.into_iter().map(|kind| KindSchema { kind, fields: fields(kind) }).collect(),
    }
}

fn fields(kind: ChannelKind) -> Vec<FieldSchema> {
    let mut fields = settings(kind);
    for &(name, required) in kind.secret_names() {
        // A secret named like a setting is another place for it (a webhook URL that carries a
        // token): the form offers the setting.
        if !fields.iter().any(|field| field.name == name) {
            let field = FieldSchema::secret(name, required);
            fields.push(match secret_hint(kind, name) {
                Some(hint) => field.placeholder(hint),
                None => field,
            });
        }
    }
    fields
}

fn secret_hint(kind: ChannelKind, name: &str) -> Option<&'static str> {
    match (kind, name) {
        (ChannelKind::Slack, "webhook_url") => Some("https://hooks.slack.com/services/…"),
        (ChannelKind::Teams, "webhook_url") => Some("https://….webhook.office.com/…"),
        _ => None,
    }
}

fn settings(kind: ChannelKind) -> Vec<FieldSchema> {
    match kind {
        ChannelKind::Slack | ChannelKind::Teams => Vec::new(),
        ChannelKind::Pagerduty => {
            let defaults = defaults::<PagerDutySettings>(json!({}));
            // Left empty, PagerDuty's own endpoint applies: it is the hint.
            let endpoint = defaults.get("events_url").and_then(as_text);
            vec![FieldSchema { placeholder: endpoint, ..FieldSchema::text("events_url").optional() }]
        }
        ChannelKind::Webhook => vec![
            FieldSchema::text("url").placeholder("https://siem.example.com/skywarden"),
            FieldSchema::select("format", choices(&[WebhookFormat::Skywarden, WebhookFormat::Ocsf])),
        ],
        ChannelKind::Jira => jira(),
        ChannelKind::Servicenow => vec![
            FieldSchema::text("instance_url").placeholder("https://yourinstance.service-now.com"),
            FieldSchema::text("username"),
            FieldSchema::text("assignment_group").optional(),
            FieldSchema::new("close_on_resolve", FieldInput::Checkbox),
        ],
        ChannelKind::Email => email(),
    }
}

fn jira() -> Vec<FieldSchema> {
    let defaults = defaults::<JiraSettings>(json!({"base_url": "", "project_key": "", "email": ""}));
    // REST API 3 (Atlassian Document Format) first: the default.
    let versions = [3u8, 2];
    vec![
        FieldSchema::text("base_url").placeholder("https://yourcompany.atlassian.net"),
        FieldSchema::text("project_key").placeholder("SEC"),
        FieldSchema::text("issue_type").default_from(&defaults),
        FieldSchema::text("email").placeholder("the API token's account"),
        FieldSchema::select("api_version", versions.iter().map(u8::to_string).collect()),
        FieldSchema::new("labels", FieldInput::List).optional().placeholder("skywarden, aws"),
    ]
}

fn email() -> Vec<FieldSchema> {
    let defaults = defaults::<EmailSettings>(json!({"host": "", "from": "", "to": []}));
    vec![
        FieldSchema::text("host").placeholder("smtp.example.com"),
        FieldSchema::new("port", FieldInput::Number).default_from(&defaults),
        FieldSchema::select("security", choices(&[SmtpSecurity::Starttls, SmtpSecurity::Tls, SmtpSecurity::None])),
        FieldSchema::text("username").optional(),
        FieldSchema::text("from").placeholder("skywarden@example.com"),
        FieldSchema::new("to", FieldInput::List).placeholder("soc@example.com, oncall@example.com"),
        FieldSchema::text("ca_file").optional().placeholder("relay-ca.pem (a file in SKYWARDEN_NOTIFY_CA_DIR)"),
    ]
}

/// The settings `T` keeps for `given` (its required fields), defaults filled in; null if the
/// given fields no longer suffice (the tests notice the missing defaults).
fn defaults<T: DeserializeOwned + Serialize>(given: Value) -> Value {
    serde_json::from_value::<T>(given).ok().and_then(|settings| serde_json::to_value(settings).ok()).unwrap_or_default()
}

/// A text or number setting as the form shows it.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Each value as the API spells it, in the order given (the default first).
fn choices<T: Serialize>(values: &[T]) -> Vec<String> {
    values.iter().filter_map(|value| serde_json::to_value(value).ok().as_ref().and_then(as_text)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::notify::channels::{self, ChannelSpec, SecretInput};
    use crate::notify::network::NetworkPolicy;
    use crate::notify::secrets::Secret;

    /// Settings the form leaves out on purpose: the API and the config file still take them.
    const NOT_IN_FORM: &[(ChannelKind, &str)] = &[(ChannelKind::Servicenow, "close_code")];

    /// A value for `field` as the dashboard sends it (numbers as numbers, lists as arrays).
    fn sample(field: &FieldSchema, choice: usize) -> Value {
        let text = match field.name {
            "webhook_url" | "url" | "events_url" | "base_url" | "instance_url" => "https://receiver.example.com/hook",
            "email" | "from" | "to" => "soc@example.com",
            "project_key" => "SEC",
            "labels" => "skywarden",
            "port" => "2525",
            _ => "sample",
        };
        match field.input {
            FieldInput::Checkbox => json!(true),
            FieldInput::List => json!([text]),
            FieldInput::Number => json!(text.parse::<u64>().expect("a numeric sample")),
            FieldInput::Select => {
                let options = field.options.as_ref().expect("a select has options");
                let option = &options[choice % options.len()];
                option.parse::<u64>().map_or_else(|_| json!(option), |n| json!(n))
            }
            FieldInput::Text => json!(field.default.clone().unwrap_or_else(|| text.to_owned())),
        }
    }

    /// A channel of `kind` from the schema's fields (`all`: the optional ones too), each select
    /// at its `choice`th option.
    fn spec(kind: &KindSchema, all: bool, choice: usize) -> ChannelSpec {
        let mut settings = serde_json::Map::new();
        let mut secrets = BTreeMap::new();
        for field in kind.fields.iter().filter(|field| all || !field.optional) {
            let value = sample(field, choice);
            if field.secret {
                let text = value.as_str().expect("a secret is text").to_owned();
                secrets.insert(field.name.to_owned(), SecretInput::Value(Secret::new(text)));
            } else {
                settings.insert(field.name.to_owned(), value);
            }
        }
        ChannelSpec {
            name: "from-the-form".into(),
            kind: kind.kind,
            settings: Value::Object(settings),
            secrets,
            enabled: true,
        }
    }

    #[test]
    fn every_field_of_the_form_is_accepted_by_its_kind() {
        let policy = NetworkPolicy::public_only();
        let schema = schema();
        assert_eq!(schema.kinds.iter().map(|k| k.kind).collect::<Vec<_>>(), ChannelKind::ALL);
        for kind in &schema.kinds {
            let choices = kind.fields.iter().filter_map(|f| f.options.as_ref().map(Vec::len)).max().unwrap_or(1);
            for choice in 0..choices {
                for all in [true, false] {
                    let spec = spec(kind, all, choice);
                    let kept = channels::validate(&spec, &policy)
                        .unwrap_or_else(|error| panic!("{}: {error} in {:?}", kind.kind, spec.settings));
                    // ...and every setting the channel keeps is in the form.
                    for name in kept.as_object().expect("settings are an object").keys() {
                        let listed = kind.fields.iter().any(|f| !f.secret && f.name == name);
                        let left_out = NOT_IN_FORM.contains(&(kind.kind, name.as_str()));
                        assert!(listed || left_out, "{}: the setting {name} is not in the form", kind.kind);
                    }
                }
            }
        }
    }

    #[test]
    fn secrets_and_defaults_come_from_the_channel_types() {
        let schema = schema();
        for kind in &schema.kinds {
            for (name, required) in kind.kind.secret_names() {
                let field = kind.fields.iter().find(|f| f.name == *name).expect("every secret is in the form");
                assert!(field.secret || !field.optional, "{}: {name}", kind.kind);
                assert_eq!(field.optional, field.secret && !required, "{}: {name}", kind.kind);
            }
        }
        let field = |kind: ChannelKind, name: &str| {
            let kind = schema.kinds.iter().find(|k| k.kind == kind).unwrap();
            kind.fields.iter().find(|f| f.name == name).unwrap().clone()
        };
        assert_eq!(field(ChannelKind::Jira, "issue_type").default.as_deref(), Some("Task"));
        assert_eq!(field(ChannelKind::Email, "port").default.as_deref(), Some("587"));
        let endpoint = field(ChannelKind::Pagerduty, "events_url").placeholder;
        assert_eq!(endpoint.as_deref(), Some("https://events.pagerduty.com/v2/enqueue"));
        // A select's first option is the one that applies when the field is left out.
        for (kind, name, default) in [
            (ChannelKind::Webhook, "format", json!(WebhookFormat::default())),
            (ChannelKind::Email, "security", json!(SmtpSecurity::default())),
            (
                ChannelKind::Jira,
                "api_version",
                defaults::<JiraSettings>(json!({"base_url": "", "project_key": "", "email": ""}))["api_version"]
                    .clone(),
            ),
        ] {
            let options = field(kind, name).options.unwrap();
            assert_eq!(as_text(&default).as_ref(), options.first(), "{kind}: {name}");
        }
    }

    #[test]
    fn the_schema_serialises_as_the_dashboard_reads_it() {
        let text = serde_json::to_value(schema()).unwrap();
        assert_eq!(text["kinds"][0]["kind"], "slack");
        let jira = text["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "jira").unwrap();
        let version = jira["fields"].as_array().unwrap().iter().find(|f| f["name"] == "api_version").unwrap();
        assert_eq!(
            version,
            &json!({"name": "api_version", "secret": false, "optional": false, "input": "select",
            "options": ["3", "2"], "default": null, "placeholder": null})
        );
        let labels = jira["fields"].as_array().unwrap().iter().find(|f| f["name"] == "labels").unwrap();
        assert!(labels.get("options").is_none(), "only a select has options: {labels}");
    }
}
