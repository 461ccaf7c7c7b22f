//! The attacks of the hardening issue, each as it was reproduced: parallel password guessing,
//! a channel retargeted to steal its sealed secret, server files read through `ca_file`, NULs
//! and oversized values, and a dashboard user who must be shut out at once.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::call_with;
use crate::support::receiver::{Answer, Receiver, closed_port};
use crate::support::{TestDb, fixture};
use skywarden::auth::sessions::MAX_FAILURES_PER_USER;
use skywarden::auth::{self, Role, users};
use skywarden::http::ApiContext;
use skywarden::notify::http_client::SafeHttpClient;
use skywarden::notify::network::NetworkPolicy;
use skywarden::notify::secrets::SecretKey;
use skywarden::notify::sender::{Sender, SenderOptions};

const PASSWORD: &str = "correct horse battery staple";

/// The real HTTP server (`skywarden serve`'s own function) on a loopback port.
async fn serve(context: ApiContext) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(skywarden::http::serve(context, listener, std::future::pending()));
    address
}

/// One HTTP/1.1 request over its own connection; the status and the JSON body.
async fn request(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = body.to_string();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Sends every body at once to `POST /api/v1/session`; the statuses in the order sent.
async fn parallel_logins(address: SocketAddr, bodies: Vec<Value>) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, body) in bodies.into_iter().enumerate() {
        tasks.spawn(async move { (index, request(address, "POST", "/api/v1/session", &[], body).await.0) });
    }
    let mut statuses = tasks.join_all().await;
    statuses.sort();
    statuses.into_iter().map(|(_, status)| status).collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// No more wrong guesses are checked than the limit allows, however many arrive at once, and
