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
    let ctx = ResponseContext { pool: db.pool.clone(), settings, base, trusted_cidrs: vec![] };
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
    let plan = run::plan(&s.ctx, &s.account, &delete).await.unwrap();
    assert_eq!((plan.changes, plan.calls[0].operation), (true, "iam:DeleteLoginProfile"));
    let kept = iam.get_login_profile().user_name("backup-admin").send().await;
    assert!(kept.is_ok(), "the dry run changed nothing");
    let applied = s.apply(delete, "delete-password-1").await.unwrap();
    assert_eq!(applied.state_before.as_ref().unwrap()["exists"], true);
    // Its audit row masks every member whose name says secret (the login profile's
    // `password_reset_required`), and only there: the record keeps what was read.
    let row: Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'response.apply' AND details->>'action_id' = $1",
    )
    .bind(&applied.id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(row["state_before"]["password_reset_required"], "***", "{row}");
    assert_eq!(
        (row["state_before"]["user_name"].as_str(), row["calls"][0]["operation"].as_str()),
        (Some("backup-admin"), Some("iam:DeleteLoginProfile")),
        "{row}"
    );
    assert_eq!(applied.state_before.as_ref().unwrap()["password_reset_required"], false);
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
        let plan = run::plan(&s.ctx, &s.account, &quarantine).await.unwrap();
        assert!(plan.changes && plan.calls[0].params["PolicyArn"] == DENY_ALL, "{plan:?}");
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
        assert_eq!(attached().await, [DENY_ALL], "AWS's managed AWSDenyAll is attached (by apply, not the dry run)");
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
    let plan = run::plan(&s.ctx, &s.account, &detach).await.unwrap();
    assert_eq!((plan.changes, plan.calls[0].operation), (true, "iam:DetachRolePolicy"));
    assert_eq!(attached().await, 1, "the dry run changed nothing");
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
    let snapshot_count = async || ec2.describe_snapshots().owner_ids("self").send().await.unwrap().snapshots().len();
    let snapshots_before = snapshot_count().await;
    let stop = Action::parse("stop-instance", &instance, Some(REGION)).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &stop).await.unwrap();
    let volumes = plan.current["volumes"].as_array().unwrap().len();
    assert!(volumes >= 1, "{plan:?}");
    assert_eq!(plan.calls.len(), volumes + 2);
    assert_eq!(plan.calls[volumes].operation, "ec2:StopInstances");
    assert_eq!(plan.calls.last().unwrap().operation, "ec2:CreateTags", "tagged only once stopping");
    assert_eq!(state_of().await, InstanceStateName::Running, "the dry run changed nothing");
    assert_eq!(snapshot_count().await, snapshots_before, "the dry run took no snapshot");
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

/// Stores a successful AuthorizeSecurityGroupIngress event of `identity` for the account, with
/// `request` as its requestParameters and the rule ids AWS answered (none: an answer without).
pub async fn store_ingress_event(s: &Setup, id: &str, identity: Value, request: Value, rules: &[(&str, &str)]) {
    let items: Vec<Value> = rules
        .iter()
        .map(|(group, rule)| json!({"groupId": group, "securityGroupRuleId": rule, "isEgress": false}))
        .collect();
    store_event(s, id, identity, request, items, 0, json!({})).await;
}

/// An AuthorizeSecurityGroupIngress event `age_minutes` old whose answer holds `items`, stored as
/// the importer would (region and user_name columns from the record); `overrides` replaces
/// top-level members of the record (another account, another source, a bad region).
pub async fn store_event(
    s: &Setup,
    id: &str,
    identity: Value,
    request: Value,
    items: Vec<Value>,
    age_minutes: i64,
    overrides: Value,
) {
    let response = if items.is_empty() {
        json!({"_return": true})
    } else {
        json!({"_return": true, "securityGroupRuleSet": {"items": items}})
    };
    use skywarden::db::partitions::{PartitionCache, PartitionedTable};
    let mut conn = s.db.pool.acquire().await.unwrap();
    let month = vec![chrono::Utc::now()];
    PartitionCache::default().ensure(&mut conn, PartitionedTable::CloudTrailEvents, month).await.unwrap();
    let user_name = identity["userName"]
        .as_str()
        .or(identity["sessionContext"]["sessionIssuer"]["userName"].as_str())
        .map(str::to_owned);
    let mut raw = json!({"eventID": id, "eventName": "AuthorizeSecurityGroupIngress", "awsRegion": REGION,
                         "eventSource": "ec2.amazonaws.com", "recipientAccountId": s.account, "userIdentity": identity,
                         "requestParameters": request, "responseElements": response});
    for (key, value) in overrides.as_object().into_iter().flatten() {
        raw[key] = value.clone();
    }
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_source, event_name, user_name, raw)
         VALUES ($1, now() - make_interval(mins => $5::int), $2, $3, 'ec2.amazonaws.com', 'AuthorizeSecurityGroupIngress',
                 $6, $4)",
    )
    .bind(&s.account)
    .bind(id)
    .bind(raw["awsRegion"].as_str())
    .bind(&raw)
    .bind(age_minutes as i32)
    .bind(user_name)
    .execute(&s.db.pool)
    .await
    .unwrap();
}

pub fn iam_user(name: &str) -> Value {
    json!({"type": "IAMUser", "userName": name, "accessKeyId": "AKIAIOSFODNN7EXAMPLE"})
}

/// An ingress rule from `cidr` on `port` added to a group; its rule id.
pub async fn add_rule(s: &Setup, group: &str, cidr: &str, port: i32) -> String {
    use aws_sdk_ec2::types::{IpPermission, IpRange};
    let permission = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build();
    let ec2 = s.owner.ec2(REGION);
    let answer =
        ec2.authorize_security_group_ingress().group_id(group).ip_permissions(permission).send().await.unwrap();
    answer.security_group_rules()[0].security_group_rule_id().unwrap().to_owned()
}

/// The record of an idempotency key.
pub async fn by_key(s: &Setup, key: &str) -> ResponseRecord {
    skywarden::respond::record::get_by_key(&s.db.pool, key).await.unwrap().expect("recorded")
}

