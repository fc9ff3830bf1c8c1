//! Requests the gateway makes to upstreams on its own behalf — `initialize`, paging
//! through `tools/list`, notifications, `DELETE` — and calls too large for Pingora's
//! replay buffer. One pooled HTTP client for the whole process.
//!
//! A reply may be `application/json` or an SSE stream that carries other messages
//! before the response; both are read until the response with our request id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::HeaderName;
use serde_json::{json, Value};

use crate::runtime::ServerRt;
use crate::sse::SseSplitter;

// Header names, not strings: a lookup or removal by string parses the name each time.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
const ACCEPT_BOTH: &str = "application/json, text/event-stream";
/// Idle side-client connections kept per upstream host.
const MAX_IDLE_PER_UPSTREAM: usize = 64;

/// Why an upstream could not serve a request. Messages never include secrets.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failed")]
    Connect,
    #[error("timed out")]
    Timeout,
    #[error("its session ended")]
    SessionGone,
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("sent an invalid reply: {0}")]
    Protocol(String),
    #[error("returned error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("is not usable: {0}")]
    Unusable(String),
}

impl UpstreamError {
    /// Label for `gatehouse_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::SessionGone => "session_gone",
            UpstreamError::Status(_) => "http_status",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Rpc { .. } => "rpc_error",
            UpstreamError::Unusable(_) => "unusable",
        }
    }

    fn from_reqwest(e: reqwest::Error) -> UpstreamError {
        if e.is_timeout() {
            UpstreamError::Timeout
        } else if e.is_connect() {
            UpstreamError::Connect
        } else {
            UpstreamError::Protocol(e.without_url().to_string())
        }
    }
}

/// Which upstream session a request belongs to.
#[derive(Debug, Clone, Copy)]
pub struct SessionRef<'a> {
    pub session_id: Option<&'a str>,
    pub protocol_version: &'a str,
}

/// The result of a successful upstream `initialize`.
#[derive(Debug)]
pub struct Initialized {
    pub session_id: Option<String>,
    pub protocol_version: String,
    pub instructions: Option<String>,
    /// The server's `capabilities` object (`{}` when it sent none).
    pub capabilities: Value,
}

impl Initialized {
    /// Reads an `initialize` result, refusing a protocol version the gateway does not
    /// speak.
    pub fn from_result(result: &Value, session_id: Option<String>) -> Result<Self, UpstreamError> {
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| UpstreamError::Protocol("no protocolVersion".into()))?;
        if !crate::protocol::is_supported(version) {
            return Err(UpstreamError::Protocol(format!(
                "unsupported protocol version {version:?}"
            )));
        }
        Ok(Initialized {
            session_id,
            protocol_version: version.to_string(),
            instructions: result
                .get("instructions")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string),
            capabilities: result
                .get("capabilities")
                .filter(|c| c.is_object())
                .cloned()
                .unwrap_or_else(|| json!({})),
        })
    }
}

