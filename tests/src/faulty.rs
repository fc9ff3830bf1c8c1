//! A misbehaving Streamable HTTP upstream, for the fault-injection tests and nothing
//! else. It completes `initialize` and `tools/list` like a well-behaved server, then
//! fails each `tools/call` in the way its tool is named after ([`Fault`]); its GET
//! event stream ends every second. No real MCP peer misbehaves on demand, so this is,
//! with [`BrokenUpstream`](crate::BrokenUpstream), one of the two hand-written servers
//! in the harness.
//!
//! Every accepted socket lingers for zero seconds, so a connection the server drops
//! ends with a TCP reset, not a clean close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rand::seq::SliceRandom;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::upstream::lock;

/// The size of the one event [`Fault::HugeEvent`] sends.
pub const HUGE_EVENT_BYTES: usize = 50 * 1024 * 1024;
/// How long the GET event stream stays open before the server ends it.
pub const GET_STREAM_LIFETIME: Duration = Duration::from_secs(1);

/// How a `tools/call` fails; the tool of that name fails that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Never sends the reply's head.
    StallBeforeHeaders,
    /// Sends an event stream's head and one log notification, then nothing.
    StallMidStream,
    /// Sends an event stream's head and half an event, then resets the connection.
    ResetMidReply,
    /// Answers `200 application/json` with a body that is not JSON.
    InvalidJson,
    /// Answers with an event stream whose one event is [`HUGE_EVENT_BYTES`] long.
    HugeEvent,
    /// Answers with an event stream of log notifications that never ends and never
    /// carries the response.
    EndlessStream,
    /// Answers with a well-formed response to another request id.
    WrongId,
    /// The same on an event stream, which then ends.
    WrongIdStream,
    /// Answers twice on one event stream: `first`, then `second`, with the same id.
    AnswerTwice,
    /// Answers HTTP 500, 502 or 503 (chosen at random) with an HTML body.
    ServerError,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::StallBeforeHeaders,
        Fault::StallMidStream,
        Fault::ResetMidReply,
        Fault::InvalidJson,
        Fault::HugeEvent,
        Fault::EndlessStream,
        Fault::WrongId,
        Fault::WrongIdStream,
        Fault::AnswerTwice,
        Fault::ServerError,
    ];

    /// The tool that fails this way.
    pub fn tool(self) -> &'static str {
        match self {
            Fault::StallBeforeHeaders => "stall_before_headers",
            Fault::StallMidStream => "stall_mid_stream",
            Fault::ResetMidReply => "reset_mid_reply",
            Fault::InvalidJson => "invalid_json",
            Fault::HugeEvent => "huge_event",
            Fault::EndlessStream => "endless_stream",
            Fault::WrongId => "wrong_id",
            Fault::WrongIdStream => "wrong_id_stream",
            Fault::AnswerTwice => "answer_twice",
            Fault::ServerError => "server_error",
        }
    }

    fn of_tool(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.tool() == name)
    }
}

/// The well-behaved tool: answers `ok` as JSON.
pub const OK_TOOL: &str = "ok";
/// A tool whose every odd call (the first, the third, ...) is refused with an HTTP 503
/// page and every even one answered `ok`; annotated idempotent.
pub const FLAKY_IDEMPOTENT: &str = "flaky_idempotent";
/// The same, without annotations.
pub const FLAKY: &str = "flaky";

/// Faults that end at once, each after a good call so the circuit breaker stays
/// closed: the tool of the `i`th of a run of mixed calls.
pub fn mixed_call(i: usize) -> &'static str {
    const MIXED: [Option<Fault>; 8] = [
        None,
        Some(Fault::InvalidJson),
        None,
        Some(Fault::ServerError),
        None,
        Some(Fault::ResetMidReply),
        None,
        Some(Fault::WrongId),
    ];
    MIXED[i % MIXED.len()].map_or(OK_TOOL, Fault::tool)
}

#[derive(Default)]
struct Counters {
    /// `tools/call`s received, by tool name.
    calls: Mutex<HashMap<String, usize>>,
    /// GET streams opened.
    streams: AtomicUsize,
    /// Replies still being written or awaited (a stalled or endless one included):
    /// each ends when the proxy drops its connection.
    open_replies: AtomicUsize,
}

