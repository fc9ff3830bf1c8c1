//! The audit trail of routed calls (`tools/call`, `prompts/get`, `resources/read`):
//! a [`CallRecord`] is opened when such a request arrives, learns how the call ended
//! from the reply the client got ([`ReplyScan`]), and becomes a
//! [`CallEvent`] handed to the [`AuditSink`] — a channel send, nothing more, so the
//! request never waits for the audit. The shipper ([`crate::audit_ship`]) batches,
//! delivers and spools the events off the request path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use gatehouse_config::audit::{CallAction, CallEvent, CallOutcome};
use gatehouse_config::naming::split_exposed;
use rand::RngCore;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::auth::TokenRt;
use crate::jsonrpc::Message;
use crate::metrics::Metrics;
use crate::runtime::WorkspaceRt;

/// Client-supplied names and URIs are cut to this many bytes in events.
const MAX_TARGET: usize = 256;
/// Distinct tool label values in `gatehouse_tool_calls_total`; the rest are `other`.
const MAX_TOOL_LABELS: usize = 500;

/// The two client transports, as metric label and event field.
pub const STREAMABLE_HTTP: &str = "streamable_http";
pub const LEGACY_SSE: &str = "sse";

/// The action audited for a JSON-RPC method, if any.
fn action_of(method: &str) -> Option<CallAction> {
    match method {
        "tools/call" => Some(CallAction::ToolCall),
        "prompts/get" => Some(CallAction::PromptGet),
        "resources/read" => Some(CallAction::ResourceRead),
        _ => None,
    }
}

/// A routed call whose outcome is not known yet.
pub struct CallRecord {
    started: Instant,
    time_ms: i64,
    action: CallAction,
    workspace: Arc<str>,
    token_id: Arc<str>,
    token_name: Arc<str>,
    /// Slug of the workspace's server the target names, if it names one.
    server: Option<String>,
    target: String,
    request_id: String,
    transport: &'static str,
}

impl CallRecord {
    /// The record of `msg` if its method is audited, opened at `started`.
    pub fn for_request(
        msg: &Message<'_>,
        ws: &WorkspaceRt,
        token: &TokenRt,
        transport: &'static str,
        started: Instant,
    ) -> Option<CallRecord> {
        let action = action_of(msg.method.as_deref()?)?;
        Some(CallRecord::open(
            action,
            ws,
            token,
            msg.params.map(|p| p.get()),
            crate::jsonrpc::raw_id(msg.id),
            transport,
            started,
        ))
    }

    /// Opens the record of `action` on the request's `params` (raw JSON).
    fn open(
        action: CallAction,
        ws: &WorkspaceRt,
        token: &TokenRt,
        params: Option<&str>,
        request_id: &str,
        transport: &'static str,
        started: Instant,
    ) -> CallRecord {
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow, default)]
            name: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow, default)]
            uri: Option<std::borrow::Cow<'a, str>>,
        }
        let params = params.and_then(|p| serde_json::from_str::<Params>(p).ok());
        let target = params
            .and_then(|p| match action {
                CallAction::ResourceRead => p.uri,
                _ => p.name,
            })
            .unwrap_or_default();
        let slug = match action {
            CallAction::ResourceRead => crate::uris::route(&target).map(|(slug, _)| slug),
            _ => split_exposed(&target).map(|(slug, _)| slug),
        };
        let server = slug.filter(|s| ws.server(s).is_some()).map(str::to_string);
        CallRecord {
            started,
            time_ms: unix_ms(),
            action,
            workspace: token.workspace.clone(),
            token_id: token.id.clone(),
            token_name: token.name.clone(),
            server,
            target: truncate(&target, MAX_TARGET).to_string(),
            request_id: truncate(request_id, MAX_TARGET).to_string(),
            transport,
        }
    }

    /// Closes the record: counts the call and hands its event to the sink.
    /// `routed` is false when the gateway refused the call itself (unknown tool,
    /// bad params), so a client cannot mint tool labels.
    pub fn finish(self, outcome: CallOutcome, routed: bool, sink: &AuditSink, metrics: &Metrics) {
        if self.action == CallAction::ToolCall {
            let (server, tool) = match (&self.server, routed) {
                (Some(server), true) => (server.as_str(), sink.tool_label(&self.target)),
                _ => ("-", "-"),
            };
            metrics
                .tool_calls
                .with_label_values(&[&self.workspace, server, tool, outcome.as_str()])
                .inc();
        }
        if !sink.is_enabled() {
            return;
        }
        sink.record(CallEvent {
            id: event_id(self.time_ms),
            time_ms: self.time_ms,
            workspace: self.workspace.to_string(),
            token_id: self.token_id.to_string(),
            token_name: self.token_name.to_string(),
            action: self.action,
            server: self.server.unwrap_or_default(),
            target: self.target,
            outcome,
            latency_us: self.started.elapsed().as_micros() as u64,
            request_id: self.request_id,
            transport: self.transport.to_string(),
        });
    }
}

