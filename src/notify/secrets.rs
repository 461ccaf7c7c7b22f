//! Channel secrets (webhook URLs, routing keys, API tokens, passwords): sealed with AES-256-GCM
//! under Skywarden's secret key before they reach the database, or named by reference (`env:`,
//! `file:`) in the config file. They are opened only to send, and never logged or returned.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Binds sealed values to their purpose: a sealed channel secret is useless anywhere else.
const PURPOSE: &[u8] = b"skywarden notification channel secrets v1";
const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key in {source_name} must be 64 hex characters (32 bytes)")]
    BadKey { source_name: String },
    #[error("reading or creating the secret key file {path}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a sealed secret cannot be opened: it was sealed with another key, or it is damaged")]
    CannotOpen,
    #[error("secret reference {reference:?}: {problem}")]
    Reference { reference: String, problem: String },
}

/// A secret value: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The key that seals channel secrets.
pub struct SecretKey {
    key: LessSafeKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 takes a 32-byte key");
        Self { key: LessSafeKey::new(unbound) }
    }

    /// A fresh random key (tests, and the first start).
    pub fn generate() -> Self {
        Self::from_bytes(&random_key())
    }

    fn from_hex(text: &str, source_name: &str) -> Result<Self, SecretError> {
        let bad = || SecretError::BadKey { source_name: source_name.to_string() };
        let text = text.trim();
        if text.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// `SKYWARDEN_SECRET_KEY` (64 hex characters), else the file `SKYWARDEN_SECRET_KEY_FILE`,
    /// else `<data dir>/secret.key`, created (mode 0600) on first use.
    pub fn load(data_dir: &Path) -> Result<Self, SecretError> {
        if let Ok(value) = std::env::var("SKYWARDEN_SECRET_KEY") {
            return Self::from_hex(&value, "SKYWARDEN_SECRET_KEY");
        }
        let path = std::env::var_os("SKYWARDEN_SECRET_KEY_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("secret.key"));
        Self::load_or_create_file(&path)
    }

    pub fn load_or_create_file(path: &Path) -> Result<Self, SecretError> {
        let key_file = |source| SecretError::KeyFile { path: path.to_path_buf(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(&text, &path.display().to_string()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(key_file)?;
                }
                let key = random_key();
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(path) {
                    Ok(mut file) => {
                        file.write_all(format!("{hex}\n").as_bytes()).map_err(key_file)?;
                        tracing::info!(path = %path.display(), "created the key that seals notification secrets");
                        Ok(Self::from_bytes(&key))
                    }
                    // Another process created it first: use theirs.
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text = std::fs::read_to_string(path).map_err(key_file)?;
                        Self::from_hex(&text, &path.display().to_string())
                    }
                    Err(error) => Err(key_file(error)),
                }
            }
            Err(error) => Err(key_file(error)),
        }
    }

    /// Seals `plaintext`: version byte, random nonce, ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source");
        let mut buffer = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(PURPOSE), &mut buffer)
            .expect("AES-GCM sealing of a small value");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + buffer.len());
        sealed.push(FORMAT_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buffer);
        sealed
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_VERSION {
            return Err(SecretError::CannotOpen);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| SecretError::CannotOpen)?;
        let mut buffer = sealed[1 + NONCE_LEN..].to_vec();
        let plaintext =
            self.key.open_in_place(nonce, Aad::from(PURPOSE), &mut buffer).map_err(|_| SecretError::CannotOpen)?;
        Ok(plaintext.to_vec())
    }
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system's random source");
    key
}

/// Reads a secret named by reference: `env:NAME` or `file:/path` (trailing newline dropped).
pub fn resolve_reference(reference: &str) -> Result<Secret, SecretError> {
    let problem = |problem: String| SecretError::Reference { reference: reference.to_string(), problem };
    if let Some(name) = reference.strip_prefix("env:") {
        return std::env::var(name)
            .map(Secret)
            .map_err(|_| problem(format!("the environment variable {name} is not set")));
    }
    if let Some(path) = reference.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|text| Secret(text.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|error| problem(format!("cannot read {path}: {error}")));
    }
    Err(problem("a secret reference is env:NAME or file:/path".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let key = SecretKey::generate();
        let sealed = key.seal(b"https://hooks.slack.com/services/T000/B000/XXXX");
        assert!(!sealed.windows(5).any(|w| w == b"hooks"), "the plaintext must not show");
        assert_eq!(key.open(&sealed).unwrap(), b"https://hooks.slack.com/services/T000/B000/XXXX");
        assert_ne!(key.seal(b"same"), key.seal(b"same"), "each seal takes a fresh nonce");
        assert!(matches!(SecretKey::generate().open(&sealed), Err(SecretError::CannotOpen)));
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(matches!(key.open(&damaged), Err(SecretError::CannotOpen)));
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/secret.key");
        let first = SecretKey::load_or_create_file(&path).unwrap();
        let second = SecretKey::load_or_create_file(&path).unwrap();
        assert_eq!(second.open(&first.seal(b"x")).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(SecretKey::load_or_create_file(&path), Err(SecretError::BadKey { .. })));
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn references_read_files_and_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(resolve_reference(&format!("file:{}", path.display())).unwrap().expose(), "abc");
        let error = resolve_reference("env:SKYWARDEN_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(error.to_string().contains("SKYWARDEN_TEST_SURELY_UNSET_VARIABLE is not set"));
        assert!(resolve_reference("plain").is_err());
    }
}
