//! Integration tests, compiled into one binary (one link, one embedded cluster per run).

// A test tells one story from set-up to the last assertion; the product's 80-line limit on
// functions (clippy.toml) does not apply here.
#![allow(clippy::too_many_lines)]

mod api;
mod archive;
mod archive_read;
mod as_shipped;
mod aws;
mod aws_findings;
mod cancelled_transactions;
mod cli;
mod dashboard;
mod dashboard_investigation;
mod dashboard_respond;
mod dashboard_triage;
mod detection;
mod detection_lease;
mod detections_more;
mod detections_review;
mod faults;
mod flow_log_delivery;
mod import;
mod incident_links;
mod incident_listing;
mod incident_relink;
mod incidents;
mod input_bounds;
mod interrupted_import;
mod lake_read_bounds;
mod lake_search;
mod lake_text_search;
mod near_real_time;
mod network_context;
mod notifications;
mod organizations;
mod outbound_limits;
mod packaging;
mod partition_cache;
mod poll_control;
mod posture;
mod regions;
mod respond;
mod respond_auto;
mod respond_safety;
mod sample_incident;
mod search_index;
mod search_scale;
mod security;
mod shared_fixtures;
mod support;
mod worker_schedule;
