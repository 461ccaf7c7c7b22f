//! A real SMTP server for the email tests: `tests/support/smtp_sink.py` on aiosmtpd, with
//! STARTTLS required (certificate from `tests/fixtures/smtp/`) and AUTH. The Python comes from
//! `SKYWARDEN_TEST_PYTHON` (`make test` points it at a venv with aiosmtpd), else `python3`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const USER: &str = "skywarden";
pub const PASSWORD: &str = "smtp-test-password";

pub struct SmtpSink {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ca_file() -> PathBuf {
    super::fixture("smtp/ca.pem")
}

impl SmtpSink {
    pub fn start() -> Self {
        let python = std::env::var("SKYWARDEN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = super::receiver::closed_port();
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(&python)
            .arg(root.join("tests/support/smtp_sink.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .arg(super::fixture("smtp/server.pem"))
            .arg(super::fixture("smtp/server.key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} for the SMTP sink: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the SMTP sink did not start: install aiosmtpd (`pip install aiosmtpd`) or set SKYWARDEN_TEST_PYTHON"
        );
        Self { port, dir, child }
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
    }

    pub async fn wait_for(&self, count: usize) -> Vec<Value> {
        for _ in 0..300 {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {count} messages, got {:?}", self.messages());
    }
}
