//! The record of one routed call (`tools/call`, `prompts/get`, `resources/read`): a
//! [`CallRecord`] is opened when such a request arrives, learns how the call ended
//! from the reply the client got (`gatehouse_mcp::reply`), and becomes a [`CallEvent`]
//! handed to the [`AuditSink`] — a channel send, nothing more, so the request never
//! waits for the audit. The shipper ([`crate::uplink::audit_ship`]) batches, delivers and
//! spools the events off the request path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use gatehouse_config::audit::{CallAction, CallEvent, CallOutcome};
use gatehouse_config::naming::split_exposed;
use rand::RngCore;
use serde::Deserialize;
use tokio::sync::mpsc;

use gatehouse_mcp::jsonrpc::Message;
use gatehouse_mcp::outcome::Transport;

use crate::audit::journal::{Journal, Segment};
use crate::config::auth::TokenRt;
use crate::config::runtime::WorkspaceRt;
use crate::metrics::Metrics;

/// Client-supplied names and URIs are cut to this many bytes in events.
const MAX_TARGET: usize = 256;
/// Distinct tool label values in `gatehouse_tool_calls_total`; the rest are `other`.
const MAX_TOOL_LABELS: usize = 500;

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
    /// The event's id, the same in its journal intent and its final event.
    id: String,
    /// The journal segment holding this call's intent, until its event is recorded.
    hold: Option<Arc<Segment>>,
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
    transport: Transport,
}

impl CallRecord {
    /// The record of `msg` if its method is audited, opened at `started`.
    pub fn for_request(
        msg: &Message<'_>,
        ws: &WorkspaceRt,
        token: &TokenRt,
        transport: Transport,
        started: Instant,
    ) -> Option<CallRecord> {
        let action = action_of(msg.method.as_deref()?)?;
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow, default)]
            name: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow, default)]
            uri: Option<std::borrow::Cow<'a, str>>,
        }
        let params = msg
            .params
            .and_then(|p| serde_json::from_str::<Params>(p.get()).ok());
        let target = params.and_then(|p| match action {
            CallAction::ResourceRead => p.uri,
            _ => p.name,
        });
        Some(CallRecord::open(
            action,
            ws,
            token,
            target.as_deref().unwrap_or_default(),
            gatehouse_mcp::jsonrpc::raw_id(msg.id),
            transport,
            started,
        ))
    }

    /// [`for_request`](Self::for_request) when the caller has already read the
    /// request's target (`params.name`, or `params.uri` of a `resources/read`).
    pub fn for_target(
        msg: &Message<'_>,
        target: Option<&str>,
        ws: &WorkspaceRt,
        token: &TokenRt,
        transport: Transport,
        started: Instant,
    ) -> Option<CallRecord> {
        let action = action_of(msg.method.as_deref()?)?;
        Some(CallRecord::open(
            action,
            ws,
            token,
            target.unwrap_or_default(),
            gatehouse_mcp::jsonrpc::raw_id(msg.id),
            transport,
            started,
        ))
    }

    /// Opens the record of `action` on `target`.
    fn open(
        action: CallAction,
        ws: &WorkspaceRt,
        token: &TokenRt,
        target: &str,
        request_id: &str,
        transport: Transport,
        started: Instant,
    ) -> CallRecord {
        let slug = match action {
            CallAction::ResourceRead => gatehouse_mcp::uris::route(target).map(|(slug, _)| slug),
            _ => split_exposed(target).map(|(slug, _)| slug),
        };
        let server = slug.filter(|s| ws.server(s).is_some()).map(str::to_string);
        let time_ms = unix_ms();
        CallRecord {
            id: event_id(time_ms),
            hold: None,
            started,
            time_ms,
            action,
            workspace: token.workspace.clone(),
            token_id: token.id.clone(),
            token_name: token.name.clone(),
            server,
            target: truncate(target, MAX_TARGET).to_string(),
            request_id: truncate(request_id, MAX_TARGET).to_string(),
            transport,
        }
    }

    /// Writes the call's intent to the sink's journal, if it has one, before the call
    /// is forwarded: a proxy killed while the call is in flight leaves it there, and
    /// the next run reports it as [`CallOutcome::Interrupted`].
    pub fn journaled(mut self, sink: &AuditSink) -> CallRecord {
        if let Some(journal) = &sink.journal {
            let intent = CallEvent {
                id: self.id.clone(),
                time_ms: self.time_ms,
                workspace: self.workspace.to_string(),
                token_id: self.token_id.to_string(),
                token_name: self.token_name.to_string(),
                action: self.action,
                server: self.server.clone().unwrap_or_default(),
                target: self.target.clone(),
                outcome: CallOutcome::Interrupted,
                latency_us: 0,
                request_id: self.request_id.clone(),
                transport: self.transport.as_label().to_string(),
            };
            self.hold = Some(journal.write_intent(&intent));
        }
        self
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
        // The final event is journaled before the intent's segment is let go.
        let _intent = self.hold;
        sink.record(CallEvent {
            id: self.id,
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
            transport: self.transport.as_label().to_string(),
        });
    }
}

