//! The policy files as one tree in memory: each file's path in the tree (`/`-separated, as under
//! `policies/`: `sigma/skywarden/root_account_usage.yml`, `detectors.yaml`,
//! `posture/iam/aws-iam-root-mfa.rego`), its text, and where it came from. Detection
//! (`detect::PolicySet`) and posture (`posture::checks::CheckSet`) load from it; it imports
//! nothing of the crate.
//!
//! The default policies are built in (`build.rs` compiles every policy file under `policies/`
//! into the binary), so the binary detects wherever it runs. A folder of the user's (`--policies`)
//! adds to them or overrides them, by two rules applied in this order:
//!
//! 1. Path: a file at the same path in the tree replaces the built-in file, whatever either
//!    declares (so `detectors.yaml` or `skywarden.yaml` in the folder replaces the built-in one).
//! 2. Id: among the files left after rule 1, a Sigma rule (its `id`) or posture check (its
//!    `custom.id`) from the folder wins over a built-in one that declares the same id, wherever
//!    each lives. This holds even when the folder's version is broken: it is reported, and the
//!    built-in one does not silently run in its place (a check declares its file name; a rule
//!    file that is not even YAML declares nothing).
//!
//! When both happen (the folder replaces `sigma/a.yml` by path, and another file of the folder
//! declares an id that a built-in rule also declares), rule 1 decides first and rule 2 then
//! compares what is left: only a built-in file still in the tree can lose a rule by id. Two
//! files of the same origin declaring one id are a problem, as they are without overrides.
//!
//! Any other file in the folder is new and adds to the set.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

include!(concat!(env!("OUT_DIR"), "/policy_files.rs"));

/// Extensions of policy files; `build.rs` embeds the same ones. READMEs and licences are not
/// policies.
const POLICY_EXTENSIONS: &[&str] = &["yml", "yaml", "rego"];

/// A problem with one policy file; the other policies still load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyProblem {
    pub file: String,
    pub problem: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.problem)
    }
}

/// Where a policy file came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into the binary from the repository's `policies/`.
    Builtin,
    /// A file of the user's policies folder.
    File(PathBuf),
}

