//! The `skywarden` command line as a user meets it: the real binary against a real database
//! (and moto, the AWS emulator): what it says without AWS credentials, its help, JSON lines,
//! dead letters retried from the shell, `worker` sending notifications, `posture run --collect`,
//! and the demo's users.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use skywarden::accounts;
use skywarden::aws::AccountSession;

use crate::support::aws as fake;
use crate::support::receiver::{Answer, Receiver};
use crate::support::{TestDb, skywarden_command};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Each non-empty line of stdout, parsed as one JSON object: the `--json` contract.
fn json_lines(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
            assert!(value.is_object(), "a JSON line is an object: {line}");
            value
        })
        .collect()
}

/// `skywarden` with nothing from this process's environment: no AWS variables, a HOME with no
/// `~/.aws`, and the instance metadata service either off or at `imds` (on 127.0.0.1).
fn bare_command(db: &TestDb, home: &Path, imds: Option<&str>) -> Command {
    let mut command = skywarden_command(&db.url);
    command.env_clear().env("DATABASE_URL", &db.url).env("HOME", home).env("USER", "cli-test");
    match imds {
        Some(endpoint) => command.env("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint),
        None => command.env("AWS_EC2_METADATA_DISABLED", "true"),
    };
    command
}

#[tokio::test]
async fn accounts_add_without_aws_credentials_says_what_it_tried_and_stores_nothing() {
    let db = TestDb::new().await;
    let home = tempfile::tempdir().unwrap();
    let role = "arn:aws:iam::111122223333:role/SkywardenReadOnly";
    let accounts = "SELECT count(*) FROM accounts WHERE account_id = '111122223333'";

    let output = bare_command(&db, home.path(), None).args(["accounts", "add", "--role-arn", role]).output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no AWS credentials found (tried"), "{stderr}");
    for place in
        ["AWS_ACCESS_KEY_ID", "~/.aws/credentials", "\"default\"", "AWS_WEB_IDENTITY_TOKEN_FILE", "ECS/EKS", "IMDS"]
    {
        assert!(stderr.contains(place), "the message names {place}: {stderr}");
    }
    assert!(stderr.contains("--skip-test"), "{stderr}");
    assert!(stderr.len() < 2048, "{} bytes on stderr: {stderr}", stderr.len());
    assert!(!stderr.contains("ProviderChainError") && !stderr.contains("DEBUG"), "no SDK dump: {stderr}");
    assert_eq!(db.count(accounts).await, 0, "nothing stored");

    // A metadata service that accepts connections and never answers cannot hold the command up.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            open.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let mut command = bare_command(&db, home.path(), Some(&endpoint));
    let output = tokio::task::spawn_blocking(move || command.args(["accounts", "add", "--role-arn", role]).output())
        .await
        .unwrap()
        .unwrap();
    held.abort();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(stderr.contains("no AWS credentials found") && stderr.len() < 2048, "{stderr}");
    assert_eq!(db.count(accounts).await, 0);

    // --skip-test onboards without looking for credentials (the role comes later).
    let output = bare_command(&db, home.path(), None)
        .args(["accounts", "add", "--role-arn", role, "--skip-test"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("role check skipped"), "{}", text(&output.stdout));
    assert_eq!(db.count(accounts).await, 1);
}

#[tokio::test]
async fn help_names_the_environment_and_exit_codes_and_every_flag_says_what_it_does() {
    let db = TestDb::new().await;
    let help = |args: &[&str]| {
        let output = db.skywarden(&[args, &["--help"]].concat());
        assert!(output.status.success(), "{args:?}: {}", text(&output.stderr));
        text(&output.stdout)
    };
    for command in [&[][..], &["accounts", "add"], &["posture", "run"]] {
        let shown = help(command);
        for variable in ["SKYWARDEN_AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS"]
        {
            assert!(shown.contains(variable), "{command:?} --help names {variable}:\n{shown}");
        }
    }
    let accounts_add = help(&["accounts", "add"]);
    for flag in ["--name <NAME>", "--flow-prefix <FLOW_PREFIX>", "--json", "--skip-test"] {
        let line = accounts_add.lines().skip_while(|l| !l.contains(flag)).nth(1).unwrap_or_default();
        assert!(!line.trim().is_empty() && !line.trim().starts_with("--"), "{flag} has help:\n{accounts_add}");
    }
    let worker = help(&["worker"]);
    assert!(worker.contains("Exit codes:") && worker.contains("at least one job failed"), "{worker}");
    assert!(worker.contains("--no-notifications"), "{worker}");
    assert!(help(&["import"]).contains("Exit codes:"));
    assert!(help(&["posture", "run"]).contains("already stored"));
    let apply = help(&["notifications", "apply"]);
    assert!(apply.contains("[FILE]") && apply.contains("--notifications"), "{apply}");
}

/// A webhook channel to `receiver` and a route of every alert to it.
fn notifications_file(dir: &Path, receiver: &Receiver) -> std::path::PathBuf {
    let path = dir.join("notifications.yaml");
    let yaml = format!(
        "channels:\n  - name: siem\n    kind: webhook\n    settings:\n      url: {}\n    secrets:\n      \
         signing_secret: env:TEST_SIGNING_SECRET\nroutes:\n  - name: everything\n    channel: siem\n",
        receiver.url("/ingest")
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn delivery_states(db: &TestDb) -> Vec<(i64, String, i32)> {
    sqlx::query_as("SELECT id, state, attempts FROM notification_outbox ORDER BY id").fetch_all(&db.pool).await.unwrap()
}

// Multi-threaded: the receiver answers while the test waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sends_notifications_and_dead_letters_are_listed_and_retried_from_the_shell() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Answer::status(503, "down")).await;
    let config = notifications_file(dir.path(), &receiver);
    let run = |args: &[&str]| {
        let mut command = skywarden_command(&db.url);
        command
            .env("SKYWARDEN_NOTIFY_ALLOW_NETWORKS", "127.0.0.1/32")
            .env("SKYWARDEN_SECRET_KEY_FILE", dir.path().join("secret.key"))
            .env("SKYWARDEN_PUBLIC_URL", "https://skywarden.example")
            .env("SKYWARDEN_NOTIFY_MAX_ATTEMPTS", "1")
            .env("TEST_SIGNING_SECRET", "a-signing-secret")
            .env("USER", "cli-test")
            .env_remove("SKYWARDEN_NOTIFICATIONS")
            .args(args);
        command.output().unwrap()
    };

    // The file as a positional argument.
    let applied = run(&["notifications", "apply", config.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    assert_eq!(db.count("SELECT count(*) FROM notification_channels WHERE name = 'siem'").await, 1);
    let incident = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident");
    let imported = db.skywarden(&["import", incident.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let queued = delivery_states(&db).await;
    assert!(!queued.is_empty() && queued.iter().all(|(_, state, _)| state == "pending"), "{queued:?}");

    // A worker without the secret key the channels were sealed with sends nothing (a key it
    // made up could open none of them), makes no key, and keeps its hands off the outbox.
    let mut keyless = skywarden_command(&db.url);
    keyless.env("SKYWARDEN_SECRET_KEY_FILE", dir.path().join("missing.key")).env("RUST_LOG", "warn");
    let keyless = keyless.args(["worker", "--once"]).output().unwrap();
    assert!(keyless.status.success(), "{}", text(&keyless.stderr));
    assert!(text(&keyless.stderr).contains("sends no notifications"), "{}", text(&keyless.stderr));
    assert!(!dir.path().join("missing.key").exists() && receiver.received().is_empty());
    assert_eq!(delivery_states(&db).await, queued);

    let quiet = run(&["worker", "--once", "--no-notifications"]);
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert!(receiver.received().is_empty(), "--no-notifications sends nothing");

    // The worker sends; the receiver is down and one attempt is all there is: dead letters.
    let sent = run(&["worker", "--once"]);
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    let states = delivery_states(&db).await;
    let dead_rows = states.iter().filter(|(_, state, _)| state == "dead").count();
    assert!(dead_rows > 0 && receiver.received().len() == dead_rows, "{states:?} {}", text(&sent.stderr));
    let dead = json_lines(&run(&["notifications", "deliveries", "--status", "dead", "--json"]));
    assert_eq!(dead.len(), dead_rows, "{dead:?}");
    assert!(dead.iter().all(|d| d["state"] == "dead" && d["channel"] == "siem"), "{dead:?}");
    let status = json_lines(&run(&["notifications", "status", "--json"]));
    assert_eq!(status.len(), 1);
    assert_eq!(status[0]["counts"]["dead"].as_i64(), Some(dead_rows as i64), "{status:?}");

    let id = dead[0]["id"].as_i64().unwrap();
    let retried = run(&["notifications", "retry", &id.to_string()]);
    assert!(retried.status.success(), "{}", text(&retried.stderr));
    let row = delivery_states(&db).await.into_iter().find(|(row, ..)| *row == id).unwrap();
    assert_eq!((row.1.as_str(), row.2), ("pending", 0));
    let audit: (String, Option<String>) =
        sqlx::query_as("SELECT actor, target FROM audit_log WHERE action = 'delivery.retry'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audit, ("cli:cli-test".to_owned(), Some(id.to_string())));
    let again = run(&["notifications", "retry", &id.to_string()]);
    assert!(!again.status.success() && text(&again.stderr).contains("no dead delivery"), "{}", text(&again.stderr));

    // The receiver is back: the next worker run delivers the retried one.
    receiver.script(std::iter::repeat_n(Answer::status(200, "ok"), queued.len()));
    let delivered = run(&["worker", "--once"]);
    assert!(delivered.status.success(), "{}", text(&delivered.stderr));
    let row = delivery_states(&db).await.into_iter().find(|(row, ..)| *row == id).unwrap();
    assert_eq!(row.1, "delivered");
}

#[tokio::test]
async fn json_output_is_one_compact_object_per_line() {
    let db = TestDb::new().await;
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident.config.json");
    let imported = db.skywarden(&["posture", "import", snapshot.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let findings = json_lines(&db.skywarden(&["posture", "findings", "--json"]));
    assert!(findings.len() > 1 && findings.iter().all(|f| f["check_id"].is_string()), "{findings:?}");
    let scores = json_lines(&db.skywarden(&["posture", "scores", "--json"]));
    assert!(scores.len() > 1 && scores.iter().all(|s| s["section"].is_string()), "{scores:?}");
    let run = json_lines(&db.skywarden(&["posture", "run", "--json"]));
    assert_eq!(run.len(), 1, "{run:?}");
    assert!(run[0]["checks"].as_u64().unwrap() > 0 && run[0].get("collected").is_none(), "{run:?}");
    let policies = json_lines(&db.skywarden(&["policies", "list", "--json"]));
    assert!(policies.len() > 5, "{policies:?}");
}

#[tokio::test]
async fn posture_run_evaluates_stored_snapshots_and_collects_fresh_ones_with_collect() {
    let db = TestDb::new().await;
    let moto = fake::moto_url().await;
    let account_id = fake::random_account_id();
    let run = |args: &[&str]| {
        let mut command = skywarden_command(&db.url);
        command.envs(fake::aws_env(moto)).args(args);
        command.output().unwrap()
    };
    let role = format!("arn:aws:iam::{account_id}:role/SkywardenReadOnly");
    let added = run(&["accounts", "add", "--role-arn", &role, "--regions", "us-east-1"]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    // The account's owner opens SSH to the world.
    let settings = fake::settings_for(moto);
    let base = settings.load().await;
    let account = accounts::load(&db.pool, &account_id).await.unwrap();
    let owner = AccountSession::assume(&base, &settings, &account.assume_target()).await.unwrap();
    let ec2 = owner.ec2("us-east-1");
    let vpc = ec2.create_vpc().cidr_block("10.7.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let group = ec2.create_security_group().group_name("jump").description("jump hosts").vpc_id(&vpc).send().await;
    let group = group.unwrap().group_id.unwrap();
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    let findings_on_group = format!("SELECT count(*) FROM posture_findings WHERE resource_id = '{group}'");

    // Without --collect nothing is read from AWS: no snapshot, nothing evaluated for it.
    let stored_only = json_lines(&run(&["posture", "run", "--account", &account_id, "--json"]));
    assert!(stored_only[0].get("collected").is_none(), "{stored_only:?}");
    assert_eq!(db.count(&findings_on_group).await, 0);

    let collected = run(&["posture", "run", "--collect", "--account", &account_id, "--json"]);
    let report = json_lines(&collected);
    assert_eq!(report.len(), 1, "{report:?}");
    let jobs = report[0]["collected"].as_array().unwrap();
    let regions: Vec<&str> = jobs.iter().map(|j| j["region"].as_str().unwrap()).collect();
    assert!(regions.contains(&"us-east-1") && regions.contains(&"global"), "{report:?}");
    assert!(jobs.iter().all(|j| j["error"].is_null() && j["account_id"] == account_id.as_str()), "{report:?}");
    assert!(db.count(&findings_on_group).await > 0, "the open group is judged: {report:?}");
    // The pollers' own bookkeeping: the snapshot jobs ran, and are free again.
    let ran = "SELECT count(*) FROM poll_jobs WHERE source = 'config-snapshot' AND last_success_at IS NOT NULL \
               AND lease_owner IS NULL AND account_id = ";
    assert_eq!(db.count(&format!("{ran}'{account_id}'")).await, 2);
}

#[tokio::test]
async fn the_demo_signs_in_an_analyst_who_is_an_analyst_and_a_separate_admin() {
    use std::io::BufRead;
    let db = TestDb::new().await;
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/incident");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut demo = skywarden_command(&db.url)
        .args(["demo", "--samples", samples.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let reader = std::io::BufReader::new(demo.stdout.take().unwrap());
    std::thread::spawn(move || reader.lines().map_while(Result::ok).try_for_each(|line| lines.send(line)));
    let mut passwords = std::collections::HashMap::new();
    while passwords.len() < 2 {
        let line = received.recv_timeout(Duration::from_secs(180)).expect("the demo prints both users");
        if let (Some(user), Some(password)) = (line.split("user: ").nth(1), line.split("password: ").nth(1)) {
            let user = user.split(',').next().unwrap().to_owned();
            passwords.insert(user, password.trim_end_matches(')').to_owned());
        }
    }
    let analyst = sign_in(port, "analyst", &passwords["analyst"]).await;
    let admin = sign_in(port, "admin", &passwords["admin"]).await;
    assert!(std::process::Command::new("kill").args(["-TERM", &demo.id().to_string()]).status().unwrap().success());
    demo.wait().unwrap();
    assert!(analyst.starts_with("HTTP/1.1 200") && analyst.contains(r#""role":"analyst""#), "{analyst}");
    assert!(admin.starts_with("HTTP/1.1 200") && admin.contains(r#""role":"admin""#), "{admin}");
}

/// Signs in on the dashboard's session endpoint over plain HTTP/1.1 and returns the answer.
async fn sign_in(port: u16, username: &str, password: &str) -> String {
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "POST /api/v1/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer).await.unwrap();
    answer
}
