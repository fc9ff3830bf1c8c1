//! A minimal Streamable HTTP client for the harness's own requests: opening the
//! session wrk will reuse, checking that a target answers correctly before it is
//! loaded, and timing single calls (the cold `tools/list`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::wrk::WrkRequest;

pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// One MCP session with an endpoint: the URL and every header a request carries.
#[derive(Debug, Clone)]
pub struct McpSession {
    pub url: String,
    /// Sent on every request after `initialize`, wrk's included.
    pub headers: Vec<(String, String)>,
}

impl McpSession {
    /// `initialize` + `notifications/initialized` against `url`, with an optional
    /// bearer token.
    pub async fn open(
        http: &reqwest::Client,
        url: &str,
        bearer: Option<&str>,
    ) -> anyhow::Result<McpSession> {
        let mut headers = vec![
            (
                "Accept".to_string(),
                "application/json, text/event-stream".to_string(),
            ),
            ("Content-Type".to_string(), "application/json".to_string()),
        ];
        if let Some(token) = bearer {
            headers.push(("Authorization".to_string(), format!("Bearer {token}")));
        }
        let mut session = McpSession {
            url: url.to_string(),
            headers,
        };
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"}
            }
        });
        let resp = session.post(http, &init.to_string()).await?;
        let status = resp.status();
        let session_id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_message(resp).await?;
        if !status.is_success() || body.get("result").is_none() {
            bail!("initialize at {url}: HTTP {status}: {body}");
        }
        if let Some(id) = session_id {
            session.headers.push(("Mcp-Session-Id".to_string(), id));
        }
        session
            .headers
            .push(("MCP-Protocol-Version".to_string(), PROTOCOL_VERSION.into()));
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let resp = session.post(http, &initialized.to_string()).await?;
        if !resp.status().is_success() {
            bail!("notifications/initialized at {url}: HTTP {}", resp.status());
        }
        Ok(session)
    }

    pub fn session_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == "Mcp-Session-Id")
            .map(|(_, v)| v.as_str())
    }

    async fn post(&self, http: &reqwest::Client, body: &str) -> anyhow::Result<reqwest::Response> {
        let mut req = http.post(&self.url).body(body.to_string());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        req.send()
            .await
            .with_context(|| format!("POST {}", self.url))
    }

    /// Sends one request body and returns the JSON-RPC response, failing on a non-2xx
    /// status or a JSON-RPC error, with how long it took end to end.
    pub async fn request(
        &self,
        http: &reqwest::Client,
        body: &str,
    ) -> anyhow::Result<(Value, Duration)> {
        let started = Instant::now();
        let resp = self.post(http, body).await?;
        let status = resp.status();
        let message = read_message(resp).await?;
        let elapsed = started.elapsed();
        if !status.is_success() {
            bail!("{}: HTTP {status}: {message}", self.url);
        }
        if let Some(err) = message.get("error") {
            bail!("{}: JSON-RPC error: {err}", self.url);
        }
        Ok((message, elapsed))
    }
}

#[cfg(test)]
impl McpSession {
    /// The HTTP status and JSON-RPC message answering `body`, whatever they are.
    pub async fn raw(&self, http: &reqwest::Client, body: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self.post(http, body).await?;
        let status = resp.status().as_u16();
        Ok((status, read_message(resp).await?))
    }
}

/// The JSON-RPC response of a POST, whether it came as JSON or as an SSE stream.
async fn read_message(resp: reqwest::Response) -> anyhow::Result<Value> {
    let is_sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let text = resp.text().await.context("reading response body")?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    if !is_sse {
        return serde_json::from_str(&text)
            .with_context(|| format!("response is not JSON: {}", clip(&text)));
    }
    // The response is the data of the event that carries an id and a result or error.
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data:") {
            if let Ok(v) = serde_json::from_str::<Value>(data.trim_start()) {
                if v.get("id").is_some() && (v.get("result").is_some() || v.get("error").is_some())
                {
                    return Ok(v);
                }
            }
        }
    }
    bail!("SSE response without a JSON-RPC response: {}", clip(&text))
}

fn clip(text: &str) -> &str {
    let end = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// Opens a session at `url` and checks one echo call of `tool` answers correctly.
pub async fn checked_session(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    tool: &str,
) -> anyhow::Result<McpSession> {
    let session = McpSession::open(http, url, bearer).await?;
    let (response, _) = session
        .request(http, &tools_call_body(tool))
        .await
        .with_context(|| format!("echo call through {url}"))?;
    check_echo(&response).with_context(|| format!("echo call through {url}"))?;
    Ok(session)
}

/// What wrk sends to load `session` with echo calls of `tool`: the throughput
/// request of every scenario.
pub fn echo_request(session: &McpSession, tool: &str) -> WrkRequest {
    WrkRequest {
        url: session.url.clone(),
        body: tools_call_body(tool),
        headers: session.headers.clone(),
        expect: r#""result":"#.into(),
    }
}

/// The body of a `tools/call` of `name` with a small, fixed argument object.
pub fn tools_call_body(name: &str) -> String {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": {"text": "hello from the gatehouse bench"}}
    })
    .to_string()
}

pub fn tools_list_body() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).to_string()
}

/// Checks that an echo call came back with the arguments it sent.
pub fn check_echo(response: &Value) -> anyhow::Result<()> {
    let text = response
        .pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .context("echo result has no text content")?;
    let echoed: Value = serde_json::from_str(text).context("echo text is not JSON")?;
    if echoed.get("text").and_then(Value::as_str) != Some("hello from the gatehouse bench") {
        bail!("echo answered {text}, not the arguments it was sent");
    }
    Ok(())
}