/// Counts a reply as open for as long as it lives.
struct OpenReply(Arc<Counters>);

impl OpenReply {
    fn new(counters: &Arc<Counters>) -> OpenReply {
        counters.open_replies.fetch_add(1, Ordering::SeqCst);
        OpenReply(counters.clone())
    }
}

impl Drop for OpenReply {
    fn drop(&mut self) {
        self.0.open_replies.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The misbehaving server, listening on a loopback port until dropped.
pub struct FaultyUpstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    accept_loop: JoinHandle<()>,
}

impl FaultyUpstream {
    pub async fn start() -> anyhow::Result<FaultyUpstream> {
        let counters = Arc::new(Counters::default());
        let state = counters.clone();
        let router = Router::new().route(
            "/mcp",
            axum::routing::any(move |method: Method, body: Bytes| {
                let counters = state.clone();
                async move { answer(method, body, &counters).await }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept_loop = tokio::spawn(serve_resetting(listener, router));
        Ok(FaultyUpstream {
            addr,
            counters,
            accept_loop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Every tool it lists: one per [`Fault`], then [`OK_TOOL`], [`FLAKY_IDEMPOTENT`]
    /// and [`FLAKY`].
    pub fn tools() -> Vec<&'static str> {
        let mut tools: Vec<_> = Fault::ALL.iter().map(|f| f.tool()).collect();
        tools.extend([OK_TOOL, FLAKY_IDEMPOTENT, FLAKY]);
        tools
    }

    /// How many `tools/call`s of `tool` arrived.
    pub fn calls(&self, tool: &str) -> usize {
        lock(&self.counters.calls)
            .get(tool)
            .copied()
            .unwrap_or_default()
    }

    /// How many GET streams were opened.
    pub fn streams_opened(&self) -> usize {
        self.counters.streams.load(Ordering::SeqCst)
    }

    /// Replies not yet finished or abandoned by the proxy.
    pub fn open_replies(&self) -> usize {
        self.counters.open_replies.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// Accepts connections until aborted, each with `SO_LINGER` 0: a connection hyper
/// drops (a reply body that fails) is reset.
async fn serve_resetting(listener: tokio::net::TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_zero_linger();
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

fn respond(status: StatusCode, content_type: &str, body: Body) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("mcp-session-id", "faulty-session")
        .body(body)
        .unwrap_or_default()
}

fn json_reply(message: Value) -> Response {
    respond(
        StatusCode::OK,
        "application/json",
        Body::from(message.to_string()),
    )
}

/// One SSE event carrying `message`.
fn event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

fn log_event(text: &str) -> Bytes {
    event(&json!({
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": "info", "data": text},
    }))
}

fn text_result(id: &Value, text: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {"content": [{"type": "text", "text": text}]},
    })
}

/// An event stream whose chunks `write` sends; it ends when `write` returns (an
/// `Err` chunk resets the connection), and `write` is dropped when the proxy hangs up.
fn event_stream<F, Fut>(counters: &Arc<Counters>, write: F) -> Response
where
    F: FnOnce(mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let open = OpenReply::new(counters);
    tokio::spawn(async move {
        let closed = tx.clone();
        tokio::select! {
            _ = write(tx) => {}
            _ = closed.closed() => {}
        }
        drop(open);
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((chunk, rx))
    });
    respond(StatusCode::OK, "text/event-stream", Body::from_stream(body))
}

async fn answer(method: Method, body: Bytes, counters: &Arc<Counters>) -> Response {
    if method == Method::GET {
        let n = counters.streams.fetch_add(1, Ordering::SeqCst) + 1;
        return event_stream(counters, move |tx| async move {
            let _ = tx.send(Ok(log_event(&format!("faulty stream {n}")))).await;
            tokio::time::sleep(GET_STREAM_LIFETIME).await;
        });
    }
    if method == Method::DELETE {
        return respond(StatusCode::OK, "application/json", Body::empty());
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return respond(StatusCode::BAD_REQUEST, "application/json", "{}".into());
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    match message.get("method").and_then(Value::as_str) {
        Some("initialize") => json_reply(json!({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": message.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-06-18")),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "faulty", "version": "0"},
        }})),
        Some("tools/list") => {
            let tools: Vec<Value> = FaultyUpstream::tools()
                .into_iter()
                .map(|name| {
                    let mut tool = json!({"name": name, "inputSchema": {"type": "object"}});
                    if name == FLAKY_IDEMPOTENT {
                        tool["annotations"] = json!({"idempotentHint": true});
                    }
                    tool
                })
                .collect();
            json_reply(json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}}))
        }
        Some("tools/call") => {
            let tool = message
                .pointer("/params/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let n = {
                let mut calls = lock(&counters.calls);
                let n = calls.entry(tool.clone()).or_default();
                *n += 1;
                *n
            };
            match Fault::of_tool(&tool) {
                Some(fault) => misbehave(fault, id, counters).await,
                None if (tool == FLAKY || tool == FLAKY_IDEMPOTENT) && n % 2 == 1 => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/html",
                    Body::from("<html><body><h1>503</h1></body></html>"),
                ),
                None => json_reply(text_result(&id, "ok")),
            }
        }
        Some(_) if message.get("id").is_some() => {
            json_reply(json!({"jsonrpc": "2.0", "id": id, "result": {}}))
        }
        _ => respond(StatusCode::ACCEPTED, "application/json", Body::empty()),
    }
}

