//! The stateless transport of MCP 2026-07-28 on the client side: every POST is a
//! request that carries its own protocol version, client capabilities and identity in
//! `_meta`, checked against the headers that mirror the body (`MCP-Protocol-Version`,
//! `Mcp-Method`, `Mcp-Name`). There is no `initialize` and no session id.
//!
//! A request is served under a *stateless envelope*: the same [`SessionEnvelope`] the
//! session era seals into its ids, derived here from (workspace, token, client
//! capabilities) and never sent to the client. The session room answers it as it
//! answers any session's request; the connectors reach modern upstreams statelessly
//! and give older ones a pooled session keyed by that envelope (any replica derives
//! the same one). What the era adds is answered here: `server/discover`, the
//! `subscriptions/listen` stream, the removed methods (`initialize`, `ping`,
//! `logging/setLevel`, `resources/subscribe`) as unknown, and the fields every result
//! of the era carries (`resultType`, caching hints, the gateway's `serverInfo`).

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_mcp::capabilities::merged_capabilities;
use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::jsonrpc::{self, Message, Parsed, INVALID_REQUEST, METHOD_NOT_FOUND};
use gatehouse_mcp::modern::{
    self, CacheHint, ListenFilter, MetaRead, MirrorHeaders, RequestParams,
};
use gatehouse_mcp::outcome::{Method, Outcome, Transport};
use gatehouse_mcp::versions;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::audit::record::CallRecord;
use crate::client::forward;
use crate::client::request::{over_budget, Caller, RequestCtx};
use crate::client::respond;
use crate::client::stream::{plain_event, ClientStream, Framing};
use crate::live::live;
use crate::session::dispatch::{self, Reply, Scope};
use crate::shared::Shared;
use crate::upstream::http::{METHOD_HEADER, NAME_HEADER, VERSION_HEADER};

/// How long a client may cache what the gateway composes itself (merged lists,
/// discovery): not at all — a config change alters them at any moment, and the
/// listen stream announces it.
const COMPOSED: CacheHint = CacheHint::private(0);

/// A POSTed message as [`post::post`] read it: the body, the message, and what one
/// pass over its params found.
///
/// [`post::post`]: crate::client::post::post
pub struct Posted<'a> {
    pub body: &'a Bytes,
    pub parsed: Parsed<'a>,
    pub read: RequestParams<'a>,
}

