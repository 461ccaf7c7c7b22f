//! CloudTrail: the trails whose home is the region, with their status and event selectors.

use super::*;

pub(super) async fn trails(cloudtrail: &aws_sdk_cloudtrail::Client, region: &str) -> Result<Vec<ResourceConfig>, AwsError> {
    // DescribeTrails is not paginated: it returns every trail visible in the region at once.
    let described = cloudtrail
        .describe_trails()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("cloudtrail:DescribeTrails", region, e))?;
    let mut found = Vec::new();
    for trail in described.trail_list() {
        if trail.home_region() != Some(region) {
            continue;
        }
        let Some(arn) = trail.trail_arn() else {
            tracing::warn!(region, name = trail.name(), "a trail without an ARN was skipped");
            continue;
        };
        // The ARN, not the name: a member account must name an organization trail by its ARN.
        let status = cloudtrail
            .get_trail_status()
            .name(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("cloudtrail:GetTrailStatus", region, e))?;
        let selectors = match cloudtrail.get_event_selectors().trail_name(arn).send().await {
            Ok(selectors) => event_selectors(&selectors),
            Err(error) => {
                let error = AwsError::from_sdk("cloudtrail:GetEventSelectors", region, error);
                // A member account may see an organization trail without being allowed to read
                // its selectors; that refusal is stable, so `null` does not flap between runs.
                let refused = matches!(error.kind, AwsErrorKind::AccessDenied | AwsErrorKind::Rejected);
                if trail.is_organization_trail() == Some(true) && refused {
                    tracing::debug!(region, trail = arn, %error, "event selectors of an organization trail not readable");
                    Value::Null
                } else {
                    return Err(error);
                }
            }
        };
        found.extend(trail_config(trail, &status, selectors, region));
    }
    Ok(found)
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
pub(super) fn event_selectors(output: &aws_sdk_cloudtrail::operation::get_event_selectors::GetEventSelectorsOutput) -> Value {
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
