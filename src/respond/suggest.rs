//! The actions that apply to an alert, read from the CloudTrail events behind it: the rule it
//! opened, the key or password it created, the policy it attached, the trail it stopped, and the
//! principal who did it.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::record::{self, ResponseRecord};
use super::{Action, Principal, RespondError, Undo};
use crate::accounts::responder;
use crate::net::Cidr;

/// At most this many evidence events are read for suggestions.
const MAX_EVENTS: i64 = 500;

/// One action that fits an alert, and why.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    pub kind: &'static str,
    pub target: String,
    /// The resource's region (none for IAM).
    pub region: Option<String>,
    pub why: String,
    pub undo: Undo,
    /// What could not be checked for this suggestion (it is shown anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the alert page shows: the actions, whether the account can run them, and those run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Applicable {
    pub alert_id: String,
    pub account_id: String,
    /// Whether the account has a responder role; without one nothing runs.
    pub enabled: bool,
    /// How to enable response, when it is not.
    pub enable_command: Option<String>,
    pub actions: Vec<Suggestion>,
    /// Actions already recorded for the alert, newest first.
    pub recorded: Vec<ResponseRecord>,
}

fn suggestion(kind: &str, target: &str, region: Option<&str>, why: String) -> Option<(Action, String)> {
    Action::parse(kind, target, region).ok().map(|action| (action, why))
}

/// The acting principal: quarantine the user or the role's issuer, and a long-term key.
fn by_principal(event: &Value) -> Vec<(Action, String)> {
    let identity = &event["userIdentity"];
    let mut found = Vec::new();
    match identity["type"].as_str() {
        Some("IAMUser") => {
            let Some(user) = identity["userName"].as_str() else { return found };
            found.extend(suggestion("quarantine", &format!("user/{user}"), None, format!("{user} made the calls")));
            // Long-term keys (AKIA…) only: a session's key (ASIA…) ends with its session.
            if let Some(key) = identity["accessKeyId"].as_str().filter(|k| k.starts_with("AKIA")) {
                let why = format!("{user} made the calls with this key");
                found.extend(suggestion("deactivate-access-key", &format!("{user}:{key}"), None, why));
            }
        }
        Some("AssumedRole") => {
            let issuer = &identity["sessionContext"]["sessionIssuer"];
            if let (Some("Role"), Some(role)) = (issuer["type"].as_str(), issuer["userName"].as_str()) {
                let why = format!("a session of role {role} made the calls");
                found.extend(suggestion("quarantine", &format!("role/{role}"), None, why));
            }
        }
        _ => {}
    }
    found
}

/// The rules a ModifySecurityGroupRules request opened: an update that set an exposed source
/// (the internet, a public range). Narrowing a rule, changing its description or setting a
/// private or trusted source leaves a pre-existing rule that is not the caller's to revoke.
fn modified_rules(request: &Value, region: Option<&str>, trusted: &[Cidr]) -> Vec<(Action, String)> {
    use super::principal_ingress::{Update, modification_updates};
    let Some((group, updates)) = modification_updates(request, trusted) else { return Vec::new() };
    updates
        .into_iter()
        .filter_map(|update| match update {
            Update::Opened(rule) => Some(rule.rule_id),
            _ => None,
        })
        .filter_map(|id| {
            let why = "the rule ModifySecurityGroupRules widened to an exposed source (undo restores it widened)";
            suggestion("revoke-ingress-rule", &format!("{group}:{id}"), region, why.into())
        })
        .collect()
}