pub struct UpstreamClient {
    http: reqwest::Client,
    next_id: AtomicU64,
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamClient {
    pub fn new() -> UpstreamClient {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            // A burst (10,000 clients opening streams at once) must not leave as many
            // idle connections, each with its buffers, behind it.
            .pool_max_idle_per_host(MAX_IDLE_PER_UPSTREAM)
            .http1_only()
            .build()
            .expect("reqwest client builds");
        UpstreamClient {
            http,
            next_id: AtomicU64::new(1),
        }
    }

    /// The pooled HTTP client, for the legacy SSE sessions.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn request_id(&self) -> String {
        format!("gatehouse-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn post(
        &self,
        server: &ServerRt,
        session: Option<SessionRef<'_>>,
        body: Bytes,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        if let Some(why) = &server.unavailable {
            return Err(UpstreamError::Unusable(why.clone()));
        }
        let mut req = self
            .http
            .post(&server.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, ACCEPT_BOTH);
        for (name, value) in &server.headers {
            req = req.header(name, value);
        }
        if let Some(s) = session {
            if let Some(id) = s.session_id {
                req = req.header(SESSION_HEADER, id);
            }
            req = req.header(VERSION_HEADER, s.protocol_version);
        }
        Ok(req.body(body))
    }

    /// Sends a request and returns its `result`.
    pub async fn call(
        &self,
        server: &ServerRt,
        session: Option<SessionRef<'_>>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<(Value, reqwest::header::HeaderMap), UpstreamError> {
        let id = self.request_id();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let req = self.post(server, session, Bytes::from(body.to_string()))?;
        let work = async {
            let resp = req.send().await.map_err(UpstreamError::from_reqwest)?;
            let status = resp.status().as_u16();
            if session.is_some_and(|s| s.session_id.is_some()) && matches!(status, 400 | 404) {
                return Err(UpstreamError::SessionGone);
            }
            if !(200..300).contains(&status) {
                return Err(UpstreamError::Status(status));
            }
            let headers = resp.headers().clone();
            let message = read_response(resp, &id).await?;
            Ok((message, headers))
        };
        let (mut message, headers) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        Ok((take_result(&mut message)?, headers))
    }

    /// Sends a notification; the upstream should answer 202.
    pub async fn notify(
        &self,
        server: &ServerRt,
        session: SessionRef<'_>,
        method: &str,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        let body = json!({"jsonrpc": "2.0", "method": method});
        let req = self.post(server, Some(session), Bytes::from(body.to_string()))?;
        let resp = tokio::time::timeout(timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            s => Err(UpstreamError::Status(s)),
        }
    }

    /// Opens a session: `initialize`, then `notifications/initialized`.
    pub async fn initialize(
        &self,
        server: &ServerRt,
        protocol_version: &str,
        client_init: &Value,
        timeout: Duration,
    ) -> Result<Initialized, UpstreamError> {
        let mut params = client_init.clone();
        params["protocolVersion"] = Value::String(protocol_version.to_string());
        let (result, headers) = self
            .call(server, None, "initialize", params, timeout)
            .await?;
        let session_id = headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let initialized = Initialized::from_result(&result, session_id)?;
        self.notify(
            server,
            SessionRef {
                session_id: initialized.session_id.as_deref(),
                protocol_version: &initialized.protocol_version,
            },
            "notifications/initialized",
            timeout,
        )
        .await?;
        Ok(initialized)
    }

    /// Every tool of an upstream, following `nextCursor` to the end.
    pub async fn list_tools(
        &self,
        server: &ServerRt,
        session: SessionRef<'_>,
        timeout: Duration,
    ) -> Result<Vec<Value>, UpstreamError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        // A bound on pages protects against an upstream that never stops paging.
        for _ in 0..1000 {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let (mut result, _) = self
                .call(server, Some(session), "tools/list", params, timeout)
                .await?;
            match result.get_mut("tools").map(Value::take) {
                Some(Value::Array(page)) => tools.extend(page),
                _ => return Err(UpstreamError::Protocol("tools/list without tools".into())),
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            if cursor.is_none() {
                return Ok(tools);
            }
        }
        Err(UpstreamError::Protocol(
            "tools/list paged more than 1000 times".into(),
        ))
    }

    /// Sends a notification or a response (a client's answer to a server request);
    /// the upstream should answer 202.
    pub async fn send(
        &self,
        server: &ServerRt,
        session: SessionRef<'_>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        let req = self.post(server, Some(session), body)?;
        let resp = tokio::time::timeout(timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            400 | 404 if session.session_id.is_some() => Err(UpstreamError::SessionGone),
            s => Err(UpstreamError::Status(s)),
        }
    }

    /// Opens the server's GET event stream for a session (`Last-Event-ID` to resume);
    /// `Ok(None)` when the server offers none (405).
    pub async fn open_stream(
        &self,
        server: &ServerRt,
        session: SessionRef<'_>,
        last_event_id: Option<&str>,
    ) -> Result<Option<reqwest::Response>, UpstreamError> {
        if let Some(why) = &server.unavailable {
            return Err(UpstreamError::Unusable(why.clone()));
        }
        let mut req = self
            .http
            .get(&server.url)
            .header(http::header::ACCEPT, "text/event-stream")
            .header(VERSION_HEADER, session.protocol_version);
        for (name, value) in &server.headers {
            req = req.header(name, value);
        }
        if let Some(id) = session.session_id {
            req = req.header(SESSION_HEADER, id);
        }
        if let Some(last) = last_event_id {
            req = req.header("last-event-id", last);
        }
        let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)?;
        let status = resp.status().as_u16();
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        match status {
            200 if is_sse => Ok(Some(resp)),
            200 => Err(UpstreamError::Protocol(
                "GET stream is not text/event-stream".into(),
            )),
            405 => Ok(None),
            400 | 404 if session.session_id.is_some() => Err(UpstreamError::SessionGone),
            s => Err(UpstreamError::Status(s)),
        }
    }

