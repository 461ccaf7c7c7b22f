//! The container packaging, read as files (no Docker engine needed): the image's build gets
//! every file the binary compiles in, the runtime image holds every path the binary is pointed
//! at and no policies folder (they are built in), runs as a non-root user with a health check on
//! the health route, and docker-compose.yml starts the database, `serve` and scalable workers.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repository().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One stage of the Dockerfile: its name and instructions (continuation lines joined).
#[derive(Debug, Default)]
struct Stage {
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> {
        self.instructions.iter().filter(move |(k, _)| k == keyword).map(|(_, rest)| rest.as_str())
    }

    /// `(from stage, sources, destination)` of each COPY.
    fn copies(&self) -> Vec<(Option<String>, Vec<String>, String)> {
        self.all("COPY")
            .map(|rest| {
                let mut words: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
                let from = words.iter().find_map(|w| w.strip_prefix("--from=").map(str::to_string));
                words.retain(|w| !w.starts_with("--"));
                let destination = words.pop().expect("a COPY destination");
                (from, words, destination)
            })
            .collect()
    }

    /// `NAME=value` pairs of its ENV lines.
    fn env(&self) -> Vec<(String, String)> {
        self.all("ENV")
            .flat_map(|rest| rest.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string())))
            .collect()
    }
}

fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile").replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            let name = rest.split_whitespace().collect::<Vec<_>>();
            let name = name.iter().position(|w| w.eq_ignore_ascii_case("AS")).map(|i| name[i + 1].to_string());
            stages.push(Stage { name, instructions: Vec::new() });
            continue;
        }
        stages.last_mut().expect("FROM first").instructions.push((keyword, rest.trim().to_string()));
    }
    stages
}

/// The `.dockerignore` patterns (`*` within a name, `**` across folders).
fn ignored_by_docker(relative: &str) -> Option<String> {
    let text = std::fs::read_to_string(repository().join(".dockerignore")).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find(|pattern| {
            let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
            let path: Vec<&str> = relative.split('/').collect();
            // A pattern that matches a folder excludes everything under it.
            (1..=path.len()).any(|n| glob(&pattern, &path[..n]))
        })
        .map(str::to_string)
}

fn glob(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => glob(&pattern[1..], path) || (!path.is_empty() && glob(pattern, &path[1..])),
        (Some(p), Some(name)) => name_matches(p, name) && glob(&pattern[1..], &path[1..]),
        _ => false,
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|skip| name_matches(tail, &name[head.len() + skip..]))
        }
    }
}

/// Files the binary compiles in (`include_str!`, `include_bytes!`, `migrate!`), relative to the
/// repository, and the folders build.rs embeds.
fn compile_time_inputs() -> Vec<String> {
    let mut inputs: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into(), "build.rs".into(), ".sqlx".into()];
    inputs.extend(["web", "policies", "migrations"].map(String::from));
    let src = repository().join("src");
    for entry in walkdir::WalkDir::new(&src).into_iter().filter_map(Result::ok) {
        if entry.path().extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for macro_name in ["include_str!(\"", "include_bytes!(\""] {
            for piece in text.split(macro_name).skip(1) {
                let relative = piece.split('"').next().unwrap();
                let resolved = normalise(&entry.path().parent().unwrap().join(relative));
                let inside = resolved.strip_prefix(repository()).unwrap_or_else(|_| panic!("{relative} in {entry:?}"));
                inputs.push(inside.display().to_string());
            }
        }
    }
    inputs.sort();
    inputs.dedup();
    inputs
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_image_build_gets_every_file_the_binary_compiles_in() {
    let stages = dockerfile();
    let build = stages.iter().find(|s| s.all("RUN").any(|r| r.contains("cargo build"))).expect("a cargo build stage");
    assert!(
        build.copies().iter().any(|(from, sources, _)| from.is_none() && sources == &["."]),
        "the build stage copies the whole build context: {:?}",
        build.copies()
    );
    let inputs = compile_time_inputs();
    assert!(inputs.iter().any(|i| i.starts_with("deploy/")), "{inputs:?}");
    for input in &inputs {
        assert!(repository().join(input).exists(), "{input} is missing from the build context");
        assert_eq!(ignored_by_docker(input), None, "{input} is excluded by .dockerignore");
    }
    for member in ["bench/Cargo.toml", "bench/src/main.rs"] {
        assert_eq!(ignored_by_docker(member), None, "{member} (a workspace member) is excluded by .dockerignore");
    }
    assert!(ignored_by_docker("target/release/skywarden").is_some(), "build output stays out of the context");
}

