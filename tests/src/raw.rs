//! A hand-driven Streamable HTTP client for protocol-level assertions.
//!
//! A Streamable HTTP reply to a request is either `application/json` or a
//! `text/event-stream` that carries the response among other messages;
//! [`RawResponse`] reads either and picks the JSON-RPC response out of it.

use axum::body::Bytes;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::events::EventStream;
use crate::wire::{self, is_response, sse_messages};
use crate::STEP_TIMEOUT;

/// The protocol version [`RawClient::initialize`] asks for.
pub const RAW_PROTOCOL_VERSION: &str = "2025-06-18";

/// A hand-driven Streamable HTTP client: sends exactly the headers a test chooses.
///
/// By default every POST carries `Accept: application/json, text/event-stream`,
/// `Content-Type: application/json`, the bearer token (if any), the session id (once
/// [`initialize`](Self::initialize) set it) and `MCP-Protocol-Version` (likewise).
#[derive(Debug, Clone)]
pub struct RawClient {
    http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    pub session: Option<String>,
    pub protocol_version: Option<String>,
}

impl RawClient {
    pub fn new(url: impl Into<String>, token: Option<&str>) -> Self {
        RawClient {
            http: reqwest::Client::new(),
            url: url.into(),
            token: token.map(str::to_owned),
            session: None,
            protocol_version: None,
        }
    }

    /// The same client (and session) talking to another URL, e.g. a second proxy.
    pub fn with_url(&self, url: impl Into<String>) -> Self {
        RawClient {
            url: url.into(),
            ..self.clone()
        }
    }