#[tokio::test]
async fn every_rule_the_principal_opened_is_revoked_as_one_action_and_restored_exactly() {
    let s = setup(true).await;
    let (web, ssh) = s.open_ssh("198.51.100.7/32").await;
    let (db_group, db_ssh) = s.open_ssh("203.0.113.9/32").await;
    let (bastion, kept) = s.open_ssh("192.0.2.44/32").await;
    let https = add_rule(&s, &web, "198.51.100.7/32", 443).await;
    let bobs = add_rule(&s, &web, "192.0.2.10/32", 8080).await;
    let gone = add_rule(&s, &db_group, "203.0.113.9/32", 5432).await;
    let tag = aws_sdk_ec2::types::Tag::builder().key("skywarden:protected").value("bastion").build();
    s.owner.ec2(REGION).create_tags().resources(&bastion).tags(tag).send().await.unwrap();
    s.owner
        .ec2(REGION)
        .revoke_security_group_ingress()
        .group_id(&db_group)
        .security_group_rule_ids(&gone)
        .send()
        .await
        .unwrap();

    // Alice's calls in every request shape: the old single-rule form, by group name, the
    // ipPermissions form with two rules; Bob's rule and an answer without rule ids.
    let legacy =
        json!({"groupId": web, "cidrIp": "198.51.100.7/32", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22});
    store_ingress_event(&s, "ev-1", iam_user("alice"), legacy, &[(&web, &ssh)]).await;
    let by_name = json!({"groupName": "web-203", "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22}]}});
    store_ingress_event(&s, "ev-2", iam_user("Alice"), by_name, &[(&db_group, &db_ssh), (&db_group, &gone)]).await;
    let permissions = json!({"groupId": web, "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 443}]}});
    store_ingress_event(&s, "ev-3", iam_user("alice"), permissions, &[(&web, &https)]).await;
    store_ingress_event(&s, "ev-4", iam_user("alice"), json!({"groupId": bastion}), &[(&bastion, &kept)]).await;
    store_ingress_event(&s, "ev-5", iam_user("bob"), json!({"groupId": web}), &[(&web, &bobs)]).await;
    store_ingress_event(&s, "ev-6", iam_user("alice"), json!({"groupId": web}), &[]).await;
    let sorted = |mut rules: Vec<(String, i32, i32, String, String)>| {
        rules.sort();
        rules
    };
    let before_web = sorted(s.ingress(&web).await);
    let before_db = s.ingress(&db_group).await;

    let action = Action::parse("revoke-principal-ingress", "user/alice", None).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &action).await.unwrap();
    let listed: Vec<(String, bool, bool)> = plan.current["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rule_id"].as_str().unwrap().to_owned(), r["exists"] == json!(true), r["protected"] == json!(true)))
        .collect();
    assert_eq!(
        listed,
        [
            (kept.clone(), true, true),
            (https.clone(), true, false),
            (db_ssh.clone(), true, false),
            (gone.clone(), false, false),
            (ssh.clone(), true, false),
        ],
        "every rule alice opened, newest first, with its state now; not bob's: {}",
        plan.current
    );
    assert_eq!(plan.current["unresolved_events"][0]["event_id"], "ev-6", "an answer without rule ids is said");
    let revoked: Vec<&Value> = plan.calls.iter().map(|c| &c.params["SecurityGroupRuleIds"][0]).collect();
    assert_eq!(revoked, [&json!(https), &json!(db_ssh), &json!(ssh)]);
    let incomplete = plan.current["incomplete"].to_string();
    assert!(incomplete.contains(&kept) && incomplete.contains("unresolved"), "{incomplete}");
    assert!(plan.changes && !plan.protected);
    assert_eq!(sorted(s.ingress(&web).await), before_web, "the dry run changed nothing");

    // The protected rule and the event without rule ids are left: recorded failed (partial), never
    // applied, with what was revoked on the record.
    let refused = s.apply(action.clone(), "alice-ingress-0001").await.expect_err("partial");
    assert!(refused.to_string().starts_with("partial:") && refused.to_string().contains(&kept), "{refused}");
    let applied = by_key(&s, "alice-ingress-0001").await;
    assert_eq!(applied.status, "failed", "{applied:?}");
    let web_left: Vec<i32> = s.ingress(&web).await.iter().map(|r| r.1).collect();
    assert_eq!(web_left, [8080], "only bob's rule is left in web");
    assert!(s.ingress(&db_group).await.is_empty());
    assert_eq!(s.ingress(&bastion).await.len(), 1, "the protected group is left alone");
    let outcomes = &applied.state_after.as_ref().unwrap()["rules"];
    let statuses: Vec<&str> = outcomes.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["refused", "applied", "applied", "gone", "applied"], "{outcomes}");
    assert_eq!(applied.calls.as_array().unwrap().len(), 3, "each rule's call is on the record");
    // Each rule is its own record, leased by its rule id.
    let children: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT target, resource, status FROM response_actions WHERE kind = 'revoke-ingress-rule' ORDER BY created_at",
    )
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        children,
        [
            (format!("{web}:{https}"), format!("{REGION}/{https}"), "applied".to_owned()),
            (format!("{db_group}:{db_ssh}"), format!("{REGION}/{db_ssh}"), "applied".to_owned()),
            (format!("{web}:{ssh}"), format!("{REGION}/{ssh}"), "applied".to_owned()),
        ]
    );

    // Once per key: a replay returns the record and calls nothing.
    let replayed = s.apply(action.clone(), "alice-ingress-0001").await.unwrap();
    assert_eq!(replayed.id, applied.id);
    assert_eq!(s.db.count("SELECT count(*) FROM response_actions").await, 4);
    // Applied again under a new key: nothing of alice's is left to revoke (what is left is said).
    assert!(s.apply(action.clone(), "alice-ingress-0002").await.is_err());
    let again = by_key(&s, "alice-ingress-0002").await;
    assert_eq!((again.status.as_str(), again.calls.as_array().unwrap().len()), ("failed", 0));

    let undone = run::undo(&s.ctx, &applied.id, "user:lead", "false positive").await.unwrap();
    assert_eq!(undone.status, "undone", "{undone:?}");
    assert_eq!(sorted(s.ingress(&web).await), before_web, "exactly alice's rules are back, bob's untouched");
    assert_eq!(s.ingress(&db_group).await, before_db);
    assert_eq!(s.db.count("SELECT count(*) FROM response_actions WHERE status = 'undone'").await, 4);
}

#[tokio::test]
async fn quarantine_of_a_principal_at_its_managed_policy_quota_is_refused_before_any_call() {
    let s = setup(true).await;
    let iam = s.owner.iam();
    iam.create_user().user_name("full").send().await.unwrap();
    let managed =
        iam.list_policies().scope(aws_sdk_iam::types::PolicyScopeType::Aws).max_items(20).send().await.unwrap();
    let arns: Vec<String> = managed
        .policies()
        .iter()
        .filter_map(|p| p.arn())
        .filter(|arn| !arn.ends_with("/AWSDenyAll"))
        .take(10)
        .map(str::to_owned)
        .collect();
    assert_eq!(arns.len(), 10);
    for arn in &arns {
        iam.attach_user_policy().user_name("full").policy_arn(arn).send().await.unwrap();
    }
    let action = Action::parse("quarantine", "user/full", None).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &action).await.unwrap();
    assert_eq!(plan.current["attached_count"], 10, "{}", plan.current);
    assert_eq!(plan.current["attached_quota"], 10);
    let why = plan.will_fail.clone().expect("the dry run says apply will fail");
    assert!(why.contains("10 managed policies") && why.contains("quota"), "{why}");

    let refused = s.apply(action, "quarantine-full-0001").await;
    let error = refused.expect_err("refused").to_string();
    assert!(error.contains("quota"), "{error}");
    let record: (String, Value) =
        sqlx::query_as("SELECT status, calls FROM response_actions WHERE idempotency_key = 'quarantine-full-0001'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(record, ("failed".to_owned(), json!([])), "no call was made");
    let attached = iam.list_attached_user_policies().user_name("full").send().await.unwrap();
    assert_eq!(attached.attached_policies().len(), 10, "nothing half-done");
}

