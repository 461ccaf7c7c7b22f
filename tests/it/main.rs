//! Integration tests, compiled into one binary (one link, one embedded cluster per run).

mod api;
mod as_shipped;
mod aws;
mod dashboard;
mod detection;
mod flow_log_delivery;
mod import;
mod interrupted_import;
mod notifications;
mod packaging;
mod poll_control;
mod posture;
mod regions;
mod sample_incident;
mod shared_fixtures;
mod support;