/// What the call created or changed.
fn by_call(event: &Value, trusted: &[Cidr]) -> Vec<(Action, String)> {
    // A refused call changed nothing (recon alerts keep them as evidence): nothing to undo.
    if !event["errorCode"].is_null() {
        return Vec::new();
    }
    let (request, response) = (&event["requestParameters"], &event["responseElements"]);
    let region = event["awsRegion"].as_str();
    let name = event["eventName"].as_str().unwrap_or_default();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut found = Vec::new();
    match name {
        "AuthorizeSecurityGroupIngress" => {
            for rule in response["securityGroupRuleSet"]["items"].as_array().into_iter().flatten() {
                // An egress rule, or one to a private or trusted source (created in the same call
                // as an opening to the world, say), opened nothing: automatic containment must
                // not revoke the office's rule. An item naming no source cannot be judged: kept.
                let exposed = super::principal_ingress::item_exposed(rule, trusted);
                if rule["isEgress"] == Value::Bool(true) || exposed == Some(false) {
                    continue;
                }
                if let Some(id) = rule["securityGroupRuleId"].as_str() {
                    let why = format!("the rule opened by {name}");
                    found.extend(suggestion("revoke-ingress-rule", id, region, why));
                }
            }
        }
        "ModifySecurityGroupRules" => found.extend(modified_rules(request, region, trusted)),
        "CreateAccessKey" => {
            let key = &response["accessKey"];
            if let (Some(user), Some(id)) = (text(&key["userName"]), text(&key["accessKeyId"])) {
                let why = "the access key the alert's events created".to_owned();
                found.extend(suggestion("deactivate-access-key", &format!("{user}:{id}"), None, why));
            }
        }
        "CreateLoginProfile" | "UpdateLoginProfile" => {
            if let Some(user) = text(&request["userName"]) {
                found.extend(suggestion("delete-login-profile", &user, None, format!("{name} set its password")));
            }
        }
        "CreateUser" | "AttachUserPolicy" | "PutUserPolicy" | "AddUserToGroup" => {
            if let Some(user) = text(&request["userName"]) {
                found.extend(suggestion("quarantine", &format!("user/{user}"), None, format!("{name} on this user")));
            }
        }
        "AttachRolePolicy" => {
            if let (Some(role), Some(policy)) = (text(&request["roleName"]), text(&request["policyArn"])) {
                let why = "the policy the alert's events attached".to_owned();
                found.extend(suggestion("detach-role-policy", &format!("{role}:{policy}"), None, why));
            }
        }
        "AssociateIamInstanceProfile" => {
            let instance = text(&request["AssociateIamInstanceProfileRequest"]["InstanceId"])
                .or_else(|| text(&request["instanceId"]));
            if let Some(instance) = instance {
                let why = "the profile the alert's events associated".to_owned();
                found.extend(suggestion("disassociate-instance-profile", &instance, region, why));
                let why = "the instance that received the profile (snapshots first)".to_owned();
                found.extend(suggestion("stop-instance", &instance, region, why));
            }
        }
        "RunInstances" => {
            for item in response["instancesSet"]["items"].as_array().into_iter().flatten() {
                if let Some(instance) = item["instanceId"].as_str() {
                    let why = "an instance the alert's events launched".to_owned();
                    found.extend(suggestion("stop-instance", instance, region, why));
                }
            }
        }
        "StopLogging" => {
            if let Some(trail) = text(&request["name"]) {
                found.extend(suggestion("start-logging", &trail, region, "the trail StopLogging stopped".into()));
            }
        }
        _ => {}
    }
    found
}

/// The actions that fit these events, each once, what they changed first; `trusted`: the
/// detector's trusted ranges (a rule widened to one of them opened nothing).
pub fn from_events(events: &[Value], trusted: &[Cidr]) -> Vec<Suggestion> {
    let found = events.iter().flat_map(|e| by_call(e, trusted)).chain(events.iter().flat_map(by_principal));
    let mut suggestions: Vec<Suggestion> = Vec::new();
    for (action, why) in found {
        let target = action.target();
        if suggestions.iter().any(|s| s.kind == action.kind() && s.target == target) {
            continue;
        }
        let region = Some(action.region().to_owned()).filter(|r| r != crate::aws::GLOBAL_REGION);
        suggestions.push(Suggestion { kind: action.kind(), target, region, why, undo: action.undo(), note: None });
    }
    suggestions
}