    /// The same client (and session) presenting another token.
    pub fn with_token(&self, token: Option<&str>) -> Self {
        RawClient {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    /// Opens the session's GET event stream (`Accept: text/event-stream`), resuming
    /// after `last_event_id` when given. Fails unless the answer is 200.
    pub async fn open_stream(&self, last_event_id: Option<&str>) -> anyhow::Result<EventStream> {
        let response = self.get_stream(last_event_id).await?;
        anyhow::ensure!(
            response.status == 200,
            "GET {} answered {}",
            self.url,
            response.status
        );
        Ok(response)
    }

    /// The GET of [`open_stream`](Self::open_stream), whatever it answers.
    pub async fn get_stream(&self, last_event_id: Option<&str>) -> anyhow::Result<EventStream> {
        let mut request = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(version) = &self.protocol_version {
            request = request.header("mcp-protocol-version", version);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(STEP_TIMEOUT, request.send())
            .await
            .map_err(|_| {
                anyhow::anyhow!("GET {}: no answer within {STEP_TIMEOUT:?}", self.url)
            })??;
        Ok(EventStream::new(response))
    }

    /// `DELETE` of the session; returns the status.
    pub async fn delete(&self) -> anyhow::Result<StatusCode> {
        let mut request = self.http.delete(&self.url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        Ok(request.send().await?.status())
    }

    /// A POST of `body` with the default headers, to adjust before sending.
    pub fn post(&self, body: impl Into<Vec<u8>>) -> RawPost {
        let mut headers = HeaderMap::new();
        headers.insert(
            "accept",
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let mut post = RawPost {
            http: self.http.clone(),
            url: self.url.clone(),
            headers,
            body: body.into(),
        };
        if let Some(token) = &self.token {
            post = post.header("authorization", &format!("Bearer {token}"));
        }
        if let Some(session) = &self.session {
            post = post.header("mcp-session-id", session);
        }
        if let Some(version) = &self.protocol_version {
            post = post.header("mcp-protocol-version", version);
        }
        post
    }

    /// POSTs `body` (any bytes) with the default headers.
    pub async fn send(&self, body: impl Into<Vec<u8>>) -> anyhow::Result<RawResponse> {
        self.post(body).send().await
    }

    /// POSTs a JSON-RPC value with the default headers.
    pub async fn send_json(&self, message: &Value) -> anyhow::Result<RawResponse> {
        self.send(serde_json::to_vec(message)?).await
    }

    /// POSTs the request `{"jsonrpc":"2.0","id":id,"method":method,"params":params}`.
    pub async fn request(
        &self,
        id: u64,
        method: &str,
        params: Value,
    ) -> anyhow::Result<RawResponse> {
        self.send_json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    /// POSTs a notification (no `id`); a server answers `202 Accepted`.
    pub async fn notify(&self, method: &str) -> anyhow::Result<RawResponse> {
        self.send_json(&json!({"jsonrpc": "2.0", "method": method}))
            .await
    }

    pub async fn call_tool(
        &self,
        id: u64,
        name: &str,
        arguments: Value,
    ) -> anyhow::Result<RawResponse> {
        self.request(
            id,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
        .await
    }

    pub async fn list_tools(&self, id: u64) -> anyhow::Result<RawResponse> {
        self.request(id, "tools/list", json!({})).await
    }

    /// The `initialize` request alone; it does not change this client.
    pub async fn send_initialize(&self) -> anyhow::Result<RawResponse> {
        self.send_initialize_with(json!({})).await
    }

    /// The `initialize` request alone, announcing `capabilities`.
    pub async fn send_initialize_with(&self, capabilities: Value) -> anyhow::Result<RawResponse> {
        self.without_session()
            .request(
                0,
                "initialize",
                json!({
                    "protocolVersion": RAW_PROTOCOL_VERSION,
                    "capabilities": capabilities,
                    "clientInfo": {"name": "gatehouse-tests", "version": "1.0.0"},
                }),
            )
            .await
    }

    /// `initialize` then `notifications/initialized`: on success this client carries
    /// the returned session id and negotiated protocol version from then on. Returns
    /// the `initialize` response; fails unless it was 200 with a session id.
    pub async fn initialize(&mut self) -> anyhow::Result<RawResponse> {
        self.initialize_with(json!({})).await
    }

    /// [`initialize`](Self::initialize) announcing `capabilities` (e.g. sampling).
    pub async fn initialize_with(&mut self, capabilities: Value) -> anyhow::Result<RawResponse> {
        let response = self.send_initialize_with(capabilities).await?;
        anyhow::ensure!(
            response.status == 200,
            "initialize answered {}: {}",
            response.status,
            response.text()
        );
        let session = response
            .session_id()
            .ok_or_else(|| anyhow::anyhow!("initialize returned no Mcp-Session-Id"))?
            .to_owned();
        let version = response
            .message()?
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("initialize result has no protocolVersion"))?
            .to_owned();
        self.session = Some(session);
        self.protocol_version = Some(version);
        let initialized = self.notify("notifications/initialized").await?;
        anyhow::ensure!(
            initialized.status == 202,
            "notifications/initialized answered {}: {}",
            initialized.status,
            initialized.text()
        );
        Ok(response)
    }

    /// The same client without a session id (and protocol version header).
    pub fn without_session(&self) -> RawClient {
        RawClient {
            session: None,
            protocol_version: None,
            ..self.clone()
        }
    }
}

/// One POST under construction; see [`RawClient::post`].
#[derive(Debug)]
pub struct RawPost {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl RawPost {
    /// Sets (replaces) a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
        let value = HeaderValue::from_str(value).expect("valid header value");
        self.headers.insert(name, value);
        self
    }

    /// Leaves a default header out.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.remove(name);
        self
    }

    /// Sends and hands back the reply as an event stream to read event by event (a
    /// `tools/call` whose reply carries requests the test must answer mid-call).
    pub async fn send_streaming(self) -> anyhow::Result<EventStream> {
        let response = tokio::time::timeout(
            STEP_TIMEOUT,
            self.http
                .post(&self.url)
                .headers(self.headers)
                .body(self.body)
                .send(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("POST {}: no answer within {STEP_TIMEOUT:?}", self.url))??;
        Ok(EventStream::new(response))
    }

    pub async fn send(self) -> anyhow::Result<RawResponse> {
        let url = self.url.clone();
        let sending = async move {
            let response = self
                .http
                .post(&self.url)
                .headers(self.headers)
                .body(self.body)
                .send()
                .await?;
            RawResponse::read(response).await
        };
        tokio::time::timeout(STEP_TIMEOUT, sending)
            .await
            .map_err(|_| {
                anyhow::anyhow!("POST {url}: no complete response within {STEP_TIMEOUT:?}")
            })?
    }

    /// Sends over a fresh HTTP/1.1 connection the way curl does: the response is read
    /// while the body is still being written, and a response that arrived before a
    /// write failed is kept. A server may answer early (e.g. `413` from the declared
    /// `Content-Length`) and close; hyper-based clients such as reqwest then report only
    /// the failed write.
    pub async fn send_reading_early(self) -> anyhow::Result<RawResponse> {
        let url = reqwest::Url::parse(&self.url)?;
        let sending = async move {
            let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
            let port = url.port_or_known_default().unwrap_or(80);
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let (mut reader, mut writer) = stream.into_split();
            let mut head = format!("POST {} HTTP/1.1\r\nhost: {host}:{port}\r\n", url.path());
            for (name, value) in &self.headers {
                head.push_str(&format!("{name}: {}\r\n", value.to_str()?));
            }
            head.push_str(&format!(
                "content-length: {}\r\nconnection: close\r\n\r\n",
                self.body.len()
            ));
            let body = self.body;
            let upload = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // A server that answered early may close: the write error is expected.
                if writer.write_all(head.as_bytes()).await.is_ok() {
                    let _ = writer.write_all(&body).await;
                }
                writer
            });
            let mut received = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                use tokio::io::AsyncReadExt;
                match reader.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        received.extend_from_slice(&buf[..n]);
                        if wire::http1::is_complete(&received) {
                            break;
                        }
                    }
                    // A reset after the response arrived still leaves the response.
                    Err(e) if !received.is_empty() => {
                        tracing::debug!("read after response: {e}");
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            upload.abort();
            let (status, headers, body) = wire::http1::parse(&received)?;
            Ok(RawResponse::from_body(status, headers, body))
        };
        tokio::time::timeout(STEP_TIMEOUT, sending)
            .await
            .map_err(|_| {
                anyhow::anyhow!("POST {}: no response within {STEP_TIMEOUT:?}", self.url)
            })?
    }
}

/// A response as the client saw it, with the JSON-RPC messages it carried.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as read; for an event stream, up to the JSON-RPC response.
    pub body: Bytes,
    /// JSON-RPC messages in the body: the JSON value (each element of an array), or
    /// the `data` of each SSE event that parsed as JSON.
    pub messages: Vec<Value>,
}

impl RawResponse {
    /// Reads `response`; an event stream is read only until it has delivered a
    /// JSON-RPC response, since a server may keep it open.
    pub async fn read(response: reqwest::Response) -> anyhow::Result<RawResponse> {
        let status = response.status();
        let headers = response.headers().clone();
        let is_sse = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            let body = response.bytes().await?;
            return Ok(RawResponse::from_body(status, headers, body));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        let mut messages = Vec::new();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk?);
            messages = sse_messages(&body);
            if messages.iter().any(is_response) {
                break;
            }
        }
        Ok(RawResponse {
            status,
            headers,
            body: Bytes::from(body),
            messages,
        })
    }

    /// A whole non-stream body: its JSON value, or each element of a JSON array, are
    /// the messages.
    pub fn from_body(status: StatusCode, headers: HeaderMap, body: Bytes) -> RawResponse {
        let messages = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => items,
            Ok(value) => vec![value],
            Err(_) => Vec::new(),
        };
        RawResponse {
            status,
            headers,
            body,
            messages,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// Whether the body was delimited by a length or chunking, so the connection can
    /// carry another request, rather than by the server closing it.
    pub fn framed(&self) -> bool {
        self.header("content-length").is_some()
            || self
                .header("transfer-encoding")
                .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    }

    pub fn session_id(&self) -> Option<&str> {
        self.header("mcp-session-id")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as one JSON value (for non-JSON-RPC bodies such as errors).
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The JSON-RPC response (a message with `id` and `result` or `error`).
    pub fn message(&self) -> anyhow::Result<&Value> {
        self.messages
            .iter()
            .find(|m| is_response(m))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "HTTP {} ({}) carried no JSON-RPC response: {:?}",
                    self.status,
                    self.content_type().unwrap_or("no content-type"),
                    self.text()
                )
            })
    }

