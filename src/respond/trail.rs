//! CloudTrail: restart the logging of a trail that StopLogging stopped. There is no undo:
//! Skywarden never stops logging.

use serde_json::{Value, json};

use super::{ApiCall, CallLog, Observed, RespondError, is_protected};
use crate::aws::AwsError;

type Client = aws_sdk_cloudtrail::Client;

pub(super) async fn observe(cloudtrail: &Client, region: &str, trail: &str) -> Result<Observed, RespondError> {
    let trails = cloudtrail
        .describe_trails()
        .trail_name_list(trail)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("cloudtrail:DescribeTrails", region, e))?;
    let found = trails.trail_list().iter().find(|t| t.name() == Some(trail) || t.trail_arn() == Some(trail));
    let Some(found) = found else {
        return Err(RespondError::NotFound(format!("no trail {trail} in {region}")));
    };
    let arn = found.trail_arn().unwrap_or(trail).to_owned();
    // A trail is managed in its home region, where its name is enough; elsewhere by ARN.
    let name = match (found.home_region(), found.name()) {
        (Some(home), Some(name)) if home == region => name.to_owned(),
        _ => arn.clone(),
    };
    let status = cloudtrail
        .get_trail_status()
        .name(&arn)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("cloudtrail:GetTrailStatus", region, e))?;
    let tags = cloudtrail
        .list_tags()
        .resource_id_list(&arn)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("cloudtrail:ListTags", region, e))?;
    let protected = is_protected(tags.resource_tag_list().iter().flat_map(|r| r.tags_list()).map(|t| t.key()));
    let logging = status.is_logging().unwrap_or(false);
    let state = json!({
        "trail_arn": arn,
        "name": name,
        "is_logging": logging,
        "stopped_at": status.stop_logging_time().map(|t| t.to_string()),
    });
    Ok(Observed { state, protected, changes: !logging })
}

pub(super) fn start_call(state: &Value) -> ApiCall {
    ApiCall::new("cloudtrail:StartLogging", json!({"Name": state["name"]}))
}

pub(super) async fn start_logging(
    cloudtrail: &Client,
    region: &str,
    before: &Value,
    log: &mut CallLog,
) -> Result<Value, RespondError> {
    let call = start_call(before);
    cloudtrail
        .start_logging()
        .name(before["name"].as_str().unwrap_or_default())
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("cloudtrail:StartLogging", region, e))
        .inspect_err(|error| log.failed(&call, error))?;
    log.ok(&call, json!({}));
    Ok(json!({"trail_arn": before["trail_arn"], "is_logging": true}))
}