/// "Revoke every rule opened by" each principal of the events who opened ingress rules in the
/// account (any of its events within the lookback, not only the alert's): one indexed row read
/// each, on every alert page. A failed read is a note on that suggestion, never an error for all.
async fn principal_ingress(pool: &PgPool, account_id: &str, events: &[Value]) -> Vec<Suggestion> {
    let mut principals: Vec<Principal> = Vec::new();
    for (action, _) in events.iter().flat_map(by_principal) {
        if let Action::Quarantine { principal } = action
            && !principals.iter().any(|p| p.label().eq_ignore_ascii_case(&principal.label()))
        {
            principals.push(principal);
        }
    }
    let mut found = Vec::new();
    for principal in principals {
        let note = match super::principal_ingress::opened_any(pool, account_id, &principal).await {
            Ok(false) => continue,
            Ok(true) => None,
            Err(error) => {
                tracing::warn!(account_id, principal = %principal.label(), error = %error,
                    "suggestions: could not check the principal's ingress rules");
                Some(format!("could not check whether it opened ingress rules ({error}): the dry run will tell"))
            }
        };
        let action = Action::RevokePrincipalIngress { principal };
        let why = format!(
            "every security-group ingress rule {} opened (its AuthorizeSecurityGroupIngress events, and its ModifySecurityGroupRules updates that set an exposed source, of the last {} days): \
             the dry run lists those still there",
            action.target(),
            super::principal_ingress::LOOKBACK_DAYS
        );
        found.push(Suggestion {
            kind: action.kind(),
            target: action.target(),
            region: None,
            why,
            undo: action.undo(),
            note,
        });
    }
    found
}

