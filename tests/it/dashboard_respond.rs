//! The seed story contained from the alert page, in Chromium against `skywarden serve` and moto:
//! moto holds a security group with SSH opened to the intruder's address, alice's access key
//! (the stolen one) and a trail whose logging was stopped; the CloudTrail events of those calls
//! raise the alerts. An analyst sees each action's dry run before anything changes, applies it
//! with a reason (a double click applies once), and moto shows the rule revoked, the key
//! inactive, alice quarantined; restarting logging needs a second person, who approves it from
//! the same page; a viewer sees no apply button and gets 403 from the API. The incident's
//! timeline shows every action with who and why, and the incident page undoes the quarantine
//! (and shows why the rule's undo is refused); "every rule alice opened", once rules need a
//! second person, shows the rules it fixed with each one's status until another analyst
//! approves it. Without a responder role the page says response
//! is not enabled, with the command that enables it. The alert and incident pages pass axe.
//! Screenshots are kept in `target/test-artifacts/dashboard-respond/`.

use std::path::Path;

use chrono::Utc;
use serde_json::{Value, json};

use crate::dashboard_investigation::{AXE_JS, axe_violations};
use crate::support::aws as fake;
use crate::support::browser::{Browser, artifacts_dir};
use crate::support::{KillOnDrop, TestDb, dashboard, mmdb};
use skywarden::accounts::{self, NewAccount, PollIntervals, responder};
use skywarden::aws::AccountSession;

const REGION: &str = "us-east-1";
const INTRUDER: &str = "176.36.10.20";
const TRAIL: &str = "management-trail";

/// What moto holds for the story, and the clients to read it back.
struct Story {
    account: String,
    owner: AccountSession,
    group: String,
    rule: String,
    key: String,
}

