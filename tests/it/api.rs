//! The HTTP API through its real router against a real database: authentication, roles,
//! the audit-trail filters and pagination, and bad input answered with 400s naming the field.

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{TestDb, sample};
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

/// Makes sure the CloudTrail partition of `time`'s month exists, as an import does first.
async fn ensure_cloudtrail_month(db: &TestDb, time: chrono::DateTime<chrono::Utc>) {
    use skywarden::db::partitions::{PartitionCache, PartitionedTable};
    let mut conn = db.pool.acquire().await.unwrap();
    PartitionCache::default().ensure(&mut conn, PartitionedTable::CloudTrailEvents, vec![time]).await.unwrap();
}

async fn with_sample_incident() -> TestDb {
    let db = TestDb::new().await;
    sample::import_incident(&db, tempfile::tempdir().unwrap().path());
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
    let id = alerts["alerts"][0]["id"].as_str().unwrap().to_string();

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

    let (status, page) = call(&db, "GET", "/api/v1/incidents", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let incidents = &page["incidents"];
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(incidents[0]["source_ip"], "176.36.10.20");
    let steps = incidents[0]["timeline"].as_array().unwrap().len();
    assert!(steps >= 10, "{page}");
    assert_eq!(incidents[0]["alert_count"].as_u64(), Some(steps as u64));
    assert_eq!(call(&db, "GET", "/api/v1/incidents", None, None).await.0, StatusCode::UNAUTHORIZED);

    // The report: a viewer downloads it; a change needs an analyst and a reason.
    let id = incidents[0]["id"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let uri = format!("/api/v1/incidents/{id}/report");
    let (status, headers, _) = send(&db, "GET", &uri, &[("authorization", &auth)], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(headers["content-disposition"].to_str().unwrap().contains(&format!("{id}.html")));
    let (status, findings) = call(&db, "GET", &format!("{uri}?format=ocsf"), Some(&token), None).await;
    assert_eq!((status, findings[0]["class_uid"].as_i64()), (StatusCode::OK, Some(2005)));
    let (status, body) = call(&db, "GET", &format!("{uri}?format=pdf"), Some(&token), None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("format")));
    assert_eq!(send(&db, "GET", &uri, &[], None).await.0, StatusCode::UNAUTHORIZED);
    let change = serde_json::json!({"status": "investigating", "reason": "mine"});
    let path = format!("/api/v1/incidents/{id}");
    assert_eq!(call(&db, "PATCH", &path, Some(&token), Some(change.clone())).await.0, StatusCode::FORBIDDEN);
    let (_, analyst) = auth::create(&db.pool, "oncall", Role::Analyst).await.unwrap();
    let (status, body) =
        call(&db, "PATCH", &path, Some(&analyst), Some(serde_json::json!({"status": "investigating", "reason": " "})))
            .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("reason")));
    let (status, body) =
        call(&db, "PATCH", &path, Some(&analyst), Some(serde_json::json!({"status": "merged", "reason": "x"}))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("status")));
    let (status, body) = call(&db, "PATCH", &path, Some(&analyst), Some(change)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("investigating")), "{body}");
    let (_, story) = call(&db, "GET", &path, Some(&token), None).await;
    assert_eq!(story["history"][0]["new_value"], "investigating");
    assert!(story["history"][0]["actor"].as_str().unwrap().contains("oncall"));
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
    let actions: Vec<(String, String)> = log["entries"]
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
    assert_eq!(log["entries"].as_array().unwrap().len(), 1, "{log}");
}