/// Where finished calls go: the shipper's queue, or nowhere when the proxy has no
/// control plane to ship to.
pub struct AuditSink {
    tx: Option<mpsc::UnboundedSender<CallEvent>>,
    queued: Arc<AtomicUsize>,
    tool_labels: DashMap<String, ()>,
}

impl AuditSink {
    /// A sink that keeps nothing (a proxy serving a config file).
    pub fn disabled() -> AuditSink {
        AuditSink {
            tx: None,
            queued: Arc::default(),
            tool_labels: DashMap::new(),
        }
    }

    /// A sink feeding the queue the shipper drains.
    pub fn channel() -> (AuditSink, AuditQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let sink = AuditSink {
            tx: Some(tx),
            queued: queued.clone(),
            tool_labels: DashMap::new(),
        };
        (sink, AuditQueue { rx, queued })
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Events recorded and not yet taken by the shipper.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn record(&self, event: CallEvent) {
        if let Some(tx) = &self.tx {
            if tx.send(event).is_ok() {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `tool` itself while fewer than [`MAX_TOOL_LABELS`] distinct tools were seen.
    fn tool_label<'a>(&self, tool: &'a str) -> &'a str {
        if self.tool_labels.contains_key(tool) {
            return tool;
        }
        if self.tool_labels.len() < MAX_TOOL_LABELS {
            self.tool_labels.insert(tool.to_string(), ());
            return tool;
        }
        "other"
    }
}

/// The receiving end of an [`AuditSink`].
pub struct AuditQueue {
    rx: mpsc::UnboundedReceiver<CallEvent>,
    queued: Arc<AtomicUsize>,
}

impl AuditQueue {
    /// Waits for at least one event, then takes up to `max` (`None`: the sink is gone).
    pub async fn next_batch(&mut self, max: usize) -> Option<Vec<CallEvent>> {
        let mut batch = Vec::new();
        let n = self.rx.recv_many(&mut batch, max).await;
        self.queued.fetch_sub(n, Ordering::Relaxed);
        (n > 0).then_some(batch)
    }

    /// Takes up to `max` events without waiting.
    pub fn try_batch(&mut self, max: usize) -> Vec<CallEvent> {
        let mut batch = Vec::new();
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        batch
    }
}

/// `ce_`, the time in milliseconds (12 hex digits) and 80 random bits: unique without
/// coordination between proxies, so the control plane can drop a resent event by its
/// id; and rising with time, so the control plane's id index grows at its end instead
/// of taking each insert at a random place.
fn event_id(time_ms: i64) -> String {
    let mut bytes = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("ce_{:012x}{}", time_ms.max(0), hex::encode(bytes))
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads a JSON-RPC response as it streams past, chunk by chunk, and tells how the
/// call ended — without buffering or parsing it into a tree: it tracks nesting and
/// strings, notes the top-level `result`/`error` key and `result.isError: true`.
#[derive(Debug, Default)]
pub struct ReplyScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Whether each open container (up to depth 2) is an object.
    objects: [bool; 3],
    /// A string at this position is a key.
    expect_key: bool,
    /// Bytes of the key being read (only short keys matter).
    key: [u8; 8],
    key_len: usize,
    key_overflow: bool,
    /// The last key completed at depth 1 and at depth 2.
    top_key: TopKey,
    /// After `"isError":`, waiting for the value's first byte.
    await_is_error_value: bool,
    is_error: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum TopKey {
    #[default]
    None,
    Result,
    Error,
    Other,
}

impl ReplyScan {
    pub fn push(&mut self, chunk: &[u8]) {
        let mut at = 0;
        while at < chunk.len() {
            if self.in_string && !self.escaped && !self.expect_key {
                // Most of a reply is string content (tool text), where only a quote
                // or a backslash changes anything: jump to the next one.
                match memchr::memchr2(b'"', b'\\', &chunk[at..]) {
                    Some(n) => at += n,
                    None => return,
                }
            }
            let b = chunk[at];
            at += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.expect_key {
                        self.end_key();
                    }
                    continue;
                }
                if self.expect_key {
                    if self.key_len < self.key.len() {
                        self.key[self.key_len] = b;
                        self.key_len += 1;
                    } else {
                        self.key_overflow = true;
                    }
                }
                continue;
            }
            if self.await_is_error_value && !b.is_ascii_whitespace() && b != b':' {
                self.await_is_error_value = false;
                if b == b't' && self.top_key == TopKey::Result {
                    self.is_error = true;
                }
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.key_len = 0;
                    self.key_overflow = false;
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if let Some(slot) = self.objects.get_mut(self.depth as usize) {
                        *slot = b == b'{';
                    }
                    self.expect_key = b == b'{' && self.depth <= 2;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.expect_key = false;
                }
                b',' => {
                    self.expect_key = self.depth <= 2
                        && self
                            .objects
                            .get(self.depth as usize)
                            .copied()
                            .unwrap_or(false);
                }
                b':' => self.expect_key = false,
                _ => {}
            }
        }
    }

