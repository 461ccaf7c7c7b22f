//! Real HTTP receivers for the notification tests: a small axum server on loopback that records
//! every request (method, path, headers, body) and answers from a script, then a default answer.
//! A scripted `Hang` never answers, to catch a sender mid-delivery.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One answer.
#[derive(Clone, Debug)]
pub enum Answer {
    Reply { status: u16, body: String, retry_after: Option<String> },
    Hang,
}

impl Answer {
    pub fn status(status: u16, body: &str) -> Self {
        Self::Reply { status, body: body.to_string(), retry_after: None }
    }
}

#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    script: VecDeque<Answer>,
}

pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A loopback port nothing listens on (yet).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Receiver {
    /// Answers `default` to every request after the script runs out.
    pub async fn start(default: Answer) -> Self {
        Self::start_on(0, default).await
    }

    pub async fn start_on(port: u16, default: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("binding the receiver");
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            let default = default.clone();
            async move {
                let answer = {
                    let mut state = shared.lock().unwrap();
                    state.received.push(Received {
                        method: method.to_string(),
                        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                            .collect(),
                        body: body.to_vec(),
                    });
                    state.script.pop_front().unwrap_or(default)
                };
                respond(answer).await
            }
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { address, state, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Answers to give, in order, before the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until at least `count` requests arrived (at most 30 s).
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..300 {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {count} requests, got {:?}", self.received());
    }
}

async fn respond(answer: Answer) -> Response {
    match answer {
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Answer::Reply { status, body, retry_after } => {
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
            if let Some(retry_after) = retry_after {
                response.headers_mut().insert("retry-after", retry_after.parse().unwrap());
            }
            response
        }
    }
}
