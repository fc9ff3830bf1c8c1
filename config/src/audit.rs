//! The audit events proxies ship to the control plane: one per routed call
//! (`tools/call`, `prompts/get`, `resources/read`). Both sides share this type so the
//! wire format cannot drift. Events carry no arguments, results or secrets.
//!
//! Delivery is at-least-once: a proxy resends a batch it is not sure arrived, so the
//! control plane stores each `id` once and ignores repeats.

use serde::{Deserialize, Serialize};

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallAction {
    ToolCall,
    PromptGet,
    ResourceRead,
}

impl CallAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CallAction::ToolCall => "tool_call",
            CallAction::PromptGet => "prompt_get",
            CallAction::ResourceRead => "resource_read",
        }
    }
}

/// How a call ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// A result without `isError`.
    Ok,
    /// A result with `isError: true`: the tool ran and reported a failure.
    ToolError,
    /// A JSON-RPC error (from the upstream, or the gateway's own: unknown tool, bad params).
    ProtocolError,
    /// The upstream could not be reached, timed out, or forgot the session.
    UpstreamUnavailable,
    /// The proxy died (was killed) while the call was in flight: whether the
    /// upstream ran it is unknown. Recovered from the proxy's audit journal.
    Interrupted,
    /// Refused by the gateway over a rate budget: never sent upstream.
    RateLimited,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::ToolError => "tool_error",
            CallOutcome::ProtocolError => "protocol_error",
            CallOutcome::UpstreamUnavailable => "upstream_unavailable",
            CallOutcome::Interrupted => "interrupted",
            CallOutcome::RateLimited => "rate_limited",
        }
    }

    pub fn is_error(self) -> bool {
        self != CallOutcome::Ok
    }
}

/// One routed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    /// Random, unique: the idempotency key (`ce_` + 32 hex digits).
    pub id: String,
    /// Unix milliseconds when the proxy received the request.
    pub time_ms: i64,
    pub workspace: String,
    pub token_id: String,
    pub token_name: String,
    pub action: CallAction,
    /// Slug of the server the call was routed to; empty when it could not be routed.
    pub server: String,
    /// What was called, as the client named it: the exposed tool or prompt name, or
    /// the resource URI.
    pub target: String,
    pub outcome: CallOutcome,
    /// From receiving the request to the end of the reply, in microseconds.
    pub latency_us: u64,
    /// The client's JSON-RPC request id, as raw JSON text.
    pub request_id: String,
    /// `streamable_http` or `sse`.
    pub transport: String,
}

/// What a proxy POSTs to `/v1/proxy/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditBatch {
    /// The proxy's stable id (as on its watch stream).
    pub proxy_id: String,
    pub events: Vec<CallEvent>,
}

/// The control plane's answer: how many events were new and how many it had already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAck {
    pub stored: u64,
    pub duplicates: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_snake_case_words() {
        let e = CallEvent {
            id: "ce_00".into(),
            time_ms: 1_700_000_000_123,
            workspace: "engineering".into(),
            token_id: "tok_1".into(),
            token_name: "Alice Cursor".into(),
            action: CallAction::ToolCall,
            server: "github".into(),
            target: "github__create_issue".into(),
            outcome: CallOutcome::ToolError,
            latency_us: 1234,
            request_id: "7".into(),
            transport: "streamable_http".into(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""action":"tool_call""#), "{text}");
        assert!(text.contains(r#""outcome":"tool_error""#), "{text}");
        assert_eq!(serde_json::from_str::<CallEvent>(&text).unwrap(), e);
    }
}
