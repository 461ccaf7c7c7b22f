//! The fuzz targets' corpus, replayed on stable: every file of `fuzz/corpus/<target>/` goes
//! through the very function its cargo-fuzz target calls (`skywarden::fuzzing`), so `make test`
//! runs each target over its corpus, then over inputs mutated from it. Nothing may panic;
//! inputs that once crashed a target are kept in its corpus (see docs/fuzzing.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skywarden::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> skywarden::fuzzing::Target {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no target {name}")).1
}

fn corpus(name: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable corpus folder").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus file", dir.display());
    files
}

/// Runs every corpus file of `name` through its target, then mutated inputs, and names those
/// that panicked.
fn replay(name: &str) {
    let target = target(name);
    let files = corpus(name);
    let panicked: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            catch_unwind(AssertUnwindSafe(|| target(&data))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(panicked.is_empty(), "{name} panicked on {panicked:?} (of {} files)", files.len());
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    mutate_and_run(name, target, &seeds);
}

/// Bytes the mutator inserts: the syntax the parsers branch on.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"\n",
    b" ",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"-0",
    b"null",
    b"\"Records\":[",
    b"\"eventName\":\"x\",",
    b"\"logEvents\":[{\"message\":\"",
    b"\xff\xfe",
    b"\x1f\x8b\x08",
    b"PAR1",
    b"# METADATA\n",
    b"id: x\n",
    b"version srcaddr ",
    b"- NODATA",
    b"4294967296",
    b"::1",
];

/// A small deterministic mutator (xorshift): bit flips, token insertions, truncations,
/// repeats and splices of corpus files. It is not coverage-guided (cargo-fuzz is, in
/// `make fuzz`): it takes the targets near their corpus in every `make test`, on stable.
struct Mutator(u64);

impl Mutator {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut data = seeds[self.below(seeds.len())].clone();
        for _ in 0..1 + self.below(6) {
            let at = self.below(data.len() + 1);
            let end = (at + 1 + self.below(64)).min(data.len());
            match self.below(6) {
                0 if at < data.len() => data[at] ^= 1 << self.below(8),
                1 => {
                    let token = TOKENS[self.below(TOKENS.len())];
                    data.splice(at..at, token.iter().copied());
                }
                2 => data.truncate(at),
                3 => {
                    let piece = data[at..end].to_vec();
                    data.splice(at..at, piece.repeat(1 + self.below(16)));
                }
                4 => {
                    let other = &seeds[self.below(seeds.len())];
                    let from = self.below(other.len());
                    let piece = &other[from..(from + self.below(256)).min(other.len())];
                    data.splice(at..at, piece.iter().copied());
                }
                _ => drop(data.drain(at..end)),
            }
        }
        data
    }
}

/// Mutated inputs through `target`: a fixed number with a fixed seed in `make test`, or for
/// `SKYWARDEN_FUZZ_SECONDS` seconds (seeded from the clock; the seed is printed). An input
/// that panics is kept under `target/fuzz-failures/` and fails the test.
fn mutate_and_run(name: &str, target: skywarden::fuzzing::Target, seeds: &[Vec<u8>]) {
    let budget = std::env::var("SKYWARDEN_FUZZ_SECONDS").ok().and_then(|s| s.parse::<u64>().ok());
    let seed = match budget {
        Some(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1,
        None => name.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)),
    };
    let deadline = Instant::now() + Duration::from_secs(budget.unwrap_or(0));
    let mut mutator = Mutator(seed);
    let mut runs = 0u64;
    while if budget.is_some() { Instant::now() < deadline } else { runs < 300 } {
        let data = mutator.mutate(seeds);
        runs += 1;
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let kept = dir.join(format!("{name}-{seed:016x}-{runs}"));
            std::fs::write(&kept, &data).unwrap();
            panic!("{name} panicked on a mutated input, kept in {}", kept.display());
        }
    }
    println!("{name}: {runs} mutated inputs, seed {seed:016x}");
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