impl Origin {
    pub fn is_builtin(&self) -> bool {
        matches!(self, Origin::Builtin)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("builtin"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `"builtin"`, or the file's path.
impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One policy file.
#[derive(Clone, Debug)]
pub struct PolicyFile {
    /// Its path in the tree, `/`-separated.
    pub path: String,
    pub text: Cow<'static, str>,
    pub origin: Origin,
}

impl PolicyFile {
    pub fn new(path: impl Into<String>, text: impl Into<Cow<'static, str>>, origin: Origin) -> Self {
        Self { path: path.into(), text: text.into(), origin }
    }

    /// Where a person finds it: the file's path, or `builtin:<path in the tree>`.
    pub fn location(&self) -> String {
        match &self.origin {
            Origin::Builtin => format!("builtin:{}", self.path),
            Origin::File(path) => path.display().to_string(),
        }
    }

    /// The file name without its extension.
    pub fn stem(&self) -> &str {
        let name = self.path.rsplit('/').next().unwrap_or(&self.path);
        name.rsplit_once('.').map_or(name, |(stem, _)| stem)
    }

    pub fn extension(&self) -> &str {
        let name = self.path.rsplit('/').next().unwrap_or(&self.path);
        name.rsplit_once('.').map_or("", |(_, extension)| extension)
    }

    /// The folder it lies in, relative to `root` (`posture/iam/x.rego` under `posture`: `iam`),
    /// or `None` directly in `root`.
    pub fn folder_under(&self, root: &str) -> Option<&str> {
        let rest = self.path.strip_prefix(root)?.strip_prefix('/')?;
        rest.rsplit_once('/').map(|(folder, _)| folder)
    }
}

/// Why a policies folder could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFilesError {
    #[error("no policies folder at {0}")]
    NotAFolder(PathBuf),
    #[error("reading the policies folder {path}")]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
}

/// A tree of policy files, and the files of an overriding folder that could not be read.
#[derive(Clone, Debug, Default)]
pub struct PolicyFiles {
    files: BTreeMap<String, PolicyFile>,
    /// Unreadable files by path in the tree; each also takes a built-in file's place (rule 1).
    unreadable: BTreeMap<String, PolicyProblem>,
}

impl PolicyFiles {
    /// The policies built into the binary.
    pub fn builtin() -> Self {
        let mut tree = Self::default();
        for (path, text) in BUILTIN_FILES {
            tree.insert(PolicyFile::new(*path, *text, Origin::Builtin));
        }
        tree
    }

    /// The built-in policies with `dir`'s files on top (see the module's rules), or the
    /// built-in ones alone. A folder that is not there is an error: a typo must not quietly
    /// leave the defaults running.
    pub fn builtin_with(dir: Option<&Path>) -> Result<Self, PolicyFilesError> {
        let tree = Self::builtin();
        Ok(match dir {
            Some(dir) => tree.overlay(Self::from_dir(dir)?),
            None => tree,
        })
    }

    /// The policy files under `dir` (by extension; hidden files and folders skipped), each with
    /// its own path as origin. Symbolic links are followed (Kubernetes mounts config maps so).
    pub fn from_dir(dir: &Path) -> Result<Self, PolicyFilesError> {
        if !dir.is_dir() {
            return Err(PolicyFilesError::NotAFolder(dir.to_path_buf()));
        }
        let mut tree = Self::default();
        let walk = walkdir::WalkDir::new(dir).follow_links(true).sort_by_file_name().into_iter();
        for entry in walk.filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')) {
            let entry = entry.map_err(|source| PolicyFilesError::Walk { path: dir.to_path_buf(), source })?;
            let is_policy =
                entry.path().extension().and_then(|x| x.to_str()).is_some_and(|x| POLICY_EXTENSIONS.contains(&x));
            if !entry.file_type().is_file() || !is_policy {
                continue;
            }
            let relative = entry.path().strip_prefix(dir).expect("walkdir yields paths under its root");
            let relative: Vec<String> =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            let path = relative.join("/");
            match std::fs::read_to_string(entry.path()) {
                Ok(text) => tree.insert(PolicyFile::new(path, text, Origin::File(entry.into_path()))),
                Err(error) => {
                    let problem =
                        PolicyProblem { file: entry.path().display().to_string(), problem: error.to_string() };
                    tree.unreadable.insert(path, problem);
                }
            }
        }
        Ok(tree)
    }

    /// `self` with `top` laid over it: a file of `top` replaces the one at its path (rule 1).
    pub fn overlay(mut self, top: PolicyFiles) -> Self {
        for (path, problem) in top.unreadable {
            self.files.remove(&path);
            self.unreadable.insert(path, problem);
        }
        for file in top.files.into_values() {
            self.unreadable.remove(&file.path);
            self.insert(file);
        }
        self
    }

    /// The same files under `folder` (a folder of checks read alone, mounted at `posture`).
    pub fn mounted_at(self, folder: &str) -> Self {
        let mount = |path: &str| format!("{folder}/{path}");
        Self {
            files: self
                .files
                .into_values()
                .map(|file| (mount(&file.path), PolicyFile { path: mount(&file.path), ..file }))
                .collect(),
            unreadable: self.unreadable.into_iter().map(|(path, problem)| (mount(&path), problem)).collect(),
        }
    }

    /// Adds `file`, replacing the one at its path.
    pub fn insert(&mut self, file: PolicyFile) {
        self.files.insert(file.path.clone(), file);
    }

    pub fn get(&self, path: &str) -> Option<&PolicyFile> {
        self.files.get(path)
    }

    /// Every file, by path.
    pub fn iter(&self) -> impl Iterator<Item = &PolicyFile> {
        self.files.values()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The files under `folder` (at any depth), by path.
    pub fn under(&self, folder: &str) -> impl Iterator<Item = &PolicyFile> {
        let folder = folder.to_string();
        self.files.values().filter(move |file| in_folder(&file.path, &folder))
    }

    /// The unreadable files at `path` or under it, as problems.
    pub fn unreadable_at(&self, path: &str) -> impl Iterator<Item = &PolicyProblem> {
        let path = path.to_string();
        self.unreadable.iter().filter(move |(p, _)| **p == path || in_folder(p, &path)).map(|(_, problem)| problem)
    }
}

fn in_folder(path: &str, folder: &str) -> bool {
    path.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/'))
}

/// The ids that some overriding (non built-in) file declares: built-in rules and checks with
/// these ids are left out (rule 2).
pub fn ids_declared_by_overrides<'a, S: Into<String>>(
    declared: impl IntoIterator<Item = (S, &'a Origin)>,
) -> BTreeSet<String> {
    declared.into_iter().filter(|(_, origin)| !origin.is_builtin()).map(|(id, _)| id.into()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &'static str, origin: &str) -> PolicyFile {
        let origin = if origin == "builtin" { Origin::Builtin } else { Origin::File(PathBuf::from(origin)) };
        PolicyFile::new(path, text, origin)
    }

    #[test]
    fn every_policy_file_is_built_in_and_nothing_else() {
        let builtin = PolicyFiles::builtin();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let on_disk = PolicyFiles::from_dir(&root).unwrap();
        let paths = |tree: &PolicyFiles| tree.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&builtin), paths(&on_disk));
        assert!(builtin.get("detectors.yaml").is_some() && builtin.get("skywarden.yaml").is_some());
        assert!(builtin.under("posture").count() >= 27);
        assert!(builtin.iter().all(|f| f.origin.is_builtin() && f.extension() != "md"));
        for file in on_disk.iter() {
            assert_eq!(builtin.get(&file.path).unwrap().text, file.text, "{}", file.path);
        }
    }