/// Seven or more rows in every list that grows with data, with ties in the sort keys, so a
/// small `limit` needs several pages.
async fn fill_every_list(db: &TestDb) -> String {
    let account = "111122223333";
    let base: chrono::DateTime<chrono::Utc> = "2026-11-12T00:00:00Z".parse().unwrap();
    let hours = |h: i64| base + chrono::Duration::hours(h);
    let alert = |policy: &str, session: Option<String>, ip: String, first: chrono::DateTime<chrono::Utc>| {
        let (pool, policy) = (db.pool.clone(), policy.to_string());
        async move {
            sqlx::query_scalar::<_, String>(
                "INSERT INTO alerts (account_id, alert_id, policy_id, dedup_key, title, severity, principal, source_ip,
                                     first_seen, last_seen, session_key)
                 VALUES ($1, gen_random_uuid(), $2, gen_random_uuid()::text, 'paging test', 'high', 'alice', $3::inet,
                         $4, $4 + interval '10 minutes', $5)
                 RETURNING alert_id::text",
            )
            .bind(account)
            .bind(policy)
            .bind(ip)
            .bind(first)
            .bind(session)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Five incidents (two policies per session; sessions 1 and 2 start at once), a session of one
    // policy (no incident), and a flow alert that joins session 0 by its address.
    let mut first_alert = None;
    for i in 0..5 {
        let start = hours([0, 3, 3, 5, 8][i]);
        let (session, ip) = (format!("alice|203.0.113.{}", 10 + i), format!("203.0.113.{}", 10 + i));
        let id = alert("paging-login", Some(session.clone()), ip.clone(), start).await;
        first_alert.get_or_insert(id);
        alert("paging-change", Some(session), ip, start + chrono::Duration::minutes(30)).await;
    }
    for _ in 0..2 {
        alert("paging-login", Some("bob|198.51.100.1".into()), "198.51.100.1".into(), hours(1)).await;
    }
    // One medium policy again and again is not listed (one high alert would be).
    sqlx::query("UPDATE alerts SET severity = 'medium' WHERE source_ip = '198.51.100.1'")
        .execute(&db.pool)
        .await
        .unwrap();
    alert("paging-flow", None, "203.0.113.10".into(), hours(2)).await;
    let first_alert = first_alert.unwrap();

    // Seven events, five of them the first alert's evidence.
    ensure_cloudtrail_month(db, base).await;
    for i in 0..7 {
        let time = base + chrono::Duration::minutes(i / 2);
        sqlx::query("INSERT INTO cloudtrail_events (account_id, event_time, event_id, event_name, raw) VALUES ($1, $2, $3, 'ConsoleLogin', '{}')")
            .bind(account)
            .bind(time)
            .bind(format!("ev-{i}"))
            .execute(&db.pool)
            .await
            .unwrap();
        if i < 5 {
            sqlx::query(
                "INSERT INTO alert_evidence (account_id, alert_id, event_id, event_time) VALUES ($1, $2::uuid, $3, $4)",
            )
            .bind(account)
            .bind(&first_alert)
            .bind(format!("ev-{i}"))
            .bind(time)
            .execute(&db.pool)
            .await
            .unwrap();
        }
    }
    for (i, severity) in ["high", "high", "low", "critical", "medium", "high", "low"].iter().enumerate() {
        sqlx::query(
            "INSERT INTO posture_findings (account_id, check_id, resource_type, resource_id, region, severity, status,
                                           messages, first_failed_at, last_seen_at)
             VALUES ($1, $2, 'aws:s3-bucket', $3, 'eu-west-1', $4::alert_severity, 'open', '{}', now(), now())",
        )
        .bind(account)
        .bind(format!("chk-{}", i % 3))
        .bind(format!("r-{}", 6 - i))
        .bind(*severity)
        .execute(&db.pool)
        .await
        .unwrap();
        let section = ["iam", "iam", "iam", "logging", "logging", "networking", "networking"][i];
        sqlx::query("INSERT INTO posture_scores (evaluated_at, account_id, section, passed, failed, suppressed) VALUES ($1, $2, $3, $4, 1, 0)")
            .bind(hours(i as i64))
            .bind(account)
            .bind(section)
            .bind(i as i32)
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO posture_suppressions (check_id, reason, created_by) VALUES ('chk-0', 'paging', 'test')",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO resources (account_id, resource_type, resource_id, region, version, config, config_hash,
                                    first_seen, last_seen, last_changed)
             VALUES ($1, $2, $3, 'eu-west-1', 1, '{}', '\\x00', now(), now(), now())",
        )
        .bind(account)
        .bind(if i % 2 == 0 { "ec2:security-group" } else { "iam:user" })
        .bind(format!("res-{i}"))
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO config_changes (account_id, resource_type, resource_id, region, version, kind, detected_at, diff)
             VALUES ($1, 'ec2:security-group', $2, 'eu-west-1', 1, 'modified', $3, '[]')",
        )
        .bind(account)
        .bind(format!("chg-{i}"))
        .bind(hours(i as i64 / 2))
        .execute(&db.pool)
        .await
        .unwrap();
        skywarden::auth::audit::record(&db.pool, "test", "paging.test", Some(&i.to_string()), None, Value::Null).await;
    }
    let channel: i64 =
        sqlx::query_scalar("INSERT INTO notification_channels (name, kind) VALUES ('paging', 'webhook') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    for i in 0..7 {
        sqlx::query("INSERT INTO notification_outbox (channel_id, event, dedup_key) VALUES ($1, 'digest', $2)")
            .bind(channel)
            .bind(format!("d-{i}"))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    first_alert
}