#[tokio::test]
async fn a_rule_that_cannot_be_revoked_fails_the_action_with_what_was_changed_recorded() {
    let s = setup(true).await;
    let (web, ssh) = s.open_ssh("198.51.100.8/32").await;
    let (busy, held) = s.open_ssh("203.0.113.8/32").await;
    store_ingress_event(&s, "ev-a", iam_user("carol"), json!({"groupId": web}), &[(&web, &ssh)]).await;
    store_ingress_event(&s, "ev-b", iam_user("carol"), json!({"groupId": busy}), &[(&busy, &held)]).await;
    // Another action is running on the second rule: its lease is held.
    sqlx::query(
        "INSERT INTO response_actions (account_id, region, kind, target, resource, params, status, actor, reason,
                                       idempotency_key, lease_owner, lease_expires_at)
         VALUES ($1, $2, 'revoke-ingress-rule', $3, $4, '{}', 'planned', 'user:other', 'busy', 'holding-the-group',
                 'another-process', now() + interval '10 minutes')",
    )
    .bind(&s.account)
    .bind(REGION)
    .bind(format!("{busy}:{held}"))
    .bind(format!("{REGION}/{held}"))
    .execute(&s.db.pool)
    .await
    .unwrap();

    let action = Action::parse("revoke-principal-ingress", "user/carol", None).unwrap();
    let failed = s.apply(action.clone(), "carol-ingress-0001").await;
    assert!(matches!(&failed, Err(RespondError::Conflict(e)) if e.contains("holds the lease")), "{failed:?}");
    let record = sqlx::query_scalar::<_, String>("SELECT id::text FROM response_actions WHERE idempotency_key = $1")
        .bind("carol-ingress-0001")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let record = skywarden::respond::record::get(&s.db.pool, &record).await.unwrap().unwrap();
    assert_eq!(record.status, "failed");
    let rules = &record.state_after.as_ref().unwrap()["rules"];
    // Newest event first: the held group's rule, then the first one.
    assert_eq!((rules[0]["rule_id"].as_str(), rules[0]["status"].as_str()), (Some(held.as_str()), Some("failed")));
    assert_eq!((rules[1]["rule_id"].as_str(), rules[1]["status"].as_str()), (Some(ssh.as_str()), Some("applied")));
    assert!(s.ingress(&web).await.is_empty(), "what was changed is on the record");
    assert_eq!(s.ingress(&busy).await.len(), 1);

    // Once the other action is done, the rest is revoked; the first rule is gone already.
    sqlx::query("DELETE FROM response_actions WHERE idempotency_key = 'holding-the-group'")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let finished = s.apply(action, "carol-ingress-0002").await.unwrap();
    assert_eq!(finished.status, "applied");
    let statuses: Vec<&str> = finished.state_after.as_ref().unwrap()["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "gone"]);
    assert!(s.ingress(&busy).await.is_empty());
}

/// An ingress rule of `group` on port 22 from each of `cidrs`, in one call; their rule ids.
async fn open_many(s: &Setup, group: &str, cidrs: &[String]) -> Vec<String> {
    use aws_sdk_ec2::types::{IpPermission, IpRange};
    let ranges = cidrs.iter().map(|cidr| IpRange::builder().cidr_ip(cidr).build());
    let permission = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .set_ip_ranges(Some(ranges.collect()))
        .build();
    let answer = s
        .owner
        .ec2(REGION)
        .authorize_security_group_ingress()
        .group_id(group)
        .ip_permissions(permission)
        .send()
        .await
        .unwrap();
    answer.security_group_rules().iter().map(|r| r.security_group_rule_id().unwrap().to_owned()).collect()
}

fn items(group: &str, rules: &[String]) -> Vec<Value> {
    rules.iter().map(|rule| json!({"groupId": group, "securityGroupRuleId": rule, "isEgress": false})).collect()
}

/// More rules than one action revokes: the newest are reached first, only rules that still exist
/// count against the cap, and an action cut off is recorded failed (partial), never applied; the
/// next one revokes the rest.
#[tokio::test]
async fn past_the_cap_the_newest_rules_come_first_and_the_action_is_partial() {
    let s = setup(true).await;
    let ec2 = s.owner.ec2(REGION);
    // Moto, as AWS, holds at most 60 rules per group: 6 groups of one VPC.
    let vpc = ec2.create_vpc().cidr_block("10.8.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let mut groups = Vec::new();
    for i in 0..6 {
        let group = ec2.create_security_group().group_name(format!("cap-{i}")).description("cap").vpc_id(&vpc);
        groups.push(group.send().await.unwrap().group_id.unwrap());
    }
    // 260 rules opened an hour ago (52 in each of 5 groups), of which 60 are gone already; 2
    // opened a minute ago.
    let identity = json!({"type": "IAMUser", "userName": "mallory", "accountId": s.account});
    let mut old = Vec::new();
    for (i, group) in groups[..5].iter().enumerate() {
        let cidrs: Vec<String> = (0..52).map(|j| format!("10.{i}.{j}.0/24")).collect();
        let rules = open_many(&s, group, &cidrs).await;
        let id = format!("ev-old-{i}");
        store_event(
            &s,
            &id,
            identity.clone(),
            json!({"groupId": group}),
            items(group, &rules),
            60 + i as i64,
            json!({}),
        )
        .await;
        old.extend(rules.into_iter().map(|rule| (group.clone(), rule)));
    }
    assert_eq!(old.len(), 260);
    for (group, rule) in &old[..60] {
        ec2.revoke_security_group_ingress().group_id(group).security_group_rule_ids(rule).send().await.unwrap();
    }
    let newest = &groups[5];
    let new = open_many(&s, newest, &["192.0.2.1/32".to_owned(), "192.0.2.2/32".to_owned()]).await;
    store_event(&s, "ev-new", identity, json!({"groupId": newest}), items(newest, &new), 1, json!({})).await;
    let left = async || {
        let mut count = 0;
        for group in &groups {
            count += s.ingress(group).await.len();
        }
        count
    };

    let action = Action::parse("revoke-principal-ingress", "user/mallory", None).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &action).await.unwrap();
    assert_eq!(plan.calls.len(), 200, "200 rules that exist, whatever the gone ones: {}", plan.current["incomplete"]);
    let planned: Vec<&str> = plan.calls.iter().map(|c| c.params["SecurityGroupRuleIds"][0].as_str().unwrap()).collect();
    assert_eq!(planned[..2], [new[0].as_str(), new[1].as_str()], "the newest event's rules first");
    assert!(plan.current["cut_off"].as_str().unwrap().contains("200"), "{}", plan.current["cut_off"]);

    let error = s.apply(action.clone(), "mallory-ingress-1").await.expect_err("cut off");
    assert!(error.to_string().starts_with("partial:"), "{error}");
    assert_eq!(by_key(&s, "mallory-ingress-1").await.status, "failed", "cut off: never applied");
    assert_eq!(left().await, 200 + 2 - 200, "200 revoked, the oldest left");
    assert!(s.ingress(newest).await.is_empty(), "the newest are revoked");

    // The next action reaches the rest: the revoked rules no longer count.
    let done = s.apply(action, "mallory-ingress-2").await.unwrap();
    assert_eq!(done.status, "applied", "{:?}", done.error);
    assert_eq!(left().await, 0);
}

