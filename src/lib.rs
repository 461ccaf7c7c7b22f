//! Skywarden: cloud security posture management and detection for AWS.
//!
//! Data flows one way: `ingest` (parsers and importers) → `geo` (enrichment) → `db`
//! (PostgreSQL storage) → `detect` (`policy` rules and detectors) → `alerts`; `http` reads what
//! the others wrote.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod alerts;
pub mod auth;
pub mod aws;



pub mod db;
pub mod demo;
pub mod detect;
pub mod geo;
pub mod http;
pub mod ingest;
pub mod inventory;
pub mod model;
pub mod net;
pub mod notify;

pub mod pollers;
pub mod posture;
pub mod telemetry;