/// An id no request of the gateway's has: `id`'s, changed.
fn another_id(id: &Value) -> Value {
    match id.as_i64() {
        Some(n) => json!(n + 1_000_000),
        None => json!(format!("not-{id}")),
    }
}

async fn misbehave(fault: Fault, id: Value, counters: &Arc<Counters>) -> Response {
    match fault {
        Fault::StallBeforeHeaders => {
            // Held until the proxy gives up on the connection, which drops this.
            let _open = OpenReply::new(counters);
            std::future::pending::<Response>().await
        }
        Fault::StallMidStream => event_stream(counters, |tx| async move {
            let _ = tx.send(Ok(log_event("working"))).await;
            std::future::pending::<()>().await;
        }),
        Fault::ResetMidReply => event_stream(counters, move |tx| async move {
            let whole = event(&text_result(&id, "never finished"));
            let _ = tx.send(Ok(whole.slice(..whole.len() / 2))).await;
            let _ = tx.send(Err(std::io::Error::other("reset mid-reply"))).await;
        }),
        Fault::InvalidJson => respond(
            StatusCode::OK,
            "application/json",
            Body::from(format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[ this is not JSON"
            )),
        ),
        Fault::HugeEvent => event_stream(counters, move |tx| async move {
            let head = format!(
                "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\""
            );
            let filler = Bytes::from(vec![b'x'; 1024 * 1024]);
            if tx.send(Ok(Bytes::from(head))).await.is_err() {
                return;
            }
            for _ in 0..HUGE_EVENT_BYTES / filler.len() {
                if tx.send(Ok(filler.clone())).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok(Bytes::from_static(b"\"}]}}\n\n"))).await;
        }),
        Fault::EndlessStream => event_stream(counters, |tx| async move {
            for n in 0u64.. {
                if tx
                    .send(Ok(log_event(&format!("still going {n}"))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }),
        Fault::WrongId => {
            let other = another_id(&id);
            json_reply(text_result(&other, "for someone else"))
        }
        Fault::WrongIdStream => event_stream(counters, move |tx| async move {
            let other = another_id(&id);
            let _ = tx
                .send(Ok(event(&text_result(&other, "for someone else"))))
                .await;
        }),
        Fault::AnswerTwice => event_stream(counters, move |tx| async move {
            let _ = tx.send(Ok(event(&text_result(&id, "first")))).await;
            let _ = tx.send(Ok(event(&text_result(&id, "second")))).await;
        }),
        Fault::ServerError => {
            let status = *[500u16, 502, 503]
                .choose(&mut rand::thread_rng())
                .expect("three statuses");
            respond(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "text/html",
                Body::from(format!("<html><body><h1>{status}</h1></body></html>")),
            )
        }
    }
}