/// Follows `next_cursor` from `uri` (which has a `limit`): every page but the last is full and
/// has a cursor, the last has none; returns the rows under `key`, in the order given.
async fn every_page(db: &TestDb, token: &str, uri: &str, key: &str, limit: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut next = uri.to_string();
    for _ in 0..100 {
        let (status, page) = call(db, "GET", &next, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{next}: {page}");
        let got = page[key].as_array().unwrap_or_else(|| panic!("{next}: no {key} in {page}"));
        assert!(got.len() <= limit, "{next}: {} rows over the limit {limit}", got.len());
        rows.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(got.len(), limit, "{next}: a page before the last is full");
                let separator = if uri.contains('?') { '&' } else { '?' };
                next = format!("{uri}{separator}cursor={cursor}");
            }
            None => {
                assert_eq!(page["next_cursor"], Value::Null, "{next}: the last page has no cursor");
                return rows;
            }
        }
    }
    panic!("{uri}: more than 100 pages");
}

/// The values of `field` in the rows, as text.
fn texts(rows: &[Value], field: &str) -> Vec<String> {
    rows.iter().map(|r| r[field].as_str().map(str::to_owned).unwrap_or_else(|| r[field].to_string())).collect()
}

async fn column(db: &TestDb, sql: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(sql).fetch_all(&db.pool).await.unwrap()
}

