//! Response actions against moto with the real aws-sdk clients: each action changes its
//! resource as intended and its undo restores the recorded state; dry runs change nothing; a
//! protected resource, an account without a responder role and a held lease are refused; a
//! replayed idempotency key does nothing twice; a viewer gets 403 from the API.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use skywarden::accounts::{self, NewAccount, PollIntervals, responder};
use skywarden::auth::{self, Role};
use skywarden::aws::AccountSession;
use skywarden::http::{ApiContext, router};
use skywarden::respond::run::{self, ApplyRequest, ResponseContext};
use skywarden::respond::{Action, RespondError, ResponseRecord};

use crate::support::TestDb;
use crate::support::aws as fake;

pub const REGION: &str = "us-east-1";
const DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

/// A database, an onboarded account with a responder role, the context, and the owner's
/// clients to set up and inspect moto's state.
pub(crate) struct Setup {
    pub db: TestDb,
    pub ctx: ResponseContext,
    pub account: String,
    pub owner: AccountSession,
}

/// AWSDenyAll, which quarantine attaches, is in every AWS account; moto has AWS's managed
/// policies only when started with MOTO_IAM_LOAD_MANAGED_POLICIES=true (as `make test` does).
pub async fn assert_deny_all(owner: &AccountSession) {
    let found = owner.iam().get_policy().policy_arn(DENY_ALL).send().await;
    assert!(found.is_ok(), "moto has no AWSDenyAll: start moto_server with MOTO_IAM_LOAD_MANAGED_POLICIES=true");
}

/// The dashboard users the tests act as: `user:analyst` asks, `user:lead` and `user:other`
/// approve or undo.
pub async fn people(pool: &sqlx::PgPool) {
    for name in ["analyst", "lead", "other"] {
        auth::users::create(pool, name, "correct horse battery staple", Role::Analyst).await.unwrap();
    }
}

pub(crate) async fn setup(with_responder: bool) -> Setup {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    people(&db.pool).await;
    let settings = fake::settings_for(moto);
    let base = settings.load().await;
    let account = fake::random_account_id();
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account}:role/SkywardenReadOnly"),
        regions: vec![REGION.into()],
        ..Default::default()
    };
    let onboarded = accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.unwrap();
    if with_responder {
        let role = format!("arn:aws:iam::{account}:role/SkywardenResponder");
        let external_id = responder::set(&db.pool, &account, &role, None).await.unwrap();
        assert!(external_id.starts_with("skywarden-"));
        // Deployed with AllowGrantingUndo=true; respond_safety shows the refusal without it.
        assert!(responder::set_granting_undo(&db.pool, &account, true).await.unwrap());
    }
    let owner = AccountSession::assume(&base, &settings, &onboarded.assume_target()).await.unwrap();
    assert_deny_all(&owner).await;
    let ctx = ResponseContext { pool: db.pool.clone(), settings, base };
    Setup { db, ctx, account, owner }
}

impl Setup {
    pub fn request(&self, action: Action, key: &str) -> ApplyRequest {
        ApplyRequest {
            account_id: self.account.clone(),
            action,
            actor: "user:analyst".into(),
            reason: "contain the intrusion".into(),
            idempotency_key: key.into(),
            alert_id: None,
            automatic_rule: None,
        }
    }

    pub async fn apply(&self, action: Action, key: &str) -> Result<ResponseRecord, RespondError> {
        run::apply(&self.ctx, &self.request(action, key)).await
    }