/// A POSTed message of the stateless era (from [`post::post`]).
///
/// [`post::post`]: crate::client::post::post
pub async fn message(
    shared: &Arc<Shared>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    posted: Posted<'_>,
    as_event: bool,
) -> Result<bool> {
    let Posted { body, parsed, read } = posted;
    ctx.transport = Transport::Stateless;
    let msg = match parsed {
        Parsed::Request(msg) => msg,
        // The era defines no client notification over HTTP (closing a reply stream
        // cancels its request); one that comes is accepted and dropped.
        Parsed::Notification(_) => {
            ctx.method = Method::Notification;
            return respond::accepted(session).await;
        }
        Parsed::Response(_) => {
            ctx.method = Method::Response;
            ctx.outcome = Outcome::BadRequest;
            let err = jsonrpc::error(
                "null",
                INVALID_REQUEST,
                "Invalid Request: protocol version 2026-07-28 has no client responses; answer input requests by retrying the request with inputResponses",
            );
            return respond::json(session, 400, &[], err).await;
        }
    };
    let rid = msg.id.expect("a request has an id");
    let id = rid.get();
    let method = msg.method.as_deref().unwrap_or_default();
    ctx.method = Method::of_request(method);
    let named = read.mirrored(method);
    let meta = read.meta;
    let checked = {
        let headers = &session.req_header().headers;
        let mirrors = MirrorHeaders {
            protocol_version: headers.get(VERSION_HEADER).map(|v| v.as_bytes()),
            method: headers.get(METHOD_HEADER).map(|v| v.as_bytes()),
            name: headers.get(NAME_HEADER).map(|v| v.as_bytes()),
        };
        modern::check_request(&meta, method, named.as_deref(), &mirrors)
    };
    if let Err(refusal) = checked {
        ctx.outcome = Outcome::BadRequest;
        return respond::json(session, 400, &[], refusal.error(id)).await;
    }
    let MetaRead::Found(meta) = meta else {
        unreachable!("checked above")
    };
    let env = envelope(caller, &meta);
    let scope = Scope {
        upstreams: &shared.upstreams,
        catalogs: &shared.catalogs,
        rt: caller.rt,
        ws: caller.ws,
        name: read.name,
        tools: caller.token.scope.as_deref(),
    };
    // The audited target is the name `Mcp-Name` mirrors, read once above.
    ctx.call = CallRecord::for_target(
        &msg,
        named.as_deref(),
        caller.ws,
        caller.token,
        ctx.transport,
        ctx.started(),
    )
    .map(|call| call.journaled(&shared.audit));
    let reply = match method {
        "server/discover" => discover(shared, caller, &env, rid).await,
        "subscriptions/listen" => return listen(shared, session, ctx, caller, env, &msg).await,
        // The session era's own methods, and those this era removed.
        "initialize"
        | "ping"
        | "logging/setLevel"
        | "resources/subscribe"
        | "resources/unsubscribe" => Reply::error(
            id,
            METHOD_NOT_FOUND,
            &format!("Method not found: {method} is not part of protocol version 2026-07-28"),
            Outcome::MethodNotFound,
        ),
        _ => dispatch::request(scope, &env, body, &msg).await,
    };
    match reply {
        Reply::ToolCall(call) => forward::to_client(shared, session, ctx, caller, &env, call).await,
        reply => deliver(session, ctx, reply, method, as_event).await,
    }
}

/// The stateless envelope of a request: the same for every request of one token
/// with the same client capabilities, on every replica, so the upstream sessions
/// pooled for it are shared and rebuilt anywhere. Each worker thread keeps the last
/// few it derived (no lock, no hashing of a hit beyond comparing its parts).
fn envelope(caller: &Caller<'_>, meta: &modern::RequestMeta<'_>) -> Arc<SessionEnvelope> {
    // The texts as the client sent them: a client repeats its own, and one that
    // reorders its capabilities costs at most another pooled upstream session.
    let capabilities = meta.client_capabilities.map_or("{}", |r| r.get());
    let client_info = meta.client_info.map_or(
        r#"{"name":"unnamed 2026-07-28 client","version":"0"}"#,
        |r| r.get(),
    );
    let token: &str = &caller.token.id;
    let slug = caller.ws.slug.as_str();
    RECENT.with_borrow_mut(|recent| {
        if let Some(i) = recent
            .iter()
            .position(|e| derived_from(e, slug, token, capabilities, client_info))
        {
            let env = recent.remove(i);
            recent.push(env.clone());
            return env;
        }
        let env = Arc::new(derive_envelope(slug, token, capabilities, client_info));
        if recent.len() == RECENT_ENVELOPES {
            recent.remove(0);
        }
        recent.push(env.clone());
        env
    })
}

/// How many envelopes a worker thread remembers (most recently used last).
const RECENT_ENVELOPES: usize = 16;