/// the right password gets no way around it.
fn assert_throttled(statuses: &[u16]) {
    let limit = MAX_FAILURES_PER_USER as usize;
    assert_eq!(statuses.len(), 30);
    assert_eq!(count(statuses, 200) + count(statuses, 401) + count(statuses, 429), 30, "{statuses:?}");
    assert!(count(statuses, 401) <= limit, "at most {limit} wrong guesses checked: {statuses:?}");
    assert!(count(statuses, 200) <= 1, "{statuses:?}");
    assert!(count(statuses, 429) >= 30 - limit - 1, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_parallel_password_guesses_cannot_pass_the_failure_limit() {
    let db = TestDb::new().await;
    users::create(&db.pool, "maria", PASSWORD, Role::Analyst).await.unwrap();
    let address = serve(ApiContext::new(db.pool.clone())).await;
    let mut bodies: Vec<Value> =
        (0..29).map(|i| json!({"username": "maria", "password": format!("wrong password {i}")})).collect();
    bodies.push(json!({"username": "maria", "password": PASSWORD}));
    let statuses = parallel_logins(address, bodies).await;
    assert_throttled(&statuses);
    let failures = db.count("SELECT count(*) FROM login_failures WHERE username = 'maria'").await;
    assert_eq!(failures, count(&statuses, 401) as i64, "one failure recorded per wrong guess checked");
    // Once the limit is reached, the right password is refused too.
    let (status, _) =
        request(address, "POST", "/api/v1/session", &[], json!({"username": "maria", "password": PASSWORD})).await;
    assert_eq!(status, if failures >= MAX_FAILURES_PER_USER { 429 } else { 200 }, "{failures} failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_parallel_token_guesses_cannot_pass_the_failure_limit() {
    let db = TestDb::new().await;
    let (id, token) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let address = serve(ApiContext::new(db.pool.clone())).await;
    let mut bodies: Vec<Value> = (0..29).map(|i| json!({"token": format!("swk_{id}_{i:064}")})).collect();
    bodies.push(json!({"token": token}));
    let statuses = parallel_logins(address, bodies).await;
    assert_throttled(&statuses);
    let failures = db.count(&format!("SELECT count(*) FROM login_failures WHERE username = 'token:{id}'")).await;
    assert_eq!(failures, count(&statuses, 401) as i64);
    let (status, _) = request(address, "POST", "/api/v1/session", &[], json!({"token": token})).await;
    assert_eq!(status, if failures >= MAX_FAILURES_PER_USER { 429 } else { 200 }, "{failures} failures");
}

fn loopback() -> NetworkPolicy {
    NetworkPolicy::allowing("127.0.0.1/32").unwrap()
}

/// An API with notifications whose sender may reach loopback receivers, and an admin token.
async fn notifying_api(db: &TestDb, policy: NetworkPolicy) -> (ApiContext, String) {
    let key = Arc::new(SecretKey::generate());
    let sender = Sender::new(db.pool.clone(), key.clone(), SafeHttpClient::new(policy), SenderOptions::default());
    let (_, admin) = auth::create(&db.pool, "admin", Role::Admin).await.unwrap();
    (ApiContext::new(db.pool.clone()).with_notify(key, sender), admin)
}

async fn create_channel(context: &ApiContext, admin: &str, body: Value) -> i64 {
    let (status, created) = call_with(context, "POST", "/api/v1/channels", Some(admin), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().unwrap()
}

async fn test_button(context: &ApiContext, admin: &str, id: i64) -> Value {
    let (status, answer) = call_with(context, "POST", &format!("/api/v1/channels/{id}/test"), Some(admin), None).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Each kind's settings pointing at `url` (the email kind at the receiver's port), and the
/// secrets that must never follow the channel elsewhere.
fn channel_at(kind: &str, url: &str, port: u16) -> (Value, Value) {
    match kind {
        "jira" => (
            json!({"base_url": url, "project_key": "SEC", "email": "soc@acme.example"}),
            json!({"api_token": "old-jira-token"}),
        ),
        "pagerduty" => (json!({"events_url": format!("{url}/v2/enqueue")}), json!({"routing_key": "old-routing-key"})),
        "servicenow" => {
            (json!({"instance_url": url, "username": "skywarden"}), json!({"password": "old-snow-password"}))
        }
        "webhook" => (json!({"url": format!("{url}/hook")}), json!({"signing_secret": "old-signing-secret"})),
        "email" => (
            json!({"host": "127.0.0.1", "port": port, "security": "none", "username": "skywarden",
                   "from": "skywarden@acme.example", "to": ["soc@acme.example"]}),
            json!({"password": "old-smtp-password"}),
        ),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_retargeted_channel_needs_its_secrets_again() {
    let db = TestDb::new().await;
    let (context, admin) = notifying_api(&db, loopback()).await;
    let home = Receiver::start(Answer::status(201, r#"{"id":"1","key":"SEC-1","result":{"sys_id":"a1"}}"#)).await;
    let thief = Receiver::start(Answer::status(201, r#"{"id":"1","key":"SEC-1","result":{"sys_id":"a1"}}"#)).await;
    for kind in ["jira", "pagerduty", "servicenow", "webhook", "email"] {
        let (settings, secrets) = channel_at(kind, &home.url(""), closed_port());
        let id = create_channel(
            &context,
            &admin,
            json!({"name": kind, "kind": kind, "settings": settings, "secrets": secrets}),
        )
        .await;
        // Only the target changes: refused, naming the secrets to give again.
        let (moved, _) = channel_at(kind, &thief.url(""), thief.address.port());
        let path = format!("/api/v1/channels/{id}");
        let (status, answer) =
            call_with(&context, "PATCH", &path, Some(&admin), Some(json!({"settings": moved.clone()}))).await;
        assert_eq!(status, 400, "{kind}: {answer}");
        assert_eq!(answer["field"], "secrets", "{kind}: {answer}");
        let secret_name = secrets.as_object().unwrap().keys().next().unwrap().clone();
        assert!(answer["error"].as_str().unwrap().contains(&format!("secrets.{secret_name}")), "{kind}: {answer}");
        // The stored channel did not move: the test button still goes home.
        if kind != "email" {
            test_button(&context, &admin, id).await;
        }
        // With the secrets given again, the channel moves, and only the new secret goes there.
        let new_secrets: serde_json::Map<String, Value> =
            secrets.as_object().unwrap().keys().map(|name| (name.clone(), json!(format!("new-{name}")))).collect();
        let (status, answer) =
            call_with(&context, "PATCH", &path, Some(&admin), Some(json!({"settings": moved, "secrets": new_secrets})))
                .await;
        assert_eq!(status, 200, "{kind}: {answer}");
        if kind != "email" {
            test_button(&context, &admin, id).await;
        }
    }
    // Chat channels: the webhook URL is the secret; a new URL is a new secret.
    let id = create_channel(
        &context,
        &admin,
        json!({"name": "chat", "kind": "slack", "secrets": {"webhook_url": home.url("/services/old-path")}}),
    )
    .await;
    let change = json!({"secrets": {"webhook_url": thief.url("/services/new-path")}});
    assert_eq!(
        call_with(&context, "PATCH", &format!("/api/v1/channels/{id}"), Some(&admin), Some(change)).await.0,
        200
    );
    test_button(&context, &admin, id).await;

    // The new target got the new secrets only; the old ones stayed home.
    let stolen = seen(&thief.received());
    for new in ["new-routing_key", "/services/new-path", &basic("new-api_token"), &basic_snow("new-password")] {
        assert!(stolen.contains(new), "{new} reached the new target: {stolen}");
    }
    for old in ["old-", &basic("old-jira-token"), &basic_snow("old-snow-password")] {
        assert!(!stolen.contains(old), "{old} reached the new target: {stolen}");
    }
    let home_saw = seen(&home.received());
    assert!(home_saw.contains("old-routing-key") && !home_saw.contains("new-"), "{home_saw}");
}

/// Everything receivers got, as text: paths, headers and bodies.
fn seen(received: &[crate::support::receiver::Received]) -> String {
    received
        .iter()
        .map(|r| format!("{} {} {:?} {}\n", r.method, r.path, r.headers, String::from_utf8_lossy(&r.body)))
        .collect()
}

fn basic(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("soc@acme.example:{token}"))
}

fn basic_snow(password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("skywarden:{password}"))
}

#[tokio::test]
async fn secrets_sealed_for_one_target_are_not_sent_to_another() {
    let db = TestDb::new().await;
    let (context, admin) = notifying_api(&db, loopback()).await;
    let home = Receiver::start(Answer::status(202, "{}")).await;
    let thief = Receiver::start(Answer::status(202, "{}")).await;
    let (settings, secrets) = channel_at("pagerduty", &home.url(""), 0);
    let id = create_channel(
        &context,
        &admin,
        json!({"name": "pager", "kind": "pagerduty", "settings": settings, "secrets": secrets}),
    )
    .await;
    // Someone who can write the table but not open the sealed value moves the channel.
    sqlx::query("UPDATE notification_channels SET settings = jsonb_set(settings, '{events_url}', to_jsonb($2::text)) WHERE id = $1")
        .bind(id)
        .bind(thief.url("/v2/enqueue"))
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, answer) =
        call_with(&context, "POST", &format!("/api/v1/channels/{id}/test"), Some(&admin), None).await;
    assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some("secrets")), "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("give them again"), "{answer}");
    assert!(thief.received().is_empty(), "{:?}", thief.received());
    // Renaming it through the API does not carry the secret to the new target either.
    let (status, answer) =
        call_with(&context, "PATCH", &format!("/api/v1/channels/{id}"), Some(&admin), Some(json!({"name": "renamed"})))
            .await;
    assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some("secrets")), "{answer}");
}

#[tokio::test]
async fn ca_files_come_only_from_the_configured_directory() {
    let db = TestDb::new().await;
    let (context, admin) = notifying_api(&db, loopback()).await;
    let email = |ca_file: &str| {
        json!({"name": format!("mail-{}", ca_file.len()), "kind": "email", "settings": {"host": "127.0.0.1", "port": closed_port(),
               "from": "skywarden@acme.example", "to": ["soc@acme.example"], "ca_file": ca_file}})
    };
    // No CA directory configured: the API takes no CA file at all, and never a server path.
    for ca_file in ["/etc/passwd", "/dev/zero", "../../etc/passwd", "ca.pem"] {
        let (status, answer) =
            call_with(&context, "POST", "/api/v1/channels", Some(&admin), Some(email(ca_file))).await;
        assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some("settings")), "{ca_file}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("settings.ca_file"), "{answer}");
    }
    let cas = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("smtp/ca.pem"), cas.path().join("relay-ca.pem")).unwrap();
    std::fs::write(cas.path().join("not-a-ca.pem"), "hello").unwrap();
    std::fs::write(cas.path().join("huge.pem"), vec![b'A'; 2 << 20]).unwrap();
    std::os::unix::fs::symlink("/dev/zero", cas.path().join("zero.pem")).unwrap();
    std::fs::create_dir(cas.path().join("folder.pem")).unwrap();
    let (context, admin) = notifying_api(&db, loopback().with_ca_dir(cas.path())).await;
    for ca_file in ["/etc/passwd", "../relay-ca.pem", "sub/relay-ca.pem", ".."] {
        let (status, answer) =
            call_with(&context, "POST", "/api/v1/channels", Some(&admin), Some(email(ca_file))).await;
        assert_eq!(status, 400, "{ca_file}: {answer}");
    }
    // A name in the directory: whatever is wrong with it, the answer is the same, so it
    // reveals nothing about the files there; /dev/zero is not read until memory runs out.
    let mut errors = Vec::new();
    for ca_file in ["missing.pem", "not-a-ca.pem", "huge.pem", "zero.pem", "folder.pem"] {
        let id = create_channel(&context, &admin, email(ca_file)).await;
        let answer = test_button(&context, &admin, id).await;
        assert_eq!(answer["delivered"], false);
        let error = answer["error"].as_str().unwrap().to_owned();
        errors.push(error.replace(ca_file, "NAME"));
        sqlx::query("DELETE FROM notification_channels WHERE id = $1").bind(id).execute(&db.pool).await.unwrap();
    }
    assert!(errors.iter().all(|e| *e == errors[0]), "{errors:#?}");
    assert!(errors[0].contains("CA file"), "{}", errors[0]);
    // The right file is used: the test goes on to connect (to a closed port here).
    let id = create_channel(&context, &admin, email("relay-ca.pem")).await;
    let answer = test_button(&context, &admin, id).await;
    assert!(!answer["error"].as_str().unwrap().contains("CA file"), "{answer}");
}

#[tokio::test]
async fn nul_characters_and_oversized_values_are_400s_naming_the_field() {
    let db = TestDb::new().await;
    let (context, admin) = notifying_api(&db, loopback()).await;
    let suppression = json!({"check": "s3-bucket-public\u{0}", "reason": "accepted risk"});
    let (status, answer) =
        call_with(&context, "POST", "/api/v1/posture/suppressions", Some(&admin), Some(suppression)).await;
    assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some("check")), "{answer}");
    let suppression = json!({"check": "s3-bucket-public", "resource": "a\u{0}b", "reason": "accepted risk"});
    let (status, answer) =
        call_with(&context, "POST", "/api/v1/posture/suppressions", Some(&admin), Some(suppression)).await;
    assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some("resource")), "{answer}");
    for query in ["check=a%00b", "resource=a%00b", "section=a%00b", "account=a%00b"] {
        let (status, answer) =
            call_with(&context, "GET", &format!("/api/v1/posture/findings?{query}"), Some(&admin), None).await;
        assert_eq!(status, 400, "{query}: {answer}");
    }

    // A megabyte URL, a NUL, a huge settings object: refused before anything is stored.
    let huge = format!("https://jira.example.com/{}", "a".repeat(1 << 20));
    let settings = [
        (json!({"base_url": huge, "project_key": "SEC", "email": "soc@acme.example"}), "settings.base_url"),
        (
            json!({"base_url": "https://jira.example.com", "project_key": "SEC", "email": "soc\u{0}@acme.example"}),
            "settings.email",
        ),
        (
            json!({"base_url": "https://jira.example.com", "project_key": "SEC", "email": "soc@acme.example",
                   "labels": vec!["x".repeat(1000); 40]}),
            "settings",
        ),
    ];
    for (settings, field) in settings {
        let body = json!({"name": "jira", "kind": "jira", "settings": settings, "secrets": {"api_token": "t"}});
        let (status, answer) = call_with(&context, "POST", "/api/v1/channels", Some(&admin), Some(body)).await;
        assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some("settings")), "{answer}");
        assert!(answer["error"].as_str().unwrap().starts_with(field), "{field}: {answer}");
    }
    let id = create_channel(
        &context,
        &admin,
        json!({"name": "jira", "kind": "jira", "settings": {"base_url": "https://jira.example.com", "project_key": "SEC", "email": "soc@acme.example"}, "secrets": {"api_token": "t"}}),
    )
    .await;
    let change = json!({"settings": {"base_url": "https://jira.example.com", "project_key": "SEC", "email": "soc@acme.example", "issue_type": "x".repeat(1 << 20)}});
    let (status, answer) =
        call_with(&context, "PATCH", &format!("/api/v1/channels/{id}"), Some(&admin), Some(change)).await;
    assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some("settings")), "{answer}");

    // Routes: a huge channel name or endless lists.
    let routes = [
        (json!({"name": "r", "channel": "x".repeat(1 << 20)}), "channel"),
        (json!({"name": "r", "channel": "jira", "policies": vec!["aws-*"; 5000]}), "policies"),
        (json!({"name": "r", "channel": "jira", "accounts": vec!["111122223333"; 5000]}), "accounts"),
        (json!({"name": "r", "channel": "jira", "tags": vec!["T1078"; 5000]}), "tags"),
    ];
    for (route, field) in routes {
        let (status, answer) = call_with(&context, "POST", "/api/v1/routes", Some(&admin), Some(route)).await;
        assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some(field)), "{answer}");
    }
    let largest = db.count("SELECT coalesce(max(length(details::text)), 0)::bigint FROM audit_log").await;
    assert!(largest < 4096, "an audit entry of {largest} bytes");
}

