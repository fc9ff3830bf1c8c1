//! A deliberately broken upstream, for bad-input tests and nothing else: it completes
//! the `initialize` handshake like a Streamable HTTP server (one tool, `ok`) and then
//! sends garbage on its GET event stream. No real MCP peer can be made to misbehave
//! on demand, so this is the one hand-written server in the harness.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::upstream::serve;

/// A server that speaks just enough MCP to be initialized, then sends `garbage` on
/// every GET stream.
pub struct BrokenUpstream {
    addr: SocketAddr,
    streams: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl BrokenUpstream {
    pub async fn start(garbage: &'static str) -> anyhow::Result<BrokenUpstream> {
        let streams = Arc::new(AtomicUsize::new(0));
        let counter = streams.clone();
        let router = Router::new().route(
            "/mcp",
            axum::routing::any(move |method: Method, headers: HeaderMap, body: Bytes| {
                let counter = counter.clone();
                async move { answer(method, headers, body, garbage, &counter) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept_loop = tokio::spawn(serve(listener, router));
        Ok(BrokenUpstream {
            addr,
            streams,
            accept_loop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// How many GET streams were opened so far.
    pub fn streams_opened(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }
}

impl Drop for BrokenUpstream {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

fn answer(
    method: Method,
    _headers: HeaderMap,
    body: Bytes,
    garbage: &'static str,
    streams: &AtomicUsize,
) -> Response {
    let respond = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("mcp-session-id", "broken-session")
            .body(Body::from(body))
            .unwrap_or_default()
    };
    if method == Method::GET {
        streams.fetch_add(1, Ordering::SeqCst);
        return respond(StatusCode::OK, "text/event-stream", garbage.to_owned());
    }
    if method == Method::DELETE {
        return respond(StatusCode::OK, "application/json", String::new());
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return respond(StatusCode::BAD_REQUEST, "application/json", "{}".into());
    };
    let id = message.get("id").cloned();
    let result = match message.get("method").and_then(Value::as_str) {
        Some("initialize") => json!({
            "protocolVersion": message.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-06-18")),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "broken", "version": "0"},
        }),
        Some("tools/list") => json!({"tools": [{"name": "ok", "inputSchema": {"type": "object"}}]}),
        Some(_) if id.is_some() => json!({}),
        _ => return respond(StatusCode::ACCEPTED, "application/json", String::new()),
    };
    respond(
        StatusCode::OK,
        "application/json",
        json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
    )
}
