//! The fuzz targets' corpus, replayed on stable: every file of `fuzz/corpus/<target>/` goes
//! through the very function its cargo-fuzz target calls (`skywarden::fuzzing`), so `make test`
//! runs each target over its corpus. Nothing may panic; inputs that once crashed a target are
//! kept in its corpus (see docs/fuzzing.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use skywarden::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs every corpus file of `name` through its target and names those that panicked.
fn replay(name: &str) {
    let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no target {name}"));
    let dir = fuzz_dir().join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable corpus folder").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus file", dir.display());
    let panicked: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            catch_unwind(AssertUnwindSafe(|| target(&data))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(panicked.is_empty(), "{name} panicked on {panicked:?} (of {} files)", files.len());
}

#[test]
fn json_stream() {
    replay("json_stream");
}

#[test]
fn cloudtrail() {
    replay("cloudtrail");
}

#[test]
fn flow_logs() {
    replay("flow_logs");
}

#[test]
fn snapshot_dump() {
    replay("snapshot_dump");
}

#[test]
fn sigma_rule() {
    replay("sigma_rule");
}

#[test]
fn rego_check() {
    replay("rego_check");
}

/// Each target has a cargo-fuzz target file, a corpus and a test above, and nothing else does.
#[test]
fn targets_corpus_and_fuzz_crate_agree() {
    let listed = |folder: &str, suffix: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join(folder))
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(suffix).map(str::to_string))
            .collect();
        names.sort();
        names
    };
    let mut targets: Vec<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    targets.sort();
    assert_eq!(listed("fuzz_targets", ".rs"), targets);
    assert_eq!(listed("corpus", ""), targets);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &targets {
        assert!(manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")), "{name} is not in fuzz/Cargo.toml");
        let source = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(source.contains(&format!("skywarden::fuzzing::{name}(data)")), "{name}'s target calls another body");
    }
}