#[tokio::test]
async fn every_list_route_pages_completely_in_order_and_refuses_bad_cursors() {
    let db = TestDb::new().await;
    let first_alert = fill_every_list(&db).await;
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let (_, admin) = auth::create(&db.pool, "root", Role::Admin).await.unwrap();
    let evidence = format!("/api/v1/alerts/{first_alert}/evidence");
    // (route, rows' member, id field, the order the API promises, as SQL, who may read it)
    let routes: Vec<(String, &str, &str, &str, &str)> = vec![
        (
            "/api/v1/alerts".into(),
            "alerts",
            "id",
            "SELECT alert_id::text FROM alerts ORDER BY first_seen DESC, alert_id DESC",
            &viewer,
        ),
        (
            evidence.clone(),
            "events",
            "event_id",
            "SELECT event_id FROM alert_evidence ORDER BY event_time, event_id",
            &viewer,
        ),
        (
            "/api/v1/events".into(),
            "events",
            "event_id",
            "SELECT event_id FROM cloudtrail_events ORDER BY event_time DESC, account_id DESC, event_id DESC",
            &viewer,
        ),
        (
            "/api/v1/posture/findings?status=all".into(),
            "findings",
            "id",
            "SELECT id::text FROM posture_findings ORDER BY severity DESC, check_id, resource_id, id",
            &viewer,
        ),
        (
            "/api/v1/posture/scores?trend=true".into(),
            "scores",
            "passed",
            "SELECT passed::text FROM posture_scores ORDER BY account_id, section, evaluated_at",
            &viewer,
        ),
        (
            "/api/v1/posture/suppressions".into(),
            "suppressions",
            "id",
            "SELECT id::text FROM posture_suppressions ORDER BY id",
            &viewer,
        ),
        (
            "/api/v1/resources".into(),
            "resources",
            "resource_id",
            "SELECT resource_id FROM resources ORDER BY account_id, resource_type, resource_id",
            &viewer,
        ),
        (
            "/api/v1/changes".into(),
            "changes",
            "resource_id",
            "SELECT resource_id FROM config_changes ORDER BY detected_at DESC, change_id DESC",
            &viewer,
        ),
        (
            "/api/v1/deliveries".into(),
            "deliveries",
            "id",
            "SELECT id::text FROM notification_outbox ORDER BY id DESC",
            &admin,
        ),
        (
            "/api/v1/audit-log?action=paging.test".into(),
            "entries",
            "id",
            "SELECT id::text FROM audit_log WHERE action = 'paging.test' ORDER BY id DESC",
            &admin,
        ),
    ];
    for (uri, key, id, order, token) in &routes {
        let expected = column(&db, order).await;
        assert!(expected.len() >= 5, "{uri}: the fixture has rows for several pages");
        for limit in [1, 2, 3] {
            let separator = if uri.contains('?') { '&' } else { '?' };
            let rows = every_page(&db, token, &format!("{uri}{separator}limit={limit}"), key, limit).await;
            // Disjoint, complete and in order: exactly the rows, each once, in the promised order.
            assert_eq!(texts(&rows, id), expected, "{uri} limit={limit}");
        }
        // A bad cursor, another list's cursor and a limit over the maximum are 400s naming the field.
        let separator = if uri.contains('?') { '&' } else { '?' };
        let (_, page) = call(&db, "GET", &format!("{uri}{separator}limit=1"), Some(token), None).await;
        let cursor = page["next_cursor"].as_str().unwrap().to_owned();
        for other in routes.iter().filter(|r| r.0 != *uri && r.0 != "/api/v1/events") {
            let other_separator = if other.0.contains('?') { '&' } else { '?' };
            let (_, theirs) =
                call(&db, "GET", &format!("{}{other_separator}limit=1", other.0), Some(other.4), None).await;
            let theirs = theirs["next_cursor"].as_str().unwrap().to_owned();
            let (status, body) = call(&db, "GET", &format!("{uri}{separator}cursor={theirs}"), Some(token), None).await;
            assert_eq!(
                (status, body["field"].as_str()),
                (StatusCode::BAD_REQUEST, Some("cursor")),
                "{uri} with {}'s cursor: {body}",
                other.0
            );
        }
        for (query, field) in [
            ("cursor=not-a-cursor".to_string(), "cursor"),
            (format!("cursor={}", &cursor[..cursor.len() - 1]), "cursor"),
            ("limit=0".into(), "limit"),
            ("limit=100001".into(), "limit"),
        ] {
            let (status, body) = call(&db, "GET", &format!("{uri}{separator}{query}"), Some(token), None).await;
            assert_eq!(
                (status, body["field"].as_str()),
                (StatusCode::BAD_REQUEST, Some(field)),
                "{uri} {query}: {body}"
            );
        }
        let (status, body) = call(&db, "GET", &format!("{uri}{separator}cursor={cursor}"), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
    }
    // Each maximum is stated and enforced: one over it is refused, it itself is taken.
    for (uri, max) in [
        ("/api/v1/alerts", 500),
        (evidence.as_str(), 1000),
        ("/api/v1/incidents", 200),
        ("/api/v1/posture/findings", 1000),
        ("/api/v1/posture/scores", 5000),
        ("/api/v1/posture/suppressions", 1000),
        ("/api/v1/resources", 5000),
        ("/api/v1/changes", 1000),
    ] {
        let (status, body) = call(&db, "GET", &format!("{uri}?limit={}", max + 1), Some(&viewer), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")), "{uri}: {body}");
        assert!(body["error"].as_str().unwrap().contains(&format!("from 1 to {max}")), "{uri}: {body}");
        assert_eq!(
            call(&db, "GET", &format!("{uri}?limit={max}"), Some(&viewer), None).await.0,
            StatusCode::OK,
            "{uri}"
        );
    }
    // A viewer never reads deliveries or Skywarden's own audit log, paged or not.
    assert_eq!(call(&db, "GET", "/api/v1/deliveries?limit=1", Some(&viewer), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&db, "GET", "/api/v1/audit-log?limit=1", Some(&viewer), None).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn incidents_page_as_the_store_groups_them_and_alerts_carry_bounded_evidence() {
    let db = TestDb::new().await;
    let first_alert = fill_every_list(&db).await;
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let mut pages = Vec::new();
    for limit in [1, 2, 5] {
        let rows = every_page(&db, &viewer, &format!("/api/v1/incidents?limit={limit}"), "incidents", limit).await;
        pages.push(rows);
    }
    assert!(pages.windows(2).all(|w| w[0] == w[1]), "the same incidents whatever the page size");
    let incidents = &pages[0];
    // Newest first; one incident per address (its session's alerts, and the flow alert to it),
    // bob's session of one policy is none.
    let starts = texts(incidents, "first_seen");
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "{starts:?}");
    let mut expected = Vec::new();
    for i in 0..5 {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT alert_id::text FROM alerts WHERE source_ip = $1::inet ORDER BY alert_id::text")
                .bind(format!("203.0.113.{}", 10 + i))
                .fetch_all(&db.pool)
                .await
                .unwrap();
        expected.push(ids);
    }
    let mut got: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            let mut ids = texts(i["timeline"].as_array().unwrap(), "alert_id");
            ids.sort();
            ids
        })
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 5, "five sessions of two policies; one of a single medium policy is no incident");
    let with_flow = incidents.iter().find(|i| i["source_ip"] == "203.0.113.10").unwrap();
    let policies = texts(with_flow["timeline"].as_array().unwrap(), "policy_id");
    assert_eq!(
        policies,
        ["paging-login", "paging-change", "paging-flow"],
        "the flow from the address joins, in time order"
    );
    assert_eq!(with_flow["alert_count"], 3);
    let (_, first) = call(&db, "GET", "/api/v1/incidents?limit=1", Some(&viewer), None).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, alerts) = call(&db, "GET", "/api/v1/alerts?limit=1", Some(&viewer), None).await;
    for bad in [&cursor[..cursor.len() - 1], alerts["next_cursor"].as_str().unwrap(), "zz"] {
        let (status, body) = call(&db, "GET", &format!("/api/v1/incidents?cursor={bad}"), Some(&viewer), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("cursor")), "{bad}: {body}");
    }
    assert_eq!(
        call(&db, "GET", &format!("/api/v1/incidents?cursor={cursor}"), None, None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // An alert in a list carries its first evidence ids only; its own answer the first events
    // and a cursor to the rest, which its evidence route pages.
    sqlx::query(
        "INSERT INTO alert_evidence (account_id, alert_id, event_id, event_time)
         SELECT '111122223333', $1::uuid, 'extra-' || g, timestamptz '2026-11-12T05:00:00Z' + g * interval '1 second'
         FROM generate_series(1, 200) g",
    )
    .bind(&first_alert)
    .execute(&db.pool)
    .await
    .unwrap();
    let (_, page) = call(&db, "GET", "/api/v1/alerts?limit=500", Some(&viewer), None).await;
    let listed = page["alerts"].as_array().unwrap().iter().find(|a| a["id"] == first_alert.as_str()).unwrap().clone();
    assert_eq!(listed["evidence"].as_array().unwrap().len(), 20, "{listed}");
    assert_eq!(listed["evidence"][0], "ev-0");
    let (status, one) = call(&db, "GET", &format!("/api/v1/alerts/{first_alert}"), Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["alert"]["evidence"].as_array().unwrap().len(), 20);
    // Only the five evidence rows with a stored event are events; the first page holds them.
    assert_eq!(one["evidence_events"].as_array().unwrap().len(), 5, "{one}");
    assert_eq!(one["evidence_next_cursor"], Value::Null);
}

/// A pool as `serve` gives the API, with its statement timeout.
fn api_pool(db: &TestDb, statement_timeout: std::time::Duration) -> sqlx::PgPool {
    let connect: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    skywarden::db::pool_with(
        connect,
        &skywarden::db::PoolSettings {
            connections: 2,
            acquire_timeout: std::time::Duration::from_secs(10),
            statement_timeout: Some(statement_timeout),
        },
    )
}

#[tokio::test]
async fn a_viewers_raw_text_scan_is_cancelled_at_the_statement_timeout_and_the_api_keeps_serving() {
    let db = TestDb::new().await;
    // 150,000 events of ~600 bytes: a scan of their raw text takes far longer than 40 ms.
    let base: chrono::DateTime<chrono::Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    ensure_cloudtrail_month(&db, base).await;
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, event_name, raw)
         SELECT '111122223333', $1 + g * interval '10 seconds', 'e-' || g, 'DescribeInstances',
                jsonb_build_object('eventName', 'DescribeInstances', 'userAgent', repeat('aws-cli/2.15 Python/3.11 ', 8),
                                   'requestParameters', jsonb_build_object('filter', repeat('x', 300), 'n', g))
         FROM generate_series(1, 150000) g",
    )
    .bind(base)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE cloudtrail_events").execute(&db.pool).await.unwrap();
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let api = ApiContext::new(api_pool(&db, std::time::Duration::from_millis(40)));
    let scan = "/api/v1/events?q=nowhere-in-any-event";
    for uri in [scan, "/api/v1/events/export?q=nowhere-in-any-event"] {
        let (status, body) = call_with(&api, "GET", uri, Some(&viewer), None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("statement timeout") && error.contains("narrow the filters"), "{uri}: {error}");
    }
    // The same pool answers at once afterwards: the cancelled statement left nothing behind.
    for uri in ["/api/v1/alerts", "/api/v1/events?limit=5", "/healthz", "/readyz"] {
        assert_eq!(call_with(&api, "GET", uri, Some(&viewer), None).await.0, StatusCode::OK, "{uri}");
    }
    // Without the timeout (the background pool has none) the scan runs to its end: empty.
    let (status, page) = call(&db, "GET", scan, Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"], serde_json::json!([]));
}