    #[test]
    fn a_file_at_the_same_path_replaces_and_a_new_one_adds() {
        let mut base = PolicyFiles::default();
        base.insert(file("detectors.yaml", "builtin settings", "builtin"));
        base.insert(file("sigma/a.yml", "rule a", "builtin"));
        let mut top = PolicyFiles::default();
        top.insert(file("detectors.yaml", "my settings", "/p/detectors.yaml"));
        top.insert(file("sigma/mine/b.yml", "rule b", "/p/sigma/mine/b.yml"));
        let tree = base.overlay(top);
        assert_eq!(tree.len(), 3);
        let settings = tree.get("detectors.yaml").unwrap();
        assert_eq!((settings.text.as_ref(), settings.location().as_str()), ("my settings", "/p/detectors.yaml"));
        assert_eq!(tree.get("sigma/a.yml").unwrap().location(), "builtin:sigma/a.yml");
        assert_eq!(tree.under("sigma").map(|f| f.stem()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(tree.get("sigma/mine/b.yml").unwrap().folder_under("sigma"), Some("mine"));
        assert_eq!(tree.get("sigma/a.yml").unwrap().folder_under("sigma"), None);
    }

    #[test]
    fn a_folder_is_read_by_extension_and_an_unreadable_file_takes_the_builtin_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sigma/.hidden")).unwrap();
        std::fs::write(dir.path().join("sigma/new.yml"), "title: new").unwrap();
        std::fs::write(dir.path().join("sigma/.hidden/skipped.yml"), "x").unwrap();
        std::fs::write(dir.path().join("README.md"), "notes").unwrap();
        std::fs::write(dir.path().join("detectors.yaml"), [0xff, 0xfe, 0x00]).unwrap();
        let tree = PolicyFiles::builtin_with(Some(dir.path())).unwrap();
        assert!(tree.get("detectors.yaml").is_none(), "the unreadable file replaced the built-in one");
        let problems: Vec<&PolicyProblem> = tree.unreadable_at("detectors.yaml").collect();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].file.ends_with("detectors.yaml"), "{problems:?}");
        assert_eq!(tree.get("sigma/new.yml").unwrap().origin, Origin::File(dir.path().join("sigma/new.yml")));
        assert!(tree.get("sigma/.hidden/skipped.yml").is_none() && tree.get("README.md").is_none());
        assert!(tree.get("skywarden.yaml").unwrap().origin.is_builtin());

        let missing = dir.path().join("no-such-folder");
        assert!(matches!(PolicyFiles::builtin_with(Some(&missing)), Err(PolicyFilesError::NotAFolder(_))));
    }

    #[test]
    fn origins_read_as_builtin_or_the_path() {
        assert_eq!(serde_json::to_value(Origin::Builtin).unwrap(), "builtin");
        assert_eq!(serde_json::to_value(Origin::File("/p/x.yml".into())).unwrap(), "/p/x.yml");
        let builtin = Origin::Builtin;
        let mine = Origin::File("/p/x.yml".into());
        let ids = ids_declared_by_overrides([("a", &builtin), ("b", &mine)]);
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["b"]);
    }
}
