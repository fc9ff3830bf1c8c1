//! The Streamable HTTP transport on the client side: POST (one JSON-RPC message,
//! answered as [`dispatch`] decides), DELETE, and the body handling around them.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use gatehouse_config::audit::CallOutcome;
use http::{header, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::audit::{CallRecord, ReplyWatch};
use crate::auth::TokenRt;
use crate::dispatch::{self, Reply, Scope, ToolCall};
use crate::envelope::{SessionEnvelope, UpstreamSession};
use crate::gateway::{session_gone_body, Forward, Gateway, RequestCtx};
use crate::jsonrpc::{self, Parsed};
use crate::live::live;
use crate::protocol;
use crate::relay::{MessageKind, Relay, SseRewriter};
use crate::respond;
use crate::runtime::{Runtime, WorkspaceRt};
use crate::stream;
use crate::upstream::{SessionRef, UpstreamError, SESSION_HEADER, VERSION_HEADER};

/// JSON-RPC code for "session not found" (as the reference SDKs use it).
pub const SESSION_NOT_FOUND: i64 = -32001;
/// Pingora's replay buffer: larger bodies cannot take the proxy path.
const REPLAY_BUFFER: usize = 64 * 1024;

/// An authenticated caller and the config it is served under.
pub struct Caller<'a> {
    pub rt: &'a Arc<Runtime>,
    pub ws: &'a Arc<WorkspaceRt>,
    pub token: &'a TokenRt,
}

/// A POSTed JSON-RPC message.
pub async fn post(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
) -> Result<bool> {
    let headers = &session.req_header().headers;
    if !respond::accepts_mcp_replies(headers.get(header::ACCEPT).map(HeaderValue::as_bytes)) {
        ctx.outcome = "not_acceptable";
        return respond::refuse(
            session,
            406,
            "Accept must list application/json and text/event-stream",
        )
        .await;
    }
    if let Some(v) = headers.get(VERSION_HEADER) {
        if !v.to_str().is_ok_and(protocol::is_supported) {
            ctx.outcome = "bad_request";
            return respond::refuse(session, 400, "unsupported MCP-Protocol-Version").await;
        }
    }
    session.enable_retry_buffering();
    let max = caller.rt.limits.max_body_bytes;
    let Some(body) = read_body(session, max).await? else {
        ctx.outcome = "too_large";
        let msg = format!("request body exceeds the limit of {max} bytes");
        return respond::refuse(session, 413, &msg).await;
    };
    let parsed = match jsonrpc::parse(&body) {
        Ok(p) => p,
        Err(rejection) => {
            ctx.outcome = "bad_request";
            let err = jsonrpc::error("null", rejection.code(), &rejection.to_string());
            return respond::json(session, 400, &[], err).await;
        }
    };
    let scope = Scope {
        state: &gw.state,
        rt: caller.rt,
        ws: caller.ws,
    };
    if let Parsed::Request(msg) = &parsed {
        if msg.method.as_deref() == Some("initialize") {
            ctx.method = "initialize";
            return match dispatch::initialize(scope, &caller.token.id, msg).await {
                Ok(opened) => {
                    let session_id = caller.rt.keys.seal(&opened.envelope);
                    gw.state.prefetch_catalog(
                        caller.rt.clone(),
                        caller.ws.clone(),
                        opened.envelope.clone(),
                    );
                    gw.state.metrics.sessions_opened.inc();
                    gw.state.metrics.sessions_active.inc();
                    respond::json(session, 200, &[(SESSION_HEADER, &session_id)], opened.body).await
                }
                Err(reply) => deliver(gw, session, ctx, caller, reply).await,
            };
        }
    }
    let id = match &parsed {
        Parsed::Request(m) => m.id,
        _ => None,
    };
    let env = match open_session(session, caller) {
        Ok(env) => env,
        Err((status, message)) => {
            ctx.outcome = if status == 404 {
                "session_not_found"
            } else {
                "bad_request"
            };
            let code = if status == 404 {
                SESSION_NOT_FOUND
            } else {
                jsonrpc::INVALID_REQUEST
            };
            let err = jsonrpc::error(jsonrpc::raw_id(id), code, message);
            return respond::json(session, status, &[], err).await;
        }
    };
    let reply = match &parsed {
        Parsed::Notification(msg) => {
            ctx.method = "notification";
            dispatch::notification(scope, &env, &body, msg).await
        }
        Parsed::Response(msg) => {
            ctx.method = "response";
            dispatch::response(scope, &env, msg, &body).await
        }
        Parsed::Request(msg) => {
            ctx.method = dispatch::method_label(msg.method.as_deref().unwrap_or_default());
            ctx.call =
                CallRecord::for_request(msg, caller.ws, caller.token, ctx.transport, ctx.started());
            dispatch::request(scope, &env, &body, msg).await
        }
    };
    match reply {
        Reply::ToolCall(call) => send_tool_call(gw, session, ctx, caller, &env, &body, call).await,
        reply => deliver(gw, session, ctx, caller, reply).await,
    }
}

