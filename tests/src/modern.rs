//! A client of MCP 2026-07-28 (the stateless era), written for the tests from the spec:
//! no SDK the harness pins speaks it yet. Every request is a POST carrying its
//! protocol version, capabilities and identity in `_meta`, and the headers that mirror
//! the body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`); replies are read as
//! JSON or as an event stream. [`ModernClient::post`] sends anything, for tests of
//! what the gateway refuses.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::STEP_TIMEOUT;

pub const VERSION: &str = "2026-07-28";

pub struct ModernClient {
    http: reqwest::Client,
    url: String,
    token: String,
    capabilities: Value,
    next_id: AtomicI64,
}

/// What one POST got back.
#[derive(Debug)]
pub struct ModernReply {
    pub status: u16,
    pub content_type: String,
    /// Every JSON-RPC message of the reply, in order (one for a JSON reply).
    pub messages: Vec<Value>,
}

impl ModernReply {
    /// The final response's `result`; an error if it is a JSON-RPC error.
    pub fn result(&self) -> anyhow::Result<&Value> {
        let last = self
            .messages
            .iter()
            .rfind(|m| m.get("method").is_none())
            .context("no response in the reply")?;
        match last.get("result") {
            Some(r) => Ok(r),
            None => anyhow::bail!("an error: {last}"),
        }
    }

    /// The final response's `error.code`, if it is an error.
    pub fn error_code(&self) -> Option<i64> {
        self.messages
            .iter()
            .rfind(|m| m.get("method").is_none())?
            .pointer("/error/code")?
            .as_i64()
    }
}

impl ModernClient {
    /// A client of workspace URL `url` (`.../ws/<slug>`) with `token`, declaring no
    /// capabilities.
    pub fn new(url: &str, token: &str) -> ModernClient {
        ModernClient {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a client"),
            url: format!("{}/mcp", url.trim_end_matches('/')),
            token: token.to_string(),
            capabilities: json!({}),
            next_id: AtomicI64::new(1),
        }
    }

    /// The same client declaring `capabilities` on every request.
    pub fn with_capabilities(mut self, capabilities: Value) -> ModernClient {
        self.capabilities = capabilities;
        self
    }

    /// The `_meta` every request carries.
    pub fn meta(&self) -> Value {
        json!({
            "io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": self.capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "gatehouse-tests", "version": "1.0.0"},
        })
    }

    /// A well-formed request: `params` (an object) gets `_meta`, the headers mirror
    /// the body.
    pub async fn request(&self, method: &str, mut params: Value) -> anyhow::Result<ModernReply> {
        params["_meta"] = self.meta();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str)
            .filter(|_| matches!(method, "tools/call" | "prompts/get" | "resources/read"));
        let mut headers = vec![
            ("MCP-Protocol-Version", VERSION.to_string()),
            ("Mcp-Method", method.to_string()),
        ];
        if let Some(name) = name {
            headers.push(("Mcp-Name", name.to_string()));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post(&body, &headers).await
    }

    /// POSTs `body` as it is with `headers` (and the token, and `Accept`).
    pub async fn post(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<ModernReply> {
        let mut req = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = tokio::time::timeout(STEP_TIMEOUT, req.send())
            .await
            .context("no reply in time")??;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = tokio::time::timeout(STEP_TIMEOUT, resp.text())
            .await
            .context("the reply did not end in time")??;
        let messages = if content_type.starts_with("text/event-stream") {
            events(&text)
        } else if text.trim().is_empty() {
            Vec::new()
        } else {
            vec![serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?]
        };
        Ok(ModernReply {
            status,
            content_type,
            messages,
        })
    }

    /// Opens a `subscriptions/listen` stream with `notifications` as its filter.
    pub async fn listen(&self, notifications: Value) -> anyhow::Result<ListenStream> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen",
            "params": {"_meta": self.meta(), "notifications": notifications}});
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .header("MCP-Protocol-Version", VERSION)
            .header("Mcp-Method", "subscriptions/listen")
            .body(body.to_string())
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 200,
            "subscriptions/listen answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
        let headers = resp.headers().clone();
        Ok(ListenStream {
            id,
            headers,
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        })
    }
}

/// The JSON messages of an event stream's `data` lines.
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .filter(|d| !d.is_empty())
        .filter_map(|d| serde_json::from_str(&d).ok())
        .collect()
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// An open `subscriptions/listen` stream.
pub struct ListenStream {
    /// The listen request's id: the subscription id.
    pub id: i64,
    pub headers: reqwest::header::HeaderMap,
    body: ByteStream,
    buffer: String,
}

impl ListenStream {
    /// The next message, or `None` when none comes within `limit` (keep-alive
    /// comments are skipped).
    pub async fn next(&mut self, limit: Duration) -> anyhow::Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(message) = events(&event).into_iter().next() {
                    return Ok(Some(message));
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => anyhow::bail!("the listen stream ended"),
                Ok(Some(chunk)) => {
                    let chunk = chunk?;
                    self.buffer.push_str(&String::from_utf8_lossy(&chunk));
                }
            }
        }
    }

    /// Messages until one with `method` arrives within `limit`; the ones before it.
    pub async fn until(
        &mut self,
        method: &str,
        limit: Duration,
    ) -> anyhow::Result<(Value, Vec<Value>)> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(m) if m["method"] == method => return Ok((m, before)),
                Some(m) => before.push(m),
                None => anyhow::bail!("no {method} within {limit:?}; got {before:?}"),
            }
        }
    }
}
