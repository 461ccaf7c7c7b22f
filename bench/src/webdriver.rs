//! A minimal W3C WebDriver client for the dashboard benchmark: `chromedriver` driving headless
//! Chromium (Debian's), JSON over HTTP/1.1 on loopback, the same browser and flags as the
//! dashboard tests (`tests/it/support/browser.rs`, which needs hyper; this needs only std).
//! Blocking: the benchmark drives it from a blocking thread.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum WebDriverError {
    #[error("cannot start {0} (apt-get install chromium chromium-driver): {1}")]
    Start(String, std::io::Error),
    #[error("chromedriver did not become ready within 30 s")]
    NotReady,
    #[error("talking to chromedriver: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebDriver {0}: {1}")]
    Call(String, String),
}

/// A running chromedriver; stopped when dropped.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts chromedriver (`SKYWARDEN_TEST_CHROMEDRIVER`, else `chromedriver` on the path) on a
    /// free port and waits until it is ready.
    pub fn start() -> Result<Self, WebDriverError> {
        let binary = std::env::var("SKYWARDEN_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = crate::product::free_port()?;
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| WebDriverError::Start(binary, e))?;
        let driver = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !call(port, "GET", "/status", None).is_ok_and(|s| s["value"]["ready"] == json!(true)) {
            if Instant::now() > deadline {
                return Err(WebDriverError::NotReady);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(driver)
    }

    /// A new browser (a fresh profile of its own), Chromium from `SKYWARDEN_TEST_CHROMIUM` or
    /// `/usr/bin/chromium`.
    pub fn session(&self) -> Result<Session, WebDriverError> {
        let chromium = std::env::var("SKYWARDEN_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1000", "--no-first-run", "--disable-extensions"
            ]}
        }}});
        let created = call(self.port, "POST", "/session", Some(&capabilities))?;
        let id = created["value"]["sessionId"]
            .as_str()
            .ok_or(WebDriverError::Call("POST /session".into(), "no id".into()))?;
        Ok(Session { port: self.port, id: id.to_owned() })
    }
}

/// One browser; closed when dropped.
pub struct Session {
    port: u16,
    id: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = call(self.port, "DELETE", &format!("/session/{}", self.id), None);
    }
}

impl Session {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, WebDriverError> {
        Ok(call(self.port, method, &format!("/session/{}{path}", self.id), body)?["value"].take())
    }

    /// Loads `url`, returning once the document has loaded (the page's own requests may still run).
    pub fn navigate(&self, url: &str) -> Result<(), WebDriverError> {
        self.call("POST", "/url", Some(&json!({"url": url}))).map(drop)
    }

    /// Runs `script` in the page with `args` (`arguments[i]`) and returns what it returns.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value, WebDriverError> {
        self.call("POST", "/execute/sync", Some(&json!({"script": script, "args": args})))
    }

    /// Runs an asynchronous script: it ends by calling its last argument with the result.
    pub fn execute_async(&self, script: &str, args: Value) -> Result<Value, WebDriverError> {
        self.call("POST", "/execute/async", Some(&json!({"script": script, "args": args})))
    }

    /// Runs `source` in every new document before the page's own scripts (Chrome DevTools'
    /// `Page.addScriptToEvaluateOnNewDocument`, through chromedriver).
    pub fn on_new_document(&self, source: &str) -> Result<(), WebDriverError> {
        let body = json!({"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": source}});
        self.call("POST", "/goog/cdp/execute", Some(&body)).map(drop)
    }
}

/// One request to chromedriver (a connection each: `Connection: close`), its JSON answer.
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, WebDriverError> {
    let body = body.map_or_else(|| if method == "POST" { "{}".to_owned() } else { String::new() }, Value::to_string);
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let (status, content) =
        read_answer(&mut stream).map_err(|e| WebDriverError::Call(format!("{method} {path}"), e))?;
    let what = || format!("{method} {path}");
    let value: Value = serde_json::from_slice(&content).map_err(|e| WebDriverError::Call(what(), e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(WebDriverError::Call(what(), format!("{status}: {}", value["value"]["message"])));
    }
    Ok(value)
}

/// An HTTP/1.1 answer's status and body. Read by its length (or up to its last chunk): chromedriver
/// may keep the connection open after it.
fn read_answer(stream: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut response = Vec::new();
    let mut buffer = [0; 16 * 1024];
    let mut head: Option<(usize, u16, Option<usize>, bool)> = None;
    loop {
        if let Some((body_start, status, length, chunked)) = head {
            let body = &response[body_start..];
            match (length, chunked) {
                (Some(length), _) if body.len() >= length => return Ok((status, body[..length].to_vec())),
                (_, true) if body.ends_with(b"0\r\n\r\n") => return Ok((status, unchunk(body))),
                _ => {}
            }
        }
        let read = stream.read(&mut buffer).map_err(|e| e.to_string())?;
        if read == 0 {
            let (body_start, status, ..) = head.ok_or("the connection closed before an answer")?;
            return Ok((status, response[body_start..].to_vec()));
        }
        response.extend_from_slice(&buffer[..read]);
        if head.is_none()
            && let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let text = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length = text.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok());
            head = Some((end + 4, status, length, text.contains("transfer-encoding: chunked")));
        }
    }
}

/// The body of a chunked HTTP/1.1 answer.
fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        let start = line_end + 2;
        if size == 0 || start + size > data.len() {
            break;
        }
        out.extend_from_slice(&data[start..start + size]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(unchunk(b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), b"{\"a\":1}");
    }
}
