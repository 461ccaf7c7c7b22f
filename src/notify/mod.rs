//! Alert routing: channels (Slack, Teams, PagerDuty, webhooks, Jira, ServiceNow, email), routes
//! that pick which alerts go where, and an outbox that the alert store writes in the same
//! transaction as the alert, drained by [`sender::Sender`] with retries and dead letters.
//!
//! Data flows alerts → outbox → sender → receiver; the HTTP API manages channels and routes and
//! shows deliveries.

pub mod channel_schema;
pub mod channels;
pub mod config;
pub mod http_client;
pub mod limits;
pub mod message;
pub mod network;
pub mod outbox;
pub mod routes;
pub mod secrets;
pub mod sender;
pub mod targets;

/// An error with its causes, `outer: inner: innermost`, for delivery errors an operator reads.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
