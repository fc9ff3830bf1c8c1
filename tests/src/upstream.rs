//! A real MCP server standing in for an upstream behind the gateway.
//!
//! Every tool echoes what it received (`{"server", "tool", "arguments"}` as JSON text),
//! so a test can see the name and arguments that actually reached the upstream. Some
//! tools behave specially:
//!
//! - `slow` waits `arguments.ms` milliseconds; `echo_size` answers `{"len", "sha256"}`
//!   of `arguments.text`; `fail` echoes as a tool error (`isError: true`);
//! - `sample` asks the client for a sampling (`sampling/createMessage`), `elicit` for
//!   an elicitation and `roots` for its roots, during the call, and echo the answer;
//! - `progress` sends `arguments.steps` progress notifications with the call's
//!   `progressToken` before answering;
//! - `wait_cancel` waits until the client cancels it (and records the cancellation).
//!
//! Built with [`Upstream::builder`], a server can also offer prompts, resources and
//! resource templates, paginated at a chosen page size; prompt gets, resource reads,
//! completions, subscriptions and log levels echo and are recorded. It can also run
//! without sessions ([`UpstreamBuilder::stateless`]: no GET stream). The test can make
//! the server speak first on its GET stream: [`Upstream::notify_tools_changed`],
//! [`Upstream::notify_resource_updated`], [`Upstream::log`].
//!
//! The server runs its own accept loop so [`Upstream::stop`] can close the listener and
//! every open connection at once, which is what a crashed server looks like to a client.

// Sampling, roots and logging are deprecated by SEP-2577 (protocol 2026-07-28), but
// they are what protocol versions up to 2025-11-25 use, and what is under test here.
#![allow(deprecated)]

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
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelledNotificationParam,
    CompleteRequestParams, CompleteResult, ContentBlock, CreateMessageRequestParams,
    ElicitRequestParams, GetPromptRequestParams, GetPromptResponse, GetPromptResult,
    Implementation, JsonObject, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig, SetLevelRequestParams,
    SubscribeRequestParams, Tool, ToolAnnotations, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, Peer, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::legacy_sse;

/// A tool an [`Upstream`] exposes.
#[derive(Debug, Clone)]
pub struct UpstreamTool {
    pub name: String,
    pub description: String,
    /// `annotations.readOnlyHint`; `None` leaves the annotation out.
    pub read_only_hint: Option<bool>,
    /// Its `inputSchema`; an object with any properties when `None`.
    pub input_schema: Option<Value>,
}

impl UpstreamTool {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        UpstreamTool {
            description: format!("The {name} tool"),
            name,
            read_only_hint: None,
            input_schema: None,
        }
    }

    /// Gives the tool `schema` as its `inputSchema`.
    pub fn schema(mut self, schema: Value) -> Self {
        self.input_schema = Some(schema);
        self
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
        let schema: JsonObject = self
            .input_schema
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "additionalProperties": true}))
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
    /// The POST body parsed as JSON, when it was.
    pub body: Option<Value>,
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
    /// `_meta.progressToken` of the request, as JSON.
    pub progress_token: Option<Value>,
}

#[derive(Default)]
pub(crate) struct Log {
    requests: Mutex<Vec<RecordedRequest>>,
    calls: Mutex<Vec<RecordedCall>>,
    /// `Mcp-Session-Id` values this upstream handed out.
    sessions: Mutex<Vec<String>>,
    /// Requests other than tools: (method, params as JSON).
    received: Mutex<Vec<(String, Value)>>,
    /// Request ids of `notifications/cancelled` the handler got, as JSON.
    cancelled: Mutex<Vec<Value>>,
    /// A peer per initialized session, to speak first.
    peers: Mutex<Vec<Peer<RoleServer>>>,
}

/// What an upstream offers besides tools.
#[derive(Debug, Clone, Default)]
pub(crate) struct Offer {
    /// Speaks only the session era (up to 2025-11-25): no `server/discover`.
    pub(crate) session_era_only: bool,
    pub(crate) prompts: Vec<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) templates: Vec<String>,
    /// Items per list page; `None` = everything on one page.
    pub(crate) page_size: Option<usize>,
}

/// How to build an [`Upstream`] with more than tools.
pub struct UpstreamBuilder {
    label: String,
    tools: Vec<UpstreamTool>,
    offer: Offer,
    legacy: bool,
    stateless: bool,
    /// Where to listen; an ephemeral loopback port when `None`.
    addr: Option<SocketAddr>,
}