thread_local! {
    static RECENT: std::cell::RefCell<Vec<Arc<SessionEnvelope>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `client_init` as [`derive_envelope`] writes it.
fn client_init(capabilities: &str, client_info: &str) -> String {
    format!(r#"{{"capabilities":{capabilities},"clientInfo":{client_info}}}"#)
}

/// Whether `env` is the one [`derive_envelope`] gives for these parts.
fn derived_from(
    env: &SessionEnvelope,
    slug: &str,
    token: &str,
    capabilities: &str,
    client_info: &str,
) -> bool {
    env.workspace == slug
        && env.token_id == token
        && env
            .client_init
            .strip_prefix(r#"{"capabilities":"#)
            .and_then(|rest| rest.strip_prefix(capabilities))
            .and_then(|rest| rest.strip_prefix(r#","clientInfo":"#))
            .and_then(|rest| rest.strip_suffix('}'))
            == Some(client_info)
}

fn derive_envelope(
    slug: &str,
    token: &str,
    capabilities: &str,
    client_info: &str,
) -> SessionEnvelope {
    let mut hash = Sha256::new();
    for part in [slug, token, capabilities] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    let mut sid = [0u8; 16];
    sid.copy_from_slice(&hash.finalize()[..16]);
    SessionEnvelope {
        sid,
        issued_at: 0,
        workspace: slug.to_string(),
        token_id: token.to_string(),
        client_version: versions::MODERN_VERSION.to_string(),
        client_init: client_init(capabilities, client_info),
        upstreams: Vec::new(),
    }
}

/// `server/discover`: the versions the gateway speaks, what it can route (the union
/// of what its upstreams announced), the modern upstreams' instructions, and who it is.
async fn discover(
    shared: &Shared,
    caller: &Caller<'_>,
    env: &SessionEnvelope,
    rid: &serde_json::value::RawValue,
) -> Reply {
    let servers: Vec<_> = caller
        .ws
        .servers
        .iter()
        .filter(|s| s.enabled && s.usable())
        .collect();
    let known = futures::future::join_all(servers.iter().map(|server| async move {
        if server.skill.is_some() {
            return (Some(json!({"tools": {}})), None);
        }
        let upstreams = &shared.upstreams;
        if let Some(found) = upstreams.discovered(caller.rt, &caller.ws.slug, server).await {
            return (Some(found.capabilities.clone()), found.instructions.clone());
        }
        let capabilities = match live().capabilities(&caller.ws.slug, &server.slug, server.fingerprint)
        {
            Some(c) => Some(c),
            // An older server not yet asked: its pooled session's `initialize` tells.
            None => match upstreams.open_pooled(caller.rt, env, server).await {
                Ok(()) => upstreams.known_capabilities(caller.rt, env, server).await,
                Err(e) => {
                    tracing::warn!(workspace = %caller.ws.slug, server = %server.slug, error = %e, "could not learn an upstream's capabilities for server/discover");
                    None
                }
            },
        };
        (capabilities, None)
    }))
    .await;
    let mut capabilities = Vec::new();
    let mut instructions = Vec::new();
    for (server, (caps, text)) in servers.iter().zip(known) {
        if let Some(caps) = caps {
            live().remember_capabilities(
                &caller.ws.slug,
                &server.slug,
                server.fingerprint,
                caps.clone(),
            );
            capabilities.push(caps);
        }
        if let Some(text) = text {
            instructions.push(format!("## {}\n{}", server.slug, text.trim()));
        }
    }
    let mut result = json!({
        "supportedVersions": versions::ALL_VERSIONS,
        "capabilities": merged_capabilities(&capabilities),
    });
    if !instructions.is_empty() {
        result["instructions"] = Value::String(instructions.join("\n\n"));
    }
    let body = jsonrpc::result(rid, &serde_json::to_vec(&result).expect("json"));
    Reply::Response {
        body,
        outcome: Outcome::Ok,
        session_gone: false,
    }
}

/// `subscriptions/listen`: a stream that stays open, acknowledged first, then the
/// change notifications the client opted in to — from every upstream (a modern one's
/// own listen stream, an older one's server stream) and from config changes —
/// tagged with the request's id.
async fn listen(
    shared: &Arc<Shared>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    env: Arc<SessionEnvelope>,
    msg: &Message<'_>,
) -> Result<bool> {
    ctx.method = Method::Listen;
    ctx.call = None;
    let params: Value = msg
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_else(|| json!({}));
    let filter = ListenFilter::from_params(&params);
    let id = jsonrpc::raw_id(msg.id).to_string();
    let ack = filter.acknowledgement(&id);
    let framing = Framing::Listen {
        id: id.clone(),
        filter: Arc::new(filter),
    };
    let first = vec![plain_event(ack.as_bytes())];
    match ClientStream::new(shared, caller, session, Some(env), framing, None) {
        Ok(stream) => stream.serve(session, first).await,
        Err(refusal) => over_budget(shared, session, ctx, &id, &refusal).await,
    }
}

/// Writes a reply of the gateway's own (or an upstream's, through the session room):
/// a result completed for the era, an error with the status the era gives it.
async fn deliver(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    reply: Reply,
    method: &str,
    as_event: bool,
) -> Result<bool> {
    let (body, outcome) = match reply {
        Reply::Response {
            body,
            outcome,
            session_gone: false,
        } => (body, outcome),
        // A pooled session the upstream dropped twice in a row: nothing for the client
        // to reopen, so an error it may retry.
        Reply::Response {
            body,
            session_gone: true,
            ..
        } => {
            let id = error_id(&body);
            let err = jsonrpc::error(
                &id,
                jsonrpc::INTERNAL_ERROR,
                "an upstream server ended the gateway's session with it; retry the request",
            );
            (err, Outcome::UpstreamUnavailable)
        }
        Reply::Accepted { outcome } => {
            ctx.outcome = outcome;
            return respond::accepted(session).await;
        }
        Reply::ToolCall(_) => unreachable!("routed calls are forwarded, not delivered"),
    };
    ctx.outcome = outcome;
    ctx.answered_call(outcome, &body);
    let status = match error_code(&body) {
        Some(code) => modern::error_status(code),
        None => 200,
    };
    let body = if status == 200 && error_code(&body).is_none() {
        let hint = modern::is_cacheable(method).then_some(COMPOSED);
        modern::complete_response(body, hint, true)
    } else {
        body
    };
    if as_event && status == 200 {
        respond::event(session, body).await
    } else {
        respond::json(session, status, &[], body).await
    }
}

/// The `error.code` of a JSON-RPC response, if it is an error.
fn error_code(body: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Code {
        code: i64,
    }
    #[derive(Deserialize)]
    struct Response {
        error: Option<Code>,
    }
    serde_json::from_slice::<Response>(body)
        .ok()?
        .error
        .map(|e| e.code)
}

/// The raw `id` of a JSON-RPC response.
fn error_id(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Response<'a> {
        #[serde(borrow)]
        id: Option<&'a serde_json::value::RawValue>,
    }
    serde_json::from_slice::<Response>(body)
        .ok()
        .and_then(|r| r.id.map(|i| i.get().to_string()))
        .unwrap_or_else(|| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_envelope_matches_only_its_own_parts() {
        let env = derive_envelope("eng", "t1", r#"{"sampling":{}}"#, r#"{"name":"a"}"#);
        assert!(derived_from(
            &env,
            "eng",
            "t1",
            r#"{"sampling":{}}"#,
            r#"{"name":"a"}"#
        ));
        assert!(!derived_from(
            &env,
            "eng",
            "t2",
            r#"{"sampling":{}}"#,
            r#"{"name":"a"}"#
        ));
        assert!(!derived_from(
            &env,
            "ops",
            "t1",
            r#"{"sampling":{}}"#,
            r#"{"name":"a"}"#
        ));
        assert!(!derived_from(&env, "eng", "t1", "{}", r#"{"name":"a"}"#));
        assert!(!derived_from(
            &env,
            "eng",
            "t1",
            r#"{"sampling":{}}"#,
            r#"{"name":"b"}"#
        ));
        // Same token and capabilities, other client info: the same upstream sessions.
        let other = derive_envelope("eng", "t1", r#"{"sampling":{}}"#, r#"{"name":"b"}"#);
        assert_eq!(env.sid, other.sid);
        assert_ne!(env.sid, derive_envelope("eng", "t1", "{}", "{}").sid);
        assert_ne!(
            env.sid,
            derive_envelope("eng", "t2", r#"{"sampling":{}}"#, "{}").sid
        );
    }
}
