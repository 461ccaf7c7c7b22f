//! `skywarden serve` for the tests that drive the dashboard, its users, and signing in through
//! the login page.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::browser::Browser;
use super::{KillOnDrop, TestDb, skywarden_command};

/// Every dashboard user's password in the tests.
pub const PASSWORD: &str = "a long enough passphrase";

/// Adds a dashboard user with `role` and the password [`PASSWORD`] (`skywarden users create`).
pub fn add_user(db: &TestDb, user: &str, role: &str) {
    let mut create = skywarden_command(&db.url);
    create.args(["users", "create", "--username", user, "--role", role]).env("SKYWARDEN_USER_PASSWORD", PASSWORD);
    assert!(create.output().unwrap().status.success());
}

/// `skywarden serve --listen <a free port>` with what `configure` adds (flags, environment);
/// returns the process guard and the base URL once it listens.
pub async fn serve(db: &TestDb, configure: impl FnOnce(&mut Command)) -> (KillOnDrop, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = skywarden_command(&db.url);
    command.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
    configure(&mut command);
    let server = KillOnDrop(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "serve did not listen within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, format!("http://127.0.0.1:{port}"))
}

/// Submits the login page at `base` as `user` with [`PASSWORD`]; the caller waits for the page
/// it expects next.
pub async fn sign_in(browser: &Browser, base: &str, user: &str) {
    browser.goto(&format!("{base}/#/login")).await;
    browser.type_into("#username", user).await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
}

/// `$CARGO_TARGET_TMPDIR/screenshots/`, made if missing: where these tests' screenshots go.
pub fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("creating the screenshots folder");
    dir
}