/// The account onboarded with a responder role, and moto's resources of the intrusion.
async fn moto_story(db: &TestDb, moto: &str) -> Story {
    let settings = fake::settings_for(moto);
    let base = settings.load().await;
    let account = fake::random_account_id();
    let new = NewAccount {
        role_arn: format!("arn:aws:iam::{account}:role/SkywardenReadOnly"),
        regions: vec![REGION.into()],
        ..Default::default()
    };
    let onboarded = accounts::onboard(&db.pool, &new, &PollIntervals::default()).await.unwrap();
    let responder_role = format!("arn:aws:iam::{account}:role/SkywardenResponder");
    responder::set(&db.pool, &account, &responder_role, None).await.unwrap();
    let owner = AccountSession::assume(&base, &settings, &onboarded.assume_target()).await.unwrap();

    use aws_sdk_ec2::types::{IpPermission, IpRange};
    let ec2 = owner.ec2(REGION);
    let vpc = ec2.create_vpc().cidr_block("10.20.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let group = ec2.create_security_group().group_name("web").description("web").vpc_id(&vpc).send().await;
    let group = group.unwrap().group_id.unwrap();
    let ssh = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(IpRange::builder().cidr_ip(format!("{INTRUDER}/32")).build())
        .build();
    let opened = ec2.authorize_security_group_ingress().group_id(&group).ip_permissions(ssh).send().await.unwrap();
    let rule = opened.security_group_rules()[0].security_group_rule_id().unwrap().to_owned();

    let iam = owner.iam();
    // AWSDenyAll, which quarantine attaches (moto has it when `make test` starts it).
    crate::respond::assert_deny_all(&owner).await;
    iam.create_user().user_name("alice").send().await.unwrap();
    let key = iam.create_access_key().user_name("alice").send().await.unwrap();
    let key = key.access_key().unwrap().access_key_id().to_owned();
    assert!(key.starts_with("AKIA"), "a long-term key: {key}");

    let bucket = format!("trail-{account}");
    owner.s3(REGION).create_bucket().bucket(&bucket).send().await.unwrap();
    let trails = owner.cloudtrail(REGION);
    trails.create_trail().name(TRAIL).s3_bucket_name(&bucket).send().await.unwrap();
    trails.start_logging().name(TRAIL).send().await.unwrap();
    trails.stop_logging().name(TRAIL).send().await.unwrap();
    Story { account, owner, group, rule, key }
}

/// One of alice's calls with her stolen key from the intruder's address, as CloudTrail logs it.
fn alice_call(story: &Story, id: &str, minutes_ago: i64, source: &str, name: &str, request: Value) -> Value {
    let time = Utc::now() - chrono::Duration::minutes(minutes_ago);
    let mut event = fake::cloudtrail_event(&story.account, id, time, name, request);
    event["userIdentity"]["accessKeyId"] = json!(story.key);
    event["eventSource"] = json!(source);
    event["sourceIPAddress"] = json!(INTRUDER);
    event
}

/// The events of the intrusion, imported: the SSH rule it opened and the trail it stopped.
fn import_events(db: &TestDb, dir: &Path, story: &Story) {
    let cidr = format!("{INTRUDER}/32");
    let mut opened = alice_call(
        story,
        "evt-open-ssh",
        40,
        "ec2.amazonaws.com",
        "AuthorizeSecurityGroupIngress",
        json!({"groupId": story.group, "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
               "ipRanges": {"items": [{"cidrIp": cidr}]}}]}}),
    );
    opened["responseElements"] = json!({"_return": true, "securityGroupRuleSet": {"items": [{
        "groupId": story.group, "securityGroupRuleId": story.rule, "isEgress": false,
        "ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": cidr}]}});
    let trail_arn = format!("arn:aws:cloudtrail:{REGION}:{}:trail/{TRAIL}", story.account);
    let stopped = alice_call(
        story,
        "evt-stop-logging",
        30,
        "cloudtrail.amazonaws.com",
        "StopLogging",
        json!({"name": trail_arn}),
    );
    let path = dir.join("events.json");
    std::fs::write(&path, serde_json::to_vec(&json!({"Records": [opened, stopped]})).unwrap()).unwrap();
    let geo = mmdb::sample_incident_countries(dir);
    let imported = db.skywarden(&["import", "--geoip", geo.to_str().unwrap(), path.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    for (name, role) in [("oncall", "analyst"), ("lead", "analyst"), ("watcher", "viewer")] {
        dashboard::add_user(db, name, role);
    }
}

async fn serve(db: &TestDb, moto: &str) -> (KillOnDrop, String) {
    dashboard::serve(db, |serve| {
        serve.args(["--no-pollers", "--no-notifications"]).envs(fake::aws_env(moto));
    })
    .await
}

async fn sign_in(browser: &Browser, base: &str, user: &str) {
    dashboard::sign_in(browser, base, user).await;
    browser.wait_for_text("#who", user).await;
}

async fn sign_out(browser: &Browser) {
    browser.click("#logout").await;
    browser.find("#sign-in").await;
}

async fn alert_of(db: &TestDb, policy: &str) -> String {
    sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE policy_id = $1")
        .bind(policy)
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("no {policy} alert: {e}"))
}

/// An id as the page writes it into element ids.
fn slug(text: &str) -> String {
    let mapped: String = text.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    mapped.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

/// Opens an action's dry run and returns what it shows.
async fn dry_run(browser: &Browser, kind: &str, target: &str, operation: &str) -> String {
    let ident = slug(&format!("{kind}-{target}"));
    browser.click(&format!("#dry-run-{ident}")).await;
    let shown = browser.wait_for_text(&format!("#plan-{ident} .plan-calls"), operation).await;
    assert!(browser.count(&format!("#apply-{ident}")).await == 1, "apply comes after the dry run");
    shown
}

/// Applies an action after its dry run with a reason, clicking twice at once.
async fn apply_twice(browser: &Browser, kind: &str, target: &str, reason: &str) {
    let ident = slug(&format!("{kind}-{target}"));
    browser.type_into(&format!("#reason-{ident}"), reason).await;
    let script = format!("const b = document.getElementById('apply-{ident}'); b.click(); b.click(); return null;");
    browser.script(&script).await;
    browser.wait_for_text("#respond-flash", &format!("{kind} {target}")).await;
}

/// The status of the recorded action of this kind on the page.
async fn recorded_status(browser: &Browser, kind: &str) -> Value {
    let script = format!(
        "const r = document.querySelector('#responses-recorded tr[data-kind=\"{kind}\"]'); return r ? r.dataset.status : null;"
    );
    browser.script(&script).await
}

/// A POST from the signed-in page with its CSRF token: the HTTP status.
async fn post_status(browser: &Browser, path: &str, body: Value, key: Option<&str>) -> u64 {
    let key = key.map(|k| format!(", 'Idempotency-Key': '{k}'")).unwrap_or_default();
    let script = format!(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/session').then((r) => r.json()).then((s) => fetch({path:?}, {{method: 'POST', credentials: 'same-origin',
           headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token{key}}}, body: JSON.stringify({body})}}))
           .then((r) => done(r.status), (e) => done(String(e)));"
    );
    browser.script_async(&script).await.as_u64().expect("an HTTP status")
}

