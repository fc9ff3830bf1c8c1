//! The rmcp client, as a user's MCP client would talk to the gateway.
//!
//! [`connect`] gives a client without capabilities; [`connect_as`] one whose
//! [`Answering`] handler supports sampling, elicitation and roots the way a user's
//! editor would (with fixed answers) and records every notification it receives.

// Sampling, roots and logging are deprecated by SEP-2577 (protocol 2026-07-28), but
// they are what protocol versions up to 2025-11-25 use, and what is under test here.
#![allow(deprecated)]

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolResult, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequestParams, ElicitResult, ListRootsResult, LoggingMessageNotificationParam,
    ProgressNotificationParam, ProtocolVersion, ResourceUpdatedNotificationParam,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, RequestContext, RunningService,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceError, ServiceExt};
use serde_json::{json, Value};

use crate::upstream::{from_json, lock};
use crate::STEP_TIMEOUT;

/// A connected rmcp client.
pub type McpClient = RunningService<RoleClient, ()>;

/// A connected rmcp client with an [`Answering`] handler.
pub type AnsweringClient = RunningService<RoleClient, Answering>;

/// What an [`Answering`] client was asked and told, in arrival order.
#[derive(Debug, Default)]
pub struct Inbox {
    /// `(method, params)` of each server-to-client request it answered.
    pub requests: Vec<(String, Value)>,
    /// `(method, params)` of each notification.
    pub notifications: Vec<(String, Value)>,
}

/// A client handler that answers like a user would: sampling returns
/// `"sampled: <last message text>"` from model `test-model`, elicitation accepts with
/// `{"name": "gatehouse"}`, roots are `file:///work`.
#[derive(Clone, Default)]
pub struct Answering {
    pub inbox: Arc<Mutex<Inbox>>,
}

impl Answering {
    /// Notifications received so far with `method`.
    pub fn notifications(&self, method: &str) -> Vec<Value> {
        lock(&self.inbox)
            .notifications
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Server-to-client requests answered so far with `method`.
    pub fn requests(&self, method: &str) -> Vec<Value> {
        lock(&self.inbox)
            .requests
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn note_request(&self, method: &str, params: Value) {
        lock(&self.inbox).requests.push((method.to_owned(), params));
    }

    fn note(&self, method: &str, params: Value) {
        lock(&self.inbox)
            .notifications
            .push((method.to_owned(), params));
    }
}

impl ClientHandler for Answering {
    fn get_info(&self) -> ClientConfig {
        from_json(json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
            "clientInfo": {"name": "gatehouse-tests-answering", "version": "1.0.0"},
        }))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let params = serde_json::to_value(&params).unwrap_or_default();
        self.note_request("sampling/createMessage", params.clone());
        let text = params
            .pointer("/messages")
            .and_then(Value::as_array)
            .and_then(|m| m.last())
            .and_then(|m| m.pointer("/content/text"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok(from_json(json!({
            "model": "test-model",
            "role": "assistant",
            "content": {"type": "text", "text": format!("sampled: {text}")},
            "stopReason": "endTurn",
        })))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.note_request(
            "elicitation/create",
            serde_json::to_value(&request).unwrap_or_default(),
        );
        Ok(from_json(
            json!({"action": "accept", "content": {"name": "gatehouse"}}),
        ))
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        self.note_request("roots/list", json!({}));
        Ok(from_json(
            json!({"roots": [{"uri": "file:///work", "name": "work"}]}),
        ))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.note(
            "notifications/progress",
            serde_json::to_value(&params).unwrap_or_default(),
        );
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.note(
            "notifications/message",
            serde_json::to_value(&params).unwrap_or_default(),
        );
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.note(
            "notifications/resources/updated",
            serde_json::to_value(&params).unwrap_or_default(),
        );
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.note("notifications/tools/list_changed", json!({}));
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.note("notifications/prompts/list_changed", json!({}));
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.note("notifications/resources/list_changed", json!({}));
    }
}

/// Connects an rmcp client with an [`Answering`] handler to `url` with the bearer
/// `token`; the handler (and its inbox) is `client.service()`.
pub async fn connect_as(url: &str, token: &str) -> anyhow::Result<AnsweringClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let transport = StreamableHttpClientTransport::from_config(config);
    finish_connect(url, Answering::default().serve(transport)).await
}

/// Connects an rmcp client to `url` (e.g. a proxy's `/ws/<slug>`) with
/// `Authorization: Bearer <token>`, and completes `initialize`.
pub async fn connect(url: &str, token: &str) -> anyhow::Result<McpClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let transport = StreamableHttpClientTransport::from_config(config);
    finish_connect(url, ().serve(transport)).await
}

/// Connects an rmcp client of protocol 2026-07-28 to `url` with the bearer `token`:
/// `server/discover` instead of `initialize`, and no session — every request carries
/// its own version and capabilities.
pub async fn connect_stateless(url: &str, token: &str) -> anyhow::Result<McpClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let transport = StreamableHttpClientTransport::from_config(config);
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    finish_connect(url, ().serve_with_lifecycle(transport, lifecycle)).await
}

/// Connects an rmcp client to an upstream directly, without credentials.
pub async fn connect_upstream(url: &str) -> anyhow::Result<McpClient> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    finish_connect(url, ().serve(transport)).await
}

async fn finish_connect<C, E: Display>(
    url: &str,
    connecting: impl Future<Output = Result<C, E>>,
) -> anyhow::Result<C> {
    match tokio::time::timeout(STEP_TIMEOUT, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => anyhow::bail!("rmcp client could not initialize with {url}: {e}"),
        Err(_) => anyhow::bail!("rmcp client: initialize with {url} timed out"),
    }
}

/// All text content of a tool result, concatenated.
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect()
}

/// A tool result's text parsed as JSON (the upstream's echo).
pub fn echo_of(result: &CallToolResult) -> anyhow::Result<Value> {
    let text = text_of(result);
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("tool result {text:?} is not JSON: {e}"))
}

/// How a tools/call through the rmcp client ended.
#[derive(Debug)]
pub enum CallOutcome {
    Result(CallToolResult),
    /// The server answered with a JSON-RPC error.
    JsonRpcError(ErrorData),
    /// No JSON-RPC answer: transport failure, closed connection, timeout, ...
    Failed(String),
}

impl From<Result<CallToolResult, ServiceError>> for CallOutcome {
    fn from(outcome: Result<CallToolResult, ServiceError>) -> Self {
        match outcome {
            Ok(result) => CallOutcome::Result(result),
            Err(ServiceError::McpError(error)) => CallOutcome::JsonRpcError(error),
            Err(other) => CallOutcome::Failed(other.to_string()),
        }
    }
}
