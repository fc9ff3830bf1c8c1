//! What the gateway does for each MCP method of an authenticated request.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{header, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::TokenRt;
use crate::envelope::{SessionEnvelope, UpstreamSession};
use crate::gateway::{session_gone_body, Forward, Gateway, RequestCtx};
use crate::jsonrpc::{self, Message, Parsed};
use crate::protocol;
use crate::respond;
use crate::runtime::{Runtime, WorkspaceRt};
use crate::upstream::{SessionRef, UpstreamError, SESSION_HEADER, VERSION_HEADER};

/// JSON-RPC code for "session not found" (as the reference SDKs use it).
pub const SESSION_NOT_FOUND: i64 = -32001;
/// Pingora's replay buffer: larger bodies cannot take the proxy path.
const REPLAY_BUFFER: usize = 64 * 1024;

/// An authenticated caller and the config it is served under.
pub struct Caller<'a> {
    pub rt: &'a Runtime,
    pub ws: &'a WorkspaceRt,
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
    if let Parsed::Request(msg) = &parsed {
        if msg.method.as_deref() == Some("initialize") {
            ctx.method = "initialize";
            return initialize(gw, session, ctx, caller, msg).await;
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
    let msg = match parsed {
        Parsed::Notification(_) => {
            ctx.method = "notification";
            return respond::accepted(session).await;
        }
        Parsed::Response(_) => {
            ctx.method = "response";
            return respond::accepted(session).await;
        }
        Parsed::Request(msg) => msg,
    };
    let id = jsonrpc::raw_id(msg.id);
    match msg.method.as_deref().unwrap_or_default() {
        "ping" => {
            ctx.method = "ping";
            respond::json(
                session,
                200,
                &[],
                jsonrpc::result(msg.id.expect("request"), b"{}"),
            )
            .await
        }
        "tools/list" => {
            ctx.method = "tools/list";
            match gw.state.catalog(caller.rt, caller.ws, &env).await {
                Ok(catalog) => {
                    let mut result = BytesMut::with_capacity(catalog.rendered.len() + 12);
                    result.extend_from_slice(br#"{"tools":"#);
                    result.extend_from_slice(&catalog.rendered);
                    result.extend_from_slice(b"}");
                    let body = jsonrpc::result(msg.id.expect("request"), &result);
                    respond::json(session, 200, &[], body).await
                }
                Err(_) => session_gone(session, ctx, id, "an upstream").await,
            }
        }
        "tools/call" => {
            ctx.method = "tools/call";
            tools_call(gw, session, ctx, caller, &env, &body, &msg).await
        }
        _ => {
            ctx.method = "other";
            ctx.outcome = "method_not_found";
            let method = msg.method.as_deref().unwrap_or_default();
            let err = jsonrpc::error(
                id,
                jsonrpc::METHOD_NOT_FOUND,
                &format!("Method not found: {method}"),
            );
            respond::json(session, 200, &[], err).await
        }
    }
}

/// Reads the whole body, refusing (`None`) once it passes `max` bytes.
async fn read_body(session: &mut Session, max: usize) -> Result<Option<Bytes>> {
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
        Ok(env) if env.workspace == caller.ws.slug && env.token_id == *caller.token.id => Ok(env),
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
    respond::json(session, 404, &[], session_gone_body(id, server)).await
}

#[derive(Deserialize)]
struct InitializeParams {
    #[serde(rename = "protocolVersion")]
    protocol_version: Option<String>,
    #[serde(default)]
    capabilities: Value,
    #[serde(rename = "clientInfo", default)]
    client_info: Value,
}

/// Opens a session with every enabled upstream in parallel and answers as the
/// gateway, with the upstream sessions sealed into the client's session id.
async fn initialize(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    msg: &Message<'_>,
) -> Result<bool> {
    let id = jsonrpc::raw_id(msg.id);
    let params: InitializeParams = match msg.params.map(|p| serde_json::from_str(p.get())) {
        Some(Ok(p)) => p,
        _ => {
            ctx.outcome = "invalid_params";
            let err = jsonrpc::error(
                id,
                jsonrpc::INVALID_PARAMS,
                "Invalid params: initialize needs protocolVersion, capabilities and clientInfo",
            );
            return respond::json(session, 200, &[], err).await;
        }
    };
    let version = protocol::negotiate(params.protocol_version.as_deref());
    let client_init =
        json!({"capabilities": params.capabilities, "clientInfo": params.client_info});
    let timeout = Duration::from_millis(caller.rt.limits.initialize_timeout_ms);
    let servers: Vec<_> = caller.ws.servers.iter().filter(|s| s.enabled).collect();
    let opened = futures::future::join_all(servers.iter().map(|server| {
        let client_init = &client_init;
        async move {
            gw.state
                .upstream
                .initialize(server, version, client_init, timeout)
                .await
        }
    }))
    .await;

    let mut upstreams = Vec::with_capacity(servers.len());
    let mut instructions = Vec::new();
    let mut failures = Vec::new();
    for (server, result) in servers.iter().zip(opened) {
        match result {
            Ok(init) => {
                if let Some(text) = init.instructions {
                    instructions.push(format!("## {}\n{}", server.slug, text.trim()));
                }
                upstreams.push(UpstreamSession {
                    server: server.slug.clone(),
                    session_id: init.session_id,
                    protocol_version: init.protocol_version,
                });
            }
            Err(e) => {
                tracing::warn!(workspace = %caller.ws.slug, server = %server.slug, error = %e, "upstream initialize failed; serving the others");
                gw.state
                    .metrics
                    .upstream_errors
                    .with_label_values(&[&caller.ws.slug, &server.slug, e.kind()])
                    .inc();
                failures.push(format!("{}: {e}", server.slug));
            }
        }
    }
    if upstreams.is_empty() && !servers.is_empty() {
        ctx.outcome = "upstream_unavailable";
        let err = jsonrpc::error(
            id,
            jsonrpc::INTERNAL_ERROR,
            &format!(
                "No MCP server of this workspace could be initialized ({})",
                failures.join("; ")
            ),
        );
        return respond::json(session, 200, &[], err).await;
    }

    let mut sid = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut sid);
    let envelope = SessionEnvelope {
        sid,
        issued_at: crate::state::unix_now(),
        workspace: caller.ws.slug.clone(),
        token_id: caller.token.id.to_string(),
        client_version: version.to_string(),
        client_init: client_init.to_string(),
        upstreams,
    };
    let session_id = caller.rt.keys.seal(&envelope);
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": true}},
        "serverInfo": {"name": "gatehouse", "title": "Gatehouse", "version": env!("CARGO_PKG_VERSION")},
    });
    if !instructions.is_empty() {
        result["instructions"] = Value::String(instructions.join("\n\n"));
    }
    let body = jsonrpc::result(
        msg.id.expect("request"),
        &serde_json::to_vec(&result).expect("json"),
    );
    gw.state.metrics.sessions_opened.inc();
    gw.state.metrics.sessions_active.inc();
    respond::json(session, 200, &[(SESSION_HEADER, &session_id)], body).await
}