async fn assert_axe(browser: &Browser, page: &str) {
    let path = std::env::var("SKYWARDEN_TEST_AXE_JS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(AXE_JS));
    let axe = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}): run `make test-tools`", path.display()));
    let problems = axe_violations(browser, &axe).await;
    assert!(problems.is_empty(), "{page} fails axe: {problems:#?}");
}

impl Story {
    async fn ingress(&self) -> usize {
        use aws_sdk_ec2::types::Filter;
        let ec2 = self.owner.ec2(REGION);
        let rules = ec2
            .describe_security_group_rules()
            .filters(Filter::builder().name("group-id").values(&self.group).build())
            .send()
            .await
            .unwrap();
        rules.security_group_rules().iter().filter(|r| r.is_egress() == Some(false)).count()
    }

    async fn key_status(&self) -> String {
        let keys = self.owner.iam().list_access_keys().user_name("alice").send().await.unwrap();
        keys.access_key_metadata()[0].status().unwrap().as_str().to_owned()
    }

    /// Alice's deny-all: the inline quarantine policy, or AWS's AWSDenyAll attached.
    async fn quarantined(&self) -> bool {
        let iam = self.owner.iam();
        let inline = iam.list_user_policies().user_name("alice").send().await.unwrap();
        let attached = iam.list_attached_user_policies().user_name("alice").send().await.unwrap();
        inline.policy_names().iter().any(|p| p == "SkywardenQuarantine")
            || attached.attached_policies().iter().any(|p| p.policy_name() == Some("AWSDenyAll"))
    }

    async fn logging(&self) -> Option<bool> {
        self.owner.cloudtrail(REGION).get_trail_status().name(TRAIL).send().await.unwrap().is_logging()
    }
}

