//! Email over SMTP (STARTTLS by default, or implicit TLS, or plain for an allowed internal
//! relay), with `lettre`. The relay's address is checked against the network policy like any
//! webhook target, and the connection goes to the address that was checked.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{ContentType, MIME_VERSION_1_0};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::Notification;
use crate::notify::channels::{Channel, ChannelError, EmailSettings, SmtpSecurity, is_file_name};
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

/// Subject and plain-text body: a one-line subject, body lines alert data cannot forge, digests
/// cut at whole alerts.
pub fn subject_and_body(notification: &Notification<'_>) -> (String, String) {
    crate::notify::message::email_subject_and_body(notification)
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
        Notification::Opened(_) | Notification::Digest { .. } => builder.message_id(Some(message_id(dedup_key))),
        Notification::StatusChanged { .. } | Notification::AutomaticAction { .. } => {
            builder.in_reply_to(message_id(dedup_key)).references(message_id(dedup_key))
        }
    };
    builder.header(MIME_VERSION_1_0).header(ContentType::TEXT_PLAIN).body(body).map_err(|e| bad(&e))
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

/// The largest CA file read: a certificate bundle is far smaller.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

async fn tls(settings: &EmailSettings, policy: &NetworkPolicy) -> Result<Tls, EmailError> {
    if settings.security == SmtpSecurity::None {
        return Ok(Tls::None);
    }
    // The certificate is checked against the configured host name, not the address.
    let mut parameters = TlsParameters::builder(settings.host.clone());
    if let Some(name) = &settings.ca_file {
        parameters = parameters.add_root_certificate(load_ca(name, policy.ca_dir()).await?);
    }
    let parameters = parameters.build_rustls().map_err(|e| EmailError::Permanent(format!("TLS set-up: {e}")))?;
    Ok(if settings.security == SmtpSecurity::Tls { Tls::Wrapper(parameters) } else { Tls::Required(parameters) })
}

/// The relay's CA certificate: `name` in the CA directory (an absolute path only comes from the
/// config file). Read off the async workers, up to [`MAX_CA_FILE_BYTES`], regular files only.
/// Whatever is wrong, the error says the same, so it reveals nothing about the server's files;
/// the log has the cause.
pub async fn load_ca(name: &str, ca_dir: Option<PathBuf>) -> Result<Certificate, EmailError> {
    let path = match ca_dir {
        _ if Path::new(name).is_absolute() => Some(PathBuf::from(name)),
        Some(dir) if is_file_name(name) => Some(dir.join(name)),
        _ => None,
    };
    let read = match path {
        Some(path) => tokio::task::spawn_blocking(move || read_bounded(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
        None => Err(std::io::Error::other("not a file name in SKYWARDEN_NOTIFY_CA_DIR (is it set?)")),
    };
    let certificate = read.and_then(|pem| {
        check_has_certificate(&pem)?;
        Certificate::from_pem(&pem).map_err(std::io::Error::other)
    });
    certificate.map_err(|error| {
        tracing::warn!(ca_file = name, %error, "the relay's CA file cannot be used");
        EmailError::CaFile {
            path: name.to_owned(),
            message: format!(
                "cannot be used: it must be a PEM file of at most {} KiB in SKYWARDEN_NOTIFY_CA_DIR (the log says why)",
                MAX_CA_FILE_BYTES / 1024
            ),
        }
    })
}

/// `lettre` takes a file without any certificate (and then trusts nothing it was meant to).
fn check_has_certificate(pem: &[u8]) -> std::io::Result<()> {
    use rustls::pki_types::pem::PemObject;
    let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| std::io::Error::other(format!("not PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(std::io::Error::other("no certificate in it"));
    }
    Ok(())
}

/// A regular file's bytes, refused beyond the limit (a device or a pipe is never opened).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    Ok(bytes)
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
    let tls = tls(&settings, policy).await?;
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

    #[tokio::test]
    async fn ca_files_are_read_bounded_and_their_errors_reveal_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp/ca.pem")).unwrap();
        std::fs::write(dir.path().join("relay.pem"), &pem).unwrap();
        std::fs::write(dir.path().join("big.pem"), vec![b'-'; MAX_CA_FILE_BYTES as usize + 1]).unwrap();
        std::fs::write(dir.path().join("text.pem"), "not a certificate").unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.pem")).unwrap();
        std::fs::create_dir(dir.path().join("folder.pem")).unwrap();
        let ca_dir = Some(dir.path().to_path_buf());
        assert!(load_ca("relay.pem", ca_dir.clone()).await.is_ok());
        let message = |error: EmailError| match error {
            EmailError::CaFile { message, .. } => message,
            other => panic!("{other}"),
        };
        let mut messages = Vec::new();
        for name in ["missing.pem", "big.pem", "text.pem", "zero.pem", "folder.pem", "../relay.pem", "a/b.pem"] {
            messages.push(message(load_ca(name, ca_dir.clone()).await.expect_err(name)));
        }
        // Without a CA directory a name means nothing; an absolute path (the config file's
        // form) is read with the same bounds.
        messages.push(message(load_ca("relay.pem", None).await.unwrap_err()));
        messages.push(message(load_ca("/dev/zero", None).await.unwrap_err()));
        messages.push(message(load_ca("/no/such/file.pem", None).await.unwrap_err()));
        assert!(messages.iter().all(|m| *m == messages[0]), "{messages:#?}");
        let absolute = dir.path().join("relay.pem");
        assert!(load_ca(absolute.to_str().unwrap(), None).await.is_ok());
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