/// Routes a `tools/call` by its exposed name: through Pingora's proxy path when the
/// body fits the replay buffer (`Ok(false)`), else over the side client.
async fn tools_call(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    env: &SessionEnvelope,
    body: &Bytes,
    msg: &Message<'_>,
) -> Result<bool> {
    let id = jsonrpc::raw_id(msg.id);
    let Some(name) = msg.params.and_then(|p| jsonrpc::tool_name(body, p)) else {
        ctx.outcome = "invalid_params";
        let err = jsonrpc::error(
            id,
            jsonrpc::INVALID_PARAMS,
            "Invalid params: tools/call needs a string \"name\"",
        );
        return respond::json(session, 200, &[], err).await;
    };
    let catalog = match gw.state.catalog(caller.rt, caller.ws, env).await {
        Ok(c) => c,
        Err(_) => return session_gone(session, ctx, id, "an upstream").await,
    };
    // Unknown server, unknown tool and a tool hidden by policy are indistinguishable.
    let Some((route, server)) = catalog
        .route(&name.name)
        .and_then(|r| caller.ws.server(&r.server).map(|s| (r, s.clone())))
    else {
        ctx.outcome = "unknown_tool";
        let err = jsonrpc::error(
            id,
            jsonrpc::INVALID_PARAMS,
            &format!("Unknown tool: {}", name.name),
        );
        return respond::json(session, 200, &[], err).await;
    };
    let upstream = match gw.state.session_for(caller.rt, env, &server).await {
        Ok(s) => s,
        Err(e) => {
            gw.state
                .metrics
                .upstream_errors
                .with_label_values(&[&caller.ws.slug, &server.slug, e.kind()])
                .inc();
            ctx.outcome = "upstream_unavailable";
            let err = jsonrpc::error(
                id,
                jsonrpc::INTERNAL_ERROR,
                &format!("MCP server {:?} is unavailable: {e}", server.slug),
            );
            return respond::json(session, 200, &[], err).await;
        }
    };
    let rewritten = jsonrpc::splice_name(body, name.span.clone(), &route.upstream_name);

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
            session_id: upstream
                .session_id
                .as_deref()
                .map(header_value)
                .transpose()?,
            protocol_version: header_value(&upstream.protocol_version)?,
            server,
            body: rewritten,
            request_id: id.to_string(),
            client_sid: env.sid,
            sent_at: None,
            session_gone: false,
            list_changed: None,
        });
        return Ok(false);
    }
    forward_large(
        gw, session, ctx, caller, env, &upstream, &server, id, rewritten,
    )
    .await
}

/// The side path for calls larger than the replay buffer: send with the pooled side
/// client and stream the upstream's reply back unchanged.
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
            let err = jsonrpc::error(
                id,
                jsonrpc::INTERNAL_ERROR,
                &format!("MCP server {:?} is unavailable: {e}", server.slug),
            );
            return respond::json(session, 200, &[], err).await;
        }
    };
    let mut head = ResponseHeader::build(resp.status().as_u16(), Some(2))?;
    if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
        head.insert_header(header::CONTENT_TYPE, ct.clone())?;
    }
    session.write_response_header(Box::new(head), false).await?;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => session.write_response_body(Some(bytes), false).await?,
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
    session.write_response_body(None, true).await?;
    Ok(true)
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