/// Only the principal's own events are followed: a role's sessions, a user's federation sessions;
/// never an event of another account, another service or no region, and never a live rule that is
/// not the one the event opened (listed as mismatch, left alone).
#[tokio::test]
async fn only_trusted_events_and_matching_rules_are_revoked() {
    let s = setup(true).await;
    let (web, by_role) = s.open_ssh("198.51.100.20/32").await;
    let other_account = add_rule(&s, &web, "198.51.100.21/32", 2222).await;
    let other_source = add_rule(&s, &web, "198.51.100.22/32", 2223).await;
    let bad_region = add_rule(&s, &web, "198.51.100.23/32", 2224).await;
    let reused = add_rule(&s, &web, "198.51.100.24/32", 2225).await;
    let by_federation = add_rule(&s, &web, "198.51.100.25/32", 2226).await;
    let role = json!({"type": "AssumedRole", "accountId": s.account,
                      "arn": format!("arn:aws:sts::{}:assumed-role/deployer/ci", s.account),
                      "sessionContext": {"sessionIssuer": {"type": "Role", "userName": "deployer"}}});
    let item = |rule: &str| vec![json!({"groupId": web, "securityGroupRuleId": rule, "isEgress": false})];
    let request = json!({"groupId": web});
    store_event(&s, "r-1", role.clone(), request.clone(), item(&by_role), 5, json!({})).await;
    store_event(
        &s,
        "r-2",
        role.clone(),
        request.clone(),
        item(&other_account),
        4,
        json!({"recipientAccountId": "444455556666"}),
    )
    .await;
    store_event(
        &s,
        "r-3",
        role.clone(),
        request.clone(),
        item(&other_source),
        3,
        json!({"eventSource": "evil.amazonaws.com"}),
    )
    .await;
    store_event(&s, "r-4", role.clone(), request.clone(), item(&bad_region), 2, json!({"awsRegion": "Mars-1"})).await;
    // The event says port 0-65535 for a rule that is port 2225 now: not the event's rule.
    let wider = vec![json!({"groupId": web, "securityGroupRuleId": reused, "isEgress": false,
                            "ipProtocol": "tcp", "fromPort": 0, "toPort": 65535})];
    store_event(&s, "r-5", role, request.clone(), wider, 1, json!({})).await;
    let federated = json!({"type": "FederatedUser", "accountId": s.account,
                           "sessionContext": {"sessionIssuer": {"type": "IAMUser", "userName": "fed"}}});
    store_event(&s, "f-1", federated, request, item(&by_federation), 1, json!({})).await;

    let action = Action::parse("revoke-principal-ingress", "role/deployer", None).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &action).await.unwrap();
    let rejected: Vec<&str> =
        plan.current["rejected_events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(rejected, ["r-4", "r-3", "r-2"], "{}", plan.current);
    let mismatched = &plan.current["rules"][0];
    assert_eq!(
        (mismatched["rule_id"].as_str(), mismatched["problem"].as_str()),
        (Some(reused.as_str()), Some("mismatch"))
    );
    let planned: Vec<&Value> = plan.calls.iter().map(|c| &c.params["SecurityGroupRuleIds"][0]).collect();
    assert_eq!(planned, [&json!(by_role)], "only the role session's own, matching rule");

    let error = s.apply(action, "deployer-ingress-1").await.expect_err("partial");
    assert!(error.to_string().contains("mismatch") && error.to_string().contains("not trusted"), "{error}");
    let ports: Vec<i32> = s.ingress(&web).await.iter().map(|r| r.1).collect();
    assert_eq!(ports.len(), 5, "{ports:?}");
    assert!(!ports.contains(&22), "the role's rule is revoked: {ports:?}");

    let federated = Action::parse("revoke-principal-ingress", "user/fed", None).unwrap();
    let done = s.apply(federated, "fed-ingress-1").await.unwrap();
    assert_eq!(done.status, "applied", "{:?}", done.error);
    assert!(!s.ingress(&web).await.iter().any(|r| r.1 == 2226), "the federation session's rule is revoked");
}

/// When revoke-ingress-rule needs a second person, so does revoke-principal-ingress (its apply and
/// its undo); the rules' records carry the approver.
#[tokio::test]
async fn the_rules_of_a_principal_need_the_approval_their_kind_needs() {
    let s = setup(true).await;
    let (web, ssh) = s.open_ssh("198.51.100.30/32").await;
    store_ingress_event(&s, "a-1", iam_user("dave"), json!({"groupId": web}), &[(&web, &ssh)]).await;
    skywarden::respond::record::set_approval(&s.db.pool, "revoke-ingress-rule", true, "user:lead").await.unwrap();
    let action = Action::parse("revoke-principal-ingress", "user/dave", None).unwrap();
    let asked = s.apply(action, "dave-ingress-1").await.unwrap();
    assert_eq!(asked.status, "awaiting_approval", "not run without a second person");
    assert_eq!(s.ingress(&web).await.len(), 1);
    // A rule dave opens after the request was not in the dry run the approver saw: left alone.
    let later = add_rule(&s, &web, "198.51.100.31/32", 9443).await;
    store_ingress_event(&s, "a-2", iam_user("dave"), json!({"groupId": web}), &[(&web, &later)]).await;
    let approved = run::approve(&s.ctx, &asked.id, "user:lead", "confirmed").await.unwrap();
    assert_eq!(approved.status, "applied", "{:?}", approved.error);
    let ports: Vec<i32> = s.ingress(&web).await.iter().map(|r| r.1).collect();
    assert_eq!(ports, [9443], "only the rule of the request's time is revoked");
    let child: Option<String> =
        sqlx::query_scalar("SELECT approved_by FROM response_actions WHERE kind = 'revoke-ingress-rule'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(child.as_deref(), Some("user:lead"));
    let undo = run::undo(&s.ctx, &asked.id, "user:analyst", "false positive").await.unwrap();
    assert_eq!(undo.status, "undo_awaiting_approval", "the undo waits too");
    assert_eq!(s.ingress(&web).await.len(), 1, "nothing restored without the second person");
    let undone = run::approve(&s.ctx, &asked.id, "user:other", "agreed").await.unwrap();
    assert_eq!(undone.status, "undone", "{:?}", undone.undo_error);
    assert_eq!(s.ingress(&web).await.len(), 2);
}

/// A successful EC2 event `name` of `identity`, stored on `conn` as the importer would (a
/// transaction's connection holds it uncommitted, as an import under way does).
async fn insert_event(
    conn: &mut sqlx::PgConnection,
    s: &Setup,
    (id, name): (&str, &str),
    identity: Value,
    request: Value,
    response: Value,
) {
    use skywarden::db::partitions::{PartitionCache, PartitionedTable};
    PartitionCache::default()
        .ensure(&mut *conn, PartitionedTable::CloudTrailEvents, vec![chrono::Utc::now()])
        .await
        .unwrap();
    let user_name = identity["userName"].as_str().map(str::to_owned);
    let raw = json!({"eventID": id, "eventName": name, "awsRegion": REGION, "eventSource": "ec2.amazonaws.com",
                     "recipientAccountId": s.account, "userIdentity": identity, "requestParameters": request,
                     "responseElements": response});
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_source, event_name, user_name, raw)
         VALUES ($1, now(), $2, $3, 'ec2.amazonaws.com', $4, $5, $6)",
    )
    .bind(&s.account)
    .bind(id)
    .bind(REGION)
    .bind(name)
    .bind(user_name)
    .bind(&raw)
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// An answer item of AuthorizeSecurityGroupIngress naming everything the live rule must still be.
fn full_item(group: &str, rule: &str, port: i32, cidr: &str) -> Value {
    json!({"groupId": group, "securityGroupRuleId": rule, "isEgress": false, "ipProtocol": "tcp",
           "fromPort": port, "toPort": port, "cidrIpv4": cidr})
}