/// Holds `table` locked (ACCESS EXCLUSIVE) until the returned transaction ends, so a request that
/// reads it waits, for as long as the test wants, without any sleep.
async fn lock(db: &TestDb, table: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = skywarden::db::begin(&db.pool).await.unwrap();
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await.unwrap();
    tx
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_get_a_quick_503_and_health_checks_still_answer() {
    let db = TestDb::new().await;
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let limits =
        skywarden::http::limits::ApiLimits { request_timeout: std::time::Duration::from_secs(120), max_concurrent: 1 };
    let api = ApiContext::new(db.pool.clone()).with_limits(limits);
    let locked = lock(&db, "alerts").await;
    // The one slot: a request held open by the lock.
    let held = tokio::spawn({
        let (api, viewer) = (api.clone(), viewer.clone());
        async move { call_with(&api, "GET", "/api/v1/alerts", Some(&viewer), None).await }
    });
    db.until_a_statement_waits_for_a_lock("no request reached the locked table within 10 s").await;
    let started = std::time::Instant::now();
    let (status, body) = call_with(&api, "GET", "/api/v1/events", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("1 requests already, its limit"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "refused at once, not queued");
    let (status, headers, _) =
        send_with(&api, "GET", "/api/v1/events", &[("authorization", &format!("Bearer {viewer}"))]).await;
    assert_eq!(
        (status, headers.get("retry-after").and_then(|v| v.to_str().ok())),
        (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
    );
    for health in ["/healthz", "/readyz"] {
        assert_eq!(call_with(&api, "GET", health, None, None).await.0, StatusCode::OK, "{health} is never limited");
    }
    locked.rollback().await.unwrap();
    let (status, body) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK, "the held request completes: {body}");
    assert_eq!(
        call_with(&api, "GET", "/api/v1/events", Some(&viewer), None).await.0,
        StatusCode::OK,
        "its slot is free again"
    );
}

#[tokio::test]
async fn a_request_past_the_request_timeout_gets_a_503_and_the_next_one_is_answered() {
    let db = TestDb::new().await;
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let timeout = std::time::Duration::from_millis(300);
    let limits = skywarden::http::limits::ApiLimits { request_timeout: timeout, max_concurrent: 8 };
    let api = ApiContext::new(db.pool.clone()).with_limits(limits);
    let locked = lock(&db, "alerts").await;
    let started = std::time::Instant::now();
    let (status, body) = call_with(&api, "GET", "/api/v1/alerts", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("request timeout"), "{body}");
    let waited = started.elapsed();
    assert!(waited >= timeout && waited < std::time::Duration::from_secs(30), "{waited:?}");
    locked.rollback().await.unwrap();
    for uri in ["/api/v1/alerts", "/api/v1/events", "/api/v1/incidents"] {
        assert_eq!(call_with(&api, "GET", uri, Some(&viewer), None).await.0, StatusCode::OK, "{uri}");
    }
}

/// A request through `context`'s router with any headers; returns status, headers and body (JSON,
/// or else the text).
async fn send_with(
    context: &ApiContext,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router(context.clone()).oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())))
}