    /// Sends a client's request (`body`, whose id is `id`, raw JSON) and reads the reply
    /// to the end: every other message the server sends on the reply stream first
    /// (progress, server-to-client requests, logging) goes to `on_message`; the
    /// response is returned as the server sent it.
    pub async fn call_streaming(
        &self,
        server: &ServerRt,
        session: SessionRef<'_>,
        body: Bytes,
        id: &str,
        on_message: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, UpstreamError> {
        let req = self.post(server, Some(session), body)?;
        let resp = tokio::time::timeout(server.call_timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)?;
        let status = resp.status().as_u16();
        if session.session_id.is_some() && matches!(status, 400 | 404) {
            return Err(UpstreamError::SessionGone);
        }
        if !(200..300).contains(&status) {
            return Err(UpstreamError::Status(status));
        }
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            let bytes = tokio::time::timeout(server.call_timeout, resp.bytes())
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(UpstreamError::from_reqwest)?;
            return String::from_utf8(bytes.to_vec())
                .map_err(|_| UpstreamError::Protocol("reply is not UTF-8".into()));
        }
        let want: Value = serde_json::from_str(id)
            .map_err(|_| UpstreamError::Protocol("request id is not JSON".into()))?;
        let mut splitter = SseSplitter::default();
        let mut stream = resp.bytes_stream();
        loop {
            let chunk = match tokio::time::timeout(server.call_timeout, stream.next()).await {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(None) => break,
                Ok(Some(chunk)) => chunk.map_err(UpstreamError::from_reqwest)?,
            };
            splitter.push(&chunk);
            while let Some(event) = splitter.next_event() {
                let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                let is_response =
                    message.get("method").is_none() && message.get("id") == Some(&want);
                if is_response {
                    return Ok(event.data);
                }
                on_message(&event.data);
            }
        }
        Err(UpstreamError::Protocol(
            "event stream ended without a response".into(),
        ))
    }

    /// Ends an upstream session (best effort: 405 means the server does not allow it).
    pub async fn delete_session(&self, server: &ServerRt, session_id: &str) {
        if server.unavailable.is_some() {
            return;
        }
        let mut req = self
            .http
            .delete(&server.url)
            .header(SESSION_HEADER, session_id);
        for (name, value) in &server.headers {
            req = req.header(name, value);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), req.send()).await;
    }

    /// Forwards a client's request body as is and hands back the raw response, for
    /// bodies that cannot take Pingora's proxy path.
    pub async fn forward(
        &self,
        server: &ServerRt,
        session: SessionRef<'_>,
        body: Bytes,
    ) -> Result<reqwest::Response, UpstreamError> {
        let req = self.post(server, Some(session), body)?;
        let resp = tokio::time::timeout(server.call_timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)?;
        let status = resp.status().as_u16();
        if session.session_id.is_some() && matches!(status, 400 | 404) {
            return Err(UpstreamError::SessionGone);
        }
        Ok(resp)
    }
}

/// The `result` of a JSON-RPC response, or its error (message cut to 200 chars).
pub(crate) fn take_result(message: &mut Value) -> Result<Value, UpstreamError> {
    if let Some(err) = message.get("error") {
        return Err(UpstreamError::Rpc {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
        });
    }
    match message.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(UpstreamError::Protocol(
            "response has neither result nor error".into(),
        )),
    }
}

/// Reads a reply until the JSON-RPC response whose id is `id`.
async fn read_response(resp: reqwest::Response, id: &str) -> Result<Value, UpstreamError> {
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !is_sse {
        let bytes = resp.bytes().await.map_err(UpstreamError::from_reqwest)?;
        return serde_json::from_slice(&bytes)
            .map_err(|e| UpstreamError::Protocol(format!("reply is not JSON: {e}")));
    }
    let mut splitter = SseSplitter::default();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        splitter.push(&chunk.map_err(UpstreamError::from_reqwest)?);
        while let Some(event) = splitter.next_event() {
            let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            let is_ours = message.get("id").and_then(Value::as_str) == Some(id)
                && message.get("method").is_none();
            if is_ours {
                return Ok(message);
            }
        }
    }
    Err(UpstreamError::Protocol(
        "event stream ended without a response".into(),
    ))
}
