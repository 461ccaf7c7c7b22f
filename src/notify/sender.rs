//! The sender: claims due outbox rows, renders each for its channel, sends it and records the
//! outcome: delivered, retried after an exponential back-off (or the receiver's Retry-After),
//! or dead after the last attempt. [`Sender::deliver_due`] is one step, for tests and
//! `skywarden notifications deliver`; [`Sender::run`] loops until shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sqlx::PgPool;

use super::channels::{self, Channel, ChannelKind};
use super::error_chain;
use super::http_client::{HttpError, Reply, SafeHttpClient};
use super::message::{AlertMessage, incident_url};
use super::outbox::{self, Claimed};
use super::secrets::SecretKey;
use super::targets::{self, Envelope, Notification, email};
use crate::alerts::store::{self as alert_store, AlertFilter};

/// How the sender behaves; every value has a production default.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Where links in messages point: the dashboard's address as analysts reach it.
    pub public_url: String,
    /// Attempts before a delivery is dead.
    pub max_attempts: i32,
    /// The first retry waits this long; each next one twice as long (with jitter).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a claimed row is held before another sender may take it.
    pub lease: Duration,
    /// Rows claimed per step, and sent at once.
    pub batch: i64,
    pub concurrency: usize,
    /// How often the loop looks for due rows.
    pub poll_interval: Duration,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            max_attempts: 10,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            lease: Duration::from_secs(120),
            batch: 50,
            concurrency: 8,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StepReport {
    pub digests: u64,
    pub delivered: u64,
    pub retrying: u64,
    pub dead: u64,
}

/// The outcome of one attempt.
#[derive(Debug)]
pub enum Attempt {
    Delivered {
        http_status: Option<u16>,
        remote_ref: Option<String>,
        note: Option<String>,
    },
    /// Worth another try, after `after` if the receiver said so.
    Failed {
        http_status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    /// Will fail again until someone changes something.
    Rejected {
        http_status: Option<u16>,
        error: String,
    },
}

#[derive(Clone)]
pub struct Sender {
    pool: PgPool,
    key: Arc<SecretKey>,
    client: SafeHttpClient,
    options: Arc<SenderOptions>,
}

impl Sender {
    pub fn new(pool: PgPool, key: Arc<SecretKey>, client: SafeHttpClient, options: SenderOptions) -> Self {
        Self { pool, key, client, options: Arc::new(options) }
    }

    pub fn options(&self) -> &SenderOptions {
        &self.options
    }

    pub fn policy(&self) -> &super::network::NetworkPolicy {
        self.client.policy()
    }

    /// Flushes due digests, then sends what is due, once.
    pub async fn deliver_due(&self) -> Result<StepReport, sqlx::Error> {
        let mut report = StepReport { digests: outbox::flush_digests(&self.pool).await?, ..Default::default() };
        let lease = self.options.lease.as_secs_f64();
        // Only as many rows as are sent at once: each starts right away, well within its lease.
        let claimed =
            outbox::claim(&self.pool, self.options.batch.min(self.options.concurrency.max(1) as i64), lease).await?;
        let outcomes: Vec<Result<&'static str, sqlx::Error>> = futures_util::stream::iter(claimed)
            .map(|row| async move { self.deliver_supervised(&row).await })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        for outcome in outcomes {
            match outcome? {
                "delivered" => report.delivered += 1,
                "retrying" => report.retrying += 1,
                _ => report.dead += 1,
            }
        }
        Ok(report)
    }

