//! The demo MCP server `gatehouse up --demo` installs: a few real tools served by
//! Gatehouse itself, so a newcomer can connect an editor before installing anything.

use std::sync::Arc;

use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer};
use serde_json::{json, Value};

/// Path of the demo server on the control plane's listener.
pub const PATH: &str = "/demo/mcp";

/// The demo server's tool handler.
#[derive(Clone, Default)]
pub struct Demo;

fn schema(value: Value) -> Arc<JsonObject> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

fn tools() -> Vec<Tool> {
    let read_only = ToolAnnotations::new().read_only(true);
    vec![
        Tool::new(
            "echo",
            "Returns the text it is given.",
            schema(json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})),
        )
        .with_annotations(read_only.clone()),
        Tool::new(
            "add",
            "Adds two numbers.",
            schema(json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]})),
        )
        .with_annotations(read_only.clone()),
        Tool::new(
            "current_time",
            "The current time in UTC, RFC 3339.",
            schema(json!({"type": "object", "properties": {}})),
        )
        .with_annotations(read_only),
    ]
}

impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("gatehouse-demo", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.clone().unwrap_or_default();
        let text = match request.name.as_ref() {
            "echo" => args
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| ErrorData::invalid_params("echo needs a string \"text\"", None))?
                .to_string(),
            "add" => {
                let num = |k: &str| {
                    args.get(k).and_then(Value::as_f64).ok_or_else(|| {
                        ErrorData::invalid_params(format!("add needs a number {k:?}"), None)
                    })
                };
                (num("a")? + num("b")?).to_string()
            }
            "current_time" => crate::dates::format_rfc3339(crate::store::now()),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool {other:?}"),
                    None,
                ));
            }
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// The demo server as a service to mount at [`PATH`].
pub fn service() -> StreamableHttpService<Demo, LocalSessionManager> {
    StreamableHttpService::new(
        || Ok(Demo),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    )
}

#[cfg(test)]
mod tests {
    use crate::dates::format_rfc3339;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_772_878_320), "2026-03-07T10:12:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
