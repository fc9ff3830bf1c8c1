//! The rmcp client, as a user's MCP client would talk to the gateway.

use std::fmt::Display;
use std::future::Future;

use rmcp::model::CallToolResult;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ErrorData, RoleClient, ServiceError, ServiceExt};
use serde_json::Value;

use crate::STEP_TIMEOUT;

/// A connected rmcp client.
pub type McpClient = RunningService<RoleClient, ()>;

/// Connects an rmcp client to `url` (e.g. a proxy's `/ws/<slug>`) with
/// `Authorization: Bearer <token>`, and completes `initialize`.
pub async fn connect(url: &str, token: &str) -> anyhow::Result<McpClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let transport = StreamableHttpClientTransport::from_config(config);
    finish_connect(url, ().serve(transport)).await
}

/// Connects an rmcp client to an upstream directly, without credentials.
pub async fn connect_upstream(url: &str) -> anyhow::Result<McpClient> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    finish_connect(url, ().serve(transport)).await
}

async fn finish_connect<E: Display>(
    url: &str,
    connecting: impl Future<Output = Result<McpClient, E>>,
) -> anyhow::Result<McpClient> {
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