    /// Loops until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        tracing::info!(public_url = %self.options.public_url, network = %self.client.policy(), "notification sender started");
        loop {
            // A step that sent something goes straight on: a burst of alerts drains at the
            // receivers' pace, not one batch per poll interval.
            let busy = match crate::supervise::catch_panic(self.deliver_due()).await {
                Ok(Ok(report)) if report != StepReport::default() => {
                    tracing::info!(?report, "notifications");
                    true
                }
                Ok(Ok(_)) => false,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "notification step failed");
                    false
                }
                // A digest that panics: logged, and the loop goes on after the usual pause.
                Err(panic) => {
                    tracing::error!(%panic, "notification step panicked");
                    false
                }
            };
            let pause = if busy { std::time::Duration::ZERO } else { self.options.poll_interval };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("notification sender stopped");
    }

    /// [`Self::deliver`], where a panic while building or sending the message counts as a
    /// failed attempt: the row is retried with back-off and ends a dead letter, visible, rather
    /// than panicking every sender that claims it.
    async fn deliver_supervised(&self, row: &Claimed) -> Result<&'static str, sqlx::Error> {
        let attempt = crate::supervise::catch_panic(self.attempt(row)).await.unwrap_or_else(|panic| {
            tracing::error!(delivery = row.id, channel_id = row.channel_id, %panic, "sending a notification panicked");
            Attempt::Failed { http_status: None, error: format!("internal error (a panic): {panic}"), after: None }
        });
        self.record(row, attempt).await
    }

    async fn record(&self, row: &Claimed, attempt: Attempt) -> Result<&'static str, sqlx::Error> {
        let channel_id = row.channel_id;
        match attempt {
            Attempt::Delivered { http_status, remote_ref, note } => {
                outbox::mark_delivered(&self.pool, row, http_status, remote_ref.as_deref(), note.as_deref()).await?;
                tracing::info!(delivery = row.id, channel_id, event = %row.event, attempts = row.attempts, "notification delivered");
                Ok("delivered")
            }
            Attempt::Failed { http_status, error, after } if row.attempts < self.options.max_attempts => {
                let wait = after.unwrap_or_else(|| self.backoff(row.attempts)).min(self.options.retry_max);
                outbox::mark_failed(&self.pool, row, http_status, &error, Some(wait)).await?;
                tracing::warn!(delivery = row.id, channel_id, attempts = row.attempts, retry_in = ?wait, %error, "notification failed; will retry");
                Ok("retrying")
            }
            Attempt::Failed { http_status, error, .. } | Attempt::Rejected { http_status, error } => {
                outbox::mark_failed(&self.pool, row, http_status, &error, None).await?;
                tracing::error!(delivery = row.id, channel_id, attempts = row.attempts, %error, "notification gave up (dead letter)");
                Ok("dead")
            }
        }
    }

    /// Exponential back-off with up to 25% jitter, so many failed rows do not retry in step.
    fn backoff(&self, attempts: i32) -> Duration {
        let exponent = (attempts - 1).clamp(0, 20) as u32;
        let base = self.options.retry_base.saturating_mul(2u32.saturating_pow(exponent)).min(self.options.retry_max);
        let mut jitter = [0u8; 1];
        let _ = getrandom::fill(&mut jitter);
        base + base.mul_f64(f64::from(jitter[0]) / 255.0 * 0.25)
    }

    async fn attempt(&self, row: &Claimed) -> Attempt {
        let channel = match channels::load(&self.pool, row.channel_id, &self.key).await {
            Ok(channel) if !channel.enabled => {
                return Attempt::Rejected {
                    http_status: None,
                    error: "the channel is disabled; retry after enabling it".into(),
                };
            }
            Ok(channel) => channel,
            Err(channels::ChannelError::Db(error)) => {
                return Attempt::Failed {
                    http_status: None,
                    error: format!("loading the channel: {error}"),
                    after: None,
                };
            }
            Err(error) => {
                return Attempt::Rejected { http_status: None, error: format!("channel: {}", error_chain(&error)) };
            }
        };
        let envelope =
            Envelope { delivery_id: row.id.to_string(), dedup_key: row.dedup_key.clone(), attempt: row.attempts };
        match row.event.as_str() {
            "digest" => {
                let mut alerts = Vec::with_capacity(row.digest_alerts.len());
                for id in &row.digest_alerts {
                    match self.alert(id).await {
                        Ok(Some(alert)) => alerts.push(alert),
                        Ok(None) => {}
                        Err(error) => {
                            return Attempt::Failed { http_status: None, error: error.to_string(), after: None };
                        }
                    }
                }
                if alerts.is_empty() {
                    return Attempt::Delivered {
                        http_status: None,
                        remote_ref: None,
                        note: Some("every alert of the digest was withdrawn".into()),
                    };
                }
                let period = self.digest_period(row.route_id).await;
                self.send(&channel, &Notification::Digest { alerts: &alerts, period_minutes: period }, &envelope).await
            }
            event => self.alert_event(&channel, row, &envelope, event).await,
        }
    }

    /// A message about one alert: its opening, a status change or an automatic action.
    async fn alert_event(&self, channel: &Channel, row: &Claimed, envelope: &Envelope, event: &str) -> Attempt {
        let Some(alert_id) = row.alert_id.as_deref() else {
            return Attempt::Rejected { http_status: None, error: "an alert message without an alert".into() };
        };
        let alert = match self.alert_and_incident(alert_id).await {
            Ok(Some(alert)) => alert,
            Ok(None) => {
                return Attempt::Delivered {
                    http_status: None,
                    remote_ref: None,
                    note: Some("the alert was withdrawn".into()),
                };
            }
            Err(error) => return Attempt::Failed { http_status: None, error: error.to_string(), after: None },
        };
        let (alert, incident_id) = alert;
        if event == "alert.opened" {
            return self.send(channel, &Notification::Opened(&alert), envelope).await;
        }
        let remote = match outbox::remote_ref(&self.pool, channel.id, &alert.account_id, &alert.id).await {
            Ok(remote) => remote,
            Err(error) => return Attempt::Failed { http_status: None, error: error.to_string(), after: None },
        };
        if let Some(action) = &row.automatic_action {
            let mut action = action.clone();
            action.incident_url = incident_id.as_deref().map(|id| incident_url(&self.options.public_url, id));
            action.incident_id = incident_id;
            let notification =
                Notification::AutomaticAction { alert: &alert, action: &action, remote_ref: remote.as_deref() };
            return self.send(channel, &notification, envelope).await;
        }
        let Some(status) = row.alert_status else {
            return Attempt::Rejected { http_status: None, error: "a status change without a status".into() };
        };
        let notification = Notification::StatusChanged {
            alert: &alert,
            status,
            actor: row.status_actor.as_deref().unwrap_or("someone"),
            reason: row.status_reason.as_deref().unwrap_or(""),
            remote_ref: remote.as_deref(),
        };
        self.send(channel, &notification, envelope).await
    }

    async fn alert(&self, id: &str) -> Result<Option<AlertMessage>, alert_store::AlertStoreError> {
        Ok(self.alert_and_incident(id).await?.map(|(alert, _)| alert))
    }

    /// The alert as channels render it, and the incident it belongs to now.
    async fn alert_and_incident(
        &self,
        id: &str,
    ) -> Result<Option<(AlertMessage, Option<String>)>, alert_store::AlertStoreError> {
        let filter = AlertFilter { alert_id: Some(id.to_string()), ..Default::default() };
        Ok(alert_store::list(&self.pool, &filter)
            .await?
            .first()
            .map(|a| (AlertMessage::from_alert(a, &self.options.public_url), a.incident_id.clone())))
    }

    async fn digest_period(&self, route_id: Option<i64>) -> i32 {
        let Some(route_id) = route_id else { return 0 };
        sqlx::query_scalar!("SELECT digest_minutes FROM notification_routes WHERE id = $1", route_id)
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten()
            .flatten()
            .unwrap_or(0)
    }

    /// Sends one notification to one channel and classifies the answer.
    pub async fn send(&self, channel: &Channel, notification: &Notification<'_>, envelope: &Envelope) -> Attempt {
        if channel.kind == ChannelKind::Email {
            return self.send_email(channel, notification, envelope).await;
        }
        if let Some(found) = self.earlier_ticket(channel, notification, envelope).await {
            return found;
        }
        let request = match targets::http_request(channel, notification, envelope) {
            Ok(Some(request)) => request,
            Ok(None) => {
                return Attempt::Delivered {
                    http_status: None,
                    remote_ref: None,
                    note: Some(format!("nothing to send to {} for this event", channel.kind)),
                };
            }
            Err(error) => return Attempt::Rejected { http_status: None, error: error.to_string() },
        };
        http_attempt(channel.kind, self.client.send(&request).await)
    }

    async fn send_email(&self, channel: &Channel, notification: &Notification<'_>, envelope: &Envelope) -> Attempt {
        match email::send(channel, notification, &envelope.dedup_key, self.client.policy(), self.client.timeout()).await
        {
            Ok(reply) => {
                Attempt::Delivered { http_status: None, remote_ref: None, note: Some(format!("relay: {reply}")) }
            }
            Err(email::EmailError::Transient(error)) => Attempt::Failed { http_status: None, error, after: None },
            Err(email::EmailError::Resolve { host, message }) => {
                Attempt::Failed { http_status: None, error: format!("cannot resolve {host}: {message}"), after: None }
            }
            Err(error) => Attempt::Rejected { http_status: None, error: error.to_string() },
        }
    }

    /// A retried ticket may exist already: an earlier attempt can have been created on the
    /// receiver's side and lost on ours (a timeout, a crash). Looks before creating again: the
    /// delivery, if the ticket is found.
    async fn earlier_ticket(
        &self,
        channel: &Channel,
        notification: &Notification<'_>,
        envelope: &Envelope,
    ) -> Option<Attempt> {
        if envelope.attempt <= 1 || !matches!(notification, Notification::Opened(_)) {
            return None;
        }
        let Ok(Some(lookup)) = targets::lookup_request(channel, envelope) else { return None };
        match self.client.send(&lookup).await {
            Ok(reply) if (200..300).contains(&reply.status) => {
                let found = targets::lookup_ref(channel.kind, &reply)?;
                Some(Attempt::Delivered {
                    http_status: Some(reply.status),
                    remote_ref: Some(found),
                    note: Some("found the ticket an earlier attempt created".into()),
                })
            }
            Ok(reply) => {
                tracing::warn!(channel = %channel.name, status = reply.status, "ticket lookup failed; creating");
                None
            }
            Err(error) => {
                tracing::warn!(channel = %channel.name, %error, "ticket lookup failed; creating");
                None
            }
        }
    }

    /// The test button: sends a sample alert to a channel now, outside the outbox.
    pub async fn send_test(&self, channel_id: i64) -> Result<Attempt, channels::ChannelError> {
        let channel = channels::load(&self.pool, channel_id, &self.key).await?;
        let sample = AlertMessage::sample(&self.options.public_url);
        let envelope = Envelope { delivery_id: "test".into(), dedup_key: sample.dedup_key.clone(), attempt: 1 };
        Ok(self.send(&channel, &Notification::Opened(&sample), &envelope).await)
    }
}

/// Classifies the receiver's answer to a notification.
fn http_attempt(kind: ChannelKind, sent: Result<Reply, HttpError>) -> Attempt {
    match sent {
        Ok(reply) if (200..300).contains(&reply.status) => Attempt::Delivered {
            http_status: Some(reply.status),
            remote_ref: targets::remote_ref(kind, &reply),
            note: None,
        },
        // Throttled or a server-side problem: the same request can succeed later.
        Ok(reply) if reply.status == 408 || reply.status == 429 || reply.status >= 500 => Attempt::Failed {
            http_status: Some(reply.status),
            error: format!("HTTP {}: {}", reply.status, reply.body_text()),
            after: reply.retry_after,
        },
        Ok(reply) => Attempt::Rejected {
            http_status: Some(reply.status),
            error: format!("HTTP {}: {}", reply.status, reply.body_text()),
        },
        Err(HttpError::Refused(refused)) => {
            Attempt::Rejected { http_status: None, error: format!("refused target: {refused}") }
        }
        Err(HttpError::BadUrl(error)) => {
            Attempt::Rejected { http_status: None, error: format!("bad target URL: {error}") }
        }
        Err(error) => Attempt::Failed { http_status: None, error: error.to_string(), after: None },
    }
}
