//! Integration tests, compiled into one binary (one link, one embedded cluster per run).

mod api;
mod as_shipped;
mod aws;
mod dashboard;
mod detection;
mod import;
mod interrupted_import;
mod notifications;
mod packaging;
mod posture;
mod sample_incident;
mod shared_fixtures;
mod support;