/// The analyst contains the hijacked key, the user and the rule from the rule's alert.
async fn contain_from_the_rule_alert(browser: &Browser, base: &str, db: &TestDb, story: &Story) {
    let alert = alert_of(db, "aws-security-group-ingress-opened").await;
    browser.goto(&format!("{base}/#/alert/{alert}")).await;
    browser.wait_for_text("#respond", "Respond").await;
    let shown = dry_run(browser, "revoke-ingress-rule", &story.rule, "ec2:RevokeSecurityGroupIngress").await;
    assert!(shown.contains(&story.rule) && shown.contains(&story.group), "the exact call: {shown}");
    let current =
        browser.text(&format!("#plan-{} .plan-current", slug(&format!("revoke-ingress-rule-{}", story.rule)))).await;
    assert!(current.contains(&format!("{INTRUDER}/32")), "the rule as it is now: {current}");
    assert_eq!(story.ingress().await, 1, "the dry run changed nothing");
    browser.screenshot("01-dry-run").await;

    // No reason, no action.
    let ident = slug(&format!("revoke-ingress-rule-{}", story.rule));
    browser.click(&format!("#apply-{ident}")).await;
    browser.wait_for_text(&format!("#applied-{ident}"), "a reason is required").await;
    assert_eq!(story.ingress().await, 1);

    apply_twice(browser, "revoke-ingress-rule", &story.rule, "SSH opened to the intruder's address").await;
    assert_eq!(story.ingress().await, 0, "the rule is revoked");
    let key_target = format!("alice:{}", story.key);
    dry_run(browser, "deactivate-access-key", &key_target, "iam:UpdateAccessKey").await;
    assert_eq!(story.key_status().await, "Active", "the dry run changed nothing");
    apply_twice(browser, "deactivate-access-key", &key_target, "alice's key is used from Ukraine").await;
    assert_eq!(story.key_status().await, "Inactive", "the key is deactivated");
    dry_run(browser, "quarantine", "user/alice", "iam:").await;
    assert!(!story.quarantined().await, "the dry run changed nothing");
    apply_twice(browser, "quarantine", "user/alice", "alice's credentials are in the intruder's hands").await;
    assert!(story.quarantined().await, "alice is quarantined");

    for kind in ["revoke-ingress-rule", "deactivate-access-key", "quarantine"] {
        assert_eq!(recorded_status(browser, kind).await, json!("applied"), "{kind}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM response_actions").fetch_one(&db.pool).await.unwrap();
    assert_eq!(rows, 3, "each double click applied once");
    browser.screenshot("02-applied").await;
    assert_axe(browser, "the alert page").await;
}

/// Restarting logging needs a second person: the analyst asks, and can not approve it.
async fn ask_to_restart_logging(browser: &Browser, base: &str, db: &TestDb, story: &Story) -> String {
    let approval = db.skywarden(&["respond", "approval", "start-logging"]);
    assert!(approval.status.success(), "{}", String::from_utf8_lossy(&approval.stderr));
    let alert = alert_of(db, "aws-cloudtrail-logging-disabled").await;
    browser.goto(&format!("{base}/#/alert/{alert}")).await;
    let trail = format!("arn:aws:cloudtrail:{REGION}:{}:trail/{TRAIL}", story.account);
    dry_run(browser, "start-logging", &trail, "cloudtrail:StartLogging").await;
    apply_twice(browser, "start-logging", &trail, "the intruder stopped the trail").await;
    browser.wait_for_text("#respond-flash", "awaiting a second person's approval").await;
    assert_eq!(recorded_status(browser, "start-logging").await, json!("awaiting_approval"));
    assert_eq!(browser.count("#responses-recorded button[id^=approve-]").await, 0, "not by who asked");
    assert_eq!(story.logging().await, Some(false), "nothing runs before the approval");
    alert
}

/// A viewer sees the section read-only, and the API refuses them.
async fn viewer_is_read_only(browser: &Browser, base: &str, alert: &str, story: &Story) {
    browser.goto(&format!("{base}/#/alert/{alert}")).await;
    browser.wait_for_text("#respond-read-only", "analyst or admin").await;
    browser.find("#response-actions li.response-action").await;
    for control in ["button.apply", "button.dry-run-button", "#responses-recorded button"] {
        assert_eq!(browser.count(control).await, 0, "{control}");
    }
    let action =
        json!({"account_id": story.account, "kind": "revoke-ingress-rule", "target": story.rule, "region": REGION});
    assert_eq!(post_status(browser, "/api/v1/responses/plan", action.clone(), None).await, 403);
    let mut apply = action;
    apply["reason"] = json!("a viewer tries");
    assert_eq!(post_status(browser, "/api/v1/responses", apply, Some("viewer-key-0001")).await, 403);
    browser.screenshot("03-viewer").await;
    assert_axe(browser, "the alert page for a viewer").await;
}

/// The second analyst approves, and the trail logs again.
async fn second_person_approves(browser: &Browser, base: &str, alert: &str, story: &Story) {
    browser.goto(&format!("{base}/#/alert/{alert}")).await;
    let approve = browser.find("#responses-recorded button[id^=approve-]").await;
    assert!(!approve.is_empty());
    let id: String = browser
        .script("return document.querySelector('#responses-recorded button[id^=approve-]').id.slice('approve-'.length)")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    browser.type_into(&format!("#reason-approve-{id}"), "confirmed: the trail must log").await;
    browser.click(&format!("#approve-{id}")).await;
    browser.wait_for_text("#respond-flash", "applied").await;
    assert_eq!(recorded_status(browser, "start-logging").await, json!("applied"));
    assert_eq!(story.logging().await, Some(true), "logging restarted");
}

/// Every action is on the incident's timeline, with who and why.
async fn on_the_incident_timeline(browser: &Browser, base: &str, db: &TestDb) {
    let incidents =
        skywarden::alerts::incident_pages::incidents(&db.pool, &Default::default(), None, 10).await.unwrap();
    assert_eq!(incidents.len(), 1, "one intrusion, one incident");
    browser.goto(&format!("{base}/#/incident/{}", incidents[0].incident.id)).await;
    browser.wait_for_text("#incident-timeline", "start-logging").await;
    let script = "return [...document.querySelectorAll('#incident-timeline li[data-kind=response]')]
                  .map((li) => [li.dataset.status, li.textContent])";
    let entries: Vec<(String, String)> = serde_json::from_value(browser.script(script).await).unwrap();
    let applied: Vec<&String> = entries.iter().filter(|(s, _)| s == "applied").map(|(_, t)| t).collect();
    assert_eq!(applied.len(), 4, "{entries:#?}");
    for kind in ["revoke-ingress-rule", "deactivate-access-key", "quarantine", "start-logging"] {
        assert!(applied.iter().any(|t| t.contains(kind)), "{kind} applied: {entries:#?}");
    }
    let asked = entries.iter().find(|(s, t)| s == "awaiting_approval" && t.contains("start-logging")).expect("asked");
    assert!(asked.1.contains("oncall") && asked.1.contains("the intruder stopped the trail"), "{asked:?}");
    let approved = entries.iter().find(|(s, _)| s == "approved").expect("approved");
    assert!(approved.1.contains("lead") && approved.1.contains("confirmed"), "{approved:?}");
    // In time order, after the alerts that led to them.
    let times: Vec<f64> = serde_json::from_value(
        browser
            .script(
                "return [...document.querySelectorAll('#incident-timeline time')].map((t) => Date.parse(t.dateTime))",
            )
            .await,
    )
    .unwrap();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The API's story says the same: every response, the whole timeline (not cut), the place.
    let script = format!(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/incidents/{}').then((r) => r.json()).then(done, (e) => done(String(e)));",
        incidents[0].incident.id
    );
    let story = browser.script_async(&script).await;
    assert_eq!(story["responses"].as_array().map(Vec::len), Some(4), "{}", story["responses"]);
    let shown = browser.count("#incident-timeline li").await;
    assert_eq!(
        (story["merged_timeline"]["total"].as_u64(), story["merged_timeline"]["truncated"].as_bool()),
        (Some(shown as u64), Some(false))
    );
    assert_eq!(
        (story["places"][0]["address"].as_str(), story["places"][0]["country"].as_str()),
        (Some(INTRUDER), Some("UA"))
    );
    browser.find("svg[data-testid=incident-map] circle.alert").await;
    browser.wait_for_text("#incident-places", INTRUDER).await;
    browser.screenshot("04-incident").await;
    browser.script("document.getElementById('incident-timeline').scrollIntoView(); return null").await;
    browser.screenshot("05-incident-timeline").await;
    assert_axe(browser, "the incident page").await;
}

/// The id of the recorded action of this kind on the page.
async fn recorded_id(browser: &Browser, kind: &str) -> String {
    let script = format!("return document.querySelector('#responses-recorded tr[data-kind=\"{kind}\"]').dataset.id");
    browser.script(&script).await.as_str().expect("a recorded action").to_owned()
}

/// From the incident page: the quarantine is undone (and says so on the timeline); the rule's
/// undo, which would grant access, is refused with the reason shown.
async fn undo_from_the_incident_page(browser: &Browser, story: &Story) {
    let quarantine = recorded_id(browser, "quarantine").await;
    browser.type_into(&format!("#reason-undo-{quarantine}"), "alice's password was reset: lift it").await;
    browser.click(&format!("#undo-{quarantine}")).await;
    browser.wait_for_text("#respond-flash", "quarantine user/alice: undone").await;
    assert!(!story.quarantined().await, "AWSDenyAll is detached");
    let undone =
        browser.wait_for_text("#incident-timeline li[data-kind=response][data-status=undone]", "quarantine").await;
    assert!(undone.contains("lead") && undone.contains("alice's password was reset"), "{undone}");

    let rule = recorded_id(browser, "revoke-ingress-rule").await;
    browser.type_into(&format!("#reason-undo-{rule}"), "try to re-open it").await;
    browser.click(&format!("#undo-{rule}")).await;
    let refused = browser.wait_for_text(&format!("#result-undo-{rule}"), "grant access").await;
    assert!(refused.contains("AllowGrantingUndo"), "{refused}");
    assert_eq!(story.ingress().await, 0, "the rule stays revoked");
}

/// Alice opens one more rule (port 8443 from the intruder), logged as CloudTrail logs it: the
/// principal's step has a rule to revoke. Its rule id.
async fn alice_opens_another_rule(db: &TestDb, story: &Story) -> String {
    use aws_sdk_ec2::types::{IpPermission, IpRange};
    let cidr = format!("{INTRUDER}/32");
    let permission = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(8443)
        .to_port(8443)
        .ip_ranges(IpRange::builder().cidr_ip(&cidr).build())
        .build();
    let ec2 = story.owner.ec2(REGION);
    let answer =
        ec2.authorize_security_group_ingress().group_id(&story.group).ip_permissions(permission).send().await.unwrap();
    let rule = answer.security_group_rules()[0].security_group_rule_id().unwrap().to_owned();
    let request = json!({"groupId": story.group});
    let mut event = alice_call(story, "ev-one-more", 1, "ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", request);
    event["responseElements"] = json!({"_return": true, "securityGroupRuleSet": {"items": [{
        "groupId": story.group, "securityGroupRuleId": rule, "isEgress": false, "ipProtocol": "tcp",
        "fromPort": 8443, "toPort": 8443, "cidrIpv4": cidr}]}});
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, region, event_source, event_name, user_name, raw)
         VALUES ($1, now() - interval '1 minute', 'ev-one-more', $2, 'ec2.amazonaws.com',
                 'AuthorizeSecurityGroupIngress', 'alice', $3)",
    )
    .bind(&story.account)
    .bind(REGION)
    .bind(&event)
    .execute(&db.pool)
    .await
    .unwrap();
    rule
}

