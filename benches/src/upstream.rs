//! The MCP servers every measurement ends at, on `127.0.0.1:<ephemeral>/mcp`, all on
//! one dedicated tokio runtime (one worker unless asked for more) so the proxy and the
//! load generator keep the other CPU time: real rmcp Streamable HTTP servers, or the
//! `fast` ones of [`crate::fast_upstream`], which answer the same bodies for a fraction
//! of the CPU.
//!
//! Each server exposes `echo` (answers its arguments as JSON text) plus a number of
//! filler tools that answer the same way; the filler tools only exist to make
//! `tools/list` realistic in size.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// How the upstream speaks Streamable HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamMode {
    /// No sessions (`legacy_session_mode = false`) and `application/json` answers
    /// (`json_response = true`): the cheapest path rmcp offers, so the upstream is as
    /// small a share of the measurement as it can be.
    StatelessJson,
    /// rmcp's defaults: an `Mcp-Session-Id` per client and `text/event-stream` answers,
    /// which is what most deployed servers do.
    SessionSse,
}

/// Which server implementation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamKind {
    /// rmcp's Streamable HTTP server, answering as `--upstream-mode` says.
    Rmcp,
    /// A minimal hyper HTTP/1.1 server: sessions, JSON answers with the rmcp
    /// server's bodies, far less CPU per call.
    Fast,
}

/// The servers of one run, and the runtime they live on.
pub struct UpstreamFleet {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    addrs: Vec<SocketAddr>,
}

impl UpstreamFleet {
    /// Starts `count` rmcp servers in `mode` on one worker thread, each exposing `echo`
    /// and `tools_each - 1` filler tools.
    pub async fn start(
        count: usize,
        tools_each: usize,
        mode: UpstreamMode,
    ) -> anyhow::Result<UpstreamFleet> {
        Self::start_kind(UpstreamKind::Rmcp, count, tools_each, mode, 1).await
    }

    /// Starts `count` servers of `kind` (`mode` is rmcp's; the fast server has one way
    /// of answering) on a runtime of `threads` workers, each exposing `echo` and
    /// `tools_each - 1` filler tools.
    pub async fn start_kind(
        kind: UpstreamKind,
        count: usize,
        tools_each: usize,
        mode: UpstreamMode,
        threads: usize,
    ) -> anyhow::Result<UpstreamFleet> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("bench-upstream")
            .enable_all()
            .build()?;
        let shutdown = CancellationToken::new();
        let mut addrs = Vec::with_capacity(count);
        for i in 0..count {
            let label = format!("s{i}");
            let tools = tool_set(tools_each);
            let ct = shutdown.child_token();
            let addr = match kind {
                UpstreamKind::Rmcp => {
                    runtime
                        .spawn(async move { serve(label, Arc::new(tools), mode, ct).await })
                        .await??
                }
                UpstreamKind::Fast => {
                    runtime
                        .spawn(crate::fast_upstream::serve(label, tools, ct))
                        .await??
                }
            };
            addrs.push(addr);
        }
        Ok(UpstreamFleet {
            runtime: Some(runtime),
            shutdown,
            addrs,
        })
    }

    /// The MCP endpoint of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}/mcp", self.addrs[i])
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }
}

impl Drop for UpstreamFleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Dropping a runtime blocks, which panics inside the harness's own runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve(
    label: String,
    tools: Arc<Vec<Tool>>,
    mode: UpstreamMode,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let handler = BenchServer { label, tools };
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .with_sse_keep_alive(None);
    let router = match mode {
        UpstreamMode::StatelessJson => {
            let service: StreamableHttpService<BenchServer, NeverSessionManager> =
                StreamableHttpService::new(
                    move || Ok(handler.clone()),
                    Arc::new(NeverSessionManager::default()),
                    config
                        .with_legacy_session_mode(false)
                        .with_json_response(true),
                );
            axum::Router::new().nest_service("/mcp", service)
        }
        UpstreamMode::SessionSse => {
            let service: StreamableHttpService<BenchServer, LocalSessionManager> =
                StreamableHttpService::new(
                    move || Ok(handler.clone()),
                    Arc::new(LocalSessionManager::default()),
                    config,
                );
            axum::Router::new().nest_service("/mcp", service)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Without TCP_NODELAY an SSE answer (headers, then events, in separate writes) waits
    // on the client's delayed ACK: ~40 ms per call.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
            .await;
    });
    Ok(addr)
}

/// `echo` first, then filler tools `tool_001`.. up to `total` tools in all.
pub fn tool_set(total: usize) -> Vec<Tool> {
    let schema = |props: Value| -> Arc<JsonObject> {
        Arc::new(
            json!({"type": "object", "properties": props, "additionalProperties": true})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
    };
    let mut tools = vec![Tool::new(
        "echo",
        "Answers its arguments as JSON text.",
        schema(json!({"text": {"type": "string", "description": "Anything."}})),
    )];
    for i in 1..total {
        tools.push(Tool::new(
            format!("tool_{i:03}"),
            format!("Filler tool number {i}: looks up a record by id and returns it."),
            schema(json!({
                "id": {"type": "string", "description": "Record id."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100}
            })),
        ));
    }
    tools
}

#[derive(Clone)]
struct BenchServer {
    label: String,
    tools: Arc<Vec<Tool>>,
}

/// What a bench server named `label` says of itself at `initialize`.
pub fn server_info(label: &str) -> ServerConfig {
    ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        .with_server_info(Implementation::new(format!("bench-{label}"), "1.0.0"))
}

impl ServerHandler for BenchServer {
    fn get_info(&self) -> ServerConfig {
        server_info(&self.label)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tools.iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("no tool {:?} on {}", request.name, self.label),
                None,
            ));
        }
        let arguments = request.arguments.unwrap_or_default();
        let text = serde_json::to_string(&arguments).unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        let name: Cow<str> = Cow::Borrowed(name);
        self.tools.iter().find(|t| t.name == name).cloned()
    }
}