    fn end_key(&mut self) {
        let key = &self.key[..self.key_len];
        let exact = |k: &[u8]| !self.key_overflow && key == k;
        match self.depth {
            1 => {
                self.top_key = if exact(b"result") {
                    TopKey::Result
                } else if exact(b"error") {
                    TopKey::Error
                } else if self.top_key == TopKey::None {
                    TopKey::Other
                } else {
                    // Keys after `result`/`error` (e.g. a trailing `id`) do not undo it.
                    self.top_key
                };
            }
            2 => {
                self.await_is_error_value = self.top_key == TopKey::Result && exact(b"isError");
            }
            _ => {}
        }
    }

    /// How the call ended; `None` when no `result` or `error` was seen.
    pub fn outcome(&self) -> Option<CallOutcome> {
        match self.top_key {
            TopKey::Error => Some(CallOutcome::ProtocolError),
            TopKey::Result if self.is_error => Some(CallOutcome::ToolError),
            TopKey::Result => Some(CallOutcome::Ok),
            _ => None,
        }
    }
}

/// Watches the reply to a routed call as it is relayed: a JSON body chunk by chunk,
/// or the response message of an event stream.
#[derive(Debug, Default)]
pub struct ReplyWatch {
    scan: ReplyScan,
    from_stream: Option<CallOutcome>,
}

impl ReplyWatch {
    /// A chunk of an `application/json` reply.
    pub fn body(&mut self, chunk: &[u8]) {
        self.scan.push(chunk);
    }

    /// A message of a `text/event-stream` reply.
    pub fn message(&mut self, kind: crate::relay::MessageKind, json: &str) {
        if kind == crate::relay::MessageKind::Response {
            self.from_stream = outcome_of(json.as_bytes());
        }
    }

    pub fn outcome(&self) -> Option<CallOutcome> {
        self.from_stream.or_else(|| self.scan.outcome())
    }
}