/// From the incident page: "revoke every rule opened by alice" as one action; its dry run lists
/// each rule alice's events opened with its state now (the SSH rule, revoked already, and the
/// one she opened since). Revoking rules needs a second person here: the request shows the
/// rules it fixed, each with its status (the SSH rule gone, the new one to be revoked), nothing
/// changes until another analyst approves, and the approval revokes exactly that one.
async fn every_rule_of_the_principal_from_the_incident_page(browser: &Browser, base: &str, db: &TestDb, story: &Story) {
    let kind = "revoke-principal-ingress";
    let another = alice_opens_another_rule(db, story).await;
    let approval = db.skywarden(&["respond", "approval", "revoke-ingress-rule"]);
    assert!(approval.status.success(), "{}", String::from_utf8_lossy(&approval.stderr));
    assert_eq!(story.ingress().await, 1, "an open rule before the step");
    browser.find(&format!("#response-actions li[data-kind={kind}][data-target=\"user/alice\"]")).await;
    dry_run(browser, kind, "user/alice", "ec2:RevokeSecurityGroupIngress").await;
    let ident = slug(&format!("{kind}-user/alice"));
    let current = browser.text(&format!("#plan-{ident} .plan-current")).await;
    assert!(current.contains(&story.rule) && current.contains("\"exists\": false"), "{current}");
    assert!(current.contains(&another) && current.contains("\"exists\": true"), "{current}");
    apply_twice(browser, kind, "user/alice", "close everything alice opened").await;
    browser.wait_for_text("#respond-flash", "awaiting a second person's approval").await;
    assert_eq!(recorded_status(browser, kind).await, "awaiting_approval");
    let planned = planned_rules(browser, kind).await;
    assert_eq!(planned.len(), 2, "{planned:#?}");
    let line = |rule: &str| planned.iter().find(|l| l.contains(rule)).cloned().unwrap_or_default();
    let (gone, open) = (line(&story.rule), line(&another));
    assert!(gone.contains(&story.group) && gone.ends_with("not revoked: gone"), "{planned:#?}");
    assert!(
        open.contains(&format!("tcp 8443 from {INTRUDER}/32")) && open.ends_with("will be revoked"),
        "{planned:#?}"
    );
    let summary = browser.text(&format!("#responses-recorded tr[data-kind={kind}] .planned-rules summary")).await;
    assert!(summary.starts_with("1 rule to revoke") && summary.contains("1 listed but left"), "{summary}");
    assert_eq!(story.ingress().await, 1, "nothing runs before the approval");
    browser.screenshot("06-planned-rules").await;

    let incident: String = browser.script("return location.hash").await.as_str().unwrap().to_owned();
    sign_out(browser).await;
    sign_in(browser, base, "oncall").await;
    browser.goto(&format!("{base}/{incident}")).await;
    browser.find(&format!("#responses-recorded tr[data-kind={kind}] button[id^=approve-]")).await;
    let id = recorded_id(browser, kind).await;
    assert_eq!(planned_rules(browser, kind).await, planned, "the approver sees the same rules");
    browser.type_into(&format!("#reason-approve-{id}"), "checked: only the rule she opened since").await;
    browser.click(&format!("#approve-{id}")).await;
    browser.wait_for_text("#respond-flash", "applied").await;
    assert_eq!(recorded_status(browser, kind).await, "applied");
    assert_eq!(story.ingress().await, 0, "the rule she opened since is revoked");
}

