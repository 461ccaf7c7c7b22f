//! Skywarden: cloud security posture management and detection for AWS.
//!
//! Data flows one way, and the folders say where each module sits in it:
//!
//! ```text
//!   aws ──► inventory (config snapshots) ──► posture (Rego checks) ─┐
//!    │                                                              ├─► alerts ──► notify
//!    └────► ingest (log files) ─────────────► detect (Sigma, detectors) ┘
//!   pollers drive the stages for onboarded accounts; http (API, dashboard) and the CLI sit on top;
//!   model, net, db and geo lie underneath and import nothing above them.
//! ```
//!
//! `tests/layering.rs` checks what each module may import; `docs/architecture.md` tells how an
//! event travels from S3 to a Slack message.

pub mod accounts;
pub mod alerts;
pub mod auth;
pub mod aws;
pub mod db;
pub mod demo;
pub mod detect;
pub mod fuzzing;
pub mod geo;
pub mod http;
pub mod ingest;
pub mod inventory;
pub mod model;
pub mod net;
pub mod notify;
pub mod policy_files;
pub mod pollers;
pub mod posture;
pub mod search;
pub mod supervise;
pub mod telemetry;
