//! The bundled sample incident imports completely, and `skywarden demo` tells its story.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{TestDb, mmdb};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(samples().join("incident.expected.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn sample_incident_imports_completely_and_once() {
    let db = TestDb::new().await;
    let expected = expected();
    let (code, summary) = db.import_json(&[&samples().join("incident")]);
    assert_eq!(code, 0, "{summary}");
    let files = expected["cloudtrail_files"].as_u64().unwrap() + expected["flow_files"].as_u64().unwrap() + 1;
    assert_eq!(summary["files"].as_u64(), Some(files), "{summary}");
    assert_eq!(summary["cloudtrail_events"], expected["cloudtrail_events"], "{summary}");
    assert_eq!(summary["flow_records"], expected["flow_records"], "{summary}");
    // The LookupEvents export repeats trail events: all of them are duplicates.
    assert_eq!(summary["duplicates"], expected["lookup_events"], "{summary}");

    for (name, count) in expected["event_counts_by_name"].as_object().unwrap() {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM cloudtrail_events WHERE event_name = $1")
            .bind(name)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(stored, count.as_i64().unwrap(), "{name}");
    }
    let exfil: i64 = sqlx::query_scalar(
        "SELECT sum(bytes)::bigint FROM flow_records WHERE srcaddr = '10.0.1.25' AND dstaddr = $1::inet",
    )
    .bind(expected["attacker_ip"].as_str().unwrap())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(exfil, expected["exfil_bytes_to_attacker"].as_i64().unwrap());

    // "Who changed sg-0a1b2c3d4e5f67890, when, from where" is one indexed lookup.
    let change: (String, String, String) = sqlx::query_as(
        "SELECT event_id, user_name, source_ip_text FROM cloudtrail_events
         WHERE resource_ids @> ARRAY['sg-0a1b2c3d4e5f67890'] AND read_only = false",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(change.0, expected["attack_event_ids"]["security_group_ingress"].as_str().unwrap());
    assert_eq!((change.1.as_str(), change.2.as_str()), ("alice", "176.36.10.20"));

    let (code, again) = db.import_json(&[&samples().join("incident")]);
    assert_eq!(code, 0);
    assert_eq!((again["cloudtrail_events"].as_u64(), again["flow_records"].as_u64()), (Some(0), Some(0)), "{again}");
}

#[tokio::test]
async fn demo_tells_the_story_then_serves_the_dashboard() {
    use std::io::BufRead;
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let geo = mmdb::sample_incident_countries(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut demo = crate::support::skywarden_command(&db.url)
        .args(["demo", "--samples", samples().join("incident").to_str().unwrap(), "--geoip", geo.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read the story until the dashboard line, on a thread (the demo keeps serving).
    let reader = std::io::BufReader::new(demo.stdout.take().unwrap());
    let (lines, received) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut story = Vec::new();
    let password = loop {
        let line =
            received.recv_timeout(std::time::Duration::from_secs(120)).expect("the demo prints its dashboard line");
        story.push(line.clone());
        if let Some(rest) = line.split("password: ").nth(1) {
            break rest.trim_end_matches(')').to_owned();
        }
    };
    // The printed credentials open a dashboard session.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let body = serde_json::json!({"username": "analyst", "password": password}).to_string();
    let request = format!(
        "POST /api/v1/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("skywarden_session="), "{answer}");
    assert!(std::process::Command::new("kill").args(["-TERM", &demo.id().to_string()]).status().unwrap().success());
    let output_status = demo.wait().unwrap();
    while let Ok(line) = received.recv_timeout(std::time::Duration::from_secs(5)) {
        story.push(line);
    }
    let stdout = story.join("\n");
    assert!(output_status.success(), "{stdout}");
    let login_line =
        stdout.lines().find(|l| l.contains("alice") && l.contains(" UA ") && l.contains("logins")).expect(&stdout);
    assert!(login_line.contains("12 logins (11 failed)"), "{login_line}");
    let sg_line = stdout
        .lines()
        .find(|l| l.contains("AuthorizeSecurityGroupIngress") && l.contains("sg-0a1b2c3d4e5f67890"))
        .expect(&stdout);
    assert!(sg_line.contains("by alice") && sg_line.contains("176.36.10.20 (UA)"), "{sg_line}");
    assert!(stdout.contains("-> 176.36.10.20    UA    3201461741 bytes"), "{stdout}");
    let alert_line = stdout.lines().find(|l| l.contains("aws-account-hijacking-attempt")).expect(&stdout);
    assert!(alert_line.contains("high") && alert_line.contains("from UA (176.36.10.20)"), "{alert_line}");
}
