//! The Streamable HTTP transport of the session era (2025-03-26 .. 2025-11-25) on the
//! client side: a POSTed message (`initialize`, or one of an open session — answered as
//! the session room decides, a routed call forwarded), GET (the session's event
//! stream) and DELETE (the end of the session).

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_mcp::jsonrpc::{self, Parsed};
use gatehouse_mcp::outcome::{Method, Outcome};
use gatehouse_mcp::versions;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;

use crate::audit::record::CallRecord;
use crate::client::forward;
use crate::client::request::{open_session, over_budget, Caller, RequestCtx};
use crate::client::respond;
use crate::client::stream;
use gatehouse_mcp::relay::event_id_route;

use crate::live::live;
use crate::session::dispatch::{self, Reply, Scope};
use crate::session::initialize;
use crate::shared::Shared;
use crate::upstream::http::{SESSION_HEADER, VERSION_HEADER};

/// A POSTed JSON-RPC message of the session era (from [`post::post`], which read and
/// parsed it; `as_event`: the client prefers an event stream).
///
/// [`post::post`]: crate::client::post::post
pub async fn message(
    shared: &Arc<Shared>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    body: &Bytes,
    parsed: Parsed<'_>,
    as_event: bool,
) -> Result<bool> {
    let headers = &session.req_header().headers;
    if let Some(v) = headers.get(VERSION_HEADER) {
        if !v.to_str().is_ok_and(versions::is_supported) {
            ctx.outcome = Outcome::BadRequest;
            return respond::refuse(session, 400, "unsupported MCP-Protocol-Version").await;
        }
    }
    let scope = Scope {
        upstreams: &shared.upstreams,
        catalogs: &shared.catalogs,
        rt: caller.rt,
        ws: caller.ws,
        name: None,
        tools: caller.token.scope.as_deref(),
    };
    if let Parsed::Request(msg) = &parsed {
        if msg.method.as_deref() == Some("initialize") {
            ctx.method = Method::Initialize;
            return match initialize::initialize(scope, &caller.token.id, msg).await {
                Ok(opened) => {
                    let session_id = caller.rt.keys.seal(&opened.envelope);
                    shared.prefetch_catalog(
                        caller.rt.clone(),
                        caller.ws.clone(),
                        opened.envelope.clone(),
                    );
                    shared.metrics.sessions_opened.inc();
                    shared.metrics.sessions_active.inc();
                    respond::json(session, 200, &[(SESSION_HEADER, &session_id)], opened.body).await
                }
                Err(reply) => deliver(session, ctx, reply, as_event).await,
            };
        }
    }
    let id = match &parsed {
        Parsed::Request(m) => m.id,
        _ => None,
    };
    let env = match open_session(session, caller) {
        Ok(env) => env,
        Err(refused) => {
            ctx.outcome = refused.outcome();
            let err = refused.rpc_error(jsonrpc::raw_id(id));
            return respond::json(session, refused.status(), &[], err).await;
        }
    };
    let reply = match &parsed {
        Parsed::Notification(msg) => {
            ctx.method = Method::Notification;
            dispatch::notification(scope, &env, body, msg).await
        }
        Parsed::Response(msg) => {
            ctx.method = Method::Response;
            dispatch::response(scope, &env, msg, body).await
        }
        Parsed::Request(msg) => {
            ctx.method = Method::of_request(msg.method.as_deref().unwrap_or_default());
            ctx.call =
                CallRecord::for_request(msg, caller.ws, caller.token, ctx.transport, ctx.started())
                    .map(|call| call.journaled(&shared.audit));
            dispatch::request(scope, &env, body, msg).await
        }
    };
    match reply {
        Reply::ToolCall(call) => forward::to_client(shared, session, ctx, caller, &env, call).await,
        reply => deliver(session, ctx, reply, as_event).await,
    }
}

/// Writes a reply that is not a routed call; as a one-event stream when the client
/// prefers one (`as_event`) and the reply is a 200.
async fn deliver(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    reply: Reply,
    as_event: bool,
) -> Result<bool> {
    match reply {
        Reply::Response {
            body,
            outcome,
            session_gone,
        } => {
            ctx.outcome = outcome;
            ctx.answered_call(outcome, &body);
            match (session_gone, as_event) {
                (true, _) => respond::json(session, 404, &[], body).await,
                (false, true) => respond::event(session, body).await,
                (false, false) => respond::json(session, 200, &[], body).await,
            }
        }
        Reply::Accepted { outcome } => {
            ctx.outcome = outcome;
            respond::accepted(session).await
        }
        Reply::ToolCall(_) => unreachable!("routed calls are forwarded, not delivered"),
    }
}

/// GET with `Accept: text/event-stream`: the session's server-to-client stream.
pub async fn get(
    shared: &Arc<Shared>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
) -> Result<bool> {
    ctx.method = Method::Stream;
    let headers = &session.req_header().headers;
    let accepts_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            let a = a.to_ascii_lowercase();
            a.contains("text/event-stream") || a.contains("*/*")
        });
    if !accepts_sse {
        ctx.outcome = Outcome::NotAcceptable;
        return respond::refuse(session, 406, "Accept must list text/event-stream").await;
    }
    if let Some(v) = headers.get(VERSION_HEADER) {
        if !v.to_str().is_ok_and(versions::is_supported) {
            ctx.outcome = Outcome::BadRequest;
            return respond::refuse(session, 400, "unsupported MCP-Protocol-Version").await;
        }
    }
    let env = match open_session(session, caller) {
        Ok(env) => env,
        Err(refused) => {
            ctx.outcome = refused.outcome();
            return respond::refuse(session, refused.status(), refused.message()).await;
        }
    };
    let headers = &session.req_header().headers;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // An id of an upstream's reply stream (`<server>:<id>`): that stream, resumed.
    if let Some((server, upstream_id)) = last_event_id.as_deref().and_then(event_id_route) {
        if let Some(server) = caller.ws.server(server).filter(|s| s.usable()) {
            let server = server.clone();
            if let Some(answered) =
                forward::resume(shared, session, ctx, caller, &env, &server, upstream_id).await
            {
                return answered;
            }
        }
    }
    let (framing, replay) = stream::streamable_framing(env.sid, last_event_id.as_deref());
    if last_event_id.is_some() {
        ctx.outcome = if replay.is_empty() {
            Outcome::ResumedEmpty
        } else {
            Outcome::Resumed
        };
    }
    let env = Some(Arc::new(env));
    match stream::ClientStream::new(shared, caller, session, env, framing, None) {
        Ok(stream) => stream.serve(session, replay).await,
        Err(refusal) => over_budget(shared, session, ctx, "null", &refusal).await,
    }
}

/// DELETE: ends the client's session and every upstream session behind it.
pub async fn delete(
    shared: &Arc<Shared>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
) -> Result<bool> {
    ctx.method = Method::Delete;
    let env = match open_session(session, caller) {
        Ok(env) => env,
        Err(refused) => {
            // Counted as a lost session either way: there is nothing to delete.
            ctx.outcome = Outcome::SessionNotFound;
            return respond::refuse(session, refused.status(), refused.message()).await;
        }
    };
    live().end_session(env.sid);
    let ended = shared.upstreams.end(&env);
    shared.upstreams.delete(caller.ws, &ended).await;
    shared.metrics.sessions_closed.inc();
    shared.metrics.sessions_active.dec();
    let mut resp = ResponseHeader::build_no_case(204, Some(1))?;
    resp.insert_header(header::CONTENT_LENGTH, 0)?;
    session.write_response_header(Box::new(resp)).await?;
    Ok(true)
}
