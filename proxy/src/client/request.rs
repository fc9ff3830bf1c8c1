//! One client request on its way through the gateway, whatever its transport: who
//! asked ([`Caller`]), what it is counted as ([`RequestCtx`]: method, outcome,
//! transport, the audit record of a routed call), and the reading every transport
//! does before it answers — the body within its limit, the client's session id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_config::audit::CallOutcome;
use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::jsonrpc::{self, Message};
use gatehouse_mcp::outcome::{Method, Outcome, Transport};
use http::header;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;

use crate::audit::record::CallRecord;
use crate::client::respond;
use crate::config::auth::TokenRt;
use crate::config::runtime::{Runtime, WorkspaceRt};
use crate::limits::{self, Refusal};
use crate::live::live;
use crate::session::failure::SESSION_NOT_FOUND;
use crate::shared::Shared;
use crate::upstream::error::UpstreamError;
use crate::upstream::http::SESSION_HEADER;

/// An authenticated caller and the config it is served under.
pub struct Caller<'a> {
    pub rt: &'a Arc<Runtime>,
    pub ws: &'a Arc<WorkspaceRt>,
    pub token: &'a TokenRt,
}

/// Per-request state, from the request head to `Gateway::log`.
pub struct RequestCtx {
    started: Instant,
    /// Set once the caller is authenticated, so unauthenticated callers cannot mint
    /// metric labels.
    pub workspace: Option<String>,
    pub method: Method,
    pub outcome: Outcome,
    pub transport: Transport,
    /// The audit record of a routed call, closed in `Gateway::log`.
    pub call: Option<CallRecord>,
    /// How that call ended, once known.
    pub call_outcome: Option<CallOutcome>,
    /// False when the gateway refused the call itself (unknown tool, bad params).
    pub call_routed: bool,
    /// Why the upstream's reply to a routed call turned out unusable after its head
    /// came back, for its circuit breaker.
    pub relay_failure: Option<UpstreamError>,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            started: Instant::now(),
            workspace: None,
            method: Method::Unknown,
            outcome: Outcome::Ok,
            transport: Transport::StreamableHttp,
            call: None,
            call_outcome: None,
            call_routed: true,
            relay_failure: None,
        }
    }
}

impl RequestCtx {
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Notes how a call answered with `body` by the gateway (not relayed) ended.
    pub fn answered_call(&mut self, outcome: Outcome, body: &[u8]) {
        if self.call.is_none() {
            return;
        }
        let (ended, routed) = gatehouse_mcp::reply::answered(outcome, body);
        self.call_outcome = Some(ended);
        self.call_routed = routed;
    }
}

/// Answers a request over a budget: counted by workspace and budget, 429 with a
/// JSON-RPC error answering `id` (raw JSON).
pub async fn over_budget(
    shared: &Shared,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    id: &str,
    refusal: &Refusal,
) -> Result<bool> {
    ctx.outcome = Outcome::Limited;
    shared
        .metrics
        .limited
        .with_label_values(&[
            ctx.workspace.as_deref().unwrap_or(""),
            refusal.exceeded.as_label(),
        ])
        .inc();
    respond::limited(session, id, refusal).await
}

/// The `tools/call` and new-session budgets for a request about to be served: `None`
/// when it may go on (any other message, or one within budget); otherwise it is
/// answered 429, and a call recorded as refused (`rate_limited`, never sent upstream).
pub async fn over_call_budget(
    shared: &Shared,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    msg: &Message<'_>,
) -> Option<Result<bool>> {
    if msg.method.as_deref() == Some("initialize") {
        let refusal =
            limits::admit_session(caller.token.budget.as_deref(), caller.ws.budget.as_deref())
                .err()?;
        ctx.method = Method::Initialize;
        let id = jsonrpc::raw_id(msg.id);
        return Some(over_budget(shared, session, ctx, id, &refusal).await);
    }
    if msg.method.as_deref() != Some("tools/call") {
        return None;
    }
    let refusal =
        limits::admit_tool_call(caller.token.budget.as_deref(), caller.ws.budget.as_deref())
            .err()?;
    ctx.method = Method::ToolsCall;
    if let Some(call) =
        CallRecord::for_request(msg, caller.ws, caller.token, ctx.transport, ctx.started())
    {
        call.finish(
            CallOutcome::RateLimited,
            false,
            &shared.audit,
            &shared.metrics,
        );
    }
    let id = jsonrpc::raw_id(msg.id);
    Some(over_budget(shared, session, ctx, id, &refusal).await)
}

/// Reads the whole body, refusing (`None`) once it passes `max` bytes.
pub async fn read_body(session: &mut ServerSession, max: usize) -> Result<Option<Bytes>> {
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        drain_body(session).await;
        return Ok(None);
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0;
    while let Some(chunk) = session.read_request_body().await? {
        total += chunk.len();
        if total > max {
            drain_body(session).await;
            return Ok(None);
        }
        chunks.push(chunk);
    }
    Ok(Some(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut all = BytesMut::with_capacity(total);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    }))
}

/// Reads and discards the rest of a refused body, within bounds, so a client still
/// uploading gets to read the 413 instead of a broken pipe.
async fn drain_body(session: &mut ServerSession) {
    const DRAIN_BYTES: usize = 64 * 1024 * 1024;
    const DRAIN_TIME: Duration = Duration::from_secs(10);
    let drain = async {
        let mut drained = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            drained += chunk.len();
            if drained > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

/// Why a request's `Mcp-Session-Id` does not name a session it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefused {
    /// No header: 400.
    Missing,
    /// Not ours, another caller's, or ended: 404, so the client re-initializes.
    NotFound,
}

impl SessionRefused {
    pub fn status(self) -> u16 {
        match self {
            SessionRefused::Missing => 400,
            SessionRefused::NotFound => 404,
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            SessionRefused::Missing => Outcome::BadRequest,
            SessionRefused::NotFound => Outcome::SessionNotFound,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            SessionRefused::Missing => "Bad Request: Mcp-Session-Id header is required",
            SessionRefused::NotFound => "Session not found",
        }
    }

    /// The JSON-RPC error answering request `id` (raw JSON).
    pub fn rpc_error(self, id: &str) -> Bytes {
        let code = match self {
            SessionRefused::Missing => jsonrpc::INVALID_REQUEST,
            SessionRefused::NotFound => SESSION_NOT_FOUND,
        };
        jsonrpc::error(id, code, self.message())
    }
}

/// Opens and checks the client's session id.
pub fn open_session(
    session: &ServerSession,
    caller: &Caller<'_>,
) -> std::result::Result<SessionEnvelope, SessionRefused> {
    let Some(text) = session
        .req_header()
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(SessionRefused::Missing);
    };
    match caller.rt.keys.open(text) {
        Ok(env)
            if env.workspace == caller.ws.slug
                && env.token_id == *caller.token.id
                && !live().is_ended(env.sid) =>
        {
            Ok(env)
        }
        _ => Err(SessionRefused::NotFound),
    }
}
