//! Alerts: what policies raise, deduplicated per policy, account and subject within a time
//! window, and triaged by analysts (open, acknowledged, resolved, dismissed, snoozed).
//!
//! Policies produce [`Finding`](crate::model::Finding)s (one per matching event or observation);
//! [`store`] folds findings into alerts idempotently, so evaluating the same events twice, or in
//! another order, leaves the same alerts. Writing an alert returns what changed; the caller
//! queues the notifications in the same transaction (`notify` imports `alerts`, never the reverse).
//!
//! [`incidents`] links every alert into the incident of its intrusion ([`link_keys`] says what
//! ties alerts together); [`incident_pages`] reads incidents and applies analysts' changes.

pub mod incident_pages;
pub mod incident_story;
pub mod incident_timeline;
pub mod incidents;
pub mod investigate;
pub mod link_keys;
pub mod pages;
pub mod store;
