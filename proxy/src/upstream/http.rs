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
use gatehouse_mcp::modern;
use gatehouse_mcp::sse::SseSplitter;
use gatehouse_mcp::versions;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::config::runtime::ServerRt;
use crate::upstream::error::{take_result, Initialized, UpstreamError};
use crate::upstream::pool;

// Header names, not strings: a lookup or removal by string parses the name each time.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// The 2026-07-28 mirrors of the body's method and name.
pub const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
pub const NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");
const ACCEPT_BOTH: &str = "application/json, text/event-stream";
/// Idle connections of the gateway's own requests kept per upstream host.
const MAX_IDLE_PER_UPSTREAM: usize = 64;

/// Which upstream session a request belongs to. A modern (2026-07-28) upstream has
/// no session: its reference is the version alone, and its requests carry the
/// headers that mirror their body.
#[derive(Debug, Clone, Copy)]
pub struct SessionRef<'a> {
    pub session_id: Option<&'a str>,
    pub protocol_version: &'a str,
}

impl SessionRef<'_> {
    /// The reference of every request to a modern upstream.
    pub const MODERN: SessionRef<'static> = SessionRef {
        session_id: None,
        protocol_version: versions::MODERN_VERSION,
    };

    fn is_modern(&self) -> bool {
        versions::is_modern(self.protocol_version)
    }
}

/// How a listen stream's messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenFraming {
    /// Server-sent events, as the spec has it.
    Events,
    /// One JSON message per line.
    Lines,
}

/// What a modern upstream said about itself in `server/discover`.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub capabilities: Value,
    pub instructions: Option<String>,
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

    /// A POST of `body`; to a modern upstream with the headers mirroring the body's
    /// `method` and the name or URI in its `params`.
    fn post(
        &self,
        server: &ServerRt,
        session: Option<SessionRef<'_>>,
        body: Bytes,
        method: Option<&str>,
        params: Option<&Value>,
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
            if let (true, Some(method)) = (s.is_modern(), method) {
                req = req.header(METHOD_HEADER, method);
                let name =
                    modern::name_field(method).and_then(|field| params?.get(field)?.as_str());
                if let Some(name) = name {
                    req = req.header(NAME_HEADER, modern::encode_header_value(name));
                }
            }
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
        let req = self.post(
            server,
            session,
            Bytes::from(body.to_string()),
            Some(method),
            Some(&params),
        )?;
        let work = async {
            let resp = req.send().await.map_err(UpstreamError::from_reqwest)?;
            let status = resp.status().as_u16();
            if session_gone(status, session.is_some_and(|s| s.session_id.is_some())) {
                return Err(UpstreamError::SessionGone);
            }
            if !(200..300).contains(&status) {
                return Err(refusal(resp, status).await);
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
        let req = self.post(server, Some(session), body, None, None)?;
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

    /// Asks `server/discover` whether the server speaks the modern era: `Some` with
    /// what it said when it does, `None` when it answers as an older server would (a
    /// 4xx without a modern error, an error, a reply without the version), an error
    /// when it could not be asked.
    pub async fn discover(
        &self,
        server: &ServerRt,
        timeout: Duration,
    ) -> Result<Option<Discovered>, UpstreamError> {
        let meta = modern::upstream_meta(&json!({}));
        let asked = self
            .call(
                server,
                Some(SessionRef::MODERN),
                "server/discover",
                json!({ "_meta": meta }),
                timeout,
            )
            .await;
        let result = match asked {
            Ok((result, _)) => result,
            Err(UpstreamError::Status(_) | UpstreamError::Rpc { .. }) => return Ok(None),
            Err(UpstreamError::Protocol(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let modern = result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|v| {
                v.iter()
                    .any(|v| v.as_str().is_some_and(versions::is_modern))
            });
        Ok(modern.then(|| Discovered {
            capabilities: result
                .get("capabilities")
                .filter(|c| c.is_object())
                .cloned()
                .unwrap_or_else(|| json!({})),
            instructions: result
                .get("instructions")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string),
        }))
    }

    /// Opens a modern server's `subscriptions/listen` stream with `params` (its
    /// `_meta` and notification filter); `Ok(None)` when it offers none.
    pub async fn open_listen(
        &self,
        server: &ServerRt,
        params: Value,
    ) -> Result<Option<(reqwest::Response, ListenFraming)>, UpstreamError> {
        let id = self.request_id();
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": params});
        let req = self.post(
            server,
            Some(SessionRef::MODERN),
            Bytes::from(body.to_string()),
            Some("subscriptions/listen"),
            None,
        )?;
        let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::from_reqwest)?;
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let framing = if content_type.starts_with("text/event-stream") {
            ListenFraming::Events
        } else if content_type.starts_with("application/json") {
            // Seen in the wild (the conformance suite's reference server): one JSON
            // message per line.
            ListenFraming::Lines
        } else {
            return Err(UpstreamError::Protocol(format!(
                "subscriptions/listen answered with {content_type:?}"
            )));
        };
        match resp.status().as_u16() {
            200 => Ok(Some((resp, framing))),
            404 => Ok(None),
            s => Err(UpstreamError::Status(s)),
        }
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
        tool: &str,
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
        if session.is_modern() {
            headers.insert(METHOD_HEADER, HeaderValue::from_static("tools/call"));
            let name = HeaderValue::from_str(&modern::encode_header_value(tool))
                .map_err(|_| UpstreamError::Protocol("tool name is not a header value".into()))?;
            headers.insert(NAME_HEADER, name);
        }
        for (name, value) in &server.headers {
            headers.insert(name.clone(), value.clone());
        }
        let deadlines = pool::Deadlines {
            connect: server.connect_timeout,
            first_byte: server.first_byte_timeout,
        };
        let reply = pool::send(target, req, deadlines)
            .await
            .map_err(|e| match e {
                pool::SendError::Timeout => UpstreamError::Timeout,
                pool::SendError::Connect(why) => {
                    tracing::debug!(server = %server.slug, why, "connecting to the upstream failed");
                    UpstreamError::Connect
                }
                pool::SendError::Http(e) => UpstreamError::Protocol(e.to_string()),
            })?;
        let status = reply.status().as_u16();
        if session_gone(status, session.session_id.is_some()) {
            return Err(UpstreamError::SessionGone);
        }
        // A refusal that is not the server's own JSON-RPC error (a proxy's 502 page, a
        // crash's 500) is not the client's to parse: it is the server failing.
        if !(200..300).contains(&status) && !is_json(reply.headers()) {
            return Err(UpstreamError::Status(status));
        }
        Ok(reply)
    }
}

/// The one rule for a Streamable HTTP upstream: a request that named a session and got
/// 400 or 404 means the server no longer knows that session.
pub fn session_gone(status: u16, named_a_session: bool) -> bool {
    named_a_session && matches!(status, 400 | 404)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"))
}

/// What a non-2xx reply means: the upstream's own JSON-RPC error when its body is one
/// (a modern server answers errors with 400 and 404), else the status.
async fn refusal(resp: reqwest::Response, status: u16) -> UpstreamError {
    const MAX_ERROR_BODY: usize = 64 * 1024;
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !is_json
        || resp
            .content_length()
            .is_some_and(|l| l as usize > MAX_ERROR_BODY)
    {
        return UpstreamError::Status(status);
    }
    match resp
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        Some(mut message) if message.get("error").is_some() => match take_result(&mut message) {
            Err(e) => e,
            Ok(_) => UpstreamError::Status(status),
        },
        _ => UpstreamError::Status(status),
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
