//! The `fast` bench upstream: a minimal MCP server written straight on hyper (HTTP/1.1
//! only), answering exactly the traffic the load scenarios send, with the bodies the
//! rmcp upstream ([`crate::upstream`]) answers. rmcp's server costs about as much CPU
//! per call as the proxy under test, so with it a throughput figure partly measures
//! the upstream; this one does the least a correct server can.
//!
//! What it answers on `POST /mcp`:
//! - `initialize`: the rmcp upstream's server info and capabilities (tools only), the
//!   client's protocol version, and a new `Mcp-Session-Id`;
//! - notifications and responses: `202`, no body;
//! - `tools/list`: every tool in one page, serialised once at start;
//! - `tools/call` of one of its tools: the arguments as JSON text, as rmcp's echo
//!   answers (an unknown tool: the same `-32602` error);
//! - `ping`: `{}`; any other method: `-32601`.
//!
//! Every request but `initialize` must carry an `Mcp-Session-Id` (`400` otherwise);
//! ids are not remembered, any one is accepted. Unless started as a server of the
//! session era only ([`serve_era`]), it also speaks MCP 2026-07-28: `server/discover`,
//! and requests without a session that carry `MCP-Protocol-Version: 2026-07-28`,
//! whose results say `resultType` (and, on `tools/list`, caching hints). `DELETE` answers `204`, `GET` `405`
//! (no server-to-client stream, as with the stateless rmcp upstream). Replies carry a
//! `Content-Length`, never chunks; sockets have `TCP_NODELAY`.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rmcp::model::{ListToolsResult, Tool};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const MODERN: &str = "2026-07-28";
const JSON: &str = "application/json";

/// What one server answers with: its name and tools, and the parts of its replies
/// that never change, serialised once.
struct FastServer {
    label: String,
    tools: Vec<Tool>,
    /// The `result` of `tools/list`.
    tools_list: Vec<u8>,
    /// The `result` of `tools/list` for a 2026-07-28 request.
    tools_list_modern: Vec<u8>,
    /// The `result` of `initialize`, less `protocolVersion`.
    initialize: Value,
    /// The `result` of `server/discover`; `None` for a server of the session era only.
    discover: Option<Vec<u8>>,
    sessions: AtomicU64,
}

/// Serves `label` with `tools` on `127.0.0.1:<ephemeral>` until `shutdown`, on the
/// runtime this is called on, speaking both protocol eras; returns the address once
/// it listens.
pub async fn serve(
    label: String,
    tools: Vec<Tool>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    serve_era(label, tools, shutdown, true).await
}

/// [`serve`], speaking the stateless era of 2026-07-28 too when `modern`.
pub async fn serve_era(
    label: String,
    tools: Vec<Tool>,
    shutdown: CancellationToken,
    modern: bool,
) -> anyhow::Result<SocketAddr> {
    let mut initialize = serde_json::to_value(crate::upstream::server_info(&label))?;
    if let Some(fields) = initialize.as_object_mut() {
        fields.remove("protocolVersion");
    }
    // rmcp leaves `resultType` out for peers older than protocol 2026-07-28, which
    // every version the gateway speaks is.
    let mut tools_list = serde_json::to_value(ListToolsResult::with_all_items(tools.clone()))?;
    if let Some(fields) = tools_list.as_object_mut() {
        fields.remove("resultType");
    }
    let mut tools_list_modern = tools_list.clone();
    tools_list_modern["resultType"] = Value::from("complete");
    tools_list_modern["ttlMs"] = Value::from(60_000);
    tools_list_modern["cacheScope"] = Value::from("public");
    let discover = modern.then(|| {
        serde_json::json!({
            "resultType": "complete",
            "supportedVersions": [MODERN, "2025-11-25"],
            "capabilities": {"tools": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": label.clone(), "version": "1.0.0"}},
            "ttlMs": 60_000,
            "cacheScope": "public",
        })
        .to_string()
        .into_bytes()
    });
    let server = Arc::new(FastServer {
        tools_list: serde_json::to_vec(&tools_list)?,
        tools_list_modern: serde_json::to_vec(&tools_list_modern)?,
        discover,
        label,
        tools,
        initialize,
        sessions: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    // Out of file descriptors, most likely: let connections end.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let server = server.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.answer(req).await) }
                });
                // No header read timeout: hyper's also runs while a kept-alive
                // connection waits for its next request, and would close the proxy's
                // pooled connections after 30 s idle.
                let connection = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(None)
                    .serve_connection(TokioIo::new(tcp), service);
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    _ = connection => {}
                }
            });
        }
    });
    Ok(addr)
}