#[tokio::test]
async fn an_export_of_several_database_pages_is_streamed_whole_and_in_order() {
    let db = TestDb::new().await;
    let base: chrono::DateTime<chrono::Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    ensure_cloudtrail_month(&db, base).await;
    // 2,500 events, pairs of them at the same second: the pages' keys have ties.
    sqlx::query(
        "INSERT INTO cloudtrail_events (account_id, event_time, event_id, event_name, user_name, raw)
         SELECT '111122223333', $1 + (g / 2) * interval '1 second', 'e-' || lpad(g::text, 5, '0'), 'GetObject', 'svc', '{}'
         FROM generate_series(1, 2500) g",
    )
    .bind(base)
    .execute(&db.pool)
    .await
    .unwrap();
    let expected =
        column(&db, "SELECT event_id FROM cloudtrail_events ORDER BY event_time DESC, account_id DESC, event_id DESC")
            .await;
    let (_, viewer) = auth::create(&db.pool, "wallboard", Role::Viewer).await.unwrap();
    let export = |uri: &'static str| {
        let (db, viewer) = (&db, viewer.clone());
        async move {
            send_with(&ApiContext::new(db.pool.clone()), "GET", uri, &[("authorization", &format!("Bearer {viewer}"))])
                .await
        }
    };
    let (status, headers, body) = export("/api/v1/events/export?format=jsonl").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("content-length").is_none(), "streamed, not built whole: {headers:?}");
    let text = body.as_str().unwrap_or_default().to_owned();
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expected, "every event once, newest first");
    let (status, _, body) = export("/api/v1/events/export?format=csv&limit=2301").await;
    assert_eq!(status, StatusCode::OK);
    let csv = body.as_str().unwrap_or_default().to_owned();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("event_time,"), "one header: {}", lines[0]);
    assert_eq!(lines.len(), 1 + 2301, "the limit, across three database pages");
    let ids: Vec<&str> = lines[1..].iter().map(|l| l.rsplit(',').next().unwrap()).collect();
    assert_eq!(ids, expected[..2301].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(lines.iter().filter(|l| l.starts_with("event_time,")).count(), 1);
}