#[test]
fn the_runtime_image_holds_what_the_binary_is_pointed_at_and_no_policies() {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let copies = runtime.copies();
    assert!(copies.iter().any(|(_, _, destination)| destination == "/usr/local/bin/skywarden"), "{copies:?}");
    // Each COPY comes from a stage that makes it, or from the build context.
    for (from, sources, destination) in &copies {
        match from {
            Some(stage_name) => {
                let stage = stages
                    .iter()
                    .find(|s| s.name.as_deref() == Some(stage_name))
                    .unwrap_or_else(|| panic!("no stage {stage_name}"));
                let work_dir = stage.all("WORKDIR").last().unwrap_or("/");
                let runs: String = stage.all("RUN").collect::<Vec<_>>().join(" ");
                for source in sources {
                    let made = source == &format!("{work_dir}/target/release/skywarden")
                        && runs.contains("cargo build --release")
                        || source.trim_end_matches('/') == work_dir && runs.contains(&format!("{work_dir}/"));
                    assert!(made, "{source} is not made by stage {stage_name}: {runs}");
                }
            }
            None => {
                for source in sources {
                    assert!(
                        repository().join(source).exists(),
                        "COPY {source} {destination}: not in the build context"
                    );
                }
            }
        }
        assert!(!sources.iter().any(|s| s.contains("policies")), "policies are built in, not copied: {sources:?}");
    }
    // Every path the image points the binary at is copied in or created.
    let env = runtime.env();
    let geoip = env.iter().find(|(k, _)| k == "SKYWARDEN_GEOIP").map(|(_, v)| v.clone()).expect("SKYWARDEN_GEOIP");
    let geoip_stage = stages.iter().find(|s| s.name.as_deref() == Some("geoip")).unwrap();
    let geoip_copy = copies.iter().find(|(from, _, _)| from.as_deref() == Some("geoip")).expect("the GeoIP copy");
    let file_name = Path::new(&geoip).file_name().unwrap().to_str().unwrap();
    assert!(geoip.starts_with(&geoip_copy.2), "{geoip} under {}", geoip_copy.2);
    assert!(geoip_stage.all("RUN").any(|r| r.contains(file_name)), "the geoip stage makes {file_name}");
    let data_dir = env.iter().find(|(k, _)| k == "SKYWARDEN_DATA_DIR").map(|(_, v)| v.clone()).expect("a data dir");
    assert!(runtime.all("RUN").any(|r| r.contains(&format!("--home {data_dir} --create-home"))), "{data_dir} is made");
    assert!(!env.iter().any(|(k, _)| k == "SKYWARDEN_POLICIES"), "no policies folder at runtime: {env:?}");

    // Not root, and a health check on the route the API serves.
    let user = runtime.all("USER").last().expect("a USER");
    assert!(!["root", "0", "0:0"].contains(&user), "{user}");
    let health = runtime.all("HEALTHCHECK").last().expect("a HEALTHCHECK");
    // The path of the URL it fetches: `http://127.0.0.1:<port>/<route>`.
    let after_host = health.split("http://127.0.0.1:").nth(1).expect("a URL on 127.0.0.1");
    let path = &after_host[after_host.find('/').expect("a path")..];
    let route = path.split(['"', ' ']).next().unwrap().trim_start_matches('/');
    let http = std::fs::read_to_string(repository().join("src/http/mod.rs")).unwrap();
    assert!(http.contains(&format!(".route(\"/{route}\"")), "/{route} is a route of src/http/mod.rs");
    assert!(runtime.all("RUN").any(|r| r.contains(" curl")), "the health check's curl is installed");
}

/// docker-compose.yml with its `<<` merge keys applied, as compose reads it.
fn compose() -> Value {
    let mut yaml: yaml_serde::Value =
        yaml_serde::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    yaml.apply_merge().expect("merge keys");
    serde_json::to_value(yaml).expect("YAML as JSON")
}

#[test]
fn compose_starts_the_database_serve_and_scalable_workers() {
    let compose = compose();
    let services = &compose["services"];
    for name in ["db", "serve", "worker"] {
        assert!(services[name].is_object(), "no {name} service");
    }
    assert!(services["db"]["image"].as_str().unwrap().starts_with("postgres"));
    assert!(services["db"]["healthcheck"].is_object());
    for (name, command) in [("serve", "serve"), ("worker", "worker")] {
        let service = &services[name];
        assert_eq!(service["command"][0], command, "{name}");
        assert!(service["build"].is_string() || service["image"].is_string(), "{name} has an image");
        let env = service["environment"].as_object().unwrap_or_else(|| panic!("{name} has no environment"));
        let url = env["DATABASE_URL"].as_str().unwrap_or_default();
        assert!(url.starts_with("postgres://") && url.contains("@db:5432/"), "{name}: {url}");
        assert!(env.contains_key("SKYWARDEN_GEOIP"), "{name}");
        assert!(!env.contains_key("SKYWARDEN_POLICIES"), "{name}: policies are built in");
        assert_eq!(service["depends_on"]["db"]["condition"], "service_healthy", "{name}");
    }
    let serve = &services["serve"];
    assert_eq!(serve["environment"]["SKYWARDEN_LISTEN"], "0.0.0.0:8080");
    assert!(serve["ports"].as_array().is_some_and(|p| !p.is_empty()));
    // A worker scales: no fixed name or published port; it serves no HTTP to check.
    let worker = &services["worker"];
    assert!(worker["container_name"].is_null() && worker["ports"].is_null(), "{worker}");
    assert_eq!(worker["healthcheck"]["disable"], true);
    // Workers send notifications: they need serve's sealing key, from the same volume.
    let data = |service: &Value| service["volumes"].as_array().cloned().unwrap_or_default();
    assert!(data(worker).iter().any(|volume| data(serve).contains(volume)), "{worker}");
}

/// `docker compose config` validates the file when the client has the compose plugin; that
/// needs no engine. Without it the test says it skipped that part, and why.
#[test]
fn docker_compose_accepts_the_file_when_the_plugin_is_present() {
    let version = Command::new("docker").args(["compose", "version"]).output();
    let usable = match &version {
        Err(error) => Err(format!("no docker client ({error})")),
        Ok(output) if !output.status.success() => {
            Err(format!("the docker client has no compose plugin ({})", String::from_utf8_lossy(&output.stderr).trim()))
        }
        Ok(_) => Ok(()),
    };
    if let Err(reason) = usable {
        eprintln!("note: skipped `docker compose config`: {reason}; the file was checked as YAML only");
        return;
    }
    let output = Command::new("docker")
        .args(["compose", "-f", "docker-compose.yml", "config", "--quiet"])
        .current_dir(repository())
        .env("POSTGRES_PASSWORD", "test")
        .output()
        .expect("running docker compose config");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
