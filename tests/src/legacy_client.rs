//! A hand-driven legacy HTTP+SSE client (MCP 2024-11-05): `GET` the SSE URL, read the
//! `endpoint` event, POST messages there, read answers from the stream. rmcp 3.9 has
//! no SSE client; the Python SDK's `sse_client` drives the same endpoints in the
//! interop test.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::events::{Event, EventStream};
use crate::STEP_TIMEOUT;

/// The protocol version [`LegacySession::initialize`] asks for.
pub const LEGACY_PROTOCOL_VERSION: &str = "2024-11-05";

/// An open legacy session: its stream and the URL to POST to.
pub struct LegacySession {
    pub stream: EventStream,
    /// The message URL, absolute.
    pub endpoint: String,
    /// The `endpoint` event's data as sent.
    pub endpoint_path: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl LegacySession {
    /// `GET sse_url` with the bearer token; fails unless it answers 200 with an
    /// `endpoint` event first.
    pub async fn open(sse_url: &str, token: Option<&str>) -> anyhow::Result<LegacySession> {
        let response = Self::get(sse_url, token).await?;
        anyhow::ensure!(
            response.status() == 200,
            "GET {sse_url} answered {}",
            response.status()
        );
        let mut stream = EventStream::new(response);
        let first = stream
            .next()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the stream ended before the endpoint event"))?;
        anyhow::ensure!(
            first.event.as_deref() == Some("endpoint"),
            "the first event is not `endpoint`: {first:?}"
        );
        let endpoint_path = first.data.clone().unwrap_or_default();
        let endpoint = reqwest::Url::parse(sse_url)?
            .join(&endpoint_path)?
            .to_string();
        Ok(LegacySession {
            stream,
            endpoint,
            endpoint_path,
            http: reqwest::Client::new(),
            token: token.map(str::to_owned),
        })
    }

    /// The raw `GET` of the SSE URL.
    pub async fn get(sse_url: &str, token: Option<&str>) -> anyhow::Result<reqwest::Response> {
        let mut request = reqwest::Client::new()
            .get(sse_url)
            .header("accept", "text/event-stream");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Ok(tokio::time::timeout(STEP_TIMEOUT, request.send())
            .await
            .map_err(|_| anyhow::anyhow!("GET {sse_url}: no answer"))??)
    }

    /// POSTs `message` to `url` as `token`; returns the status and body.
    pub async fn post_to(
        &self,
        url: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = tokio::time::timeout(STEP_TIMEOUT, request.send())
            .await
            .map_err(|_| anyhow::anyhow!("POST {url}: no answer"))??;
        Ok((response.status(), response.text().await?))
    }

    /// POSTs a message to the endpoint with this session's token.
    pub async fn post(&self, message: &Value) -> anyhow::Result<(StatusCode, String)> {
        self.post_to(&self.endpoint, self.token.as_deref(), message.to_string())
            .await
    }

    /// POSTs a request (expecting 202) and reads the stream until its response.
    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> anyhow::Result<Value> {
        let (status, body) = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        anyhow::ensure!(status == 202, "POST {method} answered {status}: {body}");
        Ok(self.response_to(id).await?.0)
    }

    /// Reads the stream until the response with `id`; returns it and the messages
    /// that came before it.
    pub async fn response_to(&mut self, id: u64) -> anyhow::Result<(Value, Vec<Value>)> {
        let (event, before): (Event, Vec<Event>) = self
            .stream
            .until(&format!("the response to {id}"), |e| {
                e.json().is_some_and(|m| {
                    m["id"] == json!(id) && (m.get("result").is_some() || m.get("error").is_some())
                })
            })
            .await?;
        let before = before.iter().filter_map(Event::json).collect();
        Ok((event.json().expect("checked"), before))
    }

    /// `initialize` announcing `capabilities`, then `notifications/initialized`.
    pub async fn initialize(&mut self, capabilities: Value) -> anyhow::Result<Value> {
        let init = self
            .request(
                0,
                "initialize",
                json!({
                    "protocolVersion": LEGACY_PROTOCOL_VERSION,
                    "capabilities": capabilities,
                    "clientInfo": {"name": "gatehouse-tests-legacy", "version": "1.0.0"},
                }),
            )
            .await?;
        let (status, body) = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        anyhow::ensure!(
            status == 202,
            "notifications/initialized answered {status}: {body}"
        );
        Ok(init)
    }
}
