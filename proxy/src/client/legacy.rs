//! The legacy HTTP+SSE transport on the client side (MCP 2024-11-05), the one behind
//! `/ws/<slug>/sse`: `GET /ws/<slug>/sse` opens the stream, whose first event
//! (`endpoint`) names `/ws/<slug>/messages?sessionId=...`; every POST there answers
//! `202` and its response arrives on the stream.
//!
//! Each POSTed message goes through the same session room as Streamable HTTP, in a
//! task of its own (a slow tool must not hold the POST open), and the JSON-RPC answer
//! is written to the stream; a `tools/call` takes the same forwarding path
//! ([`forward::to_messages`]), its answer going to the stream too.
//!
//! The stream is a connection to one replica, so the session lives there: a registry
//! of live streams by `sessionId`, each bound to the token that opened it (checked on
//! every POST). Behind several replicas, legacy SSE needs sticky routing on the
//! `sessionId` query parameter; Streamable HTTP does not. Upstream sessions of a
//! legacy client are held as lazily opened ones, so one an upstream forgets is
//! reopened instead of ending the client's session, and they end with the stream.

use std::sync::{Arc, Mutex, OnceLock};

use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use rand::RngCore;
use tokio::sync::mpsc;

use gatehouse_mcp::outcome::{Method, Outcome, Transport};

use crate::audit::record::CallRecord;
use crate::client::forward;
use crate::client::request::{over_budget, over_call_budget, read_body, Caller, RequestCtx};
use crate::client::respond;
use crate::client::stream::{ClientStream, Framing, StreamInput};
use crate::config::auth::TokenRt;
use crate::config::runtime::{Runtime, WorkspaceRt};
use crate::live::live;
use crate::session::dispatch::{self, Reply, Scope};
use crate::session::failure;
use crate::session::initialize;
use crate::shared::Shared;
use crate::upstream::error::UpstreamError;
use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::jsonrpc::{self, Parsed};
use gatehouse_mcp::relay::{MessageKind, Relay};

/// Messages queued for one legacy stream.
const STREAM_QUEUE: usize = 1024;

/// A live legacy stream and the session it carries.
pub struct LegacyClient {
    workspace: String,
    token_id: String,
    tx: mpsc::Sender<StreamInput>,
    /// Set by `initialize`.
    env: Mutex<Option<Arc<SessionEnvelope>>>,
}

impl LegacyClient {
    fn env(&self) -> Option<Arc<SessionEnvelope>> {
        self.env.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Queues a message for the stream; a stream too far behind loses it.
    fn deliver(&self, json: Bytes) {
        if let Err(e) = self.tx.try_send(StreamInput::Message(json)) {
            tracing::warn!(workspace = %self.workspace, error = %e, "a legacy SSE stream is not keeping up; message dropped");
        }
    }
}

fn clients() -> &'static DashMap<String, Arc<LegacyClient>> {
    static CLIENTS: OnceLock<DashMap<String, Arc<LegacyClient>>> = OnceLock::new();
    CLIENTS.get_or_init(DashMap::new)
}

/// Removes a stream's session when the stream ends, and ends the session upstream.
struct Registration {
    session_id: String,
    state: Arc<Shared>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some((_, client)) = clients().remove(&self.session_id) else {
            return;
        };
        let Some(env) = client.env() else {
            return;
        };
        live().end_session(env.sid);
        let ended = self.state.upstreams.end(&env);
        let state = self.state.clone();
        let workspace = client.workspace.clone();
        tokio::spawn(async move {
            let rt = state.config.load();
            if let Some(ws) = rt.workspaces.get(&workspace) {
                state.upstreams.delete(ws, &ended).await;
            }
        });
    }
}

/// `GET /ws/<slug>/sse`: opens a legacy stream.
pub async fn open(
    shared: &Arc<Shared>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
) -> Result<bool> {
    ctx.method = Method::LegacyStream;
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    let session_id = hex::encode(raw);
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    clients().insert(
        session_id.clone(),
        Arc::new(LegacyClient {
            workspace: caller.ws.slug.clone(),
            token_id: caller.token.id.to_string(),
            tx,
            env: Mutex::new(None),
        }),
    );
    let _registration = Registration {
        session_id: session_id.clone(),
        state: shared.clone(),
    };
    let endpoint = format!(
        "event: endpoint\ndata: /ws/{}/messages?sessionId={session_id}\n\n",
        caller.ws.slug
    );
    match ClientStream::new(shared, caller, session, None, Framing::Legacy, Some(rx)) {
        Ok(stream) => stream.serve(session, vec![Bytes::from(endpoint)]).await,
        Err(refusal) => over_budget(shared, session, ctx, "null", &refusal).await,
    }
}