/// Writes a reply that is not a routed call.
async fn deliver(
    _gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    _caller: &Caller<'_>,
    reply: Reply,
) -> Result<bool> {
    match reply {
        Reply::Response {
            body,
            outcome,
            session_gone,
        } => {
            ctx.outcome = outcome;
            ctx.answered_call(outcome, &body);
            respond::json(session, if session_gone { 404 } else { 200 }, &[], body).await
        }
        Reply::Accepted { outcome } => {
            ctx.outcome = outcome;
            respond::accepted(session).await
        }
        Reply::ToolCall(_) => unreachable!("routed calls are sent, not delivered"),
    }
}

/// Reads the whole body, refusing (`None`) once it passes `max` bytes.
pub(crate) async fn read_body(session: &mut Session, max: usize) -> Result<Option<Bytes>> {
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
async fn drain_body(session: &mut Session) {
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

/// Opens and checks the client's session id: `Err((400|404, why))` otherwise.
fn open_session(
    session: &Session,
    caller: &Caller<'_>,
) -> std::result::Result<SessionEnvelope, (u16, &'static str)> {
    let Some(text) = session
        .req_header()
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Err((400, "Bad Request: Mcp-Session-Id header is required"));
    };
    match caller.rt.keys.open(text) {
        Ok(env)
            if env.workspace == caller.ws.slug
                && env.token_id == *caller.token.id
                && !live().is_ended(env.sid) =>
        {
            Ok(env)
        }
        _ => Err((404, "Session not found")),
    }
}

async fn session_gone(
    session: &mut Session,
    ctx: &mut RequestCtx,
    id: &str,
    server: &str,
) -> Result<bool> {
    ctx.outcome = "session_not_found";
    ctx.call_outcome = Some(CallOutcome::UpstreamUnavailable);
    respond::json(session, 404, &[], session_gone_body(id, server)).await
}

/// Sends a routed `tools/call`: through Pingora's proxy path when the body fits the
/// replay buffer (`Ok(false)`), else over the side client.
async fn send_tool_call(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    env: &SessionEnvelope,
    body: &Bytes,
    call: ToolCall,
) -> Result<bool> {
    let in_flight =
        live().track_request(env.sid, &normalized_id(&call.request_id), &call.server.slug);
    if call.server.is_legacy_sse() {
        // Pingora cannot speak the legacy transport: the side client does.
        let result = side_tool_call(gw, session, ctx, caller, env, &call).await;
        drop(in_flight);
        return result;
    }
    if body.len() <= REPLAY_BUFFER && !session.retry_buffer_truncated() {
        let header_value = |s: &str| {
            HeaderValue::from_str(s).map_err(|_| {
                Error::explain(
                    ErrorType::InternalError,
                    "upstream session id is not a header value",
                )
            })
        };
        ctx.forward = Some(Forward {
            session_id: call
                .upstream
                .session_id
                .as_deref()
                .map(header_value)
                .transpose()?,
            protocol_version: header_value(&call.upstream.protocol_version)?,
            server: call.server,
            body: call.body,
            request_id: call.request_id,
            client_sid: env.sid,
            runtime: caller.rt.clone(),
            sent_at: None,
            session_gone: false,
            rewriter: None,
            watch: ReplyWatch::default(),
            _in_flight: in_flight,
        });
        return Ok(false);
    }
    let result = forward_large(
        gw,
        session,
        ctx,
        caller,
        env,
        &call.upstream,
        &call.server,
        &call.request_id,
        call.body,
    )
    .await;
    drop(in_flight);
    result
}

/// A `tools/call` sent with the side client (to a legacy SSE upstream): answered with
/// plain JSON when the upstream said nothing else, else with an event stream carrying
/// what it said (progress, requests for the client) and then the response.
async fn side_tool_call(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    env: &SessionEnvelope,
    call: &ToolCall,
) -> Result<bool> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut on_message = move |data: &str| {
        let _ = tx.send(data.to_string());
    };
    let relay = Relay {
        keys: &caller.rt.keys,
        sid: env.sid,
        server: &call.server.slug,
    };
    let calling = crate::exchange::call_tool(&gw.state, env, call, &mut on_message);
    tokio::pin!(calling);
    let mut streaming = false;
    let mut outcome = None;
    loop {
        let data = match outcome {
            None => tokio::select! {
                done = &mut calling => {
                    outcome = Some(done);
                    continue;
                }
                Some(data) = rx.recv() => data,
            },
            // The upstream's messages are queued while the call is polled, so the
            // poll that finished it may have queued the last ones (progress sent just
            // before the result): they go out first, not lost.
            Some(_) => match rx.try_recv() {
                Ok(data) => data,
                Err(_) => break,
            },
        };
        let Ok(out) = relay.outbound(&data) else {
            continue;
        };
        if out.kind == MessageKind::Response {
            continue;
        }
        if out.kind == MessageKind::ToolsChanged {
            gw.state
                .invalidate_tools(&caller.ws.slug, &call.server.slug);
        }
        if !streaming {
            let mut head = ResponseHeader::build(200, Some(3))?;
            head.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
            head.insert_header(header::CACHE_CONTROL, "no-cache")?;
            // Chunked, so the client's connection outlives the reply.
            head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            session.write_response_header(Box::new(head), false).await?;
            streaming = true;
        }
        let event = format!("event: message\ndata: {}\n\n", out.json);
        session
            .write_response_body(Some(Bytes::from(event)), false)
            .await?;
    }
    let outcome = outcome.expect("the loop ends only once the call has");
    ctx.call_outcome = Some(crate::audit::answer_outcome(&outcome));
    let body = match outcome {
        Ok(response) => Bytes::from(response),
        Err(UpstreamError::SessionGone) if !streaming => {
            return session_gone(session, ctx, &call.request_id, &call.server.slug).await;
        }
        Err(UpstreamError::SessionGone) => {
            ctx.outcome = "session_not_found";
            session_gone_body(&call.request_id, &call.server.slug)
        }
        Err(e) => {
            ctx.outcome = "upstream_unavailable";
            jsonrpc::error(
                &call.request_id,
                jsonrpc::INTERNAL_ERROR,
                &format!("MCP server {:?} is unavailable: {e}", call.server.slug),
            )
        }
    };
    if !streaming {
        return respond::json(session, 200, &[], body).await;
    }
    let mut event = Vec::with_capacity(body.len() + 24);
    event.extend_from_slice(b"event: message\ndata: ");
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    session
        .write_response_body(Some(Bytes::from(event)), true)
        .await?;
    Ok(true)
}

