//! Email over SMTP (STARTTLS by default, or implicit TLS, or plain for an allowed internal
//! relay), with `lettre`. The relay's address is checked against the network policy like any
//! webhook target, and the connection goes to the address that was checked.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Notification, digest_lines, digest_title};
use crate::notify::channels::{Channel, ChannelError, EmailSettings, SmtpSecurity};
use crate::notify::message::status_line;
use crate::notify::network::NetworkPolicy;

const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("{0}")]
    Channel(#[from] ChannelError),
    #[error("building the message: {0}")]
    Message(String),
    #[error("refused relay: {0}")]
    Refused(crate::notify::network::Refused),
    #[error("cannot resolve the relay {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("the relay's CA file {path}: {message}")]
    CaFile { path: String, message: String },
    /// Worth another try (4xx replies, connection trouble).
    #[error("SMTP: {0}")]
    Transient(String),
    /// Will fail again (5xx replies, TLS refused).
    #[error("SMTP: {0}")]
    Permanent(String),
}

/// Subject and plain-text body.
pub fn subject_and_body(notification: &Notification<'_>) -> (String, String) {
    match notification {
        Notification::Opened(alert) => (alert.summary(), alert.text()),
        Notification::StatusChanged { alert, status, actor, reason, .. } => (
            format!("Re: {}", alert.summary()),
            format!("The alert was {}.\n\n{}", status_line(*status, actor, reason), alert.text()),
        ),
        Notification::Digest { alerts, period_minutes } => {
            (digest_title(alerts, *period_minutes), format!("{}\n", digest_lines(alerts).join("\n")))
        }
    }
}

fn message_id(dedup_key: &str) -> String {
    format!("<{dedup_key}@skywarden>")
}

pub fn message(
    settings: &EmailSettings,
    notification: &Notification<'_>,
    dedup_key: &str,
) -> Result<Message, EmailError> {
    let bad = |e: &dyn std::fmt::Display| EmailError::Message(e.to_string());
    let (subject, body) = subject_and_body(notification);
    let mut builder = Message::builder().from(settings.from.parse::<Mailbox>().map_err(|e| bad(&e))?).subject(subject);
    for to in &settings.to {
        builder = builder.to(to.parse::<Mailbox>().map_err(|e| bad(&e))?);
    }
    // Status changes thread under the alert's first message in mail clients.
    builder = match notification {
        Notification::Opened(_) => builder.message_id(Some(message_id(dedup_key))),
        Notification::StatusChanged { .. } => {
            builder.in_reply_to(message_id(dedup_key)).references(message_id(dedup_key))
        }
        Notification::Digest { .. } => builder,
    };
    builder.header(ContentType::TEXT_PLAIN).body(body).map_err(|e| bad(&e))
}

async fn checked_address(settings: &EmailSettings, policy: &NetworkPolicy) -> Result<std::net::IpAddr, EmailError> {
    let resolve = |message: String| EmailError::Resolve { host: settings.host.clone(), message };
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((settings.host.as_str(), settings.port))
        .await
        .map_err(|e| resolve(e.to_string()))?
        .collect();
    for address in &addresses {
        policy.check(address.ip()).map_err(EmailError::Refused)?;
    }
    addresses.first().map(|a| a.ip()).ok_or_else(|| resolve("no address".into()))
}

/// Sends within `timeout` overall (resolving, connecting, every SMTP command).
pub async fn send(
    channel: &Channel,
    notification: &Notification<'_>,
    dedup_key: &str,
    policy: &NetworkPolicy,
    timeout: Duration,
) -> Result<String, EmailError> {
    tokio::time::timeout(timeout, send_now(channel, notification, dedup_key, policy, timeout))
        .await
        .map_err(|_| EmailError::Transient(format!("no answer from the relay within {timeout:?}")))?
}

async fn send_now(
    channel: &Channel,
    notification: &Notification<'_>,
    dedup_key: &str,
    policy: &NetworkPolicy,
    timeout: Duration,
) -> Result<String, EmailError> {
    let settings: EmailSettings = channel.typed()?;
    let email = message(&settings, notification, dedup_key)?;
    let address = checked_address(&settings, policy).await?;
    // A password in clear goes only to a relay on a network an admin allowed.
    if settings.security == SmtpSecurity::None && !policy.is_allowed(address) {
        return Err(EmailError::Permanent(format!(
            "unencrypted SMTP to {address} refused: only relays on networks allowed in SKYWARDEN_NOTIFY_ALLOW_NETWORKS"
        )));
    }
    let tls = match settings.security {
        SmtpSecurity::None => Tls::None,
        security => {
            // The certificate is checked against the configured host name, not the address.
            let mut parameters = TlsParameters::builder(settings.host.clone());
            if let Some(path) = &settings.ca_file {
                let ca_error = |message: String| EmailError::CaFile { path: path.clone(), message };
                let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
                parameters =
                    parameters.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| ca_error(e.to_string()))?);
            }
            let parameters =
                parameters.build_rustls().map_err(|e| EmailError::Permanent(format!("TLS set-up: {e}")))?;
            if security == SmtpSecurity::Tls { Tls::Wrapper(parameters) } else { Tls::Required(parameters) }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.to_string())
        .port(settings.port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT.min(timeout)));
    if let Some(username) = &settings.username {
        let password = channel.secrets.get("password").map(|s| s.expose().to_string()).unwrap_or_default();
        builder = builder.credentials(Credentials::new(username.clone(), password));
    }
    let transport = builder.build();
    match transport.send(email).await {
        Ok(response) => Ok(response.message().collect::<Vec<_>>().join(" ")),
        Err(error) if error.is_permanent() => Err(EmailError::Permanent(crate::notify::error_chain(&error))),
        Err(error) => Err(EmailError::Transient(crate::notify::error_chain(&error))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::model::AlertStatus;

    fn settings() -> EmailSettings {
        serde_json::from_value(serde_json::json!({"host": "smtp.example.com", "from": "Skywarden <skywarden@example.com>", "to": ["soc@example.com", "oncall@example.com"]})).unwrap()
    }

    #[test]
    fn alerts_and_their_status_changes_thread_together() {
        let alert = hijack();
        let opened = String::from_utf8(
            message(&settings(), &Notification::Opened(&alert), &alert.dedup_key).unwrap().formatted(),
        )
        .unwrap();
        // Long header lines are folded; unfold them to read the subject.
        let opened = opened.replace("\r\n ", " ");
        assert!(opened.contains(&format!("Message-ID: <{}@skywarden>", alert.dedup_key)), "{opened}");
        assert!(opened.contains("To: soc@example.com, oncall@example.com"));
        assert!(
            opened.contains(
                "Subject: [HIGH] Console login from a country new for the user: alice from 203.0.113.10 (RU)"
            )
        );
        let change = Notification::StatusChanged {
            alert: &alert,
            status: AlertStatus::Acknowledged,
            actor: "bob",
            reason: "",
            remote_ref: None,
        };
        let reply = String::from_utf8(message(&settings(), &change, &alert.dedup_key).unwrap().formatted()).unwrap();
        assert!(reply.contains(&format!("In-Reply-To: <{}@skywarden>", alert.dedup_key)));
        assert!(reply.contains("The alert was acknowledged by bob."));
    }
}