impl UpstreamBuilder {
    /// Listens on `addr`: a server back on the address of one that stopped.
    pub fn listen_on(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    pub fn tools(mut self, tools: impl IntoIterator<Item = UpstreamTool>) -> Self {
        self.tools.extend(tools);
        self
    }

    /// Prompts by name; each takes an optional `topic` argument.
    pub fn prompts<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.offer.prompts.extend(names.into_iter().map(Into::into));
        self
    }

    /// Resources by URI; reading one echoes `{"server", "uri"}`.
    pub fn resources<S: Into<String>>(mut self, uris: impl IntoIterator<Item = S>) -> Self {
        self.offer
            .resources
            .extend(uris.into_iter().map(Into::into));
        self
    }

    /// Resource templates (RFC 6570 URI templates).
    pub fn templates<S: Into<String>>(mut self, templates: impl IntoIterator<Item = S>) -> Self {
        self.offer
            .templates
            .extend(templates.into_iter().map(Into::into));
        self
    }

    /// Lists (tools, prompts, resources, templates) come `n` items per page.
    pub fn page_size(mut self, n: usize) -> Self {
        self.offer.page_size = Some(n.max(1));
        self
    }

    /// Speak the legacy HTTP+SSE transport (MCP 2024-11-05) instead of Streamable
    /// HTTP: [`Upstream::url`] is then the SSE endpoint, `/sse`.
    pub fn legacy_sse(mut self) -> Self {
        self.legacy = true;
        self
    }

    /// Streamable HTTP without sessions, answering `application/json`, as rmcp's
    /// stateless mode does (`NeverSessionManager`, `legacy_session_mode = false`): no
    /// `Mcp-Session-Id`, and a GET is answered 405 (no server-to-client stream).
    pub fn stateless(mut self) -> Self {
        self.stateless = true;
        self
    }

    /// Speaks protocol versions up to 2025-11-25 only, as a server written before
    /// 2026-07-28 does: `initialize` and sessions, no `server/discover`.
    pub fn up_to_2025(mut self) -> Self {
        self.offer.session_era_only = true;
        self
    }

    pub async fn start(self) -> anyhow::Result<Upstream> {
        Upstream::launch(self).await
    }
}

/// A running MCP server on `127.0.0.1:<ephemeral>`, endpoint `/mcp`.
pub struct Upstream {
    label: String,
    addr: SocketAddr,
    log: Arc<Log>,
    tools: Arc<Mutex<Vec<UpstreamTool>>>,
    /// Sessions of a Streamable HTTP server; `None` for a stateless or legacy one.
    sessions: Option<Arc<LocalSessionManager>>,
    /// Sessions of a legacy SSE server; `None` for Streamable HTTP.
    legacy: Option<legacy_sse::Sessions>,
    shutdown: CancellationToken,
    accept_loop: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts a server named `label` exposing `tools` in the given order.
    pub async fn start(
        label: impl Into<String>,
        tools: impl IntoIterator<Item = UpstreamTool>,
    ) -> anyhow::Result<Upstream> {
        Self::builder(label).tools(tools).start().await
    }

    /// A server with prompts, resources or pagination.
    pub fn builder(label: impl Into<String>) -> UpstreamBuilder {
        UpstreamBuilder {
            label: label.into(),
            tools: Vec::new(),
            offer: Offer::default(),
            legacy: false,
            stateless: false,
            addr: None,
        }
    }