/// How a call the gateway answered itself (with `body`, under the request outcome
/// word `outcome`) ended, and whether it reached a server at all — unknown names and
/// bad params did not, and must not mint tool labels.
pub fn answered(outcome: &str, body: &[u8]) -> (CallOutcome, bool) {
    let ended = match outcome {
        "upstream_unavailable" | "session_not_found" => CallOutcome::UpstreamUnavailable,
        _ => response_outcome(body),
    };
    let routed = !matches!(
        outcome,
        "unknown_tool" | "unknown_prompt" | "unknown_resource" | "invalid_params"
    );
    (ended, routed)
}

/// How a call ended that got `answer`: a complete JSON-RPC response (one that says
/// neither `result` nor `error` is a protocol error), or no answer at all.
pub fn answer_outcome<E>(answer: &Result<String, E>) -> CallOutcome {
    match answer {
        Ok(response) => response_outcome(response.as_bytes()),
        Err(_) => CallOutcome::UpstreamUnavailable,
    }
}

fn response_outcome(response: &[u8]) -> CallOutcome {
    outcome_of(response).unwrap_or(CallOutcome::ProtocolError)
}

/// How a call ended whose upstream answered with the HTTP error `status`: a server
/// failing is unavailable, a request it refused is a protocol error.
pub fn status_outcome(status: u16) -> CallOutcome {
    if status >= 500 {
        CallOutcome::UpstreamUnavailable
    } else {
        CallOutcome::ProtocolError
    }
}

/// The outcome of one complete JSON-RPC response.
pub fn outcome_of(response: &[u8]) -> Option<CallOutcome> {
    let mut scan = ReplyScan::default();
    scan.push(response);
    scan.outcome()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &str, piece: usize) -> Option<CallOutcome> {
        let mut scan = ReplyScan::default();
        for chunk in body.as_bytes().chunks(piece) {
            scan.push(chunk);
        }
        scan.outcome()
    }

    #[test]
    fn results_errors_and_tool_errors_are_told_apart_in_any_chunking() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#,
                Some(CallOutcome::Ok),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
                Some(CallOutcome::ToolError),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"isError" : false,"content":[]}}"#,
                Some(CallOutcome::Ok),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"a","error":{"code":-32602,"message":"Unknown tool: x"}}"#,
                Some(CallOutcome::ProtocolError),
            ),
            // `isError` and `error` deeper down, or inside strings, do not count.
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"isError":true,"error":1},"content":[{"type":"text","text":"\"isError\":true"}]}}"#,
                Some(CallOutcome::Ok),
            ),
            (
                r#"{"result":{"content":[{"isError":true}]},"id":1,"jsonrpc":"2.0"}"#,
                Some(CallOutcome::Ok),
            ),
            // Escaped backslashes and quotes inside text, where the scan skips ahead.
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a \\ b \" c \\\" d \\"}],"isError":true}}"#,
                Some(CallOutcome::ToolError),
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, None),
            ("not json", None),
        ];
        for (body, want) in cases {
            for piece in [1, 2, 3, 7, body.len()] {
                assert_eq!(
                    scan_in_pieces(body, piece),
                    want,
                    "{body} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn long_keys_do_not_match_their_prefix() {
        assert_eq!(
            outcome_of(br#"{"resultant":1,"errors":2,"result":{"isErrorous":true}}"#),
            Some(CallOutcome::Ok)
        );
    }

    #[test]
    fn targets_are_cut_on_char_boundaries() {
        let s = "é".repeat(200);
        let cut = truncate(&s, MAX_TARGET);
        assert!(cut.len() <= MAX_TARGET && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn event_ids_are_unique_and_sort_by_time() {
        let a = event_id(1_700_000_000_000);
        assert_eq!(a.len(), 3 + 32);
        assert_ne!(a, event_id(1_700_000_000_000));
        assert!(a < event_id(1_700_000_000_001));
        assert!(event_id(0xf_ffff_ffff) < event_id(0x10_0000_0000));
    }
}
