//! The Streamable HTTP connector: how the gateway talks to an upstream that speaks
//! Streamable HTTP. Routed calls go over the per-thread [`pool`]; the gateway's own
//! requests — `initialize`, lists, notifications, the GET stream, `DELETE` — over one
//! pooled reqwest client. "Session gone" is decided by [`session_gone`], here only.
//!
//! A reply may be `application/json` or an SSE stream that carries other messages
//! before the response; both are read until the response with our request id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gatehouse_mcp::sse::SseSplitter;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::config::runtime::ServerRt;
use crate::upstream::error::{take_result, Initialized, UpstreamError};
use crate::upstream::pool;

// Header names, not strings: a lookup or removal by string parses the name each time.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
const ACCEPT_BOTH: &str = "application/json, text/event-stream";
/// Idle connections of the gateway's own requests kept per upstream host.
const MAX_IDLE_PER_UPSTREAM: usize = 64;

/// Which upstream session a request belongs to.
#[derive(Debug, Clone, Copy)]
pub struct SessionRef<'a> {
    pub session_id: Option<&'a str>,
    pub protocol_version: &'a str,
}

pub struct HttpUpstreams {
    http: reqwest::Client,
    next_id: AtomicU64,
}

impl Default for HttpUpstreams {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpUpstreams {
    pub fn new() -> HttpUpstreams {
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
        HttpUpstreams {
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

    /// A request to the server's endpoint carrying its own credentials; refused when
    /// the server is unusable (a missing secret, an unresolvable host).
    fn request(
        &self,
        method: reqwest::Method,
        server: &ServerRt,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        if let Some(why) = &server.unavailable {
            return Err(UpstreamError::Unusable(why.clone()));
        }
        let mut req = self.http.request(method, &server.url);
        for (name, value) in &server.headers {
            req = req.header(name, value);
        }
        Ok(req)
    }

    fn post(
        &self,
        server: &ServerRt,
        session: Option<SessionRef<'_>>,
        body: Bytes,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let mut req = self
            .request(reqwest::Method::POST, server)?
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, ACCEPT_BOTH);
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
            if session_gone(status, session.is_some_and(|s| s.session_id.is_some())) {
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
        self.send(server, session, Bytes::from(body.to_string()), timeout)
            .await
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
            s if session_gone(s, session.session_id.is_some()) => Err(UpstreamError::SessionGone),
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
        let mut req = self
            .request(reqwest::Method::GET, server)?
            .header(http::header::ACCEPT, "text/event-stream")
            .header(VERSION_HEADER, session.protocol_version);
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
            s if session_gone(s, session.session_id.is_some()) => Err(UpstreamError::SessionGone),
            s => Err(UpstreamError::Status(s)),
        }
    }

    /// Ends an upstream session (best effort: 405 means the server does not allow it).
    pub async fn delete_session(&self, server: &ServerRt, session_id: &str) {
        let Ok(req) = self.request(reqwest::Method::DELETE, server) else {
            return;
        };
        let req = req.header(SESSION_HEADER, session_id);
        let _ = tokio::time::timeout(Duration::from_secs(5), req.send()).await;
    }

    /// Sends a routed call's body (the client's request, its tool name rewritten) over
    /// the per-thread pool with the client's `forwarded` headers, and hands back the
    /// reply as it arrives; "session gone" is decided here, the reply is the caller's
    /// to relay.
    pub async fn routed(
        &self,
        server: &ServerRt,
        session: SessionRef<'_>,
        body: Bytes,
        forwarded: &HeaderMap,
    ) -> Result<pool::Reply, UpstreamError> {
        let Some(target) = server
            .target
            .as_ref()
            .filter(|_| server.unavailable.is_none())
        else {
            let why = server
                .unavailable
                .clone()
                .unwrap_or_else(|| "no address".into());
            return Err(UpstreamError::Unusable(why));
        };
        let length = body.len();
        let mut req = http::Request::post(server.path.clone())
            .body(Full::new(body))
            .expect("a request from valid parts");
        let headers = req.headers_mut();
        headers.reserve(forwarded.len() + server.headers.len() + 6);
        for (name, value) in forwarded {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(header::HOST, server.authority.clone());
        headers
            .entry(header::CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        headers
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static(ACCEPT_BOTH));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        let version = HeaderValue::from_str(session.protocol_version).map_err(|_| {
            UpstreamError::Protocol("protocol version is not a header value".into())
        })?;
        headers.insert(VERSION_HEADER, version);
        if let Some(id) = session.session_id {
            let id = HeaderValue::from_str(id)
                .map_err(|_| UpstreamError::Protocol("session id is not a header value".into()))?;
            headers.insert(SESSION_HEADER, id);
        }
        for (name, value) in &server.headers {
            headers.insert(name.clone(), value.clone());
        }
        let reply = pool::send(target, req, server.call_timeout)
            .await
            .map_err(|e| match e {
                pool::SendError::Timeout => UpstreamError::Timeout,
                pool::SendError::Connect(why) => {
                    tracing::debug!(server = %server.slug, why, "connecting to the upstream failed");
                    UpstreamError::Connect
                }
                pool::SendError::Http(e) => UpstreamError::Protocol(e.to_string()),
            })?;
        if session_gone(reply.status().as_u16(), session.session_id.is_some()) {
            return Err(UpstreamError::SessionGone);
        }
        Ok(reply)
    }
}

/// The one rule for a Streamable HTTP upstream: a request that named a session and got
/// 400 or 404 means the server no longer knows that session.
pub fn session_gone(status: u16, named_a_session: bool) -> bool {
    named_a_session && matches!(status, 400 | 404)
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
