//! Integration tests, compiled into one binary (one link, one embedded cluster per run).

mod api;
mod as_shipped;
mod aws;
mod dashboard;
mod detection;
mod faults;
mod flow_log_delivery;
mod import;
mod input_bounds;
mod interrupted_import;
mod near_real_time;
mod notifications;
mod organizations;
mod outbound_limits;
mod packaging;
mod poll_control;
mod posture;
mod regions;
mod sample_incident;
mod security;
mod shared_fixtures;
mod support;
