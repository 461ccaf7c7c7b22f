//! The library's data flow, checked from its source: each top-level module imports only the
//! modules below it (`aws` → `inventory` / `ingest` → `detect` / `posture` → `alerts` →
//! `notify`; `http` on top), so there is no import cycle. A new `use crate::…` that breaks the
//! flow fails here with the file that does it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import from the crate (besides itself). Tests are exempt.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("net", &[]),
    ("telemetry", &[]),
    // Catching panics in long-running work.
    ("supervise", &[]),
    // The policy files (built in, overridable): what detect and posture load.
    ("policy_files", &[]),
    ("db", &["model"]),
    ("geo", &["net"]),
    ("aws", &["model"]),
    ("auth", &["db", "model"]),
    ("accounts", &["aws", "db", "model"]),
    ("inventory", &["aws", "db", "model"]),
    ("ingest", &["db", "geo", "model", "net"]),
    ("alerts", &["db", "geo", "model", "net"]),
    ("notify", &["alerts", "db", "model", "net", "supervise"]),
    ("detect", &["alerts", "db", "geo", "ingest", "model", "net", "notify", "policy_files"]),
    ("posture", &["alerts", "db", "inventory", "model", "notify", "policy_files", "supervise"]),
    // The full-text indexer is a periodic job: `supervise` catches its panics.
    ("search", &["db", "geo", "model", "net", "supervise"]),
    // The open security lake: reads storage, writes Parquet to a folder or S3 (beside ingest).
    // Dropping a month also drops its full-text index entries (`search::index::forget_range`);
    // its transactions begin through `db::begin`.
    ("archive", &["aws", "db", "search"]),
    // Incident reports (HTML, OCSF): read alerts, render, write nothing.
    ("report", &["alerts", "geo", "model", "notify"]),
    // Fuzz target bodies (fuzz/ and tests/fuzz_corpus.rs): the readers of outside input.
    ("fuzzing", &["detect", "geo", "ingest", "inventory", "policy_files", "posture"]),
    (
        "pollers",
        &[
            "accounts",
            "alerts",
            "aws",
            "db",
            "detect",
            "geo",
            "ingest",
            "inventory",
            "model",
            "net",
            "notify",
            "posture",
            "supervise",
        ],
    ),
    ("demo", &["alerts", "db", "model"]),
    // Containment actions through the responder role; on top, beside http and the CLI.
    // Automatic containment reads its rules from the policy tree and tells the alert's routes.
    // `net`: whether a modified rule's source is exposed (public), as the detector judges it.
    (
        "respond",
        &[
            "accounts",
            "alerts",
            "auth",
            "aws",
            "db",
            "inventory",
            "model",
            "net",
            "notify",
            "policy_files",
            "supervise",
        ],
    ),
    (
        "http",
        &[
            "accounts",
            "alerts",
            "archive",
            "auth",
            "aws",
            "db",
            "detect",
            "geo",
            "ingest",
            "inventory",
            "model",
            "net",
            "notify",
            "policy_files",
            "pollers",
            "posture",
            "report",
            "respond",
            "search",
        ],
    ),
];

fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file without its `#[cfg(test)] mod tests` part (test code may reach anywhere).
fn non_test_code(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return None;
    }
    let text = std::fs::read_to_string(path).unwrap();
    Some(match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    })
}

/// `crate::name` references of the code, as top-level module names.
fn crate_references(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(at, _)| code[at + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Top-level module → (imported module → a file that imports it).
fn dependencies() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs");
        if top == "bin" || top == "lib" {
            continue;
        }
        let Some(code) = non_test_code(&file) else { continue };
        let entry = graph.entry(top.to_string()).or_default();
        for name in crate_references(&code) {
            if name != top {
                entry.entry(name).or_insert_with(|| relative.to_path_buf());
            }
        }
    }
    graph
}

#[test]
fn every_module_imports_only_what_lies_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, imports) in dependencies() {
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!("{module}: a new top-level module; add it to ALLOWED where it sits in the flow"));
            continue;
        };
        for (import, file) in imports {
            if !may.contains(&import.as_str()) {
                wrong.push(format!("{}: {module} imports {import}", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the data flow:\n{}", wrong.join("\n"));
}

#[test]
fn the_allowed_imports_have_no_cycle() {
    // Depth-first search over ALLOWED itself: the table above cannot describe a cycle.
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    fn visit<'a>(
        node: &'a str,
        allowed: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(node) {
            return;
        }
        assert!(!path.contains(&node), "import cycle: {} -> {node}", path.join(" -> "));
        path.push(node);
        for next in allowed.get(node).copied().unwrap_or_default() {
            visit(next, allowed, path, done);
        }
        path.pop();
        done.insert(node);
    }
    let mut done = BTreeSet::new();
    for module in allowed.keys() {
        visit(module, &allowed, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_check_sees_imports() {
    let code = "use crate::model::Severity;\nlet x = crate::net::is_public(ip);\nmy_crate::db::x();";
    let found = crate_references(code);
    assert_eq!(found, ["model", "net"].into_iter().map(String::from).collect());
    assert!(dependencies().get("http").is_some_and(|imports| imports.contains_key("model")));
}
