//! A stdio MCP server (rmcp's stdio transport) for the hosted-server tests: what a
//! user installs with `gatehouse mcp install --command ...`.
//!
//! Tools: `echo` (its arguments back, as JSON text), `env` (the value of the
//! variable `name`), `pid` (its process id), `slow` (waits `ms`, then echoes),
//! `crash` (waits `ms`, then exits with status 3 without answering), `progress`
//! (`steps` progress notifications saying `<who> step <n>`, then its arguments),
//! `sample` (asks its client to sample `prompt`, returns what the client answered),
//! `changed` (announces `notifications/tools/list_changed`).
//!
//! Flags, for the failures a runner must survive: `--garbage` writes a line that is
//! not JSON-RPC to stdout before anything else; `--mute` never answers at all;
//! `--say-env NAME` writes `NAME=<its value>` to stderr at start (a server that
//! logs its secret); `--chatty N` writes N lines to stderr at start.

// Sampling is deprecated by SEP-2577 (protocol 2026-07-28), but it is what the session
// era the runner speaks uses, and what is under test here.
#![allow(deprecated)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    CreateMessageRequestParams, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

struct Fixture;

const TOOLS: &[(&str, &str)] = &[
    ("echo", "Returns its arguments as JSON text"),
    (
        "env",
        "Returns the value of the environment variable `name`",
    ),
    ("pid", "Returns the server's process id"),
    (
        "slow",
        "Waits `ms` milliseconds, then returns its arguments",
    ),
    (
        "crash",
        "Waits `ms` milliseconds, then exits without answering",
    ),
    (
        "progress",
        "Sends `steps` progress notifications, then returns its arguments",
    ),
    (
        "sample",
        "Asks the client to sample `prompt`; returns the client's answer",
    ),
    ("changed", "Announces that its tool list changed"),
];

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        let capabilities: ServerCapabilities =
            serde_json::from_value(json!({"tools": {"listChanged": true}})).expect("capabilities");
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("stdio-fixture", "1.0.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema: JsonObject = json!({"type": "object", "additionalProperties": true})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let schema = Arc::new(schema);
        let tools = TOOLS
            .iter()
            .map(|(name, description)| Tool::new(*name, *description, schema.clone()))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let wait = Duration::from_millis(arguments["ms"].as_u64().unwrap_or(0));
        let answer = match request.name.as_ref() {
            "echo" => arguments,
            "env" => {
                let name = arguments["name"].as_str().unwrap_or_default();
                json!({"name": name, "value": std::env::var(name).ok()})
            }
            "pid" => json!({"pid": std::process::id()}),
            "slow" => {
                tokio::time::sleep(wait).await;
                arguments
            }
            "progress" => {
                let steps = arguments["steps"].as_u64().unwrap_or(3);
                let who = arguments["who"].as_str().unwrap_or_default().to_owned();
                if let Some(token) = context.meta.get_progress_token() {
                    for step in 1..=steps {
                        let param: ProgressNotificationParam = serde_json::from_value(json!({
                            "progressToken": token,
                            "progress": step,
                            "total": steps,
                            "message": format!("{who} step {step}"),
                        }))
                        .expect("progress");
                        let _ = context.peer.notify_progress(param).await;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                arguments
            }
            "sample" => {
                let prompt = arguments["prompt"].as_str().unwrap_or("hello");
                let params: CreateMessageRequestParams = serde_json::from_value(json!({
                    "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
                    "maxTokens": 100,
                }))
                .expect("sampling params");
                let result = context.peer.create_message(params).await.map_err(|e| {
                    ErrorData::internal_error(format!("sampling failed: {e}"), None)
                })?;
                json!({"sampled": serde_json::to_value(&result).unwrap_or_default()})
            }
            "changed" => {
                let _ = context.peer.notify_tool_list_changed().await;
                json!({"announced": true})
            }
            "crash" => {
                tokio::time::sleep(wait).await;
                std::process::exit(3);
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool {other:?}"),
                    None,
                ))
            }
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(answer.to_string())]).into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--say-env") {
        let name = args.get(i + 1).map(String::as_str).unwrap_or_default();
        eprintln!("{name}={}", std::env::var(name).unwrap_or_default());
    }
    if let Some(i) = args.iter().position(|a| a == "--chatty") {
        let lines: u32 = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(100);
        for n in 0..lines {
            eprintln!("chatty line {n}");
        }
    }
    eprintln!("stdio-fixture ready (pid {})", std::process::id());
    if args.iter().any(|a| a == "--mute") {
        // Reads what it is sent and never answers.
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut tokio::io::stdin(), &mut sink).await?;
        return Ok(());
    }
    if args.iter().any(|a| a == "--garbage") {
        let mut out = std::io::stdout();
        writeln!(out, "starting up... this line is not JSON-RPC")?;
        out.flush()?;
    }
    let service = Fixture.serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
