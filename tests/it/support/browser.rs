//! A real browser for the dashboard tests: Debian's `chromium`, headless, driven through
//! `chromedriver` with the W3C WebDriver protocol (JSON over HTTP on loopback).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client<HttpConnector, Full<axum::body::Bytes>>,
    /// Where screenshots go (kept as test artifacts).
    pub artifacts: PathBuf,
}

impl Drop for Browser {
    /// Ends the WebDriver session (chromedriver then closes Chromium) and stops chromedriver,
    /// also when a test fails half-way.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Screenshots of this run: `target/test-artifacts/<name>/`.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir).expect("creating the artifacts folder");
    dir
}

impl Browser {
    pub async fn start(artifacts: PathBuf) -> Self {
        let driver_bin = std::env::var("SKYWARDEN_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("SKYWARDEN_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_bin} (apt-get install chromium chromium-driver): {e}"));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut browser =
            Self { driver, base: format!("http://127.0.0.1:{port}"), session: String::new(), client, artifacts };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(status) = browser.call("GET", "/status", None).await
                && status["value"]["ready"] == json!(true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1000", "--no-first-run", "--disable-extensions"
            ]}
        }}});
        let created = browser.call("POST", "/session", Some(capabilities)).await.expect("creating a browser session");
        browser.session = created["value"]["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(axum::body::Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if status.is_success() { Ok(value) } else { Err(format!("{status}: {}", value["value"]["message"])) }
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("/session/{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url}))).await.expect("navigating");
    }

    /// The first element matching `css`, waiting up to 20 s for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(found) =
                self.session_call("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await
            {
                return found["value"][ELEMENT_KEY].as_str().expect("an element id").to_owned();
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("not-found").await;
                panic!("no element matches {css:?} after 20 s (screenshot: {})", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn count(&self, css: &str) -> usize {
        let found = self.session_call("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found.map(|v| v["value"].as_array().map_or(0, Vec::len)).unwrap_or(0)
    }

    /// Clears the field, then types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.session_call("POST", &format!("/element/{element}/clear"), Some(json!({}))).await.expect("clearing");
        self.session_call("POST", &format!("/element/{element}/value"), Some(json!({"text": text})))
            .await
            .expect("typing");
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.session_call("POST", &format!("/element/{element}/click"), Some(json!({}))).await.expect("clicking");
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let text = self.session_call("GET", &format!("/element/{element}/text"), None).await.expect("reading text");
        text["value"].as_str().unwrap_or_default().to_owned()
    }

    /// The text of `css` now, or None while it is missing or being replaced by the page.
    async fn current_text(&self, css: &str) -> Option<String> {
        let found =
            self.session_call("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await.ok()?;
        let element = found["value"][ELEMENT_KEY].as_str()?.to_owned();
        let text = self.session_call("GET", &format!("/element/{element}/text"), None).await.ok()?;
        Some(text["value"].as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the text of `css` contains `needle` (20 s at most).
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.current_text(css).await.unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("text-not-found").await;
                panic!("{css:?} never showed {needle:?}; it shows {text:?} (screenshot: {})", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Accepts the `confirm()` (or `alert()`) the page just opened, waiting up to 5 s for it.
    pub async fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.session_call("GET", "/alert/text", None).await.is_err() {
            assert!(Instant::now() < deadline, "no dialog opened within 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.session_call("POST", "/alert/accept", Some(json!({}))).await.expect("accepting the dialog");
    }

    pub async fn script(&self, script: &str) -> Value {
        let result = self.session_call("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await;
        result.expect("running a script")["value"].clone()
    }

    /// Runs an asynchronous script: it ends by calling its last argument with the result.
    pub async fn script_async(&self, script: &str) -> Value {
        let result = self.session_call("POST", "/execute/async", Some(json!({"script": script, "args": []}))).await;
        result.expect("running an asynchronous script")["value"].clone()
    }

    /// Waits up to `seconds` for the script to return true; false if it never did.
    pub async fn wait_until(&self, script: &str, seconds: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let done = self.session_call("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await;
            if done.is_ok_and(|v| v["value"] == json!(true)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends keys to the element (WebDriver key codes such as `\u{E007}` for Enter).
    pub async fn send_keys(&self, css: &str, keys: &str) {
        let element = self.find(css).await;
        self.session_call("POST", &format!("/element/{element}/value"), Some(json!({"text": keys})))
            .await
            .expect("sending keys");
    }

    /// Presses a key (a WebDriver key code such as `\u{E007}` for Enter) wherever the focus is.
    pub async fn press_key(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}
        ]}]});
        self.session_call("POST", "/actions", Some(actions)).await.expect("pressing a key");
    }

    /// Saves a PNG screenshot as `<artifacts>/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self.session_call("GET", "/screenshot", None).await.expect("taking a screenshot");
        let png = decode_base64(shot["value"].as_str().unwrap_or_default());
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for sextet in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}