    pub async fn audit(&self, action: &str) -> Vec<Value> {
        sqlx::query_scalar("SELECT details FROM audit_log WHERE action = $1 ORDER BY id")
            .bind(action)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    /// A security group with one ingress rule from `cidr` on port 22; (group id, rule id).
    pub async fn open_ssh(&self, cidr: &str) -> (String, String) {
        use aws_sdk_ec2::types::{IpPermission, IpRange};
        let ec2 = self.owner.ec2(REGION);
        let vpc = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
        let group = ec2
            .create_security_group()
            .group_name(format!("web-{}", &cidr[..3]))
            .description("web")
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .group_id
            .unwrap();
        let permission = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(22)
            .to_port(22)
            .ip_ranges(IpRange::builder().cidr_ip(cidr).description("opened by alice").build())
            .build();
        let answer =
            ec2.authorize_security_group_ingress().group_id(&group).ip_permissions(permission).send().await.unwrap();
        let rule = answer.security_group_rules()[0].security_group_rule_id().unwrap().to_owned();
        (group, rule)
    }

    /// The ingress rules of a group as (protocol, from, to, cidr, description).
    pub async fn ingress(&self, group: &str) -> Vec<(String, i32, i32, String, String)> {
        use aws_sdk_ec2::types::Filter;
        let answer = self
            .owner
            .ec2(REGION)
            .describe_security_group_rules()
            .filters(Filter::builder().name("group-id").values(group).build())
            .send()
            .await
            .unwrap();
        answer
            .security_group_rules()
            .iter()
            .filter(|r| r.is_egress() == Some(false))
            .map(|r| {
                (
                    r.ip_protocol().unwrap_or_default().to_owned(),
                    r.from_port().unwrap_or_default(),
                    r.to_port().unwrap_or_default(),
                    r.cidr_ipv4().unwrap_or_default().to_owned(),
                    r.description().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

pub fn ssh_rule(cidr: &str) -> (String, i32, i32, String, String) {
    ("tcp".to_owned(), 22, 22, cidr.to_owned(), "opened by alice".to_owned())
}

pub fn revoke(rule: &str) -> Action {
    Action::parse("revoke-ingress-rule", rule, Some(REGION)).unwrap()
}

#[tokio::test]
async fn a_revoked_rule_is_re_authorized_exactly_and_a_replayed_key_does_nothing_twice() {
    let s = setup(true).await;
    let (group, rule) = s.open_ssh("198.51.100.7/32").await;
    let opened = s.ingress(&group).await;
    assert_eq!(opened, [ssh_rule("198.51.100.7/32")]);

    let plan = run::plan(&s.ctx, &s.account, &revoke(&rule)).await.unwrap();
    assert!(plan.changes && !plan.protected);
    assert_eq!(plan.calls.len(), 1);
    assert_eq!(plan.calls[0].operation, "ec2:RevokeSecurityGroupIngress");
    assert_eq!(plan.calls[0].params, json!({"GroupId": group, "SecurityGroupRuleIds": [rule]}));
    assert_eq!(plan.current["cidr_ipv4"], "198.51.100.7/32");
    assert_eq!(s.ingress(&group).await, opened, "the dry run changed nothing");

    let applied = s.apply(revoke(&rule), "revoke-ssh-0001").await.unwrap();
    assert_eq!(applied.status, "applied", "{applied:?}");
    assert_eq!(applied.state_before.as_ref().unwrap()["from_port"], 22);
    assert!(s.ingress(&group).await.is_empty(), "the rule is revoked");
    assert_eq!(applied.calls.as_array().unwrap().len(), 1);

    // The same request again (a double click, a retried POST): the first record, no call.
    let replayed = s.apply(revoke(&rule), "revoke-ssh-0001").await.unwrap();
    assert_eq!((replayed.id.as_str(), replayed.calls.as_array().unwrap().len()), (applied.id.as_str(), 1));
    assert_eq!(s.db.count("SELECT count(*) FROM response_actions").await, 1);
    // The same key for another action is refused.
    let other = s.apply(Action::parse("quarantine", "user/alice", None).unwrap(), "revoke-ssh-0001").await;
    assert!(matches!(other, Err(RespondError::KeyReused(_))), "{other:?}");

    let undone = run::undo(&s.ctx, &applied.id, "user:lead", "false positive: our bastion").await.unwrap();
    assert_eq!(undone.status, "undone");
    assert_eq!(s.ingress(&group).await, opened, "exactly the recorded rule is back");
    let again = run::undo(&s.ctx, &applied.id, "user:lead", "twice").await.unwrap();
    assert_eq!(again.undone_at, undone.undone_at, "a second undo does nothing");

    let audit = s.audit("response.apply").await;
    assert_eq!(audit.len(), 1, "a replay is not a second action");
    assert_eq!(audit[0]["calls"][0]["operation"], "ec2:RevokeSecurityGroupIngress");
    assert_eq!(audit[0]["reason"], "contain the intrusion");
    assert_eq!(s.audit("response.undo").await[0]["calls"][0]["operation"], "ec2:AuthorizeSecurityGroupIngress");
}

#[tokio::test]
async fn keys_passwords_and_principals_are_contained_and_restored_where_possible() {
    let s = setup(true).await;
    let iam = s.owner.iam();
    iam.create_user().user_name("backup-admin").send().await.unwrap();
    let key = iam.create_access_key().user_name("backup-admin").send().await.unwrap();
    let key_id = key.access_key().unwrap().access_key_id().to_owned();
    let password = "Tr0ub4dor&3-horse-staple";
    iam.create_login_profile().user_name("backup-admin").password(password).send().await.unwrap();
    let key_status = async || {
        let keys = iam.list_access_keys().user_name("backup-admin").send().await.unwrap();
        keys.access_key_metadata()[0].status().unwrap().as_str().to_owned()
    };

    let deactivate = Action::parse("deactivate-access-key", &format!("backup-admin:{key_id}"), None).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &deactivate).await.unwrap();
    assert_eq!((plan.current["status"].as_str(), plan.calls[0].operation), (Some("Active"), "iam:UpdateAccessKey"));
    assert_eq!(key_status().await, "Active", "the dry run changed nothing");
    let applied = s.apply(deactivate.clone(), "deactivate-key-1").await.unwrap();
    assert_eq!(key_status().await, "Inactive");
    run::undo(&s.ctx, &applied.id, "user:lead", "key rotated instead").await.unwrap();
    assert_eq!(key_status().await, "Active");

    let delete = Action::parse("delete-login-profile", "backup-admin", None).unwrap();
    let applied = s.apply(delete, "delete-password-1").await.unwrap();
    assert_eq!(applied.state_before.as_ref().unwrap()["exists"], true);
    let gone = iam.get_login_profile().user_name("backup-admin").send().await;
    assert!(gone.is_err(), "the console password is deleted");
    let no_undo = run::undo(&s.ctx, &applied.id, "user:lead", "oops").await;
    assert!(matches!(no_undo, Err(RespondError::NoUndo { .. })), "{no_undo:?}");

    for (principal, key) in [("user/backup-admin", "quarantine-user-1"), ("role/ci-deploy", "quarantine-role-1")] {
        if principal.starts_with("role/") {
            let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
            iam.create_role().role_name("ci-deploy").assume_role_policy_document(trust).send().await.unwrap();
        }
        let quarantine = Action::parse("quarantine", principal, None).unwrap();
        let applied = s.apply(quarantine, key).await.unwrap();
        let user = principal.starts_with("user/");
        assert_eq!(applied.calls[0]["operation"], if user { "iam:AttachUserPolicy" } else { "iam:AttachRolePolicy" });
        assert_eq!(applied.calls[0]["params"]["PolicyArn"], DENY_ALL);
        let attached = async || {
            let arns: Vec<String> = match principal.split_once('/').unwrap() {
                ("user", name) => {
                    iam.list_attached_user_policies().user_name(name).send().await.unwrap().attached_policies().to_vec()
                }
                (_, name) => {
                    iam.list_attached_role_policies().role_name(name).send().await.unwrap().attached_policies().to_vec()
                }
            }
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_owned))
            .collect();
            arns
        };
        assert_eq!(attached().await, [DENY_ALL], "AWS's managed AWSDenyAll is attached");
        let inline = match principal.split_once('/').unwrap() {
            ("user", name) => iam.list_user_policies().user_name(name).send().await.unwrap().policy_names().to_vec(),
            (_, name) => iam.list_role_policies().role_name(name).send().await.unwrap().policy_names().to_vec(),
        };
        assert!(inline.is_empty(), "no inline policy is written: {inline:?}");
        run::undo(&s.ctx, &applied.id, "user:lead", "contained otherwise").await.unwrap();
        assert!(attached().await.is_empty(), "exactly AWSDenyAll is detached");
    }
    let audit: Vec<Value> = sqlx::query_scalar("SELECT details FROM audit_log WHERE action LIKE 'response.%'")
        .fetch_all(&s.db.pool)
        .await
        .unwrap();
    assert!(audit.len() >= 6 && !Value::Array(audit).to_string().contains(password));
}

#[tokio::test]
async fn role_policies_profiles_instances_and_trails() {
    use aws_sdk_ec2::types::{IamInstanceProfileSpecification, InstanceStateName};
    let s = setup(true).await;
    let iam = s.owner.iam();
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role().role_name("ssm").assume_role_policy_document(trust).send().await.unwrap();
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    let arn = iam.create_policy().policy_name("wide").policy_document(policy).send().await.unwrap();
    let policy_arn = arn.policy().unwrap().arn().unwrap().to_owned();
    iam.attach_role_policy().role_name("ssm").policy_arn(&policy_arn).send().await.unwrap();
    let attached =
        async || iam.list_attached_role_policies().role_name("ssm").send().await.unwrap().attached_policies().len();

    let detach = Action::parse("detach-role-policy", &format!("ssm:{policy_arn}"), None).unwrap();
    let applied = s.apply(detach, "detach-policy-1").await.unwrap();
    assert_eq!(attached().await, 0);
    run::undo(&s.ctx, &applied.id, "user:lead", "needed").await.unwrap();
    assert_eq!(attached().await, 1, "re-attached");

    // An instance with the role's profile.
    let profile = iam.create_instance_profile().instance_profile_name("ssm").send().await.unwrap();
    let profile_arn = profile.instance_profile().unwrap().arn().to_owned();
    iam.add_role_to_instance_profile().instance_profile_name("ssm").role_name("ssm").send().await.unwrap();
    let ec2 = s.owner.ec2(REGION);
    let launched = ec2.run_instances().image_id("ami-12c6146b").min_count(1).max_count(1).send().await.unwrap();
    let instance = launched.instances()[0].instance_id().unwrap().to_owned();
    let spec = IamInstanceProfileSpecification::builder().arn(&profile_arn).build();
    ec2.associate_iam_instance_profile().instance_id(&instance).iam_instance_profile(spec).send().await.unwrap();
    let profile_of = async || {
        let answer = ec2.describe_iam_instance_profile_associations().send().await.unwrap();
        answer
            .iam_instance_profile_associations()
            .iter()
            .filter(|a| a.instance_id() == Some(instance.as_str()))
            .filter_map(|a| a.iam_instance_profile().and_then(|p| p.arn()).map(str::to_owned))
            .collect::<Vec<_>>()
    };

    let disassociate = Action::parse("disassociate-instance-profile", &instance, Some(REGION)).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &disassociate).await.unwrap();
    assert_eq!(plan.current["profile_arn"], profile_arn.as_str());
    assert_eq!(profile_of().await, [profile_arn.as_str()], "the dry run changed nothing");
    let applied = s.apply(disassociate, "disassociate-1").await.unwrap();
    assert!(profile_of().await.is_empty());
    run::undo(&s.ctx, &applied.id, "user:lead", "restore").await.unwrap();
    assert_eq!(profile_of().await, [profile_arn.as_str()], "the recorded profile is back");

    let state_of = async || {
        let answer = ec2.describe_instances().instance_ids(&instance).send().await.unwrap();
        answer.reservations()[0].instances()[0].state().unwrap().name().unwrap().clone()
    };
    let stop = Action::parse("stop-instance", &instance, Some(REGION)).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &stop).await.unwrap();
    let volumes = plan.current["volumes"].as_array().unwrap().len();
    assert!(volumes >= 1, "{plan:?}");
    assert_eq!(plan.calls.len(), volumes + 2);
    assert_eq!(plan.calls[volumes].operation, "ec2:CreateTags");
    assert_eq!(plan.calls.last().unwrap().operation, "ec2:StopInstances");
    assert_eq!(state_of().await, InstanceStateName::Running, "the dry run changed nothing");
    let applied = s.apply(stop, "stop-instance-1").await.unwrap();
    let snapshots = applied.state_after.as_ref().unwrap()["snapshots"].as_array().unwrap().clone();
    assert_eq!(snapshots.len(), volumes);
    let snapshot_id = snapshots[0]["snapshot_id"].as_str().unwrap();
    let found = ec2.describe_snapshots().snapshot_ids(snapshot_id).send().await.unwrap();
    let tags = found.snapshots()[0].tags();
    assert!(
        tags.iter().any(|t| t.key() == Some("skywarden:response-action") && t.value() == Some(applied.id.as_str()))
    );
    assert!(matches!(state_of().await, InstanceStateName::Stopped | InstanceStateName::Stopping));
    // The tag the responder role's StartInstances is conditioned on (the undo of a stop).
    let described = ec2.describe_instances().instance_ids(&instance).send().await.unwrap();
    let instance_tags = described.reservations()[0].instances()[0].tags();
    assert!(
        instance_tags
            .iter()
            .any(|t| t.key() == Some("skywarden:stopped-by-response") && t.value() == Some(applied.id.as_str())),
        "{instance_tags:?}"
    );
    run::undo(&s.ctx, &applied.id, "user:lead", "forensics done").await.unwrap();
    assert!(matches!(state_of().await, InstanceStateName::Running | InstanceStateName::Pending));

    // A trail someone stopped.
    let bucket = format!("trail-{}", s.account);
    s.owner.s3(REGION).create_bucket().bucket(&bucket).send().await.unwrap();
    let trails = s.owner.cloudtrail(REGION);
    trails.create_trail().name("main").s3_bucket_name(&bucket).send().await.unwrap();
    trails.start_logging().name("main").send().await.unwrap();
    trails.stop_logging().name("main").send().await.unwrap();
    let logging = async || trails.get_trail_status().name("main").send().await.unwrap().is_logging();
    let start = Action::parse("start-logging", "main", Some(REGION)).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &start).await.unwrap();
    assert_eq!((plan.changes, plan.calls[0].operation), (true, "cloudtrail:StartLogging"));
    assert_eq!(logging().await, Some(false), "the dry run changed nothing");
    let applied = s.apply(start.clone(), "start-logging-1").await.unwrap();
    assert_eq!(logging().await, Some(true));
    assert!(matches!(run::undo(&s.ctx, &applied.id, "user:lead", "x").await, Err(RespondError::NoUndo { .. })));
    // Already logging: applied with nothing called.
    let again = s.apply(start, "start-logging-2").await.unwrap();
    assert_eq!((again.status.as_str(), again.calls.as_array().unwrap().len()), ("applied", 0));
}

