//! The binary as shipped: copied alone into an empty folder, with no repository around it and no
//! `SKYWARDEN_POLICIES`, it detects the sample incident and evaluates every posture check with
//! the policies built into it; a broken override stops it, naming the file, unless allowed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{TestDb, copy_dir, mmdb};

/// The policies of the seed story's alerts (`detection.rs` checks each in detail), and alice's
/// console login without MFA.
const SEED_STORY: &[&str] = &[
    "aws-account-hijacking-attempt",
    "aws-cloudtrail-logging-disabled",
    "aws-console-login-without-mfa",
    "aws-excessive-login-failures",
    "aws-flow-exfiltration-volume",
    "aws-flow-suspicious-destination",
    "aws-iam-access-key-created",
    "aws-iam-instance-profile-associated",
    "aws-iam-role-policy-attached",
    "aws-iam-user-created",
    "aws-impossible-travel",
    "aws-rare-sensitive-api",
    "aws-security-group-ingress-opened",
    "aws-ssm-session-started",
];

/// An empty folder holding only a copy of the binary, the sample incident (logs and
/// configuration snapshots) and a GeoIP database for it.
struct Shipped {
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// The GeoIP database's name in the folder.
    geoip: String,
}

impl Shipped {
    fn new() -> Self {
        // Beside the build, so the binary is hard-linked rather than copied (a debug build is
        // large); either way it runs from a folder that holds nothing of the repository.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let binary = dir.path().join("bin/skywarden");
        std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
        if std::fs::hard_link(env!("CARGO_BIN_EXE_skywarden"), &binary).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_skywarden"), &binary).unwrap();
        }
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
        copy_dir(&samples.join("incident"), &dir.path().join("samples/incident"));
        std::fs::copy(samples.join("incident.config.json"), dir.path().join("samples/incident.config.json")).unwrap();
        let geoip = mmdb::sample_incident_countries(dir.path());
        let geoip = geoip.strip_prefix(dir.path()).expect("written in the folder").display().to_string();
        Self { dir, binary, geoip }
    }

    /// `skywarden <args>` run from the folder, against `db`, with nothing from the repository.
    fn run(&self, db: &TestDb, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .current_dir(self.dir.path())
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .env_remove("SKYWARDEN_POLICIES")
            .env_remove("SKYWARDEN_ALLOW_BROKEN_POLICIES")
            .env_remove("SKYWARDEN_GEOIP")
            .output()
            .expect("running the copied skywarden")
    }

    fn import(&self, db: &TestDb, extra: &[&str]) -> Output {
        let mut args = vec!["import", "--json", "--geoip", &self.geoip];
        args.extend_from_slice(extra);
        args.push("samples/incident");
        self.run(db, &args)
    }

    fn alert_policies(&self, db: &TestDb) -> BTreeSet<String> {
        let output = self.run(db, &["alerts", "--json"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["policy_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Writes `text` at `path` under an overriding folder `overrides/`.
    fn override_file(&self, path: &str, text: &str) -> PathBuf {
        let file = self.dir.path().join("overrides").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        file
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_binary_alone_detects_the_sample_incident_and_evaluates_every_check() {
    let shipped = Shipped::new();
    let db = TestDb::new().await;
    let output = shipped.import(&db, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("detection is off"), "{}", stderr(&output));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(summary["detection"]["new_alerts"].as_u64().unwrap() > 0, "{summary}");
    let expected: BTreeSet<String> = SEED_STORY.iter().map(|s| s.to_string()).collect();
    assert_eq!(shipped.alert_policies(&db), expected);

    // Posture: every built-in Rego check, counted from what is embedded and from the repository.
    let embedded = skywarden::policy_files::PolicyFiles::builtin()
        .under("posture")
        .filter(|file| file.extension() == "rego")
        .count();
    let in_repository = walkdir::WalkDir::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/posture"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "rego"))
        .count();
    assert_eq!(embedded, in_repository);
    let output = shipped.run(&db, &["posture", "import", "samples/incident.config.json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("; {embedded} checks;")), "{embedded} checks expected: {stdout}");

    // `policies list` says they are built in.
    let output = shipped.run(&db, &["policies", "list", "--json"]);
    let origins: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["origin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(origins, BTreeSet::from(["builtin".to_string()]));
}

#[tokio::test]
async fn a_broken_override_stops_import_with_its_file_named_unless_allowed() {
    let shipped = Shipped::new();
    let broken = shipped
        .override_file("sigma/ours/broken.yml", "title: Broken\nid: x\ndetection:\n  condition: selection and\n");
    // An override of a built-in rule, at another path: it wins, and `policies list` says so.
    let root_rule = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/sigma/skywarden/root_account_usage.yml"),
    )
    .unwrap();
    let root = shipped.override_file("sigma/ours/root.yml", &root_rule);

    let db = TestDb::new().await;
    let output = shipped.import(&db, &["--policies", "overrides"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("overrides/sigma/ours/broken.yml: "), "{message}");
    assert!(broken.exists());
    assert!(message.contains("--allow-broken-policies"), "{message}");
    assert_eq!(db.count("SELECT count(*) FROM cloudtrail_events").await, 0, "nothing imported");

    let output = shipped.import(&db, &["--policies", "overrides", "--allow-broken-policies"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("broken.yml"), "the problem is logged: {}", stderr(&output));
    let expected: BTreeSet<String> = SEED_STORY.iter().map(|s| s.to_string()).collect();
    assert_eq!(shipped.alert_policies(&db), expected);

    let output = shipped.run(&db, &["policies", "--policies", "overrides", "list", "--json"]);
    let listed: Vec<Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let root_policy = listed.iter().find(|p| p["id"] == "aws-root-account-usage").expect("the root rule");
    // The path as the folder was given (relative here).
    assert_eq!(root_policy["origin"], "overrides/sigma/ours/root.yml", "{root_policy}");
    assert!(shipped.dir.path().join(root_policy["origin"].as_str().unwrap()) == root);
    assert_eq!(listed.iter().filter(|p| p["id"] == "aws-root-account-usage").count(), 1);
    assert!(listed.iter().filter(|p| p["id"] != "aws-root-account-usage").all(|p| p["origin"] == "builtin"));

    // A folder that is not there is an error too.
    let output = shipped.import(&db, &["--policies", "no-such-folder"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no policies folder at no-such-folder"), "{}", stderr(&output));
}

#[tokio::test]
async fn a_broken_posture_check_stops_posture_and_the_worker_with_file_and_check_named() {
    let shipped = Shipped::new();
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/posture/networking/aws-ec2-imdsv2.rego"),
    )
    .unwrap();
    // Broken Rego under the same id, in a folder of its own: it replaces the built-in check.
    shipped.override_file(
        "posture/ours/aws-ec2-imdsv2.rego",
        &good.replace("import rego.v1", "import rego.v1\n\ndeny contains msg if {"),
    );
    let db = TestDb::new().await;
    for args in [
        &["posture", "--policies", "overrides", "import", "samples/incident.config.json"][..],
        &["worker", "--once", "--policies", "overrides"][..],
    ] {
        let output = shipped.run(&db, args);
        assert!(!output.status.success(), "{args:?}");
        let message = stderr(&output);
        assert!(
            message.contains("overrides/posture/ours/aws-ec2-imdsv2.rego: aws-ec2-imdsv2: Rego"),
            "{args:?}: {message}"
        );
    }
    let output = shipped.run(
        &db,
        &["posture", "--policies", "overrides", "--allow-broken-policies", "import", "samples/incident.config.json"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let embedded = skywarden::posture::checks::CheckSet::builtin().checks.len();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("; {} checks;", embedded - 1)), "the broken check left out: {stdout}");
}