/// Waits (20 s at most) until `css` matches `count` elements in the browser.
async fn until_count(browser: &crate::support::browser::Browser, css: &str, count: usize) {
    for _ in 0..200 {
        if browser.count(css).await == count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let shot = browser.screenshot("count-not-reached").await;
    panic!("{css} never matched {count} elements (it matches {}; {})", browser.count(css).await, shot.display());
}

#[tokio::test]
async fn the_dashboard_loads_the_next_pages_of_a_long_list_on_demand() {
    let db = TestDb::new().await;
    // 130 alerts (the page holds 100) and 250 audit-log entries (the page holds 200).
    sqlx::query(
        "INSERT INTO alerts (account_id, alert_id, policy_id, dedup_key, title, severity, first_seen, last_seen)
         SELECT '111122223333', gen_random_uuid(), 'paging-' || g, 'k' || g, 'Paging alert ' || g, 'medium',
                timestamptz '2026-11-12T00:00:00Z' + g * interval '1 minute', timestamptz '2026-11-12T06:00:00Z'
         FROM generate_series(1, 130) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    for i in 0..250 {
        skywarden::auth::audit::record(&db.pool, "test", "paging.test", Some(&i.to_string()), None, Value::Null).await;
    }
    let password = "a long enough passphrase";
    let mut create = crate::support::skywarden_command(&db.url);
    create.args(["users", "create", "--username", "ines", "--role", "admin"]).env("SKYWARDEN_USER_PASSWORD", password);
    assert!(create.output().unwrap().status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = crate::support::KillOnDrop(
        crate::support::skywarden_command(&db.url)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--no-pollers", "--no-notifications"])
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let browser = crate::support::browser::Browser::start(crate::support::browser::artifacts_dir("paging")).await;
    browser.goto(&format!("{base}/#/login")).await;
    browser.type_into("#username", "ines").await;
    browser.type_into("#password", password).await;
    browser.click("#sign-in").await;
    browser.wait_for_text("#who", "ines (admin)").await;

    browser.goto(&format!("{base}/#/alerts")).await;
    browser.wait_for_text("#alerts", "Paging alert 130").await;
    until_count(&browser, "#alerts tbody tr", 100).await;
    browser.click("#more-alerts").await;
    until_count(&browser, "#alerts tbody tr", 130).await;
    let titles =
        browser.script("return [...document.querySelectorAll('#alerts tbody tr a')].map(a => a.textContent)").await;
    let expected: Vec<String> = (1..=130).rev().map(|i| format!("Paging alert {i}")).collect();
    assert_eq!(titles, serde_json::json!(expected), "newest first, each once");
    assert_eq!(browser.script("return document.getElementById('more-alerts').closest('p').hidden").await, true);
    browser.screenshot("alerts-all-loaded").await;

    browser.goto(&format!("{base}/#/audit-log")).await;
    browser.wait_for_text("#audit-log", "paging.test").await;
    until_count(&browser, "#audit-log tbody tr", 200).await;
    browser.click("#more-audit-log").await;
    // The 250, and what the sign-in and the user's creation added.
    let total = db.count("SELECT count(*) FROM audit_log").await;
    assert!((251..400).contains(&total), "{total}");
    until_count(&browser, "#audit-log tbody tr", total as usize).await;
    assert_eq!(browser.script("return document.getElementById('more-audit-log').closest('p').hidden").await, true);
}

#[tokio::test]
async fn a_tampered_alert_cursor_is_a_400_naming_it_not_a_server_error() {
    use skywarden::alerts::pages::{AlertKey, AlertSort};
    use skywarden::http::query::Cursor;
    let db = TestDb::new().await;
    let (_, token) = auth::create(&db.pool, "viewer", Role::Viewer).await.unwrap();
    let key =
        |alert_id: &str, micros: i64| AlertKey { sort: AlertSort::Newest, rank: 0, micros, alert_id: alert_id.into() };
    let good = Cursor::encode(&key("00000000-0000-4000-8000-000000000001", 1_700_000_000_000_000));
    let (status, _) = call(&db, "GET", &format!("/api/v1/alerts?cursor={good}"), Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    for tampered in [key("not-a-uuid'", 0), key("00000000-0000-4000-8000-000000000001", i64::MAX)] {
        let cursor = Cursor::encode(&tampered);
        let (status, body) = call(&db, "GET", &format!("/api/v1/alerts?cursor={cursor}"), Some(&token), None).await;
        assert_eq!((status, &body["field"]), (StatusCode::BAD_REQUEST, &Value::from("cursor")), "{tampered:?}: {body}");
    }
}

#[tokio::test]
async fn entity_pages_cover_the_ninety_days_up_to_the_last_event_not_all_time() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // carol from one address: once in January, then twice in November.
    let event = |id: &str, time: &str| {
        serde_json::json!({"eventVersion": "1.09", "eventTime": time, "eventSource": "s3.amazonaws.com",
            "eventName": "ListBuckets", "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.9", "eventID": id,
            "eventType": "AwsApiCall", "recipientAccountId": "111122223333",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/carol",
                             "accountId": "111122223333", "userName": "carol"}})
        .to_string()
    };
    let file = dir.path().join("carol.jsonl");
    let lines = [
        event("old", "2026-01-05T10:00:00Z"),
        event("new-1", "2026-11-10T10:00:00Z"),
        event("new-2", "2026-11-12T10:00:00Z"),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, _) = db.import_json(&[&file]);
    assert_eq!(code, 0);
    let (_, token) = auth::create(&db.pool, "viewer", Role::Viewer).await.unwrap();
    let (status, principal) = call(&db, "GET", "/api/v1/principals/activity?principal=CAROL", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{principal}");
    assert_eq!(principal["events"], 2, "January lies outside the window: {principal}");
    assert_eq!(
        (principal["first_seen"].as_str(), principal["last_seen"].as_str()),
        (Some("2026-11-10T10:00:00Z"), Some("2026-11-12T10:00:00Z"))
    );
    assert_eq!(principal["window_start"], "2026-08-14T10:00:00Z");
    let (status, address) = call(&db, "GET", "/api/v1/addresses/203.0.113.9", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{address}");
    assert_eq!((address["events"].as_i64(), address["window_start"].as_str()), (Some(2), Some("2026-08-14T10:00:00Z")));
    // Nothing names an unknown principal: no window, nothing counted.
    let (_, nobody) = call(&db, "GET", "/api/v1/principals/activity?principal=nobody", Some(&token), None).await;
    assert_eq!((nobody["events"].as_i64(), &nobody["window_start"]), (Some(0), &Value::Null), "{nobody}");
}
