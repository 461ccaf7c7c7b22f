//! CloudTrail: every trail of the account, once, with its status and event selectors.
//!
//! A trail is one resource, keyed by its ARN and recorded by the account-wide (`global`)
//! snapshot, whatever regions it shows in. DescribeTrails with shadow trails lists a
//! multi-region trail in every region, and an organization trail in every member account, so
//! it is asked in each region the account polls and in the global-events region, and the
//! answers are merged by ARN. Recording a trail in each region that shows it would make one
//! resource per region with conflicting state (resources are keyed by ARN alone); recording it
//! only in its home region's snapshot loses it when that region is not polled (a restriction,
//! or an organization trail homed in the management account's region), and then the
//! multi-region check fails on a correctly configured account.

use std::collections::BTreeMap;

use aws_sdk_cloudtrail::types::Trail;
use futures_util::future::try_join_all;

use super::*;
use crate::aws::is_region_name;

/// DescribeTrails calls in flight at once, one region each.
const REGIONS_IN_FLIGHT: usize = 4;

/// The account's trails as seen from `regions`, each once. One region failing fails the whole
/// type, so the stored trails are kept rather than some of them marked deleted.
pub(super) async fn trails(
    client_for: &(dyn Fn(&str) -> aws_sdk_cloudtrail::Client + Sync),
    regions: &[String],
) -> Result<Vec<ResourceConfig>, AwsError> {
    let mut answers: Vec<(String, Vec<Trail>)> = Vec::with_capacity(regions.len());
    for batch in regions.chunks(REGIONS_IN_FLIGHT) {
        answers.extend(try_join_all(batch.iter().map(|r| describe_trails(client_for(r), r.clone()))).await?);
    }
    let mut found = Vec::new();
    for (trail, seen_in) in merge_by_arn(answers) {
        found.extend(trail_resource(client_for, &trail, &seen_in).await?);
    }
    Ok(found)
}

/// The trails visible in `region`. Owned arguments: the futures of several regions are awaited
/// together.
async fn describe_trails(
    cloudtrail: aws_sdk_cloudtrail::Client,
    region: String,
) -> Result<(String, Vec<Trail>), AwsError> {
    // Not paginated: every trail visible in the region at once. Shadow trails are the default;
    // said here because the account-wide view depends on them.
    let described = cloudtrail
        .describe_trails()
        .include_shadow_trails(true)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("cloudtrail:DescribeTrails", &region, e))?;
    Ok((region, described.trail_list().to_vec()))
}

/// Each trail once, by ARN, with the regions that showed it. The description from the trail's
/// home region is preferred (a shadow carries the same settings), so the value is the same
/// whichever regions answered.
pub(super) fn merge_by_arn(answers: Vec<(String, Vec<Trail>)>) -> Vec<(Trail, Vec<String>)> {
    let mut by_arn: BTreeMap<String, (Trail, Vec<String>)> = BTreeMap::new();
    for (region, trails) in answers {
        for trail in trails {
            let Some(arn) = trail.trail_arn().map(str::to_owned) else {
                tracing::warn!(region, name = trail.name(), "a trail without an ARN was skipped");
                continue;
            };
            let home = trail.home_region() == Some(region.as_str());
            let entry = by_arn.entry(arn).or_insert_with(|| (trail.clone(), Vec::new()));
            if home {
                entry.0 = trail;
            }
            entry.1.push(region.clone());
        }
    }
    by_arn.into_values().collect()
}

/// Status and selectors of one trail, read where it lives (its home region, which need not be
/// polled), or else in a region that showed it (a shadow answers by ARN): an organization
/// trail's home region may be one the member account has not enabled.
async fn trail_resource(
    client_for: &(dyn Fn(&str) -> aws_sdk_cloudtrail::Client + Sync),
    trail: &Trail,
    seen_in: &[String],
) -> Result<Option<ResourceConfig>, AwsError> {
    let Some(arn) = trail.trail_arn() else { return Ok(None) };
    let home = trail.home_region().filter(|r| is_region_name(r));
    let candidates = home.into_iter().chain(seen_in.iter().map(String::as_str).filter(|r| Some(*r) != home));
    let mut last_error = None;
    for region in candidates {
        let cloudtrail = client_for(region);
        // The ARN, not the name: a member account must name an organization trail by its ARN.
        match cloudtrail.get_trail_status().name(arn).send().await {
            Ok(status) => {
                let selectors = event_selectors_of(&cloudtrail, trail, arn, region).await?;
                return Ok(trail_config(trail, &status, selectors, GLOBAL_REGION));
            }
            Err(error) => {
                let error = AwsError::from_sdk("cloudtrail:GetTrailStatus", region, error);
                tracing::debug!(trail = arn, region, %error, "trail status not readable here; trying the next region");
                last_error = Some(error);
            }
        }
    }
    match last_error {
        Some(error) => Err(error),
        None => Ok(None),
    }
}