/// The fields of a JSON-RPC message this server reads, borrowed from the body.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    arguments: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct InitializeParams<'a> {
    #[serde(rename = "protocolVersion", borrow)]
    protocol_version: Cow<'a, str>,
}

impl FastServer {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/mcp" {
            return status(StatusCode::NOT_FOUND);
        }
        match *req.method() {
            Method::POST => {}
            Method::DELETE => return status(StatusCode::NO_CONTENT),
            Method::GET => {
                let mut resp = status(StatusCode::METHOD_NOT_ALLOWED);
                resp.headers_mut().insert(
                    header::ALLOW,
                    header::HeaderValue::from_static("POST, DELETE"),
                );
                return resp;
            }
            _ => return status(StatusCode::METHOD_NOT_ALLOWED),
        }
        let has_session = req.headers().contains_key(SESSION_HEADER);
        let modern = self.discover.is_some()
            && req
                .headers()
                .get(VERSION_HEADER)
                .is_some_and(|v| v.as_bytes() == MODERN.as_bytes());
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return status(StatusCode::BAD_REQUEST),
        };
        let Ok(message) = serde_json::from_slice::<Message>(&body) else {
            return rpc_error(StatusCode::BAD_REQUEST, None, -32700, "Parse error");
        };
        let (Some(id), Some(method)) = (message.id, message.method.as_deref()) else {
            // A notification, or a response to a request of ours (we send none).
            return status(StatusCode::ACCEPTED);
        };
        if method == "initialize" {
            return self.initialize(id, message.params);
        }
        if modern {
            return match method {
                "server/discover" => reply(id, self.discover.as_deref().unwrap_or(b"{}")),
                "tools/call" => self.call(id, message.params, true),
                "tools/list" => reply(id, &self.tools_list_modern),
                _ => rpc_error(StatusCode::NOT_FOUND, Some(id), -32601, "Method not found"),
            };
        }
        if !has_session {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Some(id),
                -32600,
                "Bad Request: no Mcp-Session-Id",
            );
        }
        match method {
            "tools/call" => self.call(id, message.params, false),
            "tools/list" => reply(id, &self.tools_list),
            "ping" => reply(id, b"{}"),
            _ => rpc_error(StatusCode::OK, Some(id), -32601, "Method not found"),
        }
    }

    fn initialize(&self, id: &RawValue, params: Option<&RawValue>) -> Response<Full<Bytes>> {
        let version = params
            .and_then(|p| serde_json::from_str::<InitializeParams>(p.get()).ok())
            .map(|p| p.protocol_version.into_owned());
        let Some(version) = version else {
            return rpc_error(
                StatusCode::OK,
                Some(id),
                -32602,
                "initialize without protocolVersion",
            );
        };
        let mut result = self.initialize.clone();
        result["protocolVersion"] = Value::String(version);
        let session = format!(
            "fast-{}-{}",
            self.label,
            self.sessions.fetch_add(1, Ordering::Relaxed)
        );
        let mut resp = reply(id, result.to_string().as_bytes());
        if let Ok(value) = header::HeaderValue::from_str(&session) {
            resp.headers_mut().insert(SESSION_HEADER, value);
        }
        resp
    }

    /// rmcp's echo: `CallToolResult::success` with the arguments, serialised as a JSON
    /// object, as its one text block.
    fn call(
        &self,
        id: &RawValue,
        params: Option<&RawValue>,
        modern: bool,
    ) -> Response<Full<Bytes>> {
        let Some(params) = params.and_then(|p| serde_json::from_str::<CallParams>(p.get()).ok())
        else {
            return rpc_error(
                StatusCode::OK,
                Some(id),
                -32602,
                "invalid tools/call params",
            );
        };
        if !self.tools.iter().any(|t| t.name == params.name) {
            let message = format!("no tool {:?} on {}", params.name, self.label);
            return rpc_error(StatusCode::OK, Some(id), -32602, &message);
        }
        let text = serde_json::to_string(&params.arguments.unwrap_or_default()).unwrap_or_default();
        let text = serde_json::to_string(&text).unwrap_or_default();
        let mut result = Vec::with_capacity(text.len() + 64);
        result.extend_from_slice(br#"{"content":[{"type":"text","text":"#);
        result.extend_from_slice(text.as_bytes());
        result.extend_from_slice(br#"}],"isError":false"#);
        if modern {
            result.extend_from_slice(br#","resultType":"complete""#);
        }
        result.push(b'}');
        reply(id, &result)
    }
}

/// A `200` JSON-RPC response with `result` (raw JSON).
fn reply(id: &RawValue, result: &[u8]) -> Response<Full<Bytes>> {
    let mut body = Vec::with_capacity(result.len() + id.get().len() + 32);
    body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    body.extend_from_slice(id.get().as_bytes());
    body.extend_from_slice(br#","result":"#);
    body.extend_from_slice(result);
    body.push(b'}');
    json_response(StatusCode::OK, body)
}

/// A JSON-RPC error response (`id` null when the request had none we could read).
fn rpc_error(
    code_status: StatusCode,
    id: Option<&RawValue>,
    code: i64,
    message: &str,
) -> Response<Full<Bytes>> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{code},"message":{}}}}}"#,
        id.map_or("null", RawValue::get),
        Value::String(message.to_string())
    );
    json_response(code_status, body.into_bytes())
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(JSON));
    resp
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::client::{tools_call_body, tools_list_body, McpSession};
    use crate::upstream::{UpstreamFleet, UpstreamKind, UpstreamMode};

    /// The answers the scenarios read, from both upstreams: the same JSON.
    #[tokio::test]
    async fn answers_what_the_rmcp_upstream_answers() -> anyhow::Result<()> {
        let rmcp =
            UpstreamFleet::start_kind(UpstreamKind::Rmcp, 1, 5, UpstreamMode::StatelessJson, 1)
                .await?;
        let fast =
            UpstreamFleet::start_kind(UpstreamKind::Fast, 1, 5, UpstreamMode::StatelessJson, 1)
                .await?;
        let http = reqwest::Client::new();
        let rmcp = McpSession::open(&http, &rmcp.url(0), None).await?;
        let fast_session = McpSession::open(&http, &fast.url(0), None).await?;
        assert!(
            fast_session
                .session_id()
                .is_some_and(|id| id.starts_with("fast-s0-")),
            "{:?}",
            fast_session.headers
        );
        let call_unknown = json!({
            "jsonrpc": "2.0", "id": "x-7", "method": "tools/call",
            "params": {"name": "nope", "arguments": {}}
        })
        .to_string();
        let call_nested = json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "tool_002", "arguments": {"z": [1, {"b": "\"q\"\n"}], "a": null}}
        })
        .to_string();
        for body in [
            tools_list_body(),
            tools_call_body("echo"),
            call_nested,
            call_unknown,
        ] {
            let expected = rmcp.raw(&http, &body).await?;
            let got = fast_session.raw(&http, &body).await?;
            assert_eq!(got, expected, "answers to {body}");
        }
        Ok(())
    }

    /// What the proxy does besides calls: notifications, a request without a session,
    /// the GET stream it probes for, and DELETE at the end of a session.
    #[tokio::test]
    async fn answers_the_protocol_around_the_calls() -> anyhow::Result<()> {
        let fast =
            UpstreamFleet::start_kind(UpstreamKind::Fast, 1, 1, UpstreamMode::StatelessJson, 1)
                .await?;
        let http = reqwest::Client::new();
        let url = fast.url(0);
        let post = |body: &'static str| {
            http.post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body)
                .send()
        };
        let init = post(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        )
        .await?;
        assert_eq!(init.status(), 200);
        assert!(init.headers().contains_key("mcp-session-id"));
        assert!(init.headers().contains_key("content-length"));
        let init: serde_json::Value = init.json().await?;
        assert_eq!(init["result"]["protocolVersion"], "2025-03-26", "{init}");
        assert_eq!(init["result"]["serverInfo"]["name"], "bench-s0", "{init}");
        assert_eq!(
            init["result"]["capabilities"],
            json!({"tools": {}}),
            "{init}"
        );

        let note = post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await?;
        assert_eq!(note.status(), 202);
        let sessionless = post(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).await?;
        assert_eq!(sessionless.status(), 400);
        let get = http
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await?;
        assert_eq!(get.status(), 405);
        let delete = http
            .delete(&url)
            .header("mcp-session-id", "fast-s0-0")
            .send()
            .await?;
        assert_eq!(delete.status(), 204);
        Ok(())
    }
}