/// The actions for one alert; none if there is no such alert. `trusted`: as for [`from_events`].
pub async fn for_alert(pool: &PgPool, alert_id: &str, trusted: &[Cidr]) -> Result<Option<Applicable>, RespondError> {
    if !crate::model::is_alert_id(alert_id) {
        return Ok(None);
    }
    let account =
        sqlx::query_scalar!("SELECT account_id FROM alerts WHERE alert_id = $1::text::uuid LIMIT 1", alert_id)
            .fetch_optional(pool)
            .await?;
    let Some(account_id) = account else { return Ok(None) };
    let events = sqlx::query_scalar!(
        "SELECT c.raw FROM alert_evidence e
         JOIN cloudtrail_events c ON c.account_id = e.account_id AND c.event_id = e.event_id AND c.event_time = e.event_time
         WHERE e.account_id = $1 AND e.alert_id = $2::text::uuid
         ORDER BY e.event_time, e.event_id LIMIT $3",
        account_id,
        alert_id,
        MAX_EVENTS
    )
    .fetch_all(pool)
    .await?;
    let enabled = responder::load(pool, &account_id).await?.is_some();
    let mut actions = from_events(&events, trusted);
    actions.extend(principal_ingress(pool, &account_id, &events).await);
    Ok(Some(Applicable {
        alert_id: alert_id.to_owned(),
        enable_command: (!enabled).then(|| responder::enable_command(&account_id)),
        enabled,
        actions,
        recorded: record::list(pool, None, Some(alert_id), 100).await?,
        account_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alice(name: &str, request: Value, response: Value) -> Value {
        json!({"eventName": name, "awsRegion": "us-east-1", "requestParameters": request, "responseElements": response,
               "userIdentity": {"type": "IAMUser", "userName": "alice", "accessKeyId": "ASIALGDLZ7HWJPHKB6HS"}})
    }

    #[test]
    fn the_seed_story_suggests_its_containment() {
        let events = [
            alice(
                "AuthorizeSecurityGroupIngress",
                json!({}),
                json!({"securityGroupRuleSet": {"items": [{"securityGroupRuleId": "sgr-b275960434d835529", "isEgress": false}]}}),
            ),
            alice(
                "CreateAccessKey",
                json!({"userName": "backup-admin"}),
                json!({"accessKey": {"userName": "backup-admin", "accessKeyId": "AKIAGM2TL5PQ3IYMYB7F"}}),
            ),
            alice(
                "StopLogging",
                json!({"name": "arn:aws:cloudtrail:us-east-1:111122223333:trail/management-trail"}),
                Value::Null,
            ),
            alice(
                "AttachRolePolicy",
                json!({"roleName": "ssm", "policyArn": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}),
                Value::Null,
            ),
        ];
        let found: Vec<(&str, String)> = from_events(&events, &[]).iter().map(|s| (s.kind, s.target.clone())).collect();
        assert_eq!(
            found,
            [
                ("revoke-ingress-rule", "sgr-b275960434d835529".to_owned()),
                ("deactivate-access-key", "backup-admin:AKIAGM2TL5PQ3IYMYB7F".to_owned()),
                ("start-logging", "arn:aws:cloudtrail:us-east-1:111122223333:trail/management-trail".to_owned()),
                ("detach-role-policy", "ssm:arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore".to_owned()),
                ("quarantine", "user/alice".to_owned()),
            ],
            "a session key (ASIA…) is not suggested, and alice is quarantined once"
        );
    }

    fn modify(updates: Value) -> Value {
        alice(
            "ModifySecurityGroupRules",
            json!({"ModifySecurityGroupRulesRequest": {"GroupId": "sg-0000000000000000f", "SecurityGroupRule": updates}}),
            json!({"ModifySecurityGroupRulesResponse": {"return": true}}),
        )
    }

    #[test]
    fn an_authorized_rule_to_a_private_or_trusted_source_is_not_suggested() {
        let item = |id: &str, source: Value| {
            let mut item = json!({"securityGroupRuleId": id, "groupId": "sg-0000000000000000f", "isEgress": false,
                                  "ipProtocol": "tcp", "fromPort": 22, "toPort": 22});
            item.as_object_mut().unwrap().extend(source.as_object().unwrap().clone());
            item
        };
        let authorized = alice(
            "AuthorizeSecurityGroupIngress",
            json!({}),
            json!({"securityGroupRuleSet": {"items": [
                item("sgr-000000000000000a1", json!({"cidrIpv4": "0.0.0.0/0"})),
                item("sgr-000000000000000a2", json!({"cidrIpv4": "81.2.69.0/24"})),
                item("sgr-000000000000000a3", json!({"cidrIpv4": "10.0.0.0/8"})),
                item("sgr-000000000000000a4", json!({"referencedGroupInfo": {"groupId": "sg-1"}})),
                item("sgr-000000000000000a5", json!({"cidrIpv4": "0.0.0.0/1"})),
                item("sgr-000000000000000a6", json!({})),
            ]}}),
        );
        let trusted: Vec<Cidr> = vec!["81.2.69.0/24".parse().unwrap()];
        let ids: Vec<String> = from_events(std::slice::from_ref(&authorized), &trusted)
            .into_iter()
            .filter(|s| s.kind == "revoke-ingress-rule")
            .map(|s| s.target)
            .collect();
        assert_eq!(
            ids,
            ["sgr-000000000000000a1", "sgr-000000000000000a5", "sgr-000000000000000a6"],
            "the world, a /1 and an item naming no source; not the office, 10/8 or a group"
        );
        assert_eq!(revokes(&[authorized]).len(), 4, "without trusted ranges the office /24 is exposed");
    }

    fn revokes(events: &[Value]) -> Vec<String> {
        from_events(events, &[]).into_iter().filter(|s| s.kind == "revoke-ingress-rule").map(|s| s.target).collect()
    }

    #[test]
    fn a_modification_suggests_only_the_rules_it_opened() {
        let event = modify(json!([
            {"SecurityGroupRuleId": "sgr-0000000000000000a", "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"}},
            {"SecurityGroupRuleId": "sgr-0000000000000000b", "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
                                                                   "CidrIpv4": "10.0.0.0/8", "Description": "office"}},
        ]));
        assert_eq!(
            revokes(&[event]),
            ["sg-0000000000000000f:sgr-0000000000000000a"],
            "the office rule's description change opened nothing"
        );
    }

    #[test]
    fn refused_calls_suggest_nothing_they_would_have_changed() {
        let mut modified = modify(json!({"SecurityGroupRuleId": "sgr-0000000000000000a",
            "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"}}));
        assert_eq!(revokes(std::slice::from_ref(&modified)), ["sg-0000000000000000f:sgr-0000000000000000a"]);
        modified["errorCode"] = json!("Client.UnauthorizedOperation");
        let mut authorized = alice(
            "AuthorizeSecurityGroupIngress",
            json!({"groupId": "sg-1"}),
            json!({"securityGroupRuleSet": {"items": [{"securityGroupRuleId": "sgr-0000000000000000b", "isEgress": false}]}}),
        );
        authorized["errorCode"] = json!("Client.InvalidPermission.Duplicate");
        let found = from_events(&[modified, authorized], &[]);
        assert!(found.iter().all(|s| s.kind != "revoke-ingress-rule"), "{found:?}");
        assert!(found.iter().any(|s| s.kind == "quarantine"), "the caller still tried");
    }
}