async fn event_selectors_of(
    cloudtrail: &aws_sdk_cloudtrail::Client,
    trail: &Trail,
    arn: &str,
    region: &str,
) -> Result<Value, AwsError> {
    match cloudtrail.get_event_selectors().trail_name(arn).send().await {
        Ok(selectors) => Ok(event_selectors(&selectors)),
        Err(error) => {
            let error = AwsError::from_sdk("cloudtrail:GetEventSelectors", region, error);
            // A member account may see an organization trail without being allowed to read
            // its selectors; that refusal is stable, so `null` does not flap between runs.
            let refused = matches!(error.kind, AwsErrorKind::AccessDenied | AwsErrorKind::Rejected);
            if trail.is_organization_trail() == Some(true) && refused {
                tracing::debug!(region, trail = arn, %error, "event selectors of an organization trail not readable");
                Ok(Value::Null)
            } else {
                Err(error)
            }
        }
    }
}

pub(super) fn trail_config(
    trail: &aws_sdk_cloudtrail::types::Trail,
    status: &aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput,
    event_selectors: Value,
    region: &str,
) -> Option<ResourceConfig> {
    let arn = trail.trail_arn()?;
    let config = json!({
        "name": trail.name(),
        "home_region": trail.home_region(),
        "s3_bucket_name": trail.s3_bucket_name(),
        "s3_key_prefix": trail.s3_key_prefix(),
        "sns_topic_arn": trail.sns_topic_arn(),
        "is_multi_region": trail.is_multi_region_trail(),
        "is_organization_trail": trail.is_organization_trail(),
        "log_file_validation": trail.log_file_validation_enabled(),
        "kms_key_id": trail.kms_key_id(),
        "cloud_watch_logs_log_group_arn": trail.cloud_watch_logs_log_group_arn(),
        "cloud_watch_logs_role_arn": trail.cloud_watch_logs_role_arn(),
        "include_global_service_events": trail.include_global_service_events(),
        "has_custom_event_selectors": trail.has_custom_event_selectors(),
        "has_insight_selectors": trail.has_insight_selectors(),
        "event_selectors": event_selectors,
        "is_logging": status.is_logging(),
        // Only a StartLogging or StopLogging call moves these, so a stop and restart between two
        // snapshots still shows as a change.
        "start_logging_time": time(status.start_logging_time()),
        "stop_logging_time": time(status.stop_logging_time()),
        "observed": {
            "latest_delivery_time": time(status.latest_delivery_time()),
            "latest_delivery_error": status.latest_delivery_error(),
            "latest_notification_time": time(status.latest_notification_time()),
            "latest_notification_error": status.latest_notification_error(),
            "latest_cloud_watch_logs_delivery_time": time(status.latest_cloud_watch_logs_delivery_time()),
            "latest_cloud_watch_logs_delivery_error": status.latest_cloud_watch_logs_delivery_error(),
            "latest_digest_delivery_time": time(status.latest_digest_delivery_time()),
            "latest_digest_delivery_error": status.latest_digest_delivery_error(),
        },
    });
    Some(ResourceConfig {
        resource_type: TRAIL,
        resource_id: arn.to_owned(),
        region: region.to_owned(),
        arn: Some(arn.to_owned()),
        name: trail.name().map(str::to_owned),
        config,
    })
}

/// Basic and advanced selectors as AWS returns them (the user's order), with the value lists
/// inside each selector sorted, since they are sets.
pub(super) fn event_selectors(
    output: &aws_sdk_cloudtrail::operation::get_event_selectors::GetEventSelectorsOutput,
) -> Value {
    let basic: Vec<Value> = output
        .event_selectors()
        .iter()
        .map(|s| {
            let mut data_resources: Vec<Value> = s
                .data_resources()
                .iter()
                .map(|d| json!({"type": d.r#type(), "values": sorted_strings(d.values().iter().map(String::as_str))}))
                .collect();
            sort_values(&mut data_resources);
            json!({
                "read_write_type": s.read_write_type().map(|v| v.as_str()),
                "include_management_events": s.include_management_events(),
                "data_resources": data_resources,
                "exclude_management_event_sources":
                    sorted_strings(s.exclude_management_event_sources().iter().map(String::as_str)),
            })
        })
        .collect();
    let advanced: Vec<Value> = output
        .advanced_event_selectors()
        .iter()
        .map(|s| {
            let mut fields: Vec<Value> = s
                .field_selectors()
                .iter()
                .map(|f| {
                    let list = |values: &[String]| sorted_strings(values.iter().map(String::as_str));
                    json!({
                        "field": f.field(),
                        "equals": list(f.equals()),
                        "starts_with": list(f.starts_with()),
                        "ends_with": list(f.ends_with()),
                        "not_equals": list(f.not_equals()),
                        "not_starts_with": list(f.not_starts_with()),
                        "not_ends_with": list(f.not_ends_with()),
                    })
                })
                .collect();
            sort_values(&mut fields);
            json!({"name": s.name(), "field_selectors": fields})
        })
        .collect();
    json!({"event_selectors": basic, "advanced_event_selectors": advanced})
}

// ---------------------------------------------------------------------------------------------
// IAM