/// A request id as a canonical JSON text, so the same id always gives the same key.
pub fn normalized_id(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.to_string())
}

/// The side path for calls larger than the replay buffer: send with the pooled side
/// client and stream the upstream's reply back, rewritten like the proxy path's.
#[allow(clippy::too_many_arguments)]
async fn forward_large(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    env: &SessionEnvelope,
    upstream: &UpstreamSession,
    server: &crate::runtime::ServerRt,
    id: &str,
    body: Bytes,
) -> Result<bool> {
    let started = std::time::Instant::now();
    let sent = gw
        .state
        .upstream
        .forward(
            server,
            SessionRef {
                session_id: upstream.session_id.as_deref(),
                protocol_version: &upstream.protocol_version,
            },
            body,
        )
        .await;
    gw.state
        .metrics
        .upstream_seconds
        .with_label_values(&[&caller.ws.slug, &server.slug])
        .observe(started.elapsed().as_secs_f64());
    let resp = match sent {
        Ok(r) => r,
        Err(UpstreamError::SessionGone) => {
            gw.state.forget_lazy_session(env.sid, &server.slug);
            return session_gone(session, ctx, id, &server.slug).await;
        }
        Err(e) => {
            gw.state
                .metrics
                .upstream_errors
                .with_label_values(&[&caller.ws.slug, &server.slug, e.kind()])
                .inc();
            ctx.outcome = "upstream_unavailable";
            ctx.call_outcome = Some(CallOutcome::UpstreamUnavailable);
            let err = jsonrpc::error(
                id,
                jsonrpc::INTERNAL_ERROR,
                &format!("MCP server {:?} is unavailable: {e}", server.slug),
            );
            return respond::json(session, 200, &[], err).await;
        }
    };
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        ctx.call_outcome = Some(crate::audit::status_outcome(status));
    }
    let mut watch = ReplyWatch::default();
    let mut head = ResponseHeader::build(status, Some(2))?;
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let mut rewriter = content_type
        .as_ref()
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"))
        .then(SseRewriter::default);
    if let Some(ct) = content_type {
        head.insert_header(header::CONTENT_TYPE, ct)?;
    }
    // Framed, so the client's connection carries its next request: unframed, Pingora
    // would end the reply by closing it. A JSON reply is relayed unchanged, so the
    // upstream's length holds; a rewritten event stream is chunked.
    match resp.content_length().filter(|_| rewriter.is_none()) {
        Some(len) => head.insert_header(header::CONTENT_LENGTH, len)?,
        None => head.insert_header(header::TRANSFER_ENCODING, "chunked")?,
    }
    session.write_response_header(Box::new(head), false).await?;
    let relay = Relay {
        keys: &caller.rt.keys,
        sid: env.sid,
        server: &server.slug,
    };
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                let out = match rewriter.as_mut() {
                    Some(w) => w.push(&bytes, &relay, &mut |kind, json| {
                        if kind == MessageKind::ToolsChanged {
                            gw.state.invalidate_tools(&caller.ws.slug, &server.slug);
                        }
                        watch.message(kind, json);
                    }),
                    None => {
                        watch.body(&bytes);
                        bytes
                    }
                };
                if !out.is_empty() {
                    session.write_response_body(Some(out), false).await?;
                }
            }
            Err(e) => {
                ctx.outcome = "upstream_error";
                return Error::e_explain(
                    ErrorType::ReadError,
                    format!(
                        "upstream {} reply broke off: {}",
                        server.slug,
                        e.without_url()
                    ),
                );
            }
        }
    }
    let rest = rewriter
        .as_mut()
        .map(SseRewriter::finish)
        .unwrap_or_default();
    session
        .write_response_body((!rest.is_empty()).then_some(rest), true)
        .await?;
    if ctx.call_outcome.is_none() {
        ctx.call_outcome = watch.outcome();
    }
    Ok(true)
}