/// `POST /ws/<slug>/messages?sessionId=...`: one message of a legacy session.
pub async fn message(
    shared: &Arc<Shared>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
) -> Result<bool> {
    ctx.method = Method::LegacyMessage;
    let query = session.req_header().uri.query();
    let Some(session_id) = respond::query_param(query, "sessionId")
        .or_else(|| respond::query_param(query, "session_id"))
    else {
        ctx.outcome = Outcome::BadRequest;
        return respond::refuse(session, 400, "the sessionId query parameter is required").await;
    };
    // Another token's session and an unknown one look the same.
    let client = clients()
        .get(&session_id)
        .map(|c| c.value().clone())
        .filter(|c| c.workspace == caller.ws.slug && c.token_id == *caller.token.id);
    let Some(client) = client.filter(|c| !c.tx.is_closed()) else {
        ctx.outcome = Outcome::SessionNotFound;
        let message = format!(
            "Session not found: no live SSE stream has sessionId {:?} on this gateway; open GET /ws/{}/sse for a new session",
            session_id.chars().take(64).collect::<String>(),
            caller.ws.slug
        );
        return respond::refuse(session, 404, &message).await;
    };
    let max = caller.rt.limits.max_body_bytes;
    let Some(body) = read_body(session, max).await? else {
        ctx.outcome = Outcome::TooLarge;
        let msg = format!("request body exceeds the limit of {max} bytes");
        return respond::refuse(session, 413, &msg).await;
    };
    match jsonrpc::parse(&body) {
        Ok(Parsed::Request(msg)) => {
            ctx.method = Method::of_request(msg.method.as_deref().unwrap_or_default());
            if let Some(answered) = over_call_budget(shared, session, ctx, caller, &msg).await {
                return answered;
            }
        }
        Ok(_) => {}
        Err(rejection) => {
            ctx.outcome = Outcome::BadRequest;
            let err = jsonrpc::error("null", rejection.code(), &rejection.to_string());
            return respond::json(session, 400, &[], err).await;
        }
    }
    ctx.outcome = Outcome::Accepted;
    tokio::spawn(handle(
        shared.clone(),
        caller.rt.clone(),
        caller.ws.clone(),
        caller.token.clone(),
        client,
        body,
        ctx.started(),
    ));
    respond::accepted(session).await
}

/// Handles one message of a legacy session; its answer goes to the stream.
async fn handle(
    state: Arc<Shared>,
    rt: Arc<Runtime>,
    ws: Arc<WorkspaceRt>,
    token: TokenRt,
    client: Arc<LegacyClient>,
    body: Bytes,
    received: Instant,
) {
    let token_id = token.id.to_string();
    let Ok(parsed) = jsonrpc::parse(&body) else {
        return;
    };
    let scope = Scope {
        upstreams: &state.upstreams,
        catalogs: &state.catalogs,
        rt: &rt,
        ws: &ws,
        name: None,
        tools: token.scope.as_deref(),
    };
    if let Parsed::Request(msg) = &parsed {
        if msg.method.as_deref() == Some("initialize") {
            match initialize::initialize(scope, &token_id, msg).await {
                Ok(opened) => {
                    let mut env = opened.envelope;
                    state
                        .upstreams
                        .adopt(env.sid, std::mem::take(&mut env.upstreams));
                    let env = Arc::new(env);
                    *client.env.lock().unwrap_or_else(|p| p.into_inner()) = Some(env.clone());
                    state.prefetch_catalog(rt.clone(), ws.clone(), (*env).clone());
                    state.metrics.sessions_opened.inc();
                    client.deliver(opened.body);
                    let _ = client
                        .tx
                        .send(StreamInput::Attach(Box::new((*env).clone())))
                        .await;
                }
                Err(reply) => deliver_reply(&client, reply),
            }
            return;
        }
    }
    let Some(env) = client.env() else {
        if let Parsed::Request(msg) = &parsed {
            let id = jsonrpc::raw_id(msg.id);
            let body = if msg.method.as_deref() == Some("ping") {
                jsonrpc::result(msg.id.expect("request"), b"{}")
            } else {
                jsonrpc::error(
                    id,
                    jsonrpc::INVALID_REQUEST,
                    "Invalid Request: the session is not initialized yet",
                )
            };
            client.deliver(body);
        }
        return;
    };
    let call_record = match &parsed {
        Parsed::Request(msg) => {
            CallRecord::for_request(msg, &ws, &token, Transport::LegacySse, received)
                .map(|call| call.journaled(&state.audit))
        }
        _ => None,
    };
    let reply = match &parsed {
        Parsed::Notification(msg) => dispatch::notification(scope, &env, &body, msg).await,
        Parsed::Response(msg) => dispatch::response(scope, &env, msg, &body).await,
        Parsed::Request(msg) => dispatch::request(scope, &env, &body, msg).await,
    };
    let call = match reply {
        Reply::ToolCall(call) => call,
        Reply::Response { body, outcome, .. } => {
            if let Some(record) = call_record {
                let (ended, routed) = gatehouse_mcp::reply::answered(outcome, &body);
                record.finish(ended, routed, &state.audit, &state.metrics);
            }
            client.deliver(body);
            return;
        }
        Reply::Accepted { .. } => return,
    };
    let _in_flight = live().track_request(
        env.sid,
        &gatehouse_mcp::jsonrpc::canonical_id(&call.request_id),
        &call.server.slug,
    );
    let relay = Relay {
        keys: &rt.keys,
        sid: env.sid,
        server: &call.server.slug,
        bare: call.server.naming == gatehouse_config::Naming::Bare,
        complete_results: false,
    };
    let mut on_message = |data: &str| match relay.outbound(data) {
        Ok(out) if out.kind != MessageKind::Response => {
            if out.kind == MessageKind::ToolsChanged {
                state.catalogs.invalidate(&ws.slug, &call.server.slug);
            }
            client.deliver(Bytes::from(out.json.into_owned()));
        }
        _ => {}
    };
    let answer = forward::to_messages(&state, &rt, &env, &call, &mut on_message).await;
    if let Some(record) = call_record {
        let outcome = gatehouse_mcp::reply::answer_outcome(&answer);
        record.finish(outcome, true, &state.audit, &state.metrics);
    }
    let body = match answer {
        Ok(response) => Bytes::from(response),
        Err(UpstreamError::SessionGone) => {
            failure::session_gone(&call.request_id, &call.server.slug)
        }
        Err(e) => failure::unavailable(&call.request_id, &call.server.slug, &e),
    };
    client.deliver(body);
}

fn deliver_reply(client: &LegacyClient, reply: Reply) {
    if let Reply::Response { body, .. } = reply {
        client.deliver(body);
    }
}