#[tokio::test]
async fn protected_resources_accounts_without_a_responder_and_held_leases_are_refused() {
    let s = setup(true).await;
    let (group, rule) = s.open_ssh("203.0.113.9/32").await;
    let ec2 = s.owner.ec2(REGION);
    let tag = aws_sdk_ec2::types::Tag::builder().key("skywarden:protected").value("bastion").build();
    ec2.create_tags().resources(&group).tags(tag).send().await.unwrap();
    let plan = run::plan(&s.ctx, &s.account, &revoke(&rule)).await.unwrap();
    assert!(plan.protected);
    let refused = s.apply(revoke(&rule), "protected-0001").await;
    assert!(matches!(refused, Err(RespondError::Protected { .. })), "{refused:?}");
    assert_eq!(s.ingress(&group).await.len(), 1, "the protected rule stays");
    let status: String = sqlx::query_scalar("SELECT status FROM response_actions").fetch_one(&s.db.pool).await.unwrap();
    assert_eq!(status, "failed", "the refusal is on the record");

    let iam = s.owner.iam();
    let protected = aws_sdk_iam::types::Tag::builder().key("skywarden:protected").value("break-glass").build().unwrap();
    iam.create_user().user_name("break-glass").tags(protected).send().await.unwrap();
    let quarantine = Action::parse("quarantine", "user/break-glass", None).unwrap();
    assert!(matches!(s.apply(quarantine, "protected-0002").await, Err(RespondError::Protected { .. })));
    assert!(
        iam.list_attached_user_policies().user_name("break-glass").send().await.unwrap().attached_policies().is_empty()
    );

    // A lease held by a running action on the same resource (another user, another kind).
    iam.create_user().user_name("mallory").send().await.unwrap();
    sqlx::query(
        "INSERT INTO response_actions (account_id, region, kind, target, resource, params, status, actor, reason,
                                       idempotency_key, lease_owner, lease_expires_at)
         VALUES ($1, 'global', 'delete-login-profile', 'mallory', 'iam/user/mallory', '{}', 'planned', 'user:other',
                 'running', 'held-lease-0001', 'someone', now() + interval '5 minutes')",
    )
    .bind(&s.account)
    .execute(&s.db.pool)
    .await
    .unwrap();
    let busy = s.apply(Action::parse("quarantine", "user/mallory", None).unwrap(), "busy-00000001").await;
    assert!(matches!(busy, Err(RespondError::Busy { .. })), "{busy:?}");
    assert!(
        iam.list_attached_user_policies().user_name("mallory").send().await.unwrap().attached_policies().is_empty()
    );

    // Without a responder role nothing runs, and the answer says how to enable it.
    responder::clear(&s.db.pool, &s.account).await.unwrap();
    let (_, rule2) = s.open_ssh("192.0.2.1/32").await;
    let refused = s.apply(revoke(&rule2), "no-responder-1").await;
    match refused {
        Err(error @ RespondError::NotEnabled { .. }) => {
            assert!(error.to_string().contains("skywarden accounts responder set"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(run::plan(&s.ctx, &s.account, &revoke(&rule2)).await, Err(RespondError::NotEnabled { .. })));
}

pub async fn api(
    context: &ApiContext,
    method: &str,
    uri: &str,
    token: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {token}"));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = match body {
        Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router(context.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_lets_analysts_act_with_a_reason_and_key_and_refuses_viewers() {
    let s = setup(true).await;
    let context = ApiContext::new(s.db.pool.clone()).with_aws(s.ctx.settings.clone(), s.ctx.base.clone());
    let (_, viewer) = auth::create(&s.db.pool, "wallboard", Role::Viewer).await.unwrap();
    let (_, analyst) = auth::create(&s.db.pool, "tier-1", Role::Analyst).await.unwrap();
    let (group, rule) = s.open_ssh("198.51.100.99/32").await;
    let body = json!({"account_id": s.account, "kind": "revoke-ingress-rule", "target": rule, "region": REGION});

    for uri in ["/api/v1/responses/plan", "/api/v1/responses"] {
        let (status, _) = api(&context, "POST", uri, &viewer, Some("viewer-key-01"), Some(body.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
    }
    let (status, plan) = api(&context, "POST", "/api/v1/responses/plan", &analyst, None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["calls"][0]["operation"], "ec2:RevokeSecurityGroupIngress");
    assert_eq!(s.ingress(&group).await.len(), 1);

    let (status, error) =
        api(&context, "POST", "/api/v1/responses", &analyst, Some("api-key-0001"), Some(body.clone())).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("reason")), "{error}");
    let mut with_reason = body.clone();
    with_reason["reason"] = json!("ssh opened to the attacker");
    let (status, error) = api(&context, "POST", "/api/v1/responses", &analyst, None, Some(with_reason.clone())).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("Idempotency-Key")));
    let (status, first) =
        api(&context, "POST", "/api/v1/responses", &analyst, Some("api-key-0001"), Some(with_reason.clone())).await;
    assert_eq!((status, first["status"].as_str()), (StatusCode::CREATED, Some("applied")), "{first}");
    assert!(s.ingress(&group).await.is_empty());
    let (_, replay) =
        api(&context, "POST", "/api/v1/responses", &analyst, Some("api-key-0001"), Some(with_reason.clone())).await;
    assert_eq!(replay["id"], first["id"]);
    // Another caller's key is refused and tells nothing of the action behind it.
    let (_, other) = auth::create(&s.db.pool, "tier-2", Role::Analyst).await.unwrap();
    let (status, error) =
        api(&context, "POST", "/api/v1/responses", &other, Some("api-key-0001"), Some(with_reason)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(!error.to_string().contains(rule.as_str()) && !error.to_string().contains(&s.account), "{error}");

    let id = first["id"].as_str().unwrap();
    let (status, _) =
        api(&context, "POST", &format!("/api/v1/responses/{id}/undo"), &viewer, None, Some(json!({"reason": "x"})))
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, listed) = api(&context, "GET", "/api/v1/responses", &viewer, None, None).await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "viewers read the record");
    let (status, undone) = api(
        &context,
        "POST",
        &format!("/api/v1/responses/{id}/undo"),
        &analyst,
        None,
        Some(json!({"reason": "bastion"})),
    )
    .await;
    assert_eq!((status, undone["status"].as_str()), (StatusCode::OK, Some("undone")), "{undone}");
    assert_eq!(s.ingress(&group).await.len(), 1);
    let audit = s.audit("response.apply").await;
    assert_eq!(audit.len(), 1);
}

#[tokio::test]
async fn an_action_of_a_kind_needing_approval_waits_for_a_second_person() {
    let s = setup(true).await;
    skywarden::respond::record::set_approval(&s.db.pool, "quarantine", true, "user:admin").await.unwrap();
    let iam = s.owner.iam();
    iam.create_user().user_name("alice").send().await.unwrap();
    let policies = async || {
        iam.list_attached_user_policies().user_name("alice").send().await.unwrap().attached_policies().to_vec()
    };

    let asked = s.apply(Action::parse("quarantine", "user/alice", None).unwrap(), "approval-0001").await.unwrap();
    assert_eq!(asked.status, "awaiting_approval");
    assert!(policies().await.is_empty(), "nothing runs before the approval");
    let replayed = s.apply(Action::parse("quarantine", "user/alice", None).unwrap(), "approval-0001").await.unwrap();
    assert_eq!((replayed.id.as_str(), replayed.status.as_str()), (asked.id.as_str(), "awaiting_approval"));

    let same = run::approve(&s.ctx, &asked.id, "user:analyst", "approving my own").await;
    assert!(matches!(same, Err(RespondError::SecondPerson)), "{same:?}");
    assert!(policies().await.is_empty());
    let approved = run::approve(&s.ctx, &asked.id, "user:lead", "confirmed on the bridge call").await.unwrap();
    assert_eq!((approved.status.as_str(), approved.approved_by.as_deref()), ("applied", Some("user:lead")));
    let attached = iam.list_attached_user_policies().user_name("alice").send().await.unwrap();
    assert_eq!(attached.attached_policies()[0].policy_arn(), Some(DENY_ALL));
    let again = run::approve(&s.ctx, &asked.id, "user:other", "late click").await.unwrap();
    assert_eq!(again.applied_at, approved.applied_at, "a second approval runs nothing");

    let audit = s.audit("response.approve").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0]["requested_by"].as_str(), audit[0]["approved_by"].as_str()),
        (Some("user:analyst"), Some("user:lead"))
    );
    // Kinds without the setting run at once.
    let (_, rule) = s.open_ssh("198.51.100.200/32").await;
    assert_eq!(s.apply(revoke(&rule), "no-approval-01").await.unwrap().status, "applied");
}

