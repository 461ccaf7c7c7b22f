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
//! The `aws` feature (on by default) builds the modules that need the AWS SDK (`aws`, `accounts`,
//! `pollers`, `http`, the inventory collectors); without it the library is the readers of outside
//! input alone, which is what the fuzz targets build.
//!
//! `tests/layering.rs` checks what each module may import; `docs/architecture.md` tells how an
//! event travels from S3 to a Slack message.

#[cfg(feature = "aws")]
pub mod accounts;
pub mod alerts;
#[cfg(feature = "aws")]
pub mod archive;
pub mod auth;
#[cfg(feature = "aws")]
pub mod aws;
pub mod db;
pub mod demo;
pub mod detect;
pub mod fuzzing;
pub mod geo;
#[cfg(feature = "aws")]
pub mod http;
pub mod ingest;
pub mod inventory;
pub mod model;
pub mod net;
pub mod notify;
pub mod policy_files;
#[cfg(feature = "aws")]
pub mod pollers;
pub mod posture;
pub mod report;
#[cfg(feature = "aws")]
pub mod respond;
pub mod search;
pub mod supervise;
pub mod telemetry;
