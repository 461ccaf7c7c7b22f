//! Alerts: what policies raise, deduplicated per policy, account and subject within a time
//! window, and triaged by analysts (open, acknowledged, resolved, dismissed, snoozed).
//!
//! Policies produce [`Finding`](crate::model::Finding)s (one per matching event or observation);
//! [`store`] folds findings into alerts idempotently, so evaluating the same events twice, or in
//! another order, leaves the same alerts. Writing an alert returns what changed; the caller
//! queues the notifications in the same transaction (`notify` imports `alerts`, never the reverse).

pub mod investigate;
pub mod pages;
pub mod store;
