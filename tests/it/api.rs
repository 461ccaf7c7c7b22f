//! The HTTP API through its real router against a real database: authentication, roles,
//! the audit-trail filters and pagination, and bad input answered with 400s naming the field.

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{TestDb, mmdb};
use skywarden::auth::{self, Role};
use skywarden::http::{ApiContext, router};

pub(crate) async fn call(
    db: &TestDb,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_with(&ApiContext::new(db.pool.clone()), method, uri, token, body).await
}

/// One request through the router with a given context (notifications, AWS).
pub(crate) async fn call_with(
    context: &ApiContext,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router(context.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())))
}

async fn with_sample_incident() -> TestDb {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = mmdb::sample_incident_countries(dir.path());
    let incident = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident");
    let output = db.skywarden(&["import", "--geoip", geo.to_str().unwrap(), incident.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    db
}

#[tokio::test]
async fn every_api_route_needs_a_valid_token() {
    let db = TestDb::new().await;
    let (status, body) = call(&db, "GET", "/healthz", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, Value::String("ok".into())));
    for uri in ["/api/v1/events", "/api/v1/alerts", "/api/v1/events/1/2"] {
        let (status, body) = call(&db, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(body["error"], "a bearer token is required");
        let (status, _) = call(&db, "GET", uri, Some("swk_0000_wrong"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (id, token) = auth::create(&db.pool, "soc-dashboard", Role::Viewer).await.unwrap();
    assert_eq!(call(&db, "GET", "/api/v1/events", Some(&token), None).await.0, StatusCode::OK);
    // The right id with another secret is refused; so is a revoked token.
    let forged = format!("swk_{id}_{}", "0".repeat(64));
    assert_eq!(call(&db, "GET", "/api/v1/events", Some(&forged), None).await.0, StatusCode::UNAUTHORIZED);
    auth::revoke(&db.pool, &id).await.unwrap();
    assert_eq!(call(&db, "GET", "/api/v1/events", Some(&token), None).await.0, StatusCode::UNAUTHORIZED);
    // Secrets are stored hashed: the token text is nowhere in the table.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE position($1 in secret_hash::text) > 0 OR name = $1")
            .bind(&token)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn audit_trail_filters_and_pages() {
    let db = with_sample_incident().await;
    let (_, token) = auth::create(&db.pool, "viewer", Role::Viewer).await.unwrap();
    let get = |uri: String| {
        let (db, token) = (&db, token.clone());
        async move { call(db, "GET", &uri, Some(&token), None).await }
    };

    // Who changed sg-0a1b2c3d4e5f67890, when, from where.
    let (status, page) = get("/api/v1/events?resource=sg-0a1b2c3d4e5f67890&read_only=false".into()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["event_name"], "AuthorizeSecurityGroupIngress");
    assert_eq!(
        (events[0]["user_name"].as_str(), events[0]["source_ip"].as_str()),
        (Some("alice"), Some("176.36.10.20"))
    );
    assert_eq!(events[0]["country"], "UA");

    // Filters combine: the attacker's network, one principal, failures only.
    let (_, failed) =
        get("/api/v1/events?source_ip=176.36.0.0/14&principal=alice&event_name=ConsoleLogin&failed=true".into()).await;
    assert_eq!(failed["events"].as_array().unwrap().len(), 11, "{failed}");
    let (_, ua) =
        get("/api/v1/events?country=ua&since=2026-11-12T00:00:00Z&until=2026-11-13T00:00:00Z&limit=1000".into()).await;
    let from_ua = ua["events"].as_array().unwrap().len() as i64;
    let expected: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events WHERE geo_country = 'UA'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(from_ua, expected);

    // Keyset pages visit every event once, newest first.
    let mut seen = std::collections::BTreeSet::new();
    let mut previous: Option<String> = None;
    let mut uri = "/api/v1/events?limit=250".to_string();
    loop {
        let (status, page) = get(uri.clone()).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for event in page["events"].as_array().unwrap() {
            let time = event["event_time"].as_str().unwrap().to_string();
            assert!(previous.as_ref().is_none_or(|p| *p >= time), "newest first");
            previous = Some(time);
            assert!(seen.insert(event["event_id"].as_str().unwrap().to_string()), "each event once");
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/events?limit=250&cursor={cursor}"),
            None => break,
        }
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(seen.len() as i64, total);

    // One event with its raw JSON; an unknown one is a 404.
    let id = events[0]["event_id"].as_str().unwrap();
    let (status, one) = get(format!("/api/v1/events/111122223333/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["raw"]["requestParameters"]["groupId"], "sg-0a1b2c3d4e5f67890");
    assert_eq!(get("/api/v1/events/111122223333/nope".into()).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_filters_are_400s_naming_the_field() {
    let db = TestDb::new().await;
    let (_, token) = auth::create(&db.pool, "viewer", Role::Viewer).await.unwrap();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1000000", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zz", "cursor"),
        ("cursor=6869", "cursor"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("failed=maybe", "failed"),
        ("source_ip=10.0.0.0/33", "source_ip"),
        ("colour=blue", "query"),
    ] {
        let (status, body) = call(&db, "GET", &format!("/api/v1/events?{query}"), Some(&token), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let (status, body) = call(&db, "GET", "/api/v1/alerts?status=gone", Some(&token), None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("status")));
    // Every route reads its query the same way: the message names the field too.
    for (uri, field, message) in [
        ("/api/v1/events?colour=blue", "query", "unknown filter \"colour\"; known: account, principal, event_name"),
        ("/api/v1/events?account=a%00b", "account", "account contains a NUL character"),
        ("/api/v1/events?read_only=yes", "read_only", "read_only must be true or false"),
        ("/api/v1/events?limit=1001", "limit", "limit must be a whole number from 1 to 1000"),
        ("/api/v1/flows/timeline?limit=5", "query", "unknown filter \"limit\""),
        ("/api/v1/resources?deleted=maybe", "deleted", "deleted must be true or false"),
        ("/api/v1/resources?limit=5001", "limit", "limit must be a whole number from 1 to 5000"),
        ("/api/v1/changes?until=soon", "until", "until must be an RFC 3339 time"),
        ("/api/v1/posture/scores?trend=1", "trend", "trend must be true or false"),
        ("/api/v1/posture/findings?status=closed", "status", "status must be open, resolved or all"),
        ("/api/v1/stats/login-locations?account=1", "principal", "principal is required"),
        ("/api/v1/alerts?status=OPENED", "status", "status must be open, acknowledged, resolved, dismissed or snoozed"),
    ] {
        let (status, body) = call(&db, "GET", uri, Some(&token), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{uri}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with(message), "{uri}: {body}");
    }
    // Empty values count as absent; an alert status reads in any case.
    for uri in
        ["/api/v1/events?account=&limit=&failed=", "/api/v1/alerts?status=OPEN", "/api/v1/posture/findings?status="]
    {
        assert_eq!(call(&db, "GET", uri, Some(&token), None).await.0, StatusCode::OK, "{uri}");
    }
    // A viewer hears about the role before the query.
    let (status, _) = call(&db, "GET", "/api/v1/audit-log?limit=0", Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn analysts_triage_and_viewers_only_read() {
    let db = with_sample_incident().await;
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let (analyst_id, analyst) = auth::create(&db.pool, "on-call", Role::Analyst).await.unwrap();
    let (status, alerts) =
        call(&db, "GET", "/api/v1/alerts?policy=aws-account-hijacking-attempt", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    let id = alerts[0]["id"].as_str().unwrap().to_string();

    // One alert with the events behind it.
    let (status, one) = call(&db, "GET", &format!("/api/v1/alerts/{id}"), Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["alert"]["policy_id"], "aws-account-hijacking-attempt");
    let evidence = one["evidence_events"].as_array().unwrap();
    assert_eq!(evidence.len(), 1);
    assert_eq!(
        (evidence[0]["event_name"].as_str(), evidence[0]["country"].as_str()),
        (Some("ConsoleLogin"), Some("UA"))
    );
    let (status, body) = call(&db, "GET", "/api/v1/alerts/not-a-uuid", Some(&viewer), None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("id")));
    let unknown = "/api/v1/alerts/00000000-0000-0000-0000-000000000000";
    assert_eq!(call(&db, "GET", unknown, Some(&viewer), None).await.0, StatusCode::NOT_FOUND);

    let uri = format!("/api/v1/alerts/{id}/status");
    let change = serde_json::json!({"status": "acknowledged", "reason": "calling alice"});

    let (status, body) = call(&db, "POST", &uri, Some(&viewer), Some(change.clone())).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("this needs the analyst role")));
    let (status, body) = call(&db, "POST", &uri, Some(&analyst), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["old_status"].as_str(), body["status"].as_str()), (Some("open"), Some("acknowledged")));
    let actor: String = sqlx::query_scalar("SELECT actor FROM alert_status_changes WHERE alert_id = $1::uuid")
        .bind(&id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(actor, format!("token:{analyst_id} (on-call)"));

    for (body, field) in [
        (serde_json::json!({"status": "acknowledged", "reason": " "}), "reason"),
        (serde_json::json!({"status": "snoozed", "reason": "later"}), "until"),
        (serde_json::json!({"status": "gone", "reason": "x"}), "status"),
        (serde_json::json!({"status": "open"}), "body"),
    ] {
        let (status, answer) = call(&db, "POST", &uri, Some(&analyst), Some(body.clone())).await;
        assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {answer}");
    }
    let missing = "/api/v1/alerts/00000000-0000-0000-0000-000000000000/status";
    let change = serde_json::json!({"status": "resolved", "reason": "x"});
    assert_eq!(call(&db, "POST", missing, Some(&analyst), Some(change)).await.0, StatusCode::NOT_FOUND);
}

/// One HTTP/1.1 request over a plain TCP connection; returns the status line and body.
fn http_get(address: &str, path: &str) -> std::io::Result<(String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[tokio::test]
async fn serve_listens_answers_and_shuts_down_on_sigterm() {
    let db = TestDb::new().await;
    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{}", free_port());
    let metrics_address = format!("127.0.0.1:{}", free_port());
    // An onboarded account, so the pollers `serve` runs beside the API have work.
    let moto = crate::support::aws::moto_url().await;
    let account = crate::support::aws::random_account_id();
    let new = skywarden::accounts::NewAccount {
        role_arn: format!("arn:aws:iam::{account}:role/SkywardenReadOnly"),
        regions: vec!["us-east-1".into()],
        ..Default::default()
    };
    skywarden::accounts::onboard(&db.pool, &new, &Default::default()).await.unwrap();
    let mut command = crate::support::skywarden_command(&db.url);
    command.args(["serve", "--listen", &address, "--metrics-listen", &metrics_address]);
    for (key, value) in crate::support::aws::aws_env(moto) {
        command.env(key, value);
    }
    let mut server = command.spawn().unwrap();
    // Wait for the listener by polling the health check (bounded).
    let mut health = None;
    for _ in 0..200 {
        if let Ok(answer) = http_get(&address, "/healthz") {
            health = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = health.expect("the server answers within 10 s");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok");
    let (status, _) = http_get(&address, "/readyz").unwrap();
    assert!(status.contains("200"), "{status}");
    let (status, _) = http_get(&address, "/api/v1/events").unwrap();
    assert!(status.contains("401"), "{status}");
    // Metrics live on their own listener only, and count by route template.
    let (status, _) = http_get(&address, "/metrics").unwrap();
    assert!(status.contains("404"), "no metrics on the API listener: {status}");
    let (status, metrics) = http_get(&metrics_address, "/metrics").unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(metrics.contains(r#"skywarden_http_requests_total{route="/api/v1/events",status="401"} 1"#), "{metrics}");
    assert!(metrics.contains("skywarden_up 1"), "{metrics}");
    // The pollers ran: the IAM snapshot's lag is exported (bounded wait for the first run).
    let expected = format!(
        r#"skywarden_poll_lag_seconds{{account="{account}",region="global",source="config-snapshot",target=""}}"#
    );
    let mut seen = false;
    for _ in 0..300 {
        if http_get(&metrics_address, "/metrics").is_ok_and(|(_, m)| m.contains(&expected)) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "serve polled the onboarded account within 30 s");

    let pid = server.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = server.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}

#[tokio::test]
async fn flows_and_incidents_for_the_investigation() {
    let db = with_sample_incident().await;
    let (_, token) = auth::create(&db.pool, "ir", Role::Viewer).await.unwrap();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident.expected.json")).unwrap(),
    )
    .unwrap();

    // Who did the web host talk to most? The attacker, by far.
    let (status, top) =
        call(&db, "GET", "/api/v1/flows/top?instance=i-0a1b2c3d4e5f67890&limit=3", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{top}");
    let first = &top[0];
    assert_eq!((first["source"].as_str(), first["destination"].as_str()), (Some("10.0.1.25"), Some("176.36.10.20")));
    assert_eq!(first["destination_country"], "UA");
    // The instance-id field exists only in the v5 files: the exfiltration day is among them.
    assert!(first["bytes"].as_i64().unwrap() >= 3_200_000_000, "{first}");
    let (_, by_address) =
        call(&db, "GET", "/api/v1/flows/top?address=176.36.10.20&limit=1000", Some(&token), None).await;
    let to_attacker: i64 = by_address
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["destination"] == "176.36.10.20" && t["source"] == "10.0.1.25")
        .map(|t| t["bytes"].as_i64().unwrap())
        .sum();
    assert_eq!(to_attacker, expected["exfil_bytes_to_attacker"].as_i64().unwrap());
    // Over time: the attacker's address, hour by hour and by destination country.
    let (status, timeline) = call(&db, "GET", "/api/v1/flows/timeline?address=176.36.10.20", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{timeline}");
    let hourly: i64 = timeline["hours"].as_array().unwrap().iter().map(|h| h["bytes"].as_i64().unwrap()).sum();
    assert!(hourly >= to_attacker, "{hourly} < {to_attacker}");
    let ua_by_hour: i64 = timeline["country_hours"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["country"] == "UA")
        .map(|h| h["bytes"].as_i64().unwrap())
        .sum();
    assert!(ua_by_hour >= to_attacker, "{timeline}");
    assert_eq!(timeline["destinations"][0]["country"], "UA", "{timeline}");
    for (query, field) in
        [("limit=0", "limit"), ("address=nope", "address"), ("since=then", "since"), ("port=22", "query")]
    {
        let (status, body) = call(&db, "GET", &format!("/api/v1/flows/top?{query}"), Some(&token), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{query}");
    }

    let (status, incidents) = call(&db, "GET", "/api/v1/incidents", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
    assert_eq!(incidents[0]["source_ip"], "176.36.10.20");
    assert!(incidents[0]["timeline"].as_array().unwrap().len() >= 10);
    assert_eq!(call(&db, "GET", "/api/v1/incidents", None, None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn accounts_are_onboarded_and_watched_through_the_api_by_admins_only() {
    let db = TestDb::new().await;
    let (_, viewer) = auth::create(&db.pool, "wall-screen", Role::Viewer).await.unwrap();
    let (_, analyst) = auth::create(&db.pool, "tier-1", Role::Analyst).await.unwrap();
    let (_, admin) = auth::create(&db.pool, "cloud-team", Role::Admin).await.unwrap();
    let request = serde_json::json!({"role_arn": "arn:aws:iam::111122223333:role/SkywardenReadOnly", "regions": ["us-east-1"],
        "sources": {"trail_bucket": "org-trail-logs"}});

    assert_eq!(call(&db, "POST", "/api/v1/accounts", None, Some(request.clone())).await.0, StatusCode::UNAUTHORIZED);
    for token in [&viewer, &analyst] {
        assert_eq!(
            call(&db, "POST", "/api/v1/accounts", Some(token), Some(request.clone())).await.0,
            StatusCode::FORBIDDEN
        );
    }
    let (status, body) = call(
        &db,
        "POST",
        "/api/v1/accounts",
        Some(&admin),
        Some(serde_json::json!({"role_arn": "arn:aws:iam::1:role/x", "regions": ["us-east-1"]})),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("role_arn")), "{body}");
    let (status, body) = call(
        &db,
        "POST",
        "/api/v1/accounts",
        Some(&admin),
        Some(serde_json::json!({"role_arn": "arn:aws:iam::111122223333:role/x", "regions": ["moon-1"]})),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("regions")), "{body}");
    let (status, body) = call(&db, "POST", "/api/v1/accounts", Some(&admin), Some(serde_json::json!({"role_arn": "arn:aws:iam::111122223333:role/x", "regions": ["us-east-1"], "endpoint_url": "http://attacker.example"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "API callers cannot redirect AWS calls: {body}");

    let (status, created) = call(&db, "POST", "/api/v1/accounts", Some(&admin), Some(request.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let external_id = created["external_id"].as_str().unwrap().to_owned();
    assert!(external_id.starts_with("skywarden-"));
    assert_eq!(call(&db, "POST", "/api/v1/accounts", Some(&admin), Some(request)).await.0, StatusCode::CONFLICT);

    let (status, listed) = call(&db, "GET", "/api/v1/accounts", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed[0]["account_id"], "111122223333");
    assert!(!listed.to_string().contains(&external_id), "the external ID is shown only when onboarding");
    let (status, jobs) = call(&db, "GET", "/api/v1/accounts/111122223333/status", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    let sources: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["source"].as_str().unwrap()).collect();
    assert!(sources.contains(&"cloudtrail-lookup") && sources.contains(&"cloudtrail-s3"), "{sources:?}");
    assert_eq!(call(&db, "GET", "/api/v1/accounts/12/status", Some(&viewer), None).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(call(&db, "GET", "/api/v1/accounts/999999999999", Some(&viewer), None).await.0, StatusCode::NOT_FOUND);
    let (status, template) = call(&db, "GET", "/api/v1/accounts/template", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(template.as_str().unwrap().contains("sts:ExternalId"));

    assert_eq!(
        call(&db, "DELETE", "/api/v1/accounts/111122223333", Some(&analyst), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&db, "DELETE", "/api/v1/accounts/111122223333", Some(&admin), None).await.0, StatusCode::OK);
    assert_eq!(
        call(&db, "GET", "/api/v1/accounts/111122223333/status", Some(&viewer), None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_audit_trail_exports_as_csv_and_json_lines_and_searches_raw_text() {
    let db = with_sample_incident().await;
    let (_, token) = auth::create(&db.pool, "viewer", Role::Viewer).await.unwrap();
    let filter = "source_ip=176.36.0.0/14&principal=alice&event_name=ConsoleLogin&failed=true";
    let (status, csv) =
        call(&db, "GET", &format!("/api/v1/events/export?format=csv&{filter}"), Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let csv = csv.as_str().unwrap().to_owned();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("event_time,account_id,region"), "{}", lines[0]);
    assert_eq!(lines.len(), 1 + 11, "a header and the 11 failed logins");
    assert!(lines[1..].iter().all(|l| l.contains(",ConsoleLogin,") && l.contains("176.36.")), "{csv}");

    let (status, jsonl) =
        call(&db, "GET", &format!("/api/v1/events/export?format=jsonl&{filter}"), Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<Value> = jsonl.as_str().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 11);
    assert!(rows.iter().all(|r| r["user_name"] == "alice"));

    // Full text over the raw event: a value with no column of its own.
    let (status, found) =
        call(&db, "GET", "/api/v1/events?q=176.36.10.20/32&read_only=false", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> =
        found["events"].as_array().unwrap().iter().filter_map(|e| e["event_name"].as_str()).collect();
    assert!(names.contains(&"AuthorizeSecurityGroupIngress"), "{names:?}");

    for (uri, field) in [
        ("/api/v1/events/export?format=xml", "format"),
        ("/api/v1/events/export?cursor=00", "query"),
        ("/api/v1/events/export?limit=100001", "limit"),
        ("/api/v1/events?q=ab", "q"),
        ("/api/v1/events?since=-5000-01-01T00:00:00Z", "since"),
        ("/api/v1/stats/overview?until=-262143-01-01T00:00:00Z", "until"),
    ] {
        let (status, body) = call(&db, "GET", uri, Some(&token), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{uri}: {body}");
    }
    assert_eq!(call(&db, "GET", "/api/v1/events/export", None, None).await.0, StatusCode::UNAUTHORIZED);
}

/// A request with any headers; returns status, headers and JSON body.
async fn send(
    db: &TestDb,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = match body {
        Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router(ApiContext::new(db.pool.clone())).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn dashboard_sessions_need_csrf_for_changes_and_failed_logins_are_throttled() {
    let db = TestDb::new().await;
    let create = |name: &str, role: &str, password: &str| {
        let mut command = crate::support::skywarden_command(&db.url);
        command.args(["users", "create", "--username", name, "--role", role]).env("SKYWARDEN_USER_PASSWORD", password);
        command.output().unwrap()
    };
    assert!(!create("shorty", "viewer", "short").status.success(), "passwords have 12 characters at least");
    assert!(create("maria", "analyst", "correct horse battery staple").status.success());
    assert!(create("root-admin", "admin", "another long passphrase").status.success());
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'maria'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains("staple"));

    let login = |user: &'static str, password: &'static str| {
        let db = &db;
        async move {
            send(db, "POST", "/api/v1/session", &[], Some(serde_json::json!({"username": user, "password": password})))
                .await
        }
    };
    // Wrong passwords: 401 five times, then 429 even for the right one.
    for _ in 0..5 {
        let (status, _, body) = login("maria", "wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "wrong user name, password or token");
    }
    let (status, headers, _) = login("maria", "correct horse battery staple").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.get("retry-after").is_some());
    // An unknown user is refused like a wrong password.
    assert_eq!(login("nobody", "whatever it is").await.0, StatusCode::UNAUTHORIZED);

    let (status, headers, session) = login("root-admin", "another long passphrase").await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let cookie_header = headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie_header.contains(attribute), "{cookie_header}");
    }
    let cookie = cookie_header.split(';').next().unwrap().to_owned();
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(session["role"], "admin");

    // Reads need only the cookie; changes need the CSRF token too.
    assert_eq!(send(&db, "GET", "/api/v1/alerts", &[("cookie", &cookie)], None).await.0, StatusCode::OK);
    let (status, _, me) = send(&db, "GET", "/api/v1/session", &[("cookie", &cookie)], None).await;
    assert_eq!((status, me["csrf_token"].as_str()), (StatusCode::OK, Some(csrf.as_str())));
    let onboarding =
        serde_json::json!({"role_arn": "arn:aws:iam::111122223333:role/SkywardenReadOnly", "regions": ["us-east-1"]});
    let (status, _, body) =
        send(&db, "POST", "/api/v1/accounts", &[("cookie", &cookie)], Some(onboarding.clone())).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("the CSRF token is missing or wrong")));
    let (status, _, _) = send(
        &db,
        "POST",
        "/api/v1/accounts",
        &[("cookie", &cookie), ("x-csrf-token", "0".repeat(64).as_str())],
        Some(onboarding.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) =
        send(&db, "POST", "/api/v1/accounts", &[("cookie", &cookie), ("x-csrf-token", &csrf)], Some(onboarding)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // An API token can open a dashboard session too.
    let (_, viewer_token) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let (status, headers, body) =
        send(&db, "POST", "/api/v1/session", &[], Some(serde_json::json!({"token": viewer_token}))).await;
    assert_eq!((status, body["role"].as_str()), (StatusCode::OK, Some("viewer")));
    let viewer_cookie = headers.get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(
        send(&db, "GET", "/api/v1/audit-log", &[("cookie", &viewer_cookie)], None).await.0,
        StatusCode::FORBIDDEN
    );

    // Skywarden's own audit log, for admins.
    let (status, _, log) = send(&db, "GET", "/api/v1/audit-log?limit=100", &[("cookie", &cookie)], None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let actions: Vec<(String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned()))
        .collect();
    for expected in [
        ("user:maria", "login.failed"),
        ("user:maria", "login.blocked"),
        ("user:root-admin", "login"),
        ("user:root-admin", "account.onboard"),
        ("user:nobody", "login.failed"),
    ] {
        assert!(actions.iter().any(|(a, b)| a == expected.0 && b == expected.1), "{expected:?} in {actions:?}");
    }
    assert!(actions.iter().any(|(a, b)| a.starts_with("cli:") && b == "user.create"), "{actions:?}");
    assert!(!log.to_string().contains("passphrase") && !log.to_string().contains(&csrf), "no secret in the audit log");

    // Logging out needs the CSRF token, and ends the session.
    assert_eq!(send(&db, "DELETE", "/api/v1/session", &[("cookie", &cookie)], None).await.0, StatusCode::FORBIDDEN);
    let (status, headers, _) =
        send(&db, "DELETE", "/api/v1/session", &[("cookie", &cookie), ("x-csrf-token", &csrf)], None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers.get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(send(&db, "GET", "/api/v1/alerts", &[("cookie", &cookie)], None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_needs_a_token() {
    let db = TestDb::new().await;
    assert_eq!(call(&db, "GET", "/api/v1/openapi.json", None, None).await.0, StatusCode::UNAUTHORIZED);
    let (_, token) = auth::create(&db.pool, "docs", Role::Viewer).await.unwrap();
    let (status, doc) = call(&db, "GET", "/api/v1/openapi.json", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/events", "get"),
        ("/api/v1/events/export", "get"),
        ("/api/v1/events/{account}/{event_id}", "get"),
        ("/api/v1/alerts", "get"),
        ("/api/v1/alerts/{id}", "get"),
        ("/api/v1/alerts/{id}/status", "post"),
        ("/api/v1/incidents", "get"),
        ("/api/v1/flows/top", "get"),
        ("/api/v1/flows/timeline", "get"),
        ("/api/v1/resources", "get"),
        ("/api/v1/resources/{account}/{resource_type}/{resource_id}", "get"),
        ("/api/v1/changes", "get"),
        ("/api/v1/accounts", "post"),
        ("/api/v1/accounts/{id}", "delete"),
        ("/api/v1/accounts/{id}/status", "get"),
        ("/api/v1/accounts/{id}/test", "post"),
        ("/api/v1/session", "post"),
        ("/api/v1/audit-log", "get"),
        ("/api/v1/stats/overview", "get"),
        ("/api/v1/stats/login-locations", "get"),
        ("/api/v1/channels/schema", "get"),
        ("/healthz", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is documented");
    }
    // Query parameters come from the routes' own types: names, descriptions, ranges, choices.
    let parameter = |path: &str, name: &str| {
        let parameters = paths[path]["get"]["parameters"].as_array().unwrap();
        parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{path}: no {name}")).clone()
    };
    let limit = parameter("/api/v1/events", "limit");
    assert_eq!((limit["in"].as_str(), limit["required"].as_bool()), (Some("query"), Some(false)), "{limit}");
    assert_eq!((limit["schema"]["maximum"].as_i64(), limit["schema"]["default"].as_i64()), (Some(1000), Some(100)));
    assert!(parameter("/api/v1/events", "source_ip")["description"].as_str().unwrap().contains("CIDR"));
    assert_eq!(parameter("/api/v1/events/export", "format")["schema"]["enum"], serde_json::json!(["csv", "jsonl"]));
    assert_eq!(parameter("/api/v1/resources", "type")["in"], "query");
    assert_eq!(parameter("/api/v1/stats/login-locations", "principal")["required"], true);
    assert_eq!(parameter("/api/v1/changes", "since")["schema"]["format"], "date-time");
    // Each documented route answers (here: with some status other than 404/405 for a viewer).
    for (path, item) in paths {
        if path.contains('{') {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let (status, _) = call(&db, &method.to_uppercase(), path, Some(&token), None).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status}"
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_channel_form_schema_is_for_every_signed_in_role() {
    let db = TestDb::new().await;
    assert_eq!(call(&db, "GET", "/api/v1/channels/schema", None, None).await.0, StatusCode::UNAUTHORIZED);
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let (status, schema) = call(&db, "GET", "/api/v1/channels/schema", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{schema}");
    let slack = &schema["kinds"][0];
    assert_eq!(slack["kind"], "slack", "{schema}");
    assert_eq!(slack["fields"][0]["name"], "webhook_url");
    assert_eq!(slack["fields"][0]["secret"], true);
    let kinds: Vec<&str> = schema["kinds"].as_array().unwrap().iter().filter_map(|k| k["kind"].as_str()).collect();
    assert_eq!(kinds, ["slack", "teams", "pagerduty", "webhook", "jira", "servicenow", "email"]);
}

#[tokio::test]
async fn admins_manage_tokens_through_the_api() {
    let db = TestDb::new().await;
    let (_, admin) = auth::create(&db.pool, "root", Role::Admin).await.unwrap();
    let (_, analyst) = auth::create(&db.pool, "tier-1", Role::Analyst).await.unwrap();
    let request = serde_json::json!({"name": "soar-playbooks", "role": "viewer"});
    assert_eq!(
        call(&db, "POST", "/api/v1/tokens", Some(&analyst), Some(request.clone())).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&db, "GET", "/api/v1/tokens", Some(&analyst), None).await.0, StatusCode::FORBIDDEN);
    let (status, body) =
        call(&db, "POST", "/api/v1/tokens", Some(&admin), Some(serde_json::json!({"name": "x", "role": "root"}))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body")), "{body}");
    let (status, created) = call(&db, "POST", "/api/v1/tokens", Some(&admin), Some(request)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(call(&db, "GET", "/api/v1/events", Some(&token), None).await.0, StatusCode::OK);
    assert_eq!(
        call(&db, "POST", "/api/v1/tokens", Some(&token), Some(serde_json::json!({"name": "y", "role": "admin"})))
            .await
            .0,
        StatusCode::FORBIDDEN,
        "a viewer cannot mint an admin"
    );
    let (_, listed) = call(&db, "GET", "/api/v1/tokens", Some(&admin), None).await;
    assert!(listed.to_string().contains("soar-playbooks") && !listed.to_string().contains(&token), "{listed}");
    // A dashboard session opened with the token ends when the token is revoked.
    let (status, headers, _) =
        send(&db, "POST", "/api/v1/session", &[], Some(serde_json::json!({"token": token}))).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers.get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(send(&db, "GET", "/api/v1/alerts", &[("cookie", &cookie)], None).await.0, StatusCode::OK);
    assert_eq!(call(&db, "DELETE", &format!("/api/v1/tokens/{id}"), Some(&admin), None).await.0, StatusCode::OK);
    assert_eq!(call(&db, "GET", "/api/v1/events", Some(&token), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&db, "GET", "/api/v1/alerts", &[("cookie", &cookie)], None).await.0, StatusCode::UNAUTHORIZED);
    // A secret pasted without its `swk_<id>_` part never becomes a name in the audit log.
    let secret = token.rsplit('_').next().unwrap().to_owned();
    let (status, _, _) =
        send(&db, "POST", "/api/v1/session", &[], Some(serde_json::json!({"token": format!("{id}_{secret}")}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, failures) = call(&db, "GET", "/api/v1/audit-log?action=login.failed", Some(&admin), None).await;
    assert!(!failures.to_string().contains(&secret) && failures.to_string().contains("token:malformed"), "{failures}");
    assert_eq!(call(&db, "DELETE", "/api/v1/tokens/nosuchtoken", Some(&admin), None).await.0, StatusCode::NOT_FOUND);
    let (_, log) = call(&db, "GET", "/api/v1/audit-log?action=token.create", Some(&admin), None).await;
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
}
