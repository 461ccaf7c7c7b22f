//! What keeps response actions safe, against moto and PostgreSQL: undos that would grant access
//! are refused without the responder role's opt-in; an approval comes from another dashboard
//! user (not a second token or session of the same one, not the CLI's login); an undo of a kind
//! needing approval waits too; actions abandoned mid-way are ended and listed; an alert of
//! another account is refused; reasons are bounded.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use skywarden::accounts::responder;
use skywarden::auth::{self, Role, sessions};
use skywarden::http::{ApiContext, router};
use skywarden::model::{Finding, Severity};
use skywarden::respond::auto::AutoRules;
use skywarden::respond::containment::Containment;
use skywarden::respond::run;
use skywarden::respond::{Action, RespondError, record};

use crate::respond::{REGION, api, revoke, setup};
use crate::support::aws as fake;

const DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

async fn deny_all_attached(s: &crate::respond::Setup, user: &str) -> bool {
    let answer = s.owner.iam().list_attached_user_policies().user_name(user).send().await.unwrap();
    answer.attached_policies().iter().any(|p| p.policy_arn() == Some(DENY_ALL))
}

#[tokio::test]
async fn undos_that_would_grant_are_refused_up_front_without_the_opt_in() {
    let s = setup(true).await;
    assert!(responder::set_granting_undo(&s.db.pool, &s.account, false).await.unwrap());
    let (group, rule) = s.open_ssh("198.51.100.7/32").await;
    let applied = s.apply(revoke(&rule), "grant-undo-0001").await.unwrap();
    assert!(s.ingress(&group).await.is_empty());

    let refused = run::undo(&s.ctx, &applied.id, "user:lead", "false positive").await;
    let Err(error @ RespondError::UndoGrants { .. }) = refused else { panic!("{refused:?}") };
    assert!(error.to_string().contains("AllowGrantingUndo=true"), "{error}");
    assert!(s.ingress(&group).await.is_empty(), "nothing was re-opened");
    let record = record::get(&s.db.pool, &applied.id).await.unwrap().unwrap();
    assert_eq!((record.status.as_str(), record.calls.as_array().unwrap().len()), ("applied", 1), "no call was made");

    // Re-activating a deactivated key counts as granting: the key may be a stolen one.
    s.owner.iam().create_user().user_name("keyholder").send().await.unwrap();
    let key = s.owner.iam().create_access_key().user_name("keyholder").send().await.unwrap();
    let key_id = key.access_key().unwrap().access_key_id().to_owned();
    let deactivate = Action::parse("deactivate-access-key", &format!("keyholder:{key_id}"), None).unwrap();
    let deactivated = s.apply(deactivate, "grant-undo-0003").await.unwrap();
    let refused = run::undo(&s.ctx, &deactivated.id, "user:lead", "false positive").await;
    assert!(matches!(refused, Err(RespondError::UndoGrants { kind: "deactivate-access-key", .. })), "{refused:?}");
    let keys = s.owner.iam().list_access_keys().user_name("keyholder").send().await.unwrap();
    assert_eq!(keys.access_key_metadata()[0].status().unwrap().as_str(), "Inactive", "the key stays inactive");

    // Undos that grant nothing still run: a quarantine is lifted.
    s.owner.iam().create_user().user_name("alice").send().await.unwrap();
    let quarantined =
        s.apply(Action::parse("quarantine", "user/alice", None).unwrap(), "grant-undo-0002").await.unwrap();
    assert!(deny_all_attached(&s, "alice").await);
    run::undo(&s.ctx, &quarantined.id, "user:lead", "cleared").await.unwrap();
    assert!(!deny_all_attached(&s, "alice").await);

    // With the opt-in recorded, the same undo runs.
    responder::set_granting_undo(&s.db.pool, &s.account, true).await.unwrap();
    run::undo(&s.ctx, &applied.id, "user:lead", "false positive").await.unwrap();
    assert_eq!(s.ingress(&group).await.len(), 1);
}