/// Signs in through the API; the session cookie.
async fn sign_in(context: &ApiContext, username: &str) -> Option<String> {
    use tower::ServiceExt;
    let request = axum::http::Request::post("/api/v1/session")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json!({"username": username, "password": PASSWORD}).to_string()))
        .unwrap();
    let response = skywarden::http::router(context.clone()).oneshot(request).await.unwrap();
    let cookie = response.headers().get("set-cookie")?.to_str().unwrap();
    Some(cookie.split(';').next().unwrap().to_owned())
}

async fn with_cookie(context: &ApiContext, cookie: &str, path: &str) -> u16 {
    use tower::ServiceExt;
    let request = axum::http::Request::get(path).header("cookie", cookie).body(axum::body::Body::empty()).unwrap();
    skywarden::http::router(context.clone()).oneshot(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn admins_disable_a_user_and_the_sessions_end_at_once() {
    let db = TestDb::new().await;
    let context = ApiContext::new(db.pool.clone());
    users::create(&db.pool, "maria", PASSWORD, Role::Analyst).await.unwrap();
    users::create(&db.pool, "root-admin", PASSWORD, Role::Admin).await.unwrap();
    let (_, admin) = auth::create(&db.pool, "admin", Role::Admin).await.unwrap();
    let (_, analyst) = auth::create(&db.pool, "analyst", Role::Analyst).await.unwrap();
    let cookie = sign_in(&context, "maria").await.expect("maria signs in");
    assert_eq!(with_cookie(&context, &cookie, "/api/v1/alerts").await, 200);

    let (status, listed) = call_with(&context, "GET", "/api/v1/users", Some(&admin), None).await;
    assert_eq!(status, 200, "{listed}");
    let maria = listed.as_array().unwrap().iter().find(|u| u["username"] == "maria").unwrap().clone();
    assert_eq!(
        (maria["role"].as_str(), maria["disabled"].as_bool(), maria["sessions"].as_i64()),
        (Some("analyst"), Some(false), Some(1))
    );
    assert!(!listed.to_string().contains("argon2"), "no password hash in {listed}");
    assert_eq!(call_with(&context, "GET", "/api/v1/users", Some(&analyst), None).await.0, 403);
    assert_eq!(call_with(&context, "POST", "/api/v1/users/maria/disable", Some(&analyst), None).await.0, 403);
    assert_eq!(call_with(&context, "POST", "/api/v1/users/nobody/disable", Some(&admin), None).await.0, 404);
    let (status, answer) = call_with(&context, "POST", "/api/v1/users/bad%20name/disable", Some(&admin), None).await;
    assert_eq!((status.as_u16(), answer["field"].as_str()), (400, Some("name")), "{answer}");

    let (status, answer) = call_with(&context, "POST", "/api/v1/users/maria/disable", Some(&admin), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(with_cookie(&context, &cookie, "/api/v1/alerts").await, 401, "the session ended at once");
    assert_eq!(db.count("SELECT count(*) FROM sessions WHERE principal = 'user:maria'").await, 0);
    assert!(sign_in(&context, "maria").await.is_none(), "a disabled user cannot sign in");
    let (_, listed) = call_with(&context, "GET", "/api/v1/users", Some(&admin), None).await;
    assert!(listed.as_array().unwrap().iter().any(|u| u["username"] == "maria" && u["disabled"] == true), "{listed}");

    // An admin cannot shut themselves out through the dashboard.
    let root = sign_in(&context, "root-admin").await.unwrap();
    let csrf = {
        use tower::ServiceExt;
        let request = axum::http::Request::get("/api/v1/session")
            .header("cookie", &root)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = skywarden::http::router(context.clone()).oneshot(request).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["csrf_token"].as_str().unwrap().to_owned()
    };
    let address = serve(context.clone()).await;
    let (status, answer) = request(
        address,
        "POST",
        "/api/v1/users/root-admin/disable",
        &[("cookie", &root), ("x-csrf-token", &csrf)],
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");

    assert_eq!(call_with(&context, "POST", "/api/v1/users/maria/enable", Some(&admin), None).await.0, 200);
    assert!(sign_in(&context, "maria").await.is_some(), "enabled again");
    let (_, log) = call_with(&context, "GET", "/api/v1/audit-log?limit=100", Some(&admin), None).await;
    let actions: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["target"].as_str().unwrap_or_default().to_owned()))
        .collect();
    for action in ["user.disable", "user.enable"] {
        assert!(actions.contains(&(action.to_owned(), "maria".to_owned())), "{action} in {actions:?}");
    }
}

#[tokio::test]
async fn users_are_listed_disabled_and_enabled_from_the_command_line() {
    let db = TestDb::new().await;
    let context = ApiContext::new(db.pool.clone());
    users::create(&db.pool, "maria", PASSWORD, Role::Analyst).await.unwrap();
    let cookie = sign_in(&context, "maria").await.unwrap();
    let output = db.skywarden(&["users", "disable", "maria"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(with_cookie(&context, &cookie, "/api/v1/alerts").await, 401);
    assert!(sign_in(&context, "maria").await.is_none());
    let listed = String::from_utf8(db.skywarden(&["users", "list"]).stdout).unwrap();
    assert!(listed.contains("maria") && listed.contains("analyst") && listed.contains("disabled"), "{listed}");
    assert!(!db.skywarden(&["users", "disable", "nobody"]).status.success());
    assert!(db.skywarden(&["users", "enable", "maria"]).status.success());
    assert!(sign_in(&context, "maria").await.is_some());
    let actions = db.count("SELECT count(*) FROM audit_log WHERE action IN ('user.disable', 'user.enable') AND target = 'maria' AND actor LIKE 'cli:%'").await;
    assert_eq!(actions, 2);
}
