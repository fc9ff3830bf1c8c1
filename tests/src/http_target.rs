//! A plain HTTP server standing in for whatever a skill's tool calls (a CRM, an
//! internal API): it records every request exactly as it arrived — method, path with
//! its percent-encoding intact, query, headers, body — and answers with a status and
//! JSON body the test chooses, optionally after a delay.
//!
//! Requests are recorded on arrival, before any delay, so a test can tell "the
//! gateway sent nothing" from "the gateway sent a request and gave up waiting".

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::upstream::{lock, serve};

/// One request as the target received it.
#[derive(Debug, Clone)]
pub struct TargetRequest {
    pub method: Method,
    /// The path as sent, percent-encoding intact (`/customers/a%20b`).
    pub path: String,
    /// The raw query string, without `?`; `None` when the URL had none.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TargetRequest {
    /// The header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// What the target answers every request with.
#[derive(Debug, Clone)]
pub struct TargetAnswer {
    pub status: u16,
    pub body: Value,
    /// Waited before answering (after recording the request).
    pub delay: Duration,
}

impl Default for TargetAnswer {
    fn default() -> Self {
        TargetAnswer {
            status: 200,
            body: json!({"ok": true}),
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<TargetRequest>>,
    answer: Mutex<TargetAnswer>,
}

/// A recording HTTP server on `127.0.0.1:<ephemeral>`; every path is answered.
pub struct HttpTarget {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_loop: JoinHandle<()>,
}

impl HttpTarget {
    /// Starts a target answering `200 {"ok": true}` at once.
    pub async fn start() -> anyhow::Result<HttpTarget> {
        Self::answering(TargetAnswer::default()).await
    }

    /// Starts a target answering `answer`.
    pub async fn answering(answer: TargetAnswer) -> anyhow::Result<HttpTarget> {
        let shared = Arc::new(Shared {
            requests: Mutex::default(),
            answer: Mutex::new(answer),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept_loop = tokio::spawn(serve(listener, router));
        Ok(HttpTarget {
            addr,
            shared,
            accept_loop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer every later request with `answer`.
    pub fn set_answer(&self, answer: TargetAnswer) {
        *lock(&self.shared.answer) = answer;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<TargetRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.accept_loop.abort();
        // Shown only when the test fails (libtest captures it otherwise).
        let requests = lock(&self.shared.requests);
        eprintln!(
            "--- HTTP target at {} received {} request(s):",
            self.addr,
            requests.len()
        );
        for r in requests.iter() {
            eprintln!(
                "    {} {}{}",
                r.method,
                r.path,
                r.query
                    .as_deref()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default()
            );
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&shared.requests).push(TargetRequest {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
    });
    let answer = lock(&shared.answer).clone();
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(answer.body.to_string()))
        .unwrap_or_default()
}