    /// `result` of the JSON-RPC response; fails if it is an error.
    pub fn result(&self) -> anyhow::Result<&Value> {
        let message = self.message()?;
        message
            .get("result")
            .ok_or_else(|| anyhow::anyhow!("expected a result, got {message}"))
    }

    /// `error` of the JSON-RPC response; fails if it is a result.
    pub fn error(&self) -> anyhow::Result<&Value> {
        let message = self.message()?;
        message
            .get("error")
            .ok_or_else(|| anyhow::anyhow!("expected an error, got {message}"))
    }

    /// `error.code` of the JSON-RPC response.
    pub fn error_code(&self) -> anyhow::Result<i64> {
        let error = self.error()?;
        error
            .get("code")
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow::anyhow!("error without an integer code: {error}"))
    }

    /// For a `tools/call` result: the text content parsed as JSON (the upstream echo).
    pub fn tool_echo(&self) -> anyhow::Result<Value> {
        let result = self.result()?;
        let text: String = result
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("tool result {result} has no JSON text: {e}"))
    }

    /// For a `tools/list` result: the tool names in order.
    pub fn tool_names(&self) -> anyhow::Result<Vec<String>> {
        let result = self.result()?;
        let tools = result
            .get("tools")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow::anyhow!("tools/list result without tools: {result}"))?;
        Ok(tools
            .iter()
            .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }
}