/// GET with `Accept: text/event-stream`: the session's server-to-client stream.
pub async fn get(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
) -> Result<bool> {
    ctx.method = "stream";
    let headers = &session.req_header().headers;
    let accepts_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            let a = a.to_ascii_lowercase();
            a.contains("text/event-stream") || a.contains("*/*")
        });
    if !accepts_sse {
        ctx.outcome = "not_acceptable";
        return respond::refuse(session, 406, "Accept must list text/event-stream").await;
    }
    if let Some(v) = headers.get(VERSION_HEADER) {
        if !v.to_str().is_ok_and(protocol::is_supported) {
            ctx.outcome = "bad_request";
            return respond::refuse(session, 400, "unsupported MCP-Protocol-Version").await;
        }
    }
    let env = match open_session(session, caller) {
        Ok(env) => env,
        Err((status, message)) => {
            ctx.outcome = if status == 404 {
                "session_not_found"
            } else {
                "bad_request"
            };
            return respond::refuse(session, status, message).await;
        }
    };
    let headers = &session.req_header().headers;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let (framing, replay) = stream::streamable_framing(env.sid, last_event_id.as_deref());
    if last_event_id.is_some() {
        ctx.outcome = if replay.is_empty() {
            "resumed_empty"
        } else {
            "resumed"
        };
    }
    // No response may be reused on this connection after a stream.
    session.set_keepalive(None);
    stream::ClientStream {
        state: gw.state.clone(),
        workspace: caller.ws.slug.clone(),
        authorization,
        env: Some(Arc::new(env)),
        framing,
        inbox: None,
    }
    .serve(session, replay)
    .await
}

/// DELETE: ends the client's session and every upstream session behind it.
pub async fn delete(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
) -> Result<bool> {
    ctx.method = "delete";
    let env = match open_session(session, caller) {
        Ok(env) => env,
        Err((status, message)) => {
            ctx.outcome = "session_not_found";
            return respond::refuse(session, status, message).await;
        }
    };
    live().end_session(env.sid);
    gw.state.close_legacy_upstreams(env.sid);
    let ended = gw.state.end_client_session(&env);
    let deletes = ended.iter().filter_map(|u| {
        let server = caller.ws.server(&u.server)?;
        let id = u.session_id.as_deref()?;
        Some(gw.state.upstream.delete_session(server, id))
    });
    futures::future::join_all(deletes).await;
    gw.state.metrics.sessions_closed.inc();
    gw.state.metrics.sessions_active.dec();
    let mut resp = ResponseHeader::build(204, Some(1))?;
    resp.insert_header(header::CONTENT_LENGTH, 0)?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}