/// A request as a dashboard session (cookie and CSRF token) or a bearer token.
enum As<'a> {
    Session(&'a sessions::NewSession),
    Token(&'a str),
}

async fn call(context: &ApiContext, who: As<'_>, uri: &str, body: Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method("POST").uri(uri).header("content-type", "application/json");
    request = match who {
        As::Session(session) => request
            .header("cookie", format!("skywarden_session={}", session.cookie))
            .header("x-csrf-token", &session.csrf_token),
        As::Token(token) => request.header("authorization", format!("Bearer {token}")),
    };
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = router(context.clone()).oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_approval_comes_from_another_dashboard_user_never_a_second_token_or_session() {
    let s = setup(true).await;
    let context = ApiContext::new(s.db.pool.clone()).with_aws(s.ctx.settings.clone(), s.ctx.base.clone());
    record::set_approval(&s.db.pool, "quarantine", true, "user:admin").await.unwrap();
    s.owner.iam().create_user().user_name("alice").send().await.unwrap();
    let (_, token) = auth::create(&s.db.pool, "analyst's script", Role::Analyst).await.unwrap();
    let first = sessions::create(&s.db.pool, "user:analyst", "analyst", Role::Analyst).await.unwrap();
    let second = sessions::create(&s.db.pool, "user:analyst", "analyst", Role::Analyst).await.unwrap();
    let lead = sessions::create(&s.db.pool, "user:lead", "lead", Role::Analyst).await.unwrap();
    let body = json!({"account_id": s.account, "kind": "quarantine", "target": "user/alice", "reason": "hijack"});

    // A token names no person: it cannot ask for an action someone else must approve.
    let (status, error) =
        call(&context, As::Token(&token), "/api/v1/responses", body.clone(), Some("token-ask-01")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(error["error"].as_str().unwrap().contains("needs a person"), "{error}");

    let (status, asked) = call(&context, As::Session(&first), "/api/v1/responses", body, Some("session-ask-1")).await;
    assert_eq!((status, asked["status"].as_str()), (StatusCode::ACCEPTED, Some("awaiting_approval")), "{asked}");
    let approve = format!("/api/v1/responses/{}/approve", asked["id"].as_str().unwrap());
    let reason = json!({"reason": "confirmed"});
    let same = "a second person must approve";
    let no_session = "approvals come only from a dashboard session";
    for (who, message) in [(As::Session(&second), same), (As::Session(&first), same), (As::Token(&token), no_session)] {
        let (status, error) = call(&context, who, &approve, reason.clone(), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{error}");
        assert!(error["error"].as_str().unwrap().contains(message), "{error}");
    }
    assert!(!deny_all_attached(&s, "alice").await, "nothing ran on a refused approval");
    let (status, approved) = call(&context, As::Session(&lead), &approve, reason, None).await;
    assert_eq!((status, approved["status"].as_str()), (StatusCode::OK, Some("applied")), "{approved}");
    assert_eq!(approved["approved_by"], "user:lead");
    assert!(deny_all_attached(&s, "alice").await);
}

/// A request whose rules cannot be read when it is asked for (here AWS refuses AssumeRole on
/// the responder role; moto would allow it, so a loopback proxy refuses) is recorded and audited
/// with an unreadable plan that says why; its approval is refused with that reason, also once
/// AWS answers again (a new request reads the rules again), and nothing changes in AWS.
#[tokio::test]
async fn a_request_whose_rules_cannot_be_read_is_recorded_unreadable_and_never_approved() {
    use crate::respond::{contains, iam_user, refusing_proxy, ssh_rule, store_ingress_event};
    let s = setup(true).await;
    record::set_approval(&s.db.pool, "revoke-ingress-rule", true, "user:admin").await.unwrap();
    let (group, rule) = s.open_ssh("198.51.100.66/32").await;
    store_ingress_event(&s, "h-1", iam_user("hank"), json!({"groupId": group}), &[(&group, &rule)]).await;
    let refusal = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/skywarden is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/SkywardenResponder</Message></Error><RequestId>0d5e3c1a-2b4f-4c6d-8e9f-a0b1c2d3e4f5</RequestId></ErrorResponse>"#;
    let refuse = |body: &[u8]| contains(body, b"Action=AssumeRole") && contains(body, b"SkywardenResponder");
    let proxy = refusing_proxy(fake::moto_url().await, refuse, refusal).await;
    let settings = fake::settings_for(&proxy);
    let base = settings.load().await;
    let context = ApiContext::new(s.db.pool.clone()).with_aws(settings, base);
    let analyst = sessions::create(&s.db.pool, "user:analyst", "analyst", Role::Analyst).await.unwrap();
    let lead = sessions::create(&s.db.pool, "user:lead", "lead", Role::Analyst).await.unwrap();
    let body = json!({"account_id": s.account, "kind": "revoke-principal-ingress", "target": "user/hank",
                      "reason": "hank's key is in the wrong hands"});

    let (status, asked) = call(&context, As::Session(&analyst), "/api/v1/responses", body, Some("unreadable-01")).await;
    assert_eq!((status, asked["status"].as_str()), (StatusCode::ACCEPTED, Some("awaiting_approval")), "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let why = asked["plan"]["unreadable"].as_str().expect("the plan says it could not be read");
    assert!(why.contains("cannot assume the responder role") && why.contains("AccessDenied"), "{why}");
    assert_eq!((asked["plan"]["rules"].clone(), asked["plan"]["to_revoke"].clone()), (json!([]), json!(0)));
    let stored = record::get(&s.db.pool, &id).await.unwrap().unwrap();
    assert_eq!(stored.plan.as_ref().and_then(|p| p["unreadable"].as_str()), Some(why), "stored as unreadable");
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'response.request'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(audited, 1, "the request is on the audit log");

    let approve = format!("/api/v1/responses/{id}/approve");
    let (status, error) = call(&context, As::Session(&lead), &approve, json!({"reason": "go"}), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    let said = error["error"].as_str().unwrap();
    assert!(
        said.contains("has no plan to approve") && said.contains(why) && said.contains("ask for it again"),
        "{said}"
    );
    // AWS answers again: the plan stays what it was, so the approval stays refused.
    let refused = run::approve(&s.ctx, &id, "user:lead", "go").await;
    assert!(matches!(&refused, Err(RespondError::Conflict(m)) if m.contains("has no plan to approve")), "{refused:?}");

    let after = record::get(&s.db.pool, &id).await.unwrap().unwrap();
    assert_eq!((after.status.as_str(), after.approved_by.as_deref()), ("awaiting_approval", None));
    assert_eq!(after.calls, json!([]), "no call was made");
    assert_eq!(s.ingress(&group).await, [ssh_rule("198.51.100.66/32")], "the rule is still there");
    let children: i64 = sqlx::query_scalar("SELECT count(*) FROM response_actions WHERE kind = 'revoke-ingress-rule'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(children, 0, "no rule was acted on");
}

/// The CLI never approves (it cannot prove who it is); its `--as` asks as a dashboard analyst
/// and the record keeps the real login beside the name; a viewer, a disabled or unknown user
/// is no person; the same user in another case is the same person.
#[tokio::test]
async fn the_cli_never_approves_and_its_as_keeps_the_real_login() {
    let s = setup(true).await;
    record::set_approval(&s.db.pool, "quarantine", true, "user:admin").await.unwrap();
    s.owner.iam().create_user().user_name("bob").send().await.unwrap();
    auth::users::create(&s.db.pool, "watcher", "correct horse battery staple", Role::Viewer).await.unwrap();
    auth::users::create(&s.db.pool, "Analyst", "correct horse battery staple", Role::Analyst).await.unwrap();
    auth::users::set_disabled(&s.db.pool, "other", true).await.unwrap();
    let moto = fake::moto_url().await;
    let skywarden = |args: &[&str]| {
        let mut command = crate::support::skywarden_command(&s.db.url);
        command.env("USER", "opsbox").args(["respond"]).args(args);
        for (key, value) in fake::aws_env(moto) {
            command.env(key, value);
        }
        command.output().expect("running skywarden")
    };
    let apply = |who: &str| {
        let mut args =
            vec!["apply".to_owned(), s.account.clone(), "quarantine".into(), "user/bob".into(), "--reason".into()];
        args.extend(["hijack".into(), "--json".into(), "--as".into(), who.to_owned()]);
        skywarden(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for name in ["watcher", "nobody", "other"] {
        let refused = apply(name);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && stderr.contains("needs a person"), "--as {name}: {stderr}");
    }
    let asked = apply("analyst");
    let asked: Value = serde_json::from_slice(&asked.stdout).unwrap_or_else(|e| panic!("{e}: {asked:?}"));
    assert_eq!(asked["status"], "awaiting_approval");
    assert_eq!(asked["actor"], "cli:opsbox as user:analyst", "the real login is kept");
    let id = asked["id"].as_str().unwrap();
    let audit_actor: String = sqlx::query_scalar("SELECT actor FROM audit_log WHERE action = 'response.request'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(audit_actor, "cli:opsbox as user:analyst");

    for args in [vec!["approve", id, "--reason", "ok"], vec!["approve", id, "--reason", "ok", "--as", "lead"]] {
        let refused = skywarden(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        assert!(stderr.contains("approve action") && stderr.contains("in the dashboard"), "{stderr}");
    }
    for (approver, same) in [("user:watcher", false), ("user:Analyst", true), ("cli:opsbox as user:lead", false)] {
        let refused = run::approve(&s.ctx, id, approver, "ok").await;
        match refused {
            Err(RespondError::SecondPerson) if same => {}
            Err(RespondError::NotAPerson { .. } | RespondError::ApproveInDashboard { .. }) if !same => {}
            other => panic!("{approver}: {other:?}"),
        }
    }
    assert!(!deny_all_attached(&s, "bob").await, "nothing ran on a refused approval");
    let approved = run::approve(&s.ctx, id, "user:lead", "confirmed").await.unwrap();
    assert_eq!((approved.status.as_str(), approved.approved_by.as_deref()), ("applied", Some("user:lead")));
    assert!(deny_all_attached(&s, "bob").await);
}

#[tokio::test]
async fn the_undo_of_a_kind_needing_approval_waits_for_a_second_person() {
    let s = setup(true).await;
    record::set_approval(&s.db.pool, "quarantine", true, "user:admin").await.unwrap();
    s.owner.iam().create_user().user_name("carol").send().await.unwrap();
    let asked = s.apply(Action::parse("quarantine", "user/carol", None).unwrap(), "undo-approval-1").await.unwrap();
    run::approve(&s.ctx, &asked.id, "user:lead", "confirmed").await.unwrap();
    assert!(deny_all_attached(&s, "carol").await);

    let refused = run::undo(&s.ctx, &asked.id, "token:abc123", "not a person").await;
    assert!(matches!(refused, Err(RespondError::NotAPerson { .. })), "{refused:?}");
    let waiting = run::undo(&s.ctx, &asked.id, "user:analyst", "false positive").await.unwrap();
    assert_eq!(waiting.status, "undo_awaiting_approval");
    assert_eq!(waiting.undo_requested_by.as_deref(), Some("user:analyst"));
    assert!(deny_all_attached(&s, "carol").await, "the undo waits: the quarantine holds");
    let same = run::approve(&s.ctx, &asked.id, "user:analyst", "my own undo").await;
    assert!(matches!(same, Err(RespondError::SecondPerson)), "{same:?}");
    assert!(deny_all_attached(&s, "carol").await);

    let undone = run::approve(&s.ctx, &asked.id, "user:lead", "agreed").await.unwrap();
    assert_eq!((undone.status.as_str(), undone.undo_approved_by.as_deref()), ("undone", Some("user:lead")));
    assert_eq!(undone.undone_by.as_deref(), Some("user:analyst"));
    assert_eq!(undone.undo_approval_reason.as_deref(), Some("agreed"));
    assert!(!deny_all_attached(&s, "carol").await);
    assert_eq!(s.audit("response.approve_undo").await.len(), 1);
}

#[tokio::test]
async fn actions_abandoned_mid_way_are_ended_and_listed() {
    let s = setup(true).await;
    let insert = async |key: &str, status: &str, minutes: i32, before: Option<Value>| -> String {
        sqlx::query_scalar(
            "INSERT INTO response_actions (account_id, region, kind, target, resource, params, status, actor, reason,
                                           idempotency_key, lease_owner, lease_expires_at, state_before)
             VALUES ($1, 'global', 'quarantine', 'user/dave', 'iam/user/dave', '{}', $2, 'user:analyst', 'crash',
                     $3, 'dead-process', now() + make_interval(mins => $4), $5)
             RETURNING id::text",
        )
        .bind(&s.account)
        .bind(status)
        .bind(key)
        .bind(minutes)
        .bind(before)
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
    };
    let read_before = insert("abandoned-0001", "planned", -1, Some(json!({"attached": false}))).await;
    let nothing_read = insert("abandoned-0002", "planned", -5, None).await;
    let undo_in_flight = insert("abandoned-0003", "applied", -1, Some(json!({"attached": false}))).await;
    let running = insert("running-00001", "planned", 10, None).await;

    // A read writes nothing: listing (API or library) leaves the sweep to the containment job.
    let context = ApiContext::new(s.db.pool.clone()).with_aws(s.ctx.settings.clone(), s.ctx.base.clone());
    let (_, viewer) = auth::create(&s.db.pool, "reader", Role::Viewer).await.unwrap();
    let (status, listed) = crate::respond::api(&context, "GET", "/api/v1/responses", &viewer, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let shown = listed.as_array().unwrap().iter().find(|r| r["id"] == json!(read_before)).unwrap().clone();
    assert_eq!((shown["status"].as_str(), shown["abandoned_at"].is_null()), (Some("planned"), true), "{shown}");
    assert_eq!(s.db.count("SELECT count(*) FROM response_actions WHERE abandoned_at IS NOT NULL").await, 0);

    // The containment job sweeps even when automatic containment is off.
    let job = Containment { rules: AutoRules::off(), ctx: s.ctx.clone() };
    job.step().await.unwrap();
    let listed = record::list(&s.db.pool, Some(&s.account), None, 100).await.unwrap();
    let find = |id: &str| listed.iter().find(|r| r.id == id).unwrap();
    let swept = find(&read_before);
    assert_eq!(swept.status, "failed");
    assert!(swept.abandoned_at.is_some());
    let error = swept.error.as_deref().unwrap();
    assert!(error.starts_with("abandoned:") && error.contains("may have changed"), "{error}");
    assert!(find(&nothing_read).error.as_deref().unwrap().contains("no AWS call had been made"));
    let undo = find(&undo_in_flight);
    assert_eq!(undo.status, "applied", "an abandoned undo leaves the action applied");
    assert!(undo.undo_error.as_deref().unwrap().starts_with("abandoned:"));
    assert_eq!((find(&running).status.as_str(), find(&running).abandoned_at), ("planned", None), "a live lease stays");
    let leased = s.db.count("SELECT count(*) FROM response_actions WHERE lease_owner IS NOT NULL").await;
    assert_eq!(leased, 1);
}

pub(crate) fn alert_of(account: &str, principal: &str) -> Finding {
    Finding {
        policy_id: "aws-account-hijacking-attempt".into(),
        title: "Console login from a country new for the user".into(),
        severity: Severity::High,
        account_id: account.into(),
        subject: principal.into(),
        dedup_window: chrono::Duration::hours(24),
        principal: Some(principal.into()),
        source_ip: Some("203.0.113.10".parse().unwrap()),
        country: Some("RU".into()),
        resources: vec![],
        evidence_id: format!("evt-{account}-{principal}"),
        time: chrono::Utc::now(),
        mitre: vec![],
        session_key: None,
        details: json!({}),
    }
}

async fn alert_id(pool: &sqlx::PgPool, account: &str) -> String {
    sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE account_id = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_alert_of_another_account_and_unbounded_reasons_are_refused() {
    let s = setup(true).await;
    let other_account = fake::random_account_id();
    skywarden::notify::outbox::record_alerts(
        &s.db.pool,
        &[alert_of(&other_account, "mallory"), alert_of(&s.account, "erin")],
    )
    .await
    .unwrap();
    let foreign = alert_id(&s.db.pool, &other_account).await;
    let own = alert_id(&s.db.pool, &s.account).await;
    let (_, rule) = s.open_ssh("198.51.100.9/32").await;
    for (alert, key) in [(foreign.clone(), "alert-check-01"), (uuid_like(), "alert-check-02")] {
        let mut request = s.request(revoke(&rule), key);
        request.alert_id = Some(alert);
        let refused = run::apply(&s.ctx, &request).await;
        assert!(matches!(refused, Err(RespondError::Invalid { field: "alert_id", .. })), "{refused:?}");
    }
    assert_eq!(s.db.count("SELECT count(*) FROM response_actions").await, 0, "refused before anything is recorded");

    let context = ApiContext::new(s.db.pool.clone()).with_aws(s.ctx.settings.clone(), s.ctx.base.clone());
    let (_, analyst) = auth::create(&s.db.pool, "tier-1", Role::Analyst).await.unwrap();
    let body = |alert: &str, reason: &str| {
        json!({"account_id": s.account, "kind": "revoke-ingress-rule", "target": rule, "region": REGION,
               "reason": reason, "alert_id": alert})
    };
    let long = "x".repeat(2001);
    for (alert, reason, field) in
        [(&foreign, "hijack", "alert_id"), (&own, long.as_str(), "reason"), (&own, "  ", "reason")]
    {
        let (status, error) =
            api(&context, "POST", "/api/v1/responses", &analyst, Some("api-bounds-1"), Some(body(alert, reason))).await;
        assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{error}");
    }
    let (status, applied) =
        api(&context, "POST", "/api/v1/responses", &analyst, Some("api-bounds-2"), Some(body(&own, "hijack"))).await;
    assert_eq!((status, applied["alert_id"].as_str()), (StatusCode::CREATED, Some(own.as_str())), "{applied}");
    let undo = format!("/api/v1/responses/{}/undo", applied["id"].as_str().unwrap());
    let (status, error) = api(&context, "POST", &undo, &analyst, None, Some(json!({"reason": long}))).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("reason")), "{error}");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".into()
}

/// A slow action that is alive renews its lease (a heartbeat), so the sweep never ends it; an
/// action whose process died stops renewing and is swept once its lease runs out.
#[tokio::test]
async fn a_slow_action_that_is_alive_keeps_its_lease_and_is_never_swept() {
    let s = setup(true).await;
    let insert = async |key: &str| -> String {
        sqlx::query_scalar(
            "INSERT INTO response_actions (account_id, region, kind, target, resource, params, status, actor, reason,
                                           idempotency_key, lease_owner, lease_expires_at)
             VALUES ($1, 'global', 'quarantine', 'user/slow', $2, '{}', 'planned', 'user:analyst', 'slow',
                     $2, 'live-process', now() + interval '1 second')
             RETURNING id::text",
        )
        .bind(&s.account)
        .bind(key)
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
    };
    let alive = insert("slow-but-alive").await;
    let dead = insert("died-mid-way-1").await;
    let job = Containment { rules: AutoRules::off(), ctx: s.ctx.clone() };
    // The live action works for 3 seconds, three times its lease, renewing it every 300 ms.
    let slow_work = async {
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        job.step().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        Ok(())
    };
    let lease = |id| record::Lease { id, owner: "live-process" };
    run::with_heartbeat_every(&s.db.pool, lease(&alive), std::time::Duration::from_millis(300), slow_work)
        .await
        .unwrap();
    let status = |id: String| {
        let pool = s.db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT status, error FROM response_actions WHERE id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(status(alive.clone()).await, ("planned".to_owned(), None), "the live action kept its lease");
    let (dead_status, error) = status(dead.clone()).await;
    assert_eq!(dead_status, "failed");
    assert!(error.unwrap().starts_with("abandoned:"));
    // A lease that ran out is not renewed: the sweep may have ended the action.
    assert!(!record::renew_lease(&s.db.pool, lease(&dead)).await.unwrap());
    assert!(record::renew_lease(&s.db.pool, lease(&alive)).await.unwrap());
    let other = record::Lease { id: &alive, owner: "another-process" };
    assert!(!record::renew_lease(&s.db.pool, other).await.unwrap(), "only the lease's owner renews it");
}

/// A run whose lease ran out (swept, or claimed by another run) stops at its next heartbeat,
/// before its next call, and records nothing over what the sweep recorded.
#[tokio::test]
async fn a_run_that_lost_its_lease_stops_and_records_nothing() {
    let s = setup(true).await;
    let id: String = sqlx::query_scalar(
        "INSERT INTO response_actions (account_id, region, kind, target, resource, params, status, actor, reason,
                                       idempotency_key, lease_owner, lease_expires_at)
         VALUES ($1, 'global', 'quarantine', 'user/lost', 'iam/user/lost', '{}', 'planned', 'user:analyst', 'lost',
                 'lost-its-lease-1', 'old-run', now() + interval '1 second')
         RETURNING id::text",
    )
    .bind(&s.account)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    let old = record::Lease { id: &id, owner: "old-run" };
    // The old run stalls past its lease; meanwhile the sweep ends it and another run takes it.
    let called = std::sync::atomic::AtomicBool::new(false);
    let stalled = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        sqlx::query(
            "UPDATE response_actions SET status = 'failed', error = 'abandoned', lease_owner = 'new-run',
                    lease_expires_at = now() + interval '5 minutes'
             WHERE id = $1::uuid",
        )
        .bind(&id)
        .execute(&s.db.pool)
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        called.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    };
    let outcome = run::with_heartbeat_every(&s.db.pool, old, std::time::Duration::from_millis(400), stalled).await;
    let error = outcome.expect_err("the run stops").to_string();
    assert!(error.contains("lost its lease"), "{error}");
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst), "stopped before its next call");
    // Its writes are refused: the record keeps the sweep's outcome and the new run's lease.
    assert!(record::record_before(&s.db.pool, old, &json!({"late": true})).await.is_err());
    record::finish_leased(&s.db.pool, old, "applied", None, &json!([]), None).await.unwrap();
    let (status, owner, before): (String, Option<String>, Option<Value>) =
        sqlx::query_as("SELECT status, lease_owner, state_before FROM response_actions WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), owner.as_deref(), before), ("failed", Some("new-run"), None));
}

/// Review of issue 17: one rule is one lease however it is named (`sg-…:sgr-…` or `sgr-…`).
/// While a run of one spelling holds it (claimed, not yet finished), the other is busy.
#[tokio::test]
async fn two_spellings_of_one_rule_share_one_lease() {
    let s = setup(true).await;
    let (group, rule) = s.open_ssh("198.51.100.9/32").await;
    let spellings = [revoke(&format!("{group}:{rule}")), revoke(&rule)];
    for (at, (held, asked)) in [(&spellings[0], &spellings[1]), (&spellings[1], &spellings[0])].into_iter().enumerate()
    {
        let key = format!("spelling-held-{at}");
        let running = record::NewAction {
            account_id: &s.account,
            action: held,
            alert_id: None,
            actor: "user:other",
            reason: "running",
            idempotency_key: &key,
            lease_owner: "another-process",
            awaiting_approval: false,
            automatic_rule: None,
        };
        assert!(matches!(record::claim(&s.db.pool, &running).await.unwrap(), record::Claim::New(_)));
        let busy = s.apply(asked.clone(), &format!("spelling-asked-{at}")).await;
        assert!(
            matches!(busy, Err(RespondError::Busy { .. })),
            "{} while {} runs: {busy:?}",
            asked.target(),
            held.target()
        );
        assert_eq!(s.ingress(&group).await.len(), 1, "nothing revoked while the other run holds the rule");
        sqlx::query("UPDATE response_actions SET lease_owner = NULL, status = 'failed' WHERE idempotency_key = $1")
            .bind(&key)
            .execute(&s.db.pool)
            .await
            .unwrap();
    }
    // Each refusal is audited, though nothing was recorded for it.
    let refused = s.audit("response.apply_refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0]["error"].as_str().unwrap().contains("holds the lease"), "{refused:?}");
}

/// Undo is only for what Skywarden applied: a failed action (refused on a protected group), an
/// automatic dry run, an action awaiting approval and one still planned are each refused as not
/// undoable, through the API with the reason, and nothing is called.
#[tokio::test]
async fn only_what_skywarden_applied_can_be_undone() {
    let s = setup(true).await;
    let context = ApiContext::new(s.db.pool.clone()).with_aws(s.ctx.settings.clone(), s.ctx.base.clone());
    let (_, token) = auth::create(&s.db.pool, "analyst's script", Role::Analyst).await.unwrap();
    let (group, rule) = s.open_ssh("198.51.100.11/32").await;
    let tag = aws_sdk_ec2::types::Tag::builder().key("skywarden:protected").value("bastion").build();
    s.owner.ec2(REGION).create_tags().resources(&group).tags(tag).send().await.unwrap();
    let failed = s.apply(revoke(&rule), "not-undoable-1").await.unwrap_err();
    assert!(matches!(failed, RespondError::Protected { .. }), "{failed:?}");
    let failed = crate::respond::by_key(&s, "not-undoable-1").await;

    let (_, other) = s.open_ssh("192.0.2.11/32").await;
    let action = revoke(&other);
    let new = |key: &'static str, awaiting_approval: bool| record::NewAction {
        account_id: &s.account,
        action: &action,
        alert_id: None,
        actor: "user:analyst",
        reason: "contain",
        idempotency_key: key,
        lease_owner: "",
        awaiting_approval,
        automatic_rule: None,
    };
    let dry_run =
        record::record_unrun(&s.db.pool, &new("not-undoable-2", false), "dry_run", Some(&json!({})), &json!([]), None)
            .await
            .unwrap()
            .unwrap();
    let awaiting = match record::claim(&s.db.pool, &new("not-undoable-3", true)).await.unwrap() {
        record::Claim::New(id) => id,
        record::Claim::Replayed(_) => panic!("a new key"),
    };
    let planned = match record::claim(&s.db.pool, &new("not-undoable-4", false)).await.unwrap() {
        record::Claim::New(id) => id,
        record::Claim::Replayed(_) => panic!("a new key"),
    };
    for (id, status) in
        [(&failed.id, "failed"), (&dry_run, "dry_run"), (&awaiting, "awaiting_approval"), (&planned, "planned")]
    {
        let refused = run::undo(&s.ctx, id, "user:lead", "undo it").await;
        assert!(
            matches!(&refused, Err(RespondError::NotUndoable { status: found, .. }) if found == status),
            "{refused:?}"
        );
        let uri = format!("/api/v1/responses/{id}/undo");
        let (code, error) = call(&context, As::Token(&token), &uri, json!({"reason": "undo it"}), None).await;
        assert_eq!(code, StatusCode::CONFLICT, "{error}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(status) && message.contains("only an applied action can be undone"), "{message}");
        let after: (String, Option<Value>) =
            sqlx::query_as("SELECT status, undo_state FROM response_actions WHERE id = $1::uuid")
                .bind(id)
                .fetch_one(&s.db.pool)
                .await
                .unwrap();
        assert_eq!(after, (status.to_owned(), None), "nothing undone");
    }
    assert_eq!(s.ingress(&group).await.len(), 1);
    assert_eq!(s.audit("response.undo_refused").await.len(), 8, "each refused undo is audited");
    assert!(s.audit("response.undo").await.is_empty(), "no undo ran");
}

/// A stop that AWS refuses half-way (StopInstances denied after the snapshots) is recorded
/// `failed` with the snapshots taken in `state_after` and the refusal in `calls`, and leaves no
/// `skywarden:stopped-by-response` tag on the still running instance (which would let the
/// responder role start it); its undo is refused.
#[tokio::test]
async fn a_stop_refused_half_way_records_its_snapshots_and_tags_nothing() {
    use aws_sdk_ec2::types::InstanceStateName;
    let s = setup(true).await;
    let refusal = r#"<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>2b1c5e0e-1a2b-4c3d-8e9f-0a1b2c3d4e5f</RequestID></Response>"#;
    let refuse_stop = |body: &[u8]| crate::respond::contains(body, b"Action=StopInstances");
    let proxy = crate::respond::refusing_proxy(fake::moto_url().await, refuse_stop, refusal).await;
    let settings = fake::settings_for(&proxy);
    let base = settings.load().await;
    let ctx = run::ResponseContext { pool: s.db.pool.clone(), settings, base, trusted_cidrs: vec![] };
    let ec2 = s.owner.ec2(REGION);
    let launched = ec2.run_instances().image_id("ami-12c6146b").min_count(1).max_count(1).send().await.unwrap();
    let instance = launched.instances()[0].instance_id().unwrap().to_owned();

    let stop = Action::parse("stop-instance", &instance, Some(REGION)).unwrap();
    let refused = run::apply(&ctx, &s.request(stop, "stop-refused-1")).await;
    assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("UnauthorizedOperation")), "{refused:?}");
    let record = crate::respond::by_key(&s, "stop-refused-1").await;
    assert_eq!(record.status, "failed");
    let volumes = record.state_before.as_ref().unwrap()["volumes"].as_array().unwrap().len();
    assert!(volumes >= 1, "{record:?}");
    let after = record.state_after.as_ref().expect("what it changed is recorded");
    assert_eq!(after["snapshots"].as_array().unwrap().len(), volumes, "{after}");
    assert!(after.get("tagged").is_none(), "{after}");
    let calls = record.calls.as_array().unwrap();
    let operations: Vec<&str> = calls.iter().map(|c| c["operation"].as_str().unwrap()).collect();
    assert_eq!(operations.len(), volumes + 1, "{operations:?}");
    assert_eq!(operations.last(), Some(&"ec2:StopInstances"));
    assert_eq!(calls.last().unwrap()["answer"]["error"], "UnauthorizedOperation", "{calls:?}");

    let described = ec2.describe_instances().instance_ids(&instance).send().await.unwrap();
    let found = &described.reservations()[0].instances()[0];
    assert_eq!(found.state().and_then(|s| s.name()), Some(&InstanceStateName::Running));
    assert!(
        !found.tags().iter().any(|t| t.key() == Some("skywarden:stopped-by-response")),
        "no tag claims a stop that did not happen: {:?}",
        found.tags()
    );
    let undo = run::undo(&s.ctx, &record.id, "user:lead", "nothing to undo").await;
    assert!(matches!(undo, Err(RespondError::NotUndoable { .. })), "{undo:?}");
}

/// The undo of an action is a write like any other: refused (and recorded so) once its resource
/// has been tagged `skywarden:protected` since it was applied.
#[tokio::test]
async fn an_undo_on_a_resource_protected_since_is_refused() {
    let s = setup(true).await;
    let (group, rule) = s.open_ssh("198.51.100.12/32").await;
    let applied = s.apply(revoke(&rule), "protected-undo-1").await.unwrap();
    assert!(s.ingress(&group).await.is_empty());
    let tag = aws_sdk_ec2::types::Tag::builder().key("skywarden:protected").value("locked down").build();
    s.owner.ec2(REGION).create_tags().resources(&group).tags(tag).send().await.unwrap();
    let refused = run::undo(&s.ctx, &applied.id, "user:lead", "false positive").await;
    assert!(matches!(refused, Err(RespondError::Protected { .. })), "{refused:?}");
    assert!(s.ingress(&group).await.is_empty(), "the rule is not re-authorized");
    let record = crate::respond::by_key(&s, "protected-undo-1").await;
    assert_eq!(record.status, "applied", "still applied: the undo did not happen");
    assert!(record.undo_error.as_deref().is_some_and(|e| e.contains("skywarden:protected")), "{record:?}");

    s.owner.iam().create_user().user_name("henry").send().await.unwrap();
    let quarantined = s.apply(Action::parse("quarantine", "user/henry", None).unwrap(), "protected-undo-2").await;
    let quarantined = quarantined.unwrap();
    let tag = aws_sdk_iam::types::Tag::builder().key("skywarden:protected").value("x").build().unwrap();
    s.owner.iam().tag_user().user_name("henry").tags(tag).send().await.unwrap();
    let refused = run::undo(&s.ctx, &quarantined.id, "user:lead", "cleared").await;
    assert!(matches!(refused, Err(RespondError::Protected { .. })), "{refused:?}");
    assert!(deny_all_attached(&s, "henry").await, "AWSDenyAll stays on a user protected since");
}

/// A stop of an instance already stopped (by its owner) changes nothing: applied with no call,
/// and its undo starts nothing (it restores the state it found: stopped).
#[tokio::test]
async fn the_undo_of_a_stop_that_found_the_instance_stopped_starts_nothing() {
    use aws_sdk_ec2::types::InstanceStateName;
    let s = setup(true).await;
    let ec2 = s.owner.ec2(REGION);
    let launched = ec2.run_instances().image_id("ami-12c6146b").min_count(1).max_count(1).send().await.unwrap();
    let instance = launched.instances()[0].instance_id().unwrap().to_owned();
    ec2.stop_instances().instance_ids(&instance).send().await.unwrap();
    let stop = Action::parse("stop-instance", &instance, Some(REGION)).unwrap();
    let idle = s.apply(stop, "stop-stopped-1").await.unwrap();
    assert_eq!((idle.status.as_str(), idle.calls.as_array().unwrap().len()), ("applied", 0), "{idle:?}");
    let undone = run::undo(&s.ctx, &idle.id, "user:lead", "nothing to restore").await.unwrap();
    assert_eq!(undone.status, "undone");
    assert_eq!(undone.undo_state, Some(json!({"unchanged": true})), "{undone:?}");
    let described = ec2.describe_instances().instance_ids(&instance).send().await.unwrap();
    let state = described.reservations()[0].instances()[0].state().and_then(|s| s.name()).cloned();
    assert!(matches!(state, Some(InstanceStateName::Stopped | InstanceStateName::Stopping)), "left stopped: {state:?}");
    assert!(
        !described.reservations()[0].instances()[0]
            .tags()
            .iter()
            .any(|t| t.key() == Some("skywarden:stopped-by-response"))
    );
}