#[tokio::test]
async fn the_cli_records_the_responder_role_then_plans_applies_and_undoes() {
    let s = setup(false).await;
    let moto = fake::moto_url().await;
    let skywarden = |args: &[&str]| {
        let mut command = crate::support::skywarden_command(&s.db.url);
        command.args(args);
        for (key, value) in fake::aws_env(moto) {
            command.env(key, value);
        }
        command.output().expect("running skywarden")
    };
    let (group, rule) = s.open_ssh("198.51.100.50/32").await;
    let action = ["revoke-ingress-rule", rule.as_str(), "--region", REGION];
    let plan_args = |json: bool| {
        let mut args = vec!["respond", "plan", s.account.as_str()];
        args.extend(action);
        if json {
            args.push("--json");
        }
        args
    };

    let refused = skywarden(&plan_args(false));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("skywarden accounts responder set"), "{stderr}");

    let role = format!("arn:aws:iam::{}:role/SkywardenResponder", s.account);
    let set = skywarden(&["accounts", "responder", "set", &s.account, "--role-arn", &role, "--granting-undo"]);
    let stdout = String::from_utf8_lossy(&set.stdout);
    assert!(set.status.success() && stdout.contains("external ID"), "{stdout}");

    let plan = skywarden(&plan_args(true));
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap_or_else(|e| panic!("{e}: {plan:?}"));
    assert_eq!(plan["calls"][0]["operation"], "ec2:RevokeSecurityGroupIngress");
    assert_eq!(s.ingress(&group).await.len(), 1, "the dry run changed nothing");

    let mut apply = vec!["respond", "apply", s.account.as_str()];
    apply.extend(action);
    assert!(!skywarden(&apply).status.success(), "apply needs --reason");
    apply.extend(["--reason", "ssh opened to the attacker", "--json"]);
    let applied = skywarden(&apply);
    let applied: Value = serde_json::from_slice(&applied.stdout).unwrap_or_else(|e| panic!("{e}: {applied:?}"));
    assert_eq!(applied["status"], "applied");
    assert!(s.ingress(&group).await.is_empty());

    let id = applied["id"].as_str().unwrap();
    let undone = skywarden(&["respond", "undo", id, "--reason", "our bastion", "--json"]);
    let undone: Value = serde_json::from_slice(&undone.stdout).unwrap_or_else(|e| panic!("{e}: {undone:?}"));
    assert_eq!(undone["status"], "undone");
    assert_eq!(s.ingress(&group).await, [ssh_rule("198.51.100.50/32")]);
    let actor: String = sqlx::query_scalar("SELECT actor FROM audit_log WHERE action = 'response.apply'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(actor.starts_with("cli:"), "{actor}");
}