/// Where finished calls go: the shipper's queue, or nowhere when the proxy has no
/// control plane to ship to.
pub struct AuditSink {
    tx: Option<mpsc::UnboundedSender<Queued>>,
    journal: Option<Arc<Journal>>,
    queued: Arc<AtomicUsize>,
    tool_labels: DashMap<String, ()>,
}

/// A finished call waiting for the shipper, holding the journal segment it was
/// written to (see [`Journal`]) until it is delivered or spooled.
pub struct Queued {
    pub event: CallEvent,
    hold: Option<Arc<Segment>>,
}

/// A batch's events, and what keeps their journal segments until the batch is safe
/// (drop it once the events are delivered or spooled).
pub fn split(batch: Vec<Queued>) -> (Vec<CallEvent>, Vec<Arc<Segment>>) {
    let mut holds = Vec::new();
    let events = batch
        .into_iter()
        .map(|q| {
            holds.extend(q.hold);
            q.event
        })
        .collect();
    (events, holds)
}

impl AuditSink {
    /// A sink that keeps nothing (a proxy serving a config file).
    pub fn disabled() -> AuditSink {
        AuditSink {
            tx: None,
            journal: None,
            queued: Arc::default(),
            tool_labels: DashMap::new(),
        }
    }

    /// A sink feeding the queue the shipper drains, each event written to `journal`
    /// first when there is one.
    pub fn channel(journal: Option<Arc<Journal>>) -> (AuditSink, AuditQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let sink = AuditSink {
            tx: Some(tx),
            journal: journal.clone(),
            queued: queued.clone(),
            tool_labels: DashMap::new(),
        };
        (
            sink,
            AuditQueue {
                rx,
                queued,
                journal,
            },
        )
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
            let hold = self.journal.as_ref().map(|j| j.write(&event));
            if tx.send(Queued { event, hold }).is_ok() {
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
    rx: mpsc::UnboundedReceiver<Queued>,
    queued: Arc<AtomicUsize>,
    journal: Option<Arc<Journal>>,
}

impl AuditQueue {
    /// Waits for at least one event, then takes up to `max` (`None`: the sink is gone).
    /// Events recorded from now on go to a new journal segment.
    pub async fn next_batch(&mut self, max: usize) -> Option<Vec<Queued>> {
        let mut batch = Vec::new();
        let n = self.rx.recv_many(&mut batch, max).await;
        self.queued.fetch_sub(n, Ordering::Relaxed);
        if let Some(journal) = &self.journal {
            journal.rotate();
        }
        (n > 0).then_some(batch)
    }

    /// Takes up to `max` events without waiting.
    pub fn try_batch(&mut self, max: usize) -> Vec<Queued> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