    async fn launch(built: UpstreamBuilder) -> anyhow::Result<Upstream> {
        let UpstreamBuilder {
            label,
            tools,
            offer,
            legacy,
            stateless,
            addr,
        } = built;
        let log = Arc::new(Log::default());
        let tools = Arc::new(Mutex::new(tools));
        let handler = Echo {
            label: label.clone(),
            tools: tools.clone(),
            offer: Arc::new(offer),
            log: log.clone(),
        };
        let shutdown = CancellationToken::new();
        let legacy_sessions = legacy.then(legacy_sse::Sessions::default);
        let sessions = (!legacy && !stateless).then(|| Arc::new(LocalSessionManager::default()));
        let config = StreamableHttpServerConfig::default()
            .with_cancellation_token(shutdown.child_token())
            // Bodies up to the gateway's own limit must reach the tool.
            .with_max_request_body_bytes(16 * 1024 * 1024);
        let router = match (&legacy_sessions, &sessions) {
            (Some(live), _) => legacy_sse::router(handler, live.clone()),
            (None, Some(sessions)) => {
                let service: StreamableHttpService<Echo, LocalSessionManager> =
                    StreamableHttpService::new(
                        move || Ok(handler.clone()),
                        sessions.clone(),
                        config,
                    );
                Router::new().nest_service("/mcp", service)
            }
            (None, None) => {
                let service: StreamableHttpService<Echo, NeverSessionManager> =
                    StreamableHttpService::new(
                        move || Ok(handler.clone()),
                        Arc::new(NeverSessionManager::default()),
                        config
                            .with_legacy_session_mode(false)
                            .with_json_response(true),
                    );
                Router::new().nest_service("/mcp", service)
            }
        };
        let router = router.layer(axum::middleware::from_fn_with_state(log.clone(), record));

        let listener = match addr {
            Some(addr) => tokio::net::TcpListener::bind(addr).await?,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        let addr = listener.local_addr()?;
        let accept_loop = tokio::spawn(serve(listener, router));
        Ok(Upstream {
            label,
            addr,
            log,
            tools,
            sessions,
            legacy: legacy_sessions,
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

    /// The MCP endpoint, e.g. `http://127.0.0.1:41234/mcp` (`/sse` for a legacy
    /// SSE server).
    pub fn url(&self) -> String {
        match self.legacy {
            Some(_) => format!("http://{}/sse", self.addr),
            None => format!("http://{}/mcp", self.addr),
        }
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

    /// Params of every request other than tools the handler received with `method`.
    pub fn received(&self, method: &str) -> Vec<Value> {
        lock(&self.log.received)
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Request ids the handler was told (`notifications/cancelled`) to cancel.
    pub fn cancelled(&self) -> Vec<Value> {
        lock(&self.log.cancelled).clone()
    }

    /// Session ids this upstream issued.
    pub fn issued_sessions(&self) -> Vec<String> {
        lock(&self.log.sessions).clone()
    }

    /// Replaces the tool list (tools/list answers the new one from now on).
    pub fn set_tools(&self, tools: impl IntoIterator<Item = UpstreamTool>) {
        *lock(&self.tools) = tools.into_iter().collect();
    }

    fn peers(&self) -> Vec<Peer<RoleServer>> {
        lock(&self.log.peers).clone()
    }

    /// Sends `notifications/tools/list_changed` to every session (on its GET stream).
    pub async fn notify_tools_changed(&self) {
        for peer in self.peers() {
            let _ = peer.notify_tool_list_changed().await;
        }
    }

    /// Sends `notifications/resources/updated` for `uri` to every session.
    pub async fn notify_resource_updated(&self, uri: &str) {
        for peer in self.peers() {
            let _ = peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                .await;
        }
    }

    /// Sends `notifications/message` (level info, `data` = `text`) to every session.
    #[allow(deprecated)]
    pub async fn log(&self, text: &str) {
        for peer in self.peers() {
            let _ = peer
                .notify_logging_message(from_json(json!({"level": "info", "data": text})))
                .await;
        }
    }

    /// Asks every session's client for a sampling, outside any request (so on the GET
    /// stream); returns the texts the clients answered.
    #[allow(deprecated)]
    pub async fn sample_unprompted(&self, prompt: &str) -> Vec<anyhow::Result<String>> {
        let mut out = Vec::new();
        for peer in self.peers() {
            let answer = peer
                .create_message(sampling_params(prompt))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| Ok(serde_json::to_value(&r)?))
                .map(|v| {
                    v.pointer("/content/text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                });
            out.push(answer);
        }
        out
    }

    /// Ends every session, as a server does when it restarts or expires sessions:
    /// later requests carrying an old `Mcp-Session-Id` get `404`.
    ///
    /// Panics on a [stateless](UpstreamBuilder::stateless) server: it has none.
    pub async fn forget_sessions(&self) {
        if let Some(live) = &self.legacy {
            // Dropping the way in ends each rmcp service, and with it its stream.
            lock(live).clear();
            return;
        }
        let Some(sessions) = &self.sessions else {
            panic!(
                "forget_sessions: upstream {:?} is stateless and has no sessions",
                self.label
            );
        };
        let ids: Vec<_> = sessions.sessions.read().await.keys().cloned().collect();
        for id in ids {
            let _ = sessions.close_session(&id).await;
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An rmcp model value from its JSON form: the wire format is the stable contract.
pub(crate) fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid MCP model value")
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn sampling_params(prompt: &str) -> CreateMessageRequestParams {
    from_json(json!({
        "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
        "maxTokens": 100,
    }))
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which aborts every
/// connection task, so the server disappears at once rather than draining.
pub(crate) async fn serve(listener: tokio::net::TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // An event stream goes out in several writes: without this, Nagle
                // and the peer's delayed ACK hold a reply's tail for 40 ms.
                let _ = stream.set_nodelay(true);
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
pub(crate) async fn record(State(log): State<Arc<Log>>, request: Request, next: Next) -> Response {
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
    let body = serde_json::from_slice::<Value>(&bytes).ok();
    let rpc_method = body
        .as_ref()
        .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_owned));
    lock(&log.requests).push(RecordedRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        rpc_method,
        body,
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

/// The MCP handler.
#[derive(Clone)]
pub(crate) struct Echo {
    pub(crate) label: String,
    pub(crate) tools: Arc<Mutex<Vec<UpstreamTool>>>,
    pub(crate) offer: Arc<Offer>,
    pub(crate) log: Arc<Log>,
}

impl Echo {
    fn note(&self, method: &str, params: Value) {
        lock(&self.log.received).push((method.to_owned(), params));
    }

    /// One page of `items` after `cursor` (an index), with the next cursor.
    fn page<T: Clone>(
        &self,
        items: &[T],
        request: Option<&PaginatedRequestParams>,
    ) -> (Vec<T>, Option<String>) {
        let start = request
            .and_then(|r| r.cursor.as_deref())
            .and_then(|c| c.strip_prefix("at-"))
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(0)
            .min(items.len());
        let end = match self.offer.page_size {
            Some(n) => (start + n).min(items.len()),
            None => items.len(),
        };
        let next = (end < items.len()).then(|| format!("at-{end}"));
        (items[start..end].to_vec(), next)
    }

    fn echo(&self, tool: &str, arguments: &Value) -> Value {
        json!({"server": self.label, "tool": tool, "arguments": arguments})
    }

    #[allow(deprecated)]
    async fn run_tool(
        &self,
        name: &str,
        arguments: &Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, ErrorData> {
        Ok(match name {
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
                self.echo(name, arguments)
            }
            "sample" => {
                let prompt = arguments
                    .get("prompt")
                    .and_then(Value::as_str)
                    .unwrap_or("hello");
                let result = context
                    .peer
                    .create_message(sampling_params(prompt))
                    .await
                    .map_err(|e| {
                        ErrorData::internal_error(format!("sampling failed: {e}"), None)
                    })?;
                json!({"server": self.label, "tool": name, "sampled": to_json(&result)})
            }
            "elicit" => {
                let params: ElicitRequestParams = from_json(json!({
                    "mode": "form",
                    "message": arguments.get("message").and_then(Value::as_str).unwrap_or("Who are you?"),
                    "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}},
                }));
                let result = context.peer.create_elicitation(params).await.map_err(|e| {
                    ErrorData::internal_error(format!("elicitation failed: {e}"), None)
                })?;
                json!({"server": self.label, "tool": name, "elicited": to_json(&result)})
            }
            "roots" => {
                let result = context.peer.list_roots().await.map_err(|e| {
                    ErrorData::internal_error(format!("roots/list failed: {e}"), None)
                })?;
                json!({"server": self.label, "tool": name, "roots": to_json(&result)})
            }
            "progress" => {
                let steps = arguments.get("steps").and_then(Value::as_u64).unwrap_or(3);
                if let Some(token) = context.meta.get_progress_token() {
                    for step in 1..=steps {
                        let param: ProgressNotificationParam = from_json(json!({
                            "progressToken": token,
                            "progress": step,
                            "total": steps,
                            "message": format!("{} step {step}", self.label),
                        }));
                        let _ = context.peer.notify_progress(param).await;
                    }
                }
                self.echo(name, arguments)
            }
            "wait_cancel" => {
                tokio::select! {
                    _ = context.ct.cancelled() => json!({"server": self.label, "tool": name, "cancelled": true}),
                    _ = tokio::time::sleep(Duration::from_secs(60)) => json!({"server": self.label, "tool": name, "cancelled": false}),
                }
            }
            _ => self.echo(name, arguments),
        })
    }
}

#[allow(deprecated)]
impl ServerHandler for Echo {
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(if self.offer.session_era_only {
            ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25)
        } else {
            ProtocolVersion::KNOWN_VERSIONS
        })
    }

    fn get_info(&self) -> ServerConfig {
        let mut capabilities = json!({"tools": {"listChanged": true}, "logging": {}});
        if !self.offer.prompts.is_empty() {
            capabilities["prompts"] = json!({"listChanged": true});
            capabilities["completions"] = json!({});
        }
        if !self.offer.resources.is_empty() || !self.offer.templates.is_empty() {
            capabilities["resources"] = json!({"listChanged": true, "subscribe": true});
            capabilities["completions"] = json!({});
        }
        let capabilities: ServerCapabilities = from_json(capabilities);
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            format!("upstream-{}", self.label),
            "1.0.0",
        ))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        lock(&self.log.peers).push(context.peer.clone());
    }

    async fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        _context: NotificationContext<RoleServer>,
    ) {
        let id = to_json(&notification)
            .get("requestId")
            .cloned()
            .unwrap_or(Value::Null);
        lock(&self.log.cancelled).push(id);
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools: Vec<Tool> = lock(&self.tools)
            .iter()
            .map(UpstreamTool::to_tool)
            .collect();
        let (page, next) = self.page(&tools, request.as_ref());
        let mut result = ListToolsResult::with_all_items(page);
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let name = request.name.to_string();
        lock(&self.log.calls).push(RecordedCall {
            tool: name.clone(),
            arguments: arguments.clone(),
            progress_token: context.meta.get_progress_token().map(|t| to_json(&t)),
        });
        if !lock(&self.tools).iter().any(|t| t.name == name) {
            return Err(ErrorData::invalid_params(
                format!("upstream {:?} has no tool {name:?}", self.label),
                None,
            ));
        }
        let text = self.run_tool(&name, &arguments, &context).await?;
        if name == "fail" {
            // The tool ran and reports a failure: a result with `isError: true`.
            return Ok(CallToolResult::error(vec![ContentBlock::text(text.to_string())]).into());
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(text.to_string())]).into())
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.note("prompts/list", to_json(&request));
        let (page, next) = self.page(&self.offer.prompts, request.as_ref());
        let prompts: Vec<Value> = page
            .iter()
            .map(|name| {
                json!({
                    "name": name,
                    "description": format!("The {name} prompt of {}", self.label),
                    "arguments": [{"name": "topic", "required": false}],
                })
            })
            .collect();
        Ok(from_json(json!({"prompts": prompts, "nextCursor": next})))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let params = to_json(&request);
        self.note("prompts/get", params.clone());
        let name = params["name"].as_str().unwrap_or_default();
        if !self.offer.prompts.iter().any(|p| p == name) {
            return Err(ErrorData::invalid_params(
                format!("no prompt {name:?}"),
                None,
            ));
        }
        let echo =
            json!({"server": self.label, "prompt": name, "arguments": params.get("arguments")});
        let result: GetPromptResult = from_json(json!({
            "description": format!("The {name} prompt"),
            "messages": [
                {"role": "user", "content": {"type": "text", "text": echo.to_string()}},
                {"role": "user", "content": {"type": "resource", "resource": {
                    "uri": format!("prompt://{name}/context"), "text": "context"}}},
            ],
        }));
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.note("resources/list", to_json(&request));
        let (page, next) = self.page(&self.offer.resources, request.as_ref());
        let resources: Vec<Value> = page
            .iter()
            .map(|uri| json!({"uri": uri, "name": uri, "mimeType": "text/plain"}))
            .collect();
        Ok(from_json(
            json!({"resources": resources, "nextCursor": next}),
        ))
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.note("resources/templates/list", to_json(&request));
        let (page, next) = self.page(&self.offer.templates, request.as_ref());
        let templates: Vec<Value> = page
            .iter()
            .map(|t| json!({"uriTemplate": t, "name": t}))
            .collect();
        Ok(from_json(
            json!({"resourceTemplates": templates, "nextCursor": next}),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let params = to_json(&request);
        self.note("resources/read", params.clone());
        let uri = params["uri"].as_str().unwrap_or_default().to_owned();
        if uri.starts_with("missing:") {
            return Err(ErrorData::new(
                rmcp::model::ErrorCode(-32002),
                format!("Resource not found: {uri}"),
                None,
            ));
        }
        let text = json!({"server": self.label, "uri": uri}).to_string();
        let result: ReadResourceResult = from_json(json!({
            "contents": [{"uri": uri, "mimeType": "application/json", "text": text}],
        }));
        Ok(result.into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.note("resources/subscribe", to_json(&request));
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.note("resources/unsubscribe", to_json(&request));
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let params = to_json(&request);
        self.note("completion/complete", params.clone());
        let target = params
            .pointer("/ref/name")
            .or_else(|| params.pointer("/ref/uri"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let value = params
            .pointer("/argument/value")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok(from_json(json!({"completion": {
            "values": [format!("{}:{target}:{value}", self.label)],
            "hasMore": false,
        }})))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.note("logging/setLevel", to_json(&request));
        Ok(())
    }
}
