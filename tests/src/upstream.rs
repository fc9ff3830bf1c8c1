//! A real MCP server standing in for an upstream behind the gateway.
//!
//! Every tool echoes what it received (`{"server", "tool", "arguments"}` as JSON text),
//! so a test can see the name and arguments that actually reached the upstream. Two
//! tools behave specially: `slow` waits `arguments.ms` milliseconds before answering,
//! and `echo_size` answers `{"len", "sha256"}` of `arguments.text` instead of echoing it.
//!
//! The server runs its own accept loop so [`Upstream::stop`] can close the listener and
//! every open connection at once, which is what a crashed server looks like to a client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// A tool an [`Upstream`] exposes.
#[derive(Debug, Clone)]
pub struct UpstreamTool {
    pub name: String,
    pub description: String,
    /// `annotations.readOnlyHint`; `None` leaves the annotation out.
    pub read_only_hint: Option<bool>,
}

impl UpstreamTool {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        UpstreamTool {
            description: format!("The {name} tool"),
            name,
            read_only_hint: None,
        }
    }

    /// Annotates the tool `readOnlyHint: value`.
    pub fn read_only(mut self, value: bool) -> Self {
        self.read_only_hint = Some(value);
        self
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    fn to_tool(&self) -> Tool {
        let schema: JsonObject = json!({"type": "object", "additionalProperties": true})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let tool = Tool::new(
            self.name.clone(),
            self.description.clone(),
            Arc::new(schema),
        );
        match self.read_only_hint {
            Some(hint) => tool.with_annotations(ToolAnnotations::new().read_only(hint)),
            None => tool,
        }
    }
}

/// One HTTP request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: http::Method,
    pub path: String,
    pub headers: http::HeaderMap,
    /// The JSON-RPC `method` of a POST body, when it had one.
    pub rpc_method: Option<String>,
}

impl RecordedRequest {
    /// The header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One `tools/call` as the upstream's handler received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    pub tool: String,
    pub arguments: Value,
}

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<RecordedRequest>>,
    calls: Mutex<Vec<RecordedCall>>,
    /// `Mcp-Session-Id` values this upstream handed out.
    sessions: Mutex<Vec<String>>,
}

/// A running MCP server on `127.0.0.1:<ephemeral>`, endpoint `/mcp`.
pub struct Upstream {
    label: String,
    addr: SocketAddr,
    log: Arc<Log>,
    sessions: Arc<LocalSessionManager>,
    shutdown: CancellationToken,
    accept_loop: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts a server named `label` exposing `tools` in the given order.
    pub async fn start(
        label: impl Into<String>,
        tools: impl IntoIterator<Item = UpstreamTool>,
    ) -> anyhow::Result<Upstream> {
        let label = label.into();
        let log = Arc::new(Log::default());
        let handler = ToolEcho {
            label: label.clone(),
            tools: Arc::new(tools.into_iter().collect()),
            log: log.clone(),
        };
        let sessions = Arc::new(LocalSessionManager::default());
        let shutdown = CancellationToken::new();
        let service: StreamableHttpService<ToolEcho, LocalSessionManager> =
            StreamableHttpService::new(
                move || Ok(handler.clone()),
                sessions.clone(),
                StreamableHttpServerConfig::default()
                    .with_cancellation_token(shutdown.child_token())
                    // Bodies up to the gateway's own limit must reach the tool.
                    .with_max_request_body_bytes(16 * 1024 * 1024),
            );
        let router = Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn_with_state(log.clone(), record));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept_loop = tokio::spawn(serve(listener, router));
        Ok(Upstream {
            label,
            addr,
            log,
            sessions,
            shutdown,
            accept_loop: Some(accept_loop),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint, e.g. `http://127.0.0.1:41234/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Every HTTP request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.log.requests).clone()
    }

    /// Requests whose JSON-RPC method is `method`.
    pub fn requests_for(&self, method: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.rpc_method.as_deref() == Some(method))
            .collect()
    }

    /// Every `tools/call` the handler received so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.log.calls).clone()
    }

    /// Session ids this upstream issued.
    pub fn issued_sessions(&self) -> Vec<String> {
        lock(&self.log.sessions).clone()
    }

    /// Ends every session, as a server does when it restarts or expires sessions:
    /// later requests carrying an old `Mcp-Session-Id` get `404`.
    pub async fn forget_sessions(&self) {
        let ids: Vec<_> = self
            .sessions
            .sessions
            .read()
            .await
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.sessions.close_session(&id).await;
        }
    }

    /// Closes the listener and every open connection; new connections are refused.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.accept_loop.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.accept_loop.take() {
            task.abort();
        }
        // Shown only when the test fails (libtest captures it otherwise).
        let requests = lock(&self.log.requests);
        eprintln!(
            "--- upstream {:?} at {} received {} request(s):",
            self.label,
            self.addr,
            requests.len()
        );
        for r in requests.iter() {
            eprintln!(
                "    {} {} {}",
                r.method,
                r.path,
                r.rpc_method.as_deref().unwrap_or("-")
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which aborts every
/// connection task, so the server disappears at once rather than draining.
async fn serve(listener: tokio::net::TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Records the request line, headers and JSON-RPC method, then passes the request on.
async fn record(State(log): State<Arc<Log>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return Response::builder()
                .status(400)
                .body(Body::from(format!("cannot read body: {e}")))
                .unwrap_or_default()
        }
    };
    let rpc_method = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_owned));
    lock(&log.requests).push(RecordedRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        rpc_method,
    });
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if let Some(id) = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        lock(&log.sessions).push(id.to_owned());
    }
    response
}

/// The MCP handler: lists the configured tools and echoes calls.
#[derive(Clone)]
struct ToolEcho {
    label: String,
    tools: Arc<Vec<UpstreamTool>>,
    log: Arc<Log>,
}

impl ServerHandler for ToolEcho {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new(format!("upstream-{}", self.label), "1.0.0"),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.tools.iter().map(UpstreamTool::to_tool).collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let name = request.name.to_string();
        lock(&self.log.calls).push(RecordedCall {
            tool: name.clone(),
            arguments: arguments.clone(),
        });
        if !self.tools.iter().any(|t| t.name == name) {
            return Err(ErrorData::invalid_params(
                format!("upstream {:?} has no tool {name:?}", self.label),
                None,
            ));
        }
        let text = match name.as_str() {
            "echo_size" => {
                let text = arguments.get("text").and_then(Value::as_str).unwrap_or("");
                json!({
                    "len": text.len(),
                    "sha256": hex::encode(Sha256::digest(text.as_bytes())),
                })
            }
            "slow" => {
                let ms = arguments.get("ms").and_then(Value::as_u64).unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json!({"server": self.label, "tool": name, "arguments": arguments})
            }
            _ => json!({"server": self.label, "tool": name, "arguments": arguments}),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text.to_string())]).into())
    }
}