/// The planned rules of the recorded action of this kind, one line each as the page shows them.
async fn planned_rules(browser: &Browser, kind: &str) -> Vec<String> {
    let selector = format!("#responses-recorded tr[data-kind={kind}] .planned-rules > ul > li");
    browser.find(&selector).await;
    let script = format!("return [...document.querySelectorAll('{selector}')].map((li) => li.textContent.trim())");
    serde_json::from_value(browser.script(&script).await).unwrap()
}

/// Once the account's responder role is cleared, the page says response is not enabled, with
/// the command that enables it, and offers no dry run.
async fn not_enabled_without_a_responder_role(browser: &Browser, base: &str, db: &TestDb, story: &Story, alert: &str) {
    assert!(responder::clear(&db.pool, &story.account).await.unwrap());
    browser.goto(&format!("{base}/#/alert/{alert}")).await;
    let notice = browser.wait_for_text("#respond-not-enabled", "not enabled").await;
    let command = format!("skywarden accounts responder set {}", story.account);
    assert!(notice.contains(&command), "{notice}");
    browser.find("#response-actions li.response-action").await;
    assert_eq!(browser.count("button.dry-run-button").await, 0);
    browser.screenshot("07-not-enabled").await;
}

#[tokio::test]
async fn the_seed_story_is_contained_from_the_alert_page_with_a_second_person_for_logging() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let moto = fake::moto_url().await;
    let story = moto_story(&db, moto).await;
    import_events(&db, dir.path(), &story);
    let (_server, base) = serve(&db, moto).await;
    let browser = Browser::start(artifacts_dir("dashboard-respond")).await;

    sign_in(&browser, &base, "oncall").await;
    contain_from_the_rule_alert(&browser, &base, &db, &story).await;
    let logging_alert = ask_to_restart_logging(&browser, &base, &db, &story).await;
    sign_out(&browser).await;

    sign_in(&browser, &base, "watcher").await;
    viewer_is_read_only(&browser, &base, &logging_alert, &story).await;
    sign_out(&browser).await;

    sign_in(&browser, &base, "lead").await;
    second_person_approves(&browser, &base, &logging_alert, &story).await;
    on_the_incident_timeline(&browser, &base, &db).await;
    undo_from_the_incident_page(&browser, &story).await;
    every_rule_of_the_principal_from_the_incident_page(&browser, &base, &db, &story).await;
    not_enabled_without_a_responder_role(&browser, &base, &db, &story, &logging_alert).await;
}