fn ports(rules: &[(String, i32, i32, String, String)]) -> Vec<i32> {
    let mut ports: Vec<i32> = rules.iter().map(|r| r.1).collect();
    ports.sort_unstable();
    ports
}

/// What the approver saw is what runs: the plan (rule ids, their events, group, protocol, ports,
/// source) is stored with the request and approval acts on exactly it, each rule re-checked
/// live. An import that began before the request and commits after it (its rows carry the
/// import's start as ingested_at), or the event of a planned rule going (its month archived and
/// dropped), changes nothing; a planned rule changed since is left alone and reported.
#[tokio::test]
async fn approval_runs_exactly_the_plan_stored_with_the_request() {
    let s = setup(true).await;
    let (web, ssh) = s.open_ssh("198.51.100.60/32").await;
    let https = add_rule(&s, &web, "198.51.100.60/32", 443).await;
    let changed = add_rule(&s, &web, "198.51.100.60/32", 3389).await;
    let late = add_rule(&s, &web, "198.51.100.61/32", 8443).await;
    store_ingress_event(&s, "p-1", iam_user("erin"), json!({"groupId": web}), &[(&web, &ssh)]).await;
    store_ingress_event(&s, "p-2", iam_user("erin"), json!({"groupId": web}), &[(&web, &https)]).await;
    let item = full_item(&web, &changed, 3389, "198.51.100.60/32");
    store_event(&s, "p-3", iam_user("erin"), json!({"groupId": web}), vec![item], 0, json!({})).await;
    skywarden::respond::record::set_approval(&s.db.pool, "revoke-ingress-rule", true, "user:lead").await.unwrap();

    let mut import = skywarden::db::begin(&s.db.pool).await.unwrap();
    let answer =
        json!({"_return": true, "securityGroupRuleSet": {"items": [full_item(&web, &late, 8443, "198.51.100.61/32")]}});
    let late_event = ("p-4", "AuthorizeSecurityGroupIngress");
    insert_event(&mut import, &s, late_event, iam_user("erin"), json!({"groupId": web}), answer).await;
    let action = Action::parse("revoke-principal-ingress", "user/erin", None).unwrap();
    let asked = s.apply(action, "erin-ingress-1").await.unwrap();
    assert_eq!(asked.status, "awaiting_approval");
    let plan = asked.plan.clone().expect("the plan is stored with the request");
    let mut planned: Vec<&str> =
        plan["rules"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    planned.sort_unstable();
    let mut expected = vec![ssh.as_str(), https.as_str(), changed.as_str()];
    expected.sort_unstable();
    assert_eq!(planned, expected);
    let shown = plan["rules"].as_array().unwrap().iter().find(|r| r["rule_id"] == changed.as_str()).unwrap().clone();
    assert_eq!((shown["event_id"].as_str(), shown["item"]["fromPort"].as_i64()), (Some("p-3"), Some(3389)));
    import.commit().await.unwrap();
    sqlx::query("DELETE FROM cloudtrail_events WHERE event_id = 'p-2'").execute(&s.db.pool).await.unwrap();
    // The planned 3389 rule is narrowed by someone else meanwhile: no longer what erin opened.
    use aws_sdk_ec2::types::{SecurityGroupRuleRequest, SecurityGroupRuleUpdate};
    let narrowed = SecurityGroupRuleRequest::builder()
        .ip_protocol("tcp")
        .from_port(3389)
        .to_port(3389)
        .cidr_ipv4("10.0.0.0/8")
        .build();
    let update =
        SecurityGroupRuleUpdate::builder().security_group_rule_id(&changed).security_group_rule(narrowed).build();
    s.owner.ec2(REGION).modify_security_group_rules().group_id(&web).security_group_rules(update).send().await.unwrap();

    let error = run::approve(&s.ctx, &asked.id, "user:lead", "confirmed").await.unwrap_err().to_string();
    assert!(error.contains(&format!("{changed} mismatch")) && error.contains("cidrIpv4"), "{error}");
    assert_eq!(ports(&s.ingress(&web).await), [3389, 8443], "exactly the plan: 22 and 443 revoked, the late rule kept");
    let done = skywarden::respond::record::get(&s.db.pool, &asked.id).await.unwrap().unwrap();
    assert_eq!(done.status, "failed", "a planned rule was left: never applied");
    let outcomes = done.state_after.unwrap()["rules"].clone();
    let status =
        |rule: &str| outcomes.as_array().unwrap().iter().find(|o| o["rule_id"] == rule).unwrap()["status"].clone();
    assert_eq!(
        (status(&ssh), status(&https), status(&changed)),
        (json!("applied"), json!("applied"), json!("mismatch"))
    );
}

/// A principal can widen an existing rule with ModifySecurityGroupRules instead of authorizing
/// one: that counts as opening it (by its rule id), revoked like the others with the same
/// trust and mismatch checks; an egress rule it changed is listed and left (no ingress).
#[tokio::test]
async fn a_rule_the_principal_widened_is_revoked_like_one_it_opened() {
    use aws_sdk_ec2::types::{Filter, SecurityGroupRuleRequest, SecurityGroupRuleUpdate};
    let s = setup(true).await;
    let (web, rule) = s.open_ssh("10.20.0.0/16").await;
    let ec2 = s.owner.ec2(REGION);
    let widened =
        SecurityGroupRuleRequest::builder().ip_protocol("tcp").from_port(22).to_port(22).cidr_ipv4("0.0.0.0/0").build();
    let update = SecurityGroupRuleUpdate::builder().security_group_rule_id(&rule).security_group_rule(widened).build();
    ec2.modify_security_group_rules().group_id(&web).security_group_rules(update).send().await.unwrap();
    let egress = ec2
        .describe_security_group_rules()
        .filters(Filter::builder().name("group-id").values(&web).build())
        .send()
        .await
        .unwrap()
        .security_group_rules()
        .iter()
        .find(|r| r.is_egress() == Some(true))
        .and_then(|r| r.security_group_rule_id().map(str::to_owned))
        .expect("the group's default egress rule");
    // CloudTrail's record of frank's call: both updates in the request, nothing in the answer.
    let request = json!({"ModifySecurityGroupRulesRequest": {"GroupId": web, "SecurityGroupRule": [
        {"SecurityGroupRuleId": rule, "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"}, "tag": 1},
        {"SecurityGroupRuleId": egress, "SecurityGroupRule": {"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "CidrIpv4": "0.0.0.0/0"}, "tag": 2}]}});
    let answer = json!({"ModifySecurityGroupRulesResponse": {"requestId": "r-1", "return": true}});
    let mut conn = s.db.pool.acquire().await.unwrap();
    insert_event(&mut conn, &s, ("w-1", "ModifySecurityGroupRules"), iam_user("frank"), request, answer).await;
    drop(conn);

    let action = Action::parse("revoke-principal-ingress", "user/frank", None).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &action).await.unwrap();
    assert_eq!(plan.calls.len(), 1, "{:?}", plan.current);
    assert_eq!(plan.calls[0].params["SecurityGroupRuleIds"], json!([rule]));
    assert_eq!(plan.current["incomplete"], json!([]), "an egress rule is not left undone: {}", plan.current);
    let listed = plan.current["rules"].as_array().unwrap();
    assert!(listed.iter().any(|r| r["rule_id"] == egress.as_str() && r["problem"] == "egress"), "{listed:?}");

    let done = s.apply(action, "frank-ingress-1").await.unwrap();
    assert_eq!(done.status, "applied", "{:?}", done.error);
    assert!(s.ingress(&web).await.is_empty(), "the widened rule is revoked");
    let undone = run::undo(&s.ctx, &done.id, "user:analyst", "frank's change was approved").await.unwrap();
    assert_eq!(undone.status, "undone", "{:?}", undone.undo_error);
    let restored = s.ingress(&web).await;
    assert_eq!((restored.len(), restored[0].1, restored[0].3.as_str()), (1, 22, "0.0.0.0/0"), "restored as it was");
}

/// An alert of `principal` whose evidence is the stored event `event_id`; its id.
async fn alert_on_event(s: &Setup, principal: &str, event_id: &str) -> String {
    let mut finding = crate::respond_safety::alert_of(&s.account, principal);
    finding.evidence_id = event_id.into();
    skywarden::notify::outbox::record_alerts(&s.db.pool, &[finding]).await.unwrap();
    let alert: String = sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE principal = $1")
        .bind(principal)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO alert_evidence (account_id, alert_id, event_id, event_time)
         SELECT account_id, $1::uuid, event_id, event_time FROM cloudtrail_events WHERE event_id = $2
         ON CONFLICT (account_id, alert_id, event_id) DO UPDATE SET event_time = EXCLUDED.event_time",
    )
    .bind(&alert)
    .bind(event_id)
    .execute(&s.db.pool)
    .await
    .unwrap();
    alert
}

/// The detector's trusted ranges (`security_group_ingress.trusted_cidrs`, which respond cannot
/// read: serve, the worker and the CLI pass them in) hold for response too. frank widens one SSH
/// rule to an address of the office range declared trusted and another to a public address
/// outside it: only the second is suggested, planned and revoked; the first is listed as
/// pre-existing (a trusted range) and stays. Without the trusted ranges both are exposed.
#[tokio::test]
async fn a_rule_widened_to_a_trusted_range_is_left_and_one_widened_elsewhere_is_revoked() {
    use aws_sdk_ec2::types::{SecurityGroupRuleRequest, SecurityGroupRuleUpdate};
    let s = setup(true).await;
    let (web, office) = s.open_ssh("10.20.0.0/16").await;
    let elsewhere = add_rule(&s, &web, "10.30.0.0/16", 22).await;
    let ec2 = s.owner.ec2(REGION);
    let mut updates = Vec::new();
    for (rule, cidr) in [(&office, "81.2.69.160/32"), (&elsewhere, "81.2.70.7/32")] {
        let set = SecurityGroupRuleRequest::builder().ip_protocol("tcp").from_port(22).to_port(22).cidr_ipv4(cidr);
        let update = SecurityGroupRuleUpdate::builder().security_group_rule_id(rule).security_group_rule(set.build());
        ec2.modify_security_group_rules().group_id(&web).security_group_rules(update.build()).send().await.unwrap();
        updates.push(json!({"SecurityGroupRuleId": rule,
                            "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": cidr}}));
    }
    let request = json!({"ModifySecurityGroupRulesRequest": {"GroupId": web, "SecurityGroupRule": updates}});
    let answer = json!({"ModifySecurityGroupRulesResponse": {"requestId": "r-1", "return": true}});
    let mut conn = s.db.pool.acquire().await.unwrap();
    insert_event(&mut conn, &s, ("t-1", "ModifySecurityGroupRules"), iam_user("frank"), request, answer).await;
    drop(conn);
    let trusted: Vec<skywarden::net::Cidr> = vec!["81.2.69.0/24".parse().unwrap()];
    let trusting = ResponseContext { trusted_cidrs: trusted.clone(), ..s.ctx.clone() };
    let revoked = |plan: &run::Plan| -> Vec<Value> {
        let mut ids: Vec<Value> = plan
            .calls
            .iter()
            .flat_map(|c| c.params["SecurityGroupRuleIds"].as_array().cloned().unwrap_or_default())
            .collect();
        ids.sort_by_key(|id| id.to_string());
        ids
    };

    let action = Action::parse("revoke-principal-ingress", "user/frank", None).unwrap();
    let mut both = vec![json!(office), json!(elsewhere)];
    both.sort_by_key(|id| id.to_string());
    assert_eq!(revoked(&run::plan(&s.ctx, &s.account, &action).await.unwrap()), both, "nothing trusted");
    let plan = run::plan(&trusting, &s.account, &action).await.unwrap();
    assert_eq!(revoked(&plan), [json!(elsewhere)], "{}", plan.current);
    let pre = plan.current["pre_existing"].as_array().unwrap();
    assert!(
        pre.iter().any(|p| p["rule_id"] == office.as_str() && p["why"].as_str().unwrap().contains("a trusted range")),
        "{pre:?}"
    );
    assert_eq!(plan.current["incomplete"], json!([]), "a trusted rule is not left undone");

    // The alert's suggestions, with the ranges serve gives the API, and without.
    let alert = alert_on_event(&s, "frank", "t-1").await;
    let (_, viewer) = auth::create(&s.db.pool, "wallboard", Role::Viewer).await.unwrap();
    let context = ApiContext::new(s.db.pool.clone()).with_aws(s.ctx.settings.clone(), s.ctx.base.clone());
    let uri = format!("/api/v1/alerts/{alert}/responses");
    let suggested = async |context: ApiContext| {
        let (status, answer) = api(&context, "GET", &uri, &viewer, None, None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let mut targets: Vec<String> = answer["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "revoke-ingress-rule")
            .map(|a| a["target"].as_str().unwrap().to_owned())
            .collect();
        targets.sort();
        targets
    };
    let mut all = vec![format!("{web}:{office}"), format!("{web}:{elsewhere}")];
    all.sort();
    assert_eq!(suggested(context.clone()).await, all);
    assert_eq!(suggested(context.with_trusted_cidrs(trusted)).await, [format!("{web}:{elsewhere}")]);

    // The CLI reads them from the policy folder's detectors.yaml (`--policies`): an entry that
    // is no range is named on stderr, the others apply.
    let policies = tempfile::tempdir().unwrap();
    let settings = "security_group_ingress:\n  trusted_cidrs: ['81.2.69.0/24', 'the-office']\n";
    std::fs::write(policies.path().join("detectors.yaml"), settings).unwrap();
    let mut command = crate::support::skywarden_command(&s.db.url);
    command.args(["respond", "plan", &s.account, "revoke-principal-ingress", "user/frank", "--json", "--policies"]);
    command.arg(policies.path());
    for (key, value) in fake::aws_env(fake::moto_url().await) {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("detectors.yaml") && stderr.contains("the-office"), "{stderr}");
    let cli_plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    let cli_revoked: Vec<&Value> = cli_plan["calls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["params"]["SecurityGroupRuleIds"].as_array().unwrap())
        .collect();
    assert_eq!(cli_revoked, [&json!(elsewhere)], "{cli_plan}");

    let done = run::apply(&trusting, &s.request(action, "frank-trusted-1")).await.unwrap();
    assert_eq!(done.status, "applied", "{:?}", done.error);
    let left = s.ingress(&web).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((left[0].1, left[0].3.as_str()), (22, "81.2.69.160/32"), "the rule to the office stays");
}

/// Review of issue 17: a newer change of a rule to a source that is not exposed ends an older
/// opening of it. frank widens an SSH rule to the world, then narrows it to the trusted office;
/// he authorises 443 to the world, then narrows it to 10/8. Read newest first, both rules are
/// seen narrowed: nothing is revoked, nothing is read against the live rule (no `mismatch`), and
/// the action is applied, not "failed: partial".
#[tokio::test]
async fn a_newer_change_to_a_trusted_or_private_source_ends_an_older_opening() {
    use aws_sdk_ec2::types::{SecurityGroupRuleRequest, SecurityGroupRuleUpdate};
    let s = setup(true).await;
    let (web, widened) = s.open_ssh("10.20.0.0/16").await;
    let authorized = add_rule(&s, &web, "0.0.0.0/0", 443).await;
    let ec2 = s.owner.ec2(REGION);
    let modify = async |rule: &str, port: i32, cidr: &str| {
        let set = SecurityGroupRuleRequest::builder().ip_protocol("tcp").from_port(port).to_port(port).cidr_ipv4(cidr);
        let update = SecurityGroupRuleUpdate::builder().security_group_rule_id(rule).security_group_rule(set.build());
        ec2.modify_security_group_rules().group_id(&web).security_group_rules(update.build()).send().await.unwrap();
        json!({"ModifySecurityGroupRulesRequest": {"GroupId": web, "SecurityGroupRule": {"SecurityGroupRuleId": rule,
               "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "CidrIpv4": cidr}}}})
    };
    let answer = json!({"ModifySecurityGroupRulesResponse": {"return": true}});
    // t1: the openings, 10 and 5 minutes ago.
    let opened = vec![full_item(&web, &authorized, 443, "0.0.0.0/0")];
    store_event(&s, "n-0", iam_user("frank"), json!({"groupId": web}), opened, 10, json!({})).await;
    let widen = modify(&widened, 22, "0.0.0.0/0").await;
    let mut conn = s.db.pool.acquire().await.unwrap();
    insert_event(&mut conn, &s, ("n-1", "ModifySecurityGroupRules"), iam_user("frank"), widen, answer.clone()).await;
    sqlx::query("UPDATE cloudtrail_events SET event_time = event_time - interval '5 minutes' WHERE event_id = 'n-1'")
        .execute(&mut *conn)
        .await
        .unwrap();
    // t2: both narrowed, now.
    let narrow = modify(&widened, 22, "81.2.69.160/32").await;
    insert_event(&mut conn, &s, ("n-2", "ModifySecurityGroupRules"), iam_user("frank"), narrow, answer.clone()).await;
    let private = modify(&authorized, 443, "10.0.0.0/8").await;
    insert_event(&mut conn, &s, ("n-3", "ModifySecurityGroupRules"), iam_user("frank"), private, answer).await;
    drop(conn);

    let trusting = ResponseContext { trusted_cidrs: vec!["81.2.69.0/24".parse().unwrap()], ..s.ctx.clone() };
    let action = Action::parse("revoke-principal-ingress", "user/frank", None).unwrap();
    let plan = run::plan(&trusting, &s.account, &action).await.unwrap();
    assert!(plan.calls.is_empty(), "{}", plan.current);
    assert_eq!(plan.current["rules"], json!([]), "no older opening is read against a narrowed rule");
    assert_eq!(plan.current["incomplete"], json!([]), "{}", plan.current);
    assert_eq!(plan.current["pre_existing"].as_array().map(Vec::len), Some(2), "{}", plan.current);
    let done = run::apply(&trusting, &s.request(action, "frank-narrowed-1")).await.unwrap();
    assert_eq!(done.status, "applied", "{:?}", done.error);
    assert_eq!(s.ingress(&web).await.len(), 2, "both narrowed rules stay");
}

/// Review of issue 17: update A widens a rule to the world with IpProtocol "6" (AWS stores
/// `tcp`: a raw compare let it escape); update B of the same call only re-describes the office
/// rule 10.0.0.0/8:443. Only A is revoked; B is listed as pre-existing and stays.
#[tokio::test]
async fn only_the_rule_a_modification_opened_is_revoked_whatever_its_protocol_spelling() {
    use aws_sdk_ec2::types::{SecurityGroupRuleRequest, SecurityGroupRuleUpdate};
    let s = setup(true).await;
    let (web, rule) = s.open_ssh("10.20.0.0/16").await;
    let office = add_rule(&s, &web, "10.0.0.0/8", 443).await;
    let ec2 = s.owner.ec2(REGION);
    let widened =
        SecurityGroupRuleRequest::builder().ip_protocol("tcp").from_port(22).to_port(22).cidr_ipv4("0.0.0.0/0").build();
    let update = SecurityGroupRuleUpdate::builder().security_group_rule_id(&rule).security_group_rule(widened).build();
    ec2.modify_security_group_rules().group_id(&web).security_group_rules(update).send().await.unwrap();
    let request = json!({"ModifySecurityGroupRulesRequest": {"GroupId": web, "SecurityGroupRule": [
        {"SecurityGroupRuleId": rule, "SecurityGroupRule": {"IpProtocol": "6", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"}},
        {"SecurityGroupRuleId": office, "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
                                                               "CidrIpv4": "10.0.0.0/8", "Description": "office"}}]}});
    let answer = json!({"ModifySecurityGroupRulesResponse": {"requestId": "r-1", "return": true}});
    let mut conn = s.db.pool.acquire().await.unwrap();
    insert_event(&mut conn, &s, ("w-6", "ModifySecurityGroupRules"), iam_user("frank"), request, answer).await;
    drop(conn);

    let action = Action::parse("revoke-principal-ingress", "user/frank", None).unwrap();
    let plan = run::plan(&s.ctx, &s.account, &action).await.unwrap();
    assert_eq!(plan.calls.len(), 1, "{}", plan.current);
    assert_eq!(plan.calls[0].params["SecurityGroupRuleIds"], json!([rule]), "protocol 6 is tcp: {}", plan.current);
    let pre = plan.current["pre_existing"].as_array().unwrap();
    assert!(pre.iter().any(|p| p["rule_id"] == office.as_str() && p["pre_existing"] == true), "{pre:?}");
    let done = s.apply(action, "frank-ingress-6").await.unwrap();
    assert_eq!(done.status, "applied", "{:?}", done.error);
    let left = s.ingress(&web).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((left[0].1, left[0].3.as_str()), (443, "10.0.0.0/8"), "the office rule stays");
}

/// A loopback proxy in front of moto that answers `iam:GetAccountSummary` as AWS answers a
/// responder role deployed from the template before that call was added (403 and the IAM Query
/// API's `ErrorResponse` with code `AccessDenied`); every other request goes to moto unchanged.
/// moto does not enforce IAM policies, so this one denial has to come from in front of it.
async fn denying_account_summary(moto: &str) -> String {
    let denied = r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:sts::123456789012:assumed-role/SkywardenResponder/skywarden is not authorized to perform: iam:GetAccountSummary on resource: * because no identity-based policy allows the iam:GetAccountSummary action</Message></Error><RequestId>6a1d1b6e-3c4d-4e5f-8a9b-0c1d2e3f4a5b</RequestId></ErrorResponse>"#;
    refusing_proxy(moto, |body| contains(body, b"Action=GetAccountSummary"), denied).await
}

/// Whether a request body holds `needle`.
pub fn contains(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|w| w == needle)
}

/// A loopback proxy in front of moto that answers every request `refuse` picks (by its body)
/// with 403 and `refusal` (a Query API `ErrorResponse`), as AWS refuses what moto allows; every
/// other request goes to moto unchanged.
pub async fn refusing_proxy(moto: &str, refuse: fn(&[u8]) -> bool, refusal: &'static str) -> String {
    use axum::response::IntoResponse;
    use hyper_util::client::legacy::Client;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Body>();
    let moto = moto.trim_end_matches('/').to_owned();
    let app = axum::Router::new().fallback(move |request: Request<Body>| {
        let (client, moto) = (client.clone(), moto.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 24).await.unwrap();
            if refuse(&body) {
                return (StatusCode::FORBIDDEN, [("content-type", "text/xml")], refusal).into_response();
            }
            let uri = format!("{moto}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str()));
            let mut forward = Request::builder().method(parts.method).uri(uri);
            for (name, value) in &parts.headers {
                if name != "host" {
                    forward = forward.header(name, value);
                }
            }
            let answer = client.request(forward.body(Body::from(body)).unwrap()).await.unwrap();
            answer.map(Body::new).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// Stacks deployed from the older responder template may not call iam:GetAccountSummary:
/// quarantine then assumes AWS's default quota of 10 and says so in its dry run and record,
/// instead of failing (or guessing silently).
#[tokio::test]
async fn quarantine_without_get_account_summary_assumes_the_default_quota_and_says_so() {
    let s = setup(true).await;
    let proxy = denying_account_summary(fake::moto_url().await).await;
    let settings = fake::settings_for(&proxy);
    let base = settings.load().await;
    let ctx = ResponseContext {
        pool: s.db.pool.clone(),
        settings: settings.clone(),
        base: base.clone(),
        trusted_cidrs: vec![],
    };
    // The proxy is in the way: the summary is denied, as AWS denies it.
    let owner = AccountSession::assume(
        &base,
        &settings,
        &accounts::load(&s.db.pool, &s.account).await.unwrap().assume_target(),
    )
    .await
    .unwrap();
    let denied = owner.iam().get_account_summary().send().await.unwrap_err();
    let denied = skywarden::aws::AwsError::from_sdk("iam:GetAccountSummary", "us-east-1", denied);
    assert_eq!(denied.kind, skywarden::aws::AwsErrorKind::AccessDenied, "{denied}");

    let iam = s.owner.iam();
    for user in ["nearly", "full"] {
        iam.create_user().user_name(user).send().await.unwrap();
    }
    let managed =
        iam.list_policies().scope(aws_sdk_iam::types::PolicyScopeType::Aws).max_items(20).send().await.unwrap();
    let arns: Vec<&str> = managed
        .policies()
        .iter()
        .filter_map(|p| p.arn())
        .filter(|arn| !arn.ends_with("/AWSDenyAll"))
        .take(10)
        .collect();
    for (at, arn) in arns.iter().enumerate() {
        iam.attach_user_policy().user_name("full").policy_arn(*arn).send().await.unwrap();
        if at < 9 {
            iam.attach_user_policy().user_name("nearly").policy_arn(*arn).send().await.unwrap();
        }
    }
    let full = Action::parse("quarantine", "user/full", None).unwrap();
    let plan = run::plan(&ctx, &s.account, &full).await.unwrap();
    assert_eq!(
        (plan.current["attached_count"].as_i64(), plan.current["attached_quota"].as_i64()),
        (Some(10), Some(10))
    );
    let said = plan.current["attached_quota_unknown"].as_str().expect("the dry run says the quota is assumed");
    assert!(said.contains("iam:GetAccountSummary") && said.contains("default quota of 10"), "{said}");
    assert!(plan.will_fail.as_deref().is_some_and(|why| why.contains("quota is 10")), "{:?}", plan.will_fail);

    let nearly = Action::parse("quarantine", "user/nearly", None).unwrap();
    let done = run::apply(&ctx, &s.request(nearly, "quarantine-nearly-01")).await.unwrap();
    assert_eq!(done.status, "applied", "{:?}", done.error);
    let before = done.state_before.expect("recorded");
    assert_eq!(before["attached_quota"], 10);
    assert!(before["attached_quota_unknown"].as_str().is_some_and(|s| s.contains("default quota of 10")), "{before}");
    let attached = iam.list_attached_user_policies().user_name("nearly").send().await.unwrap();
    assert!(attached.attached_policies().iter().any(|p| p.policy_arn() == Some(DENY_ALL)));
}

/// A suggestion whose check fails (here: the principal's ingress events cannot be read, the
/// database refusing the query) is still listed by the suggestions API, with a note saying what
/// could not be checked and why: visible, never silently dropped, never a 500 for the page.
#[tokio::test]
async fn a_suggestion_whose_check_fails_is_listed_with_what_could_not_be_checked() {
    let s = setup(true).await;
    let context = ApiContext::new(s.db.pool.clone()).with_aws(s.ctx.settings.clone(), s.ctx.base.clone());
    let (_, viewer) = auth::create(&s.db.pool, "wallboard", Role::Viewer).await.unwrap();
    let (web, ssh) = s.open_ssh("198.51.100.70/32").await;
    store_ingress_event(&s, "g-1", iam_user("gina"), json!({"groupId": web}), &[(&web, &ssh)]).await;
    let mut finding = crate::respond_safety::alert_of(&s.account, "gina");
    finding.evidence_id = "g-1".into();
    skywarden::notify::outbox::record_alerts(&s.db.pool, &[finding]).await.unwrap();
    let alert: String = sqlx::query_scalar("SELECT alert_id::text FROM alerts").fetch_one(&s.db.pool).await.unwrap();
    sqlx::query(
        "INSERT INTO alert_evidence (account_id, alert_id, event_id, event_time)
         SELECT account_id, $1::uuid, event_id, event_time FROM cloudtrail_events WHERE event_id = 'g-1'
         ON CONFLICT (account_id, alert_id, event_id) DO UPDATE SET event_time = EXCLUDED.event_time",
    )
    .bind(&alert)
    .execute(&s.db.pool)
    .await
    .unwrap();
    let uri = format!("/api/v1/alerts/{alert}/responses");
    let principal_ingress = |answer: &Value| {
        answer["actions"].as_array().unwrap().iter().find(|a| a["kind"] == "revoke-principal-ingress").cloned()
    };
    let (status, answer) = api(&context, "GET", &uri, &viewer, None, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let checked = principal_ingress(&answer).expect("gina opened a rule");
    assert!(checked.get("note").is_none(), "{checked}");

    // The check's query fails (a column it reads is gone, as in a half-applied migration): the
    // other queries of the page do not read it.
    sqlx::query("ALTER TABLE cloudtrail_events RENAME COLUMN error_code TO error_code_moved")
        .execute(&s.db.pool)
        .await
        .unwrap();
    let (status, answer) = api(&context, "GET", &uri, &viewer, None, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let unchecked = principal_ingress(&answer).expect("listed all the same");
    let note = unchecked["note"].as_str().expect("with a note");
    assert!(
        note.starts_with("could not check whether it opened ingress rules") && note.contains("error_code"),
        "{note}"
    );
    assert!(answer["actions"].as_array().unwrap().iter().any(|a| a["kind"] == "quarantine"), "the rest is listed");
}
