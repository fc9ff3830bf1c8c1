//! The one forwarding path of a routed `tools/call`: sent once through the connectors
//! ([`Upstreams::call`]), whatever the body's size or the upstream's transport, then
//! relayed to the client transport that asked — as an HTTP reply for Streamable HTTP
//! ([`to_client`]), as messages for the legacy stream ([`to_messages`]). What differs
//! by upstream is one `match` on its [`CallReply`] in each.
//!
//! A Streamable HTTP reply is relayed as it arrives: a JSON body byte for byte (its
//! outcome scanned on the way), an event stream rewritten event by event; neither is
//! re-serialised, and only a small JSON body is held whole, to be checked before it
//! goes. A reply the client could not use (not the response to its call, an event
//! stream that ends without one) becomes the JSON-RPC error of a call without a reply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_config::audit::CallOutcome;
use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::jsonrpc;
use gatehouse_mcp::modern;
use gatehouse_mcp::outcome::Outcome;
use gatehouse_mcp::relay::{MessageKind, Relay, SseRewriter, MAX_HELD_EVENT};
use gatehouse_mcp::reply::{answer_outcome, status_outcome, ReplyWatch};
use gatehouse_mcp::sse::SseSplitter;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use serde_json::Value;

use crate::client::request::{Caller, RequestCtx};
use crate::client::respond;
use crate::config::runtime::ServerRt;
use crate::live::live;
use crate::session::failure;
use crate::shared::Shared;
use crate::upstream::error::UpstreamError;
use crate::upstream::http::{METHOD_HEADER, NAME_HEADER, SESSION_HEADER, VERSION_HEADER};
use crate::upstream::pool;
use crate::upstream::upstreams::{is_stateless, CallReply, ServerStream, ToolCall};

/// Headers of the client's request that must not reach an upstream: its credentials,
/// its session with the gateway, framing the gateway recomputes, hop-by-hop ones,
/// `Accept-Encoding` (the gateway reads every reply it relays: it rewrites event
/// streams and scans how the call ended, which a compressed body would hide), and the
/// 2026-07-28 mirrors of method and name (set again for a modern upstream, with the
/// name it knows the tool by). `Mcp-Param-*` headers pass.
static STRIPPED_REQUEST: [HeaderName; 16] = [
    header::AUTHORIZATION,
    header::ACCEPT_ENCODING,
    header::COOKIE,
    header::ORIGIN,
    header::HOST,
    SESSION_HEADER,
    VERSION_HEADER,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TE,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("last-event-id"),
    METHOD_HEADER,
    NAME_HEADER,
];

/// Headers of an upstream's reply the client does not get: its session with the
/// upstream, and framing the gateway writes itself.
static STRIPPED_REPLY: [HeaderName; 7] = [
    SESSION_HEADER,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TRAILER,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// How much of a JSON reply is held looking for where its result starts.
const MAX_HELD_PREFIX: usize = 64 * 1024;
/// JSON replies up to this length are read whole and checked before they are relayed
/// (larger ones stream through unchecked).
const MAX_CHECKED_REPLY: u64 = 64 * 1024;

/// The rest of an upstream's reply stream the client lost, asked for again with
/// `Last-Event-ID` (the upstream's own id, behind the `<server>:` the gateway put on
/// it): the upstream replays what followed on a GET, relayed like the reply itself.
/// `None` when the upstream cannot resume (no GET stream, an error): the caller then
/// serves the session's ordinary stream.
pub async fn resume(
    shared: &Shared,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    env: &SessionEnvelope,
    server: &ServerRt,
    upstream_id: &str,
) -> Option<Result<bool>> {
    let opened = shared
        .upstreams
        .server_stream(caller.rt, env, server, Some(upstream_id), None)
        .await;
    let stream = match opened {
        Ok(Some(ServerStream::Http(stream))) => stream,
        Ok(_) => return None,
        Err(e) => {
            tracing::debug!(server = %server.slug, error = %e, "upstream stream could not be resumed");
            return None;
        }
    };
    ctx.outcome = Outcome::Resumed;
    let relay = Relay {
        keys: &caller.rt.keys,
        sid: env.sid,
        server: &server.slug,
        bare: server.naming == gatehouse_config::Naming::Bare,
        complete_results: false,
    };
    let workspace = caller.ws.slug.clone();
    let mut rewriter = SseRewriter::default();
    let relayed = async {
        let mut head = ResponseHeader::build_no_case(200, Some(3))?;
        head.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
        head.insert_header(header::CACHE_CONTROL, "no-cache")?;
        head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        session.write_response_header(Box::new(head)).await?;
        let mut body = stream.bytes_stream();
        loop {
            let chunk = tokio::select! {
                biased;
                chunk = futures::StreamExt::next(&mut body) => chunk,
                _ = client_gone(session) => {
                    session.set_keepalive(None);
                    return Ok(true);
                }
            };
            let Some(Ok(chunk)) = chunk else { break };
            let out = rewriter.push(&chunk, &relay, &mut |kind, _, _| {
                if kind == MessageKind::ToolsChanged {
                    shared.catalogs.invalidate(&workspace, &server.slug);
                }
                true
            });
            session.write_response_body(out, false).await?;
            if rewriter.oversized() {
                break;
            }
        }
        session.write_response_body(rewriter.finish(), true).await?;
        Ok(true)
    };
    Some(relayed.await)
}

/// Forwards a routed call and answers the Streamable HTTP client with the reply. A
/// client that hangs up ends the call: the upstream connection is dropped with it.
pub async fn to_client(
    shared: &Shared,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
    env: &SessionEnvelope,
    call: ToolCall,
) -> Result<bool> {
    let _in_flight = live().track_request(
        env.sid,
        &gatehouse_mcp::jsonrpc::canonical_id(&call.request_id),
        &call.server.slug,
    );
    // A stateless client's call to an older server: its result lacks `resultType`.
    let stateless = is_stateless(env);
    let complete_results = stateless
        && shared
            .upstreams
            .discovered(caller.rt, &caller.ws.slug, &call.server)
            .await
            .is_none();
    // ...and the modern `_meta` of its request means nothing to that server.
    let mut call = call;
    if complete_results {
        if let Some(body) = modern::strip_body_meta(&call.body) {
            call.body = body;
        }
    }
    let relay = Relay {
        keys: &caller.rt.keys,
        sid: env.sid,
        server: &call.server.slug,
        bare: call.server.naming == gatehouse_config::Naming::Bare,
        complete_results,
    };
    let mut forwarded = HeaderMap::new();
    for (name, value) in &session.req_header().headers {
        if !STRIPPED_REQUEST.contains(name) {
            forwarded.append(name.clone(), value.clone());
        }
    }
    let sent = {
        let sending = shared.upstreams.call(caller.rt, env, &call, &forwarded);
        tokio::select! {
            biased;
            sent = sending => sent,
            _ = client_gone(session) => return client_left(ctx, &call),
        }
    };
    match sent {
        // `_in_flight` holds the call's place at its upstream until it is relayed.
        Ok((CallReply::Http(reply), _in_flight)) => {
            let relayed = relay_http(shared, session, ctx, &relay, &call, reply).await;
            // A relay the client cut short says nothing of the upstream.
            let failure = ctx.relay_failure.take();
            if relayed.is_ok() || failure.is_some() {
                shared
                    .upstreams
                    .relayed(&env.workspace, &call.server, failure.as_ref());
            }
            relayed
        }
        Ok((CallReply::Legacy(conn), _in_flight)) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let mut on_message = move |data: &str| {
                let _ = tx.send(data.to_string());
            };
            let answer = shared
                .upstreams
                .call_legacy(caller.rt, env, &call, conn, &mut on_message);
            relay_messages(shared, session, ctx, &relay, &call, answer, rx).await
        }
        Ok((CallReply::Done(body), _)) => {
            ctx.outcome = Outcome::Ok;
            ctx.answered_call(Outcome::Ok, &body);
            respond::json(session, 200, &[], body).await
        }
        Err(e) => {
            ctx.call_outcome = Some(CallOutcome::UpstreamUnavailable);
            let (status, outcome, body) = failed(&call, &e, stateless);
            ctx.outcome = outcome;
            respond::json(session, status, &[], body).await
        }
    }
}

/// Resolves when the client closes its connection. Only to be awaited while the
/// client's reply is incomplete: its request was read whole, so until then anything
/// it sends is the end of it; once a reply is complete, it may send its next request
/// on the same connection, and reading here would take that.
async fn client_gone(session: &mut ServerSession) {
    let _ = session.read_body_or_idle(true).await;
}

/// The client hung up before its call was answered.
fn client_left(ctx: &mut RequestCtx, call: &ToolCall) -> Result<bool> {
    ctx.outcome = Outcome::Error;
    let mut e = Error::explain(
        ErrorType::ConnectionClosed,
        format!(
            "the client left before {:?} answered its call",
            call.server.slug
        ),
    );
    e.as_down();
    Err(e)
}

/// How a call that got no reply is answered: a session gone is a 404 (the client
/// re-initializes; a stateless client has none to reopen), anything else a JSON-RPC
/// error in the client's session.
fn failed(call: &ToolCall, e: &UpstreamError, stateless: bool) -> (u16, Outcome, Bytes) {
    let (id, server) = (&call.request_id, &call.server.slug);
    match e {
        UpstreamError::SessionGone if !stateless => (
            404,
            Outcome::SessionNotFound,
            failure::session_gone(id, server),
        ),
        e => (
            200,
            Outcome::UpstreamUnavailable,
            failure::unavailable(id, server, e),
        ),
    }
}

/// Relays a Streamable HTTP upstream's reply as it arrives.
async fn relay_http(
    shared: &Shared,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    relay: &Relay<'_>,
    call: &ToolCall,
    reply: pool::Reply,
) -> Result<bool> {
    let status = reply.status().as_u16();
    if !(200..300).contains(&status) {
        ctx.outcome = Outcome::UpstreamError;
        ctx.call_outcome = Some(status_outcome(status));
    }
    let (mut parts, mut body) = reply.into_parts();
    let mut rewriter = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"))
        .then(SseRewriter::default);
    // A JSON result of an older server for a stateless client: its first bytes are
    // held until `"result":{` shows where `resultType` goes.
    let mut held = (relay.complete_results && rewriter.is_none()).then(BytesMut::new);
    // Framed, so the client's connection carries its next request. A JSON reply is
    // relayed unchanged, so the upstream's length holds; an event stream is chunked.
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .filter(|_| rewriter.is_none() && held.is_none())
        .cloned();
    for name in &STRIPPED_REPLY {
        parts.headers.remove(name);
    }
    match &length {
        Some(len) => parts.headers.insert(header::CONTENT_LENGTH, len.clone()),
        None => parts.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        ),
    };
    parts.version = http::Version::HTTP_11;
    // The upstream's head as it came, less what the client must not get: no header
    // is parsed or copied again.
    let head = ResponseHeader::from(parts);
    // Bytes of a `Content-Length` reply still to relay: once none are, the client has
    // its whole reply and may send its next request, so it is no longer watched.
    let mut unsent: Option<u64> = length.as_ref().and_then(|v| v.to_str().ok()?.parse().ok());
    if (200..300).contains(&status) && unsent.is_some_and(|n| n <= MAX_CHECKED_REPLY) {
        return relay_checked(session, ctx, call, head, body).await;
    }
    let mut watch = ReplyWatch::default();
    // Why a response on the event stream was not taken for the call's.
    let mut stray: Option<&'static str> = None;
    let relayed = async {
        session.write_response_header(Box::new(head)).await?;
        loop {
            let waiting = unsent != Some(0);
            let frame = tokio::select! {
                biased;
                frame = tokio::time::timeout(read_within(call, ctx.started()), body.frame()) => frame,
                _ = client_gone(session), if waiting => {
                    if watch.outcome().is_some() {
                        // The client has its response and hung up before the upstream
                        // ended its stream: the request was answered.
                        session.set_keepalive(None);
                        return Ok(true);
                    }
                    return client_left(ctx, call);
                }
            };
            // An event stream that ends before the response can still be answered.
            let answerable = rewriter.is_some() && watch.outcome().is_none();
            let chunk = match frame {
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(chunk) => chunk,
                    Err(_) => continue,
                },
                Ok(None) if answerable => {
                    let why = stray.unwrap_or("event stream ended without a response");
                    let why = UpstreamError::Protocol(why.into());
                    return ended_unanswered(session, ctx, call, why).await;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    let why = UpstreamError::Protocol(e.to_string());
                    if answerable {
                        return ended_unanswered(session, ctx, call, why).await;
                    }
                    return broke_off(ctx, call, why);
                }
                Err(_) if answerable => {
                    return ended_unanswered(session, ctx, call, UpstreamError::Timeout).await;
                }
                Err(_) => return broke_off(ctx, call, UpstreamError::Timeout),
            };
            let out = match rewriter.as_mut() {
                Some(w) => {
                    let out = w.push(&chunk, relay, &mut |kind, id, json| {
                        if kind == MessageKind::ToolsChanged {
                            shared
                                .catalogs
                                .invalidate(&call_workspace(ctx), relay.server);
                        }
                        // A response to another request would leave the client
                        // waiting for its own: dropped, and the call unanswered.
                        if kind == MessageKind::Response
                            && !id.is_some_and(|id| same_id(id, &call.request_id))
                        {
                            stray = Some(ANOTHER_REQUEST);
                            return false;
                        }
                        watch.message(kind, json);
                        true
                    });
                    if w.oversized() {
                        if !out.is_empty() {
                            session.write_response_body(out, false).await?;
                        }
                        if watch.outcome().is_some() {
                            session.write_response_body(Bytes::new(), true).await?;
                            return Ok(true);
                        }
                        let why = UpstreamError::Protocol(format!(
                            "an event larger than {} MiB",
                            MAX_HELD_EVENT >> 20
                        ));
                        return ended_unanswered(session, ctx, call, why).await;
                    }
                    out
                }
                None => {
                    watch.body(&chunk);
                    match held.as_mut() {
                        None => chunk,
                        Some(prefix) => {
                            prefix.extend_from_slice(&chunk);
                            match modern::result_type_insertion(prefix) {
                                Some((at, text)) => {
                                    let mut out =
                                        BytesMut::with_capacity(prefix.len() + text.len());
                                    out.extend_from_slice(&prefix[..at]);
                                    out.extend_from_slice(text);
                                    out.extend_from_slice(&prefix[at..]);
                                    held = None;
                                    out.freeze()
                                }
                                None if prefix.len() > MAX_HELD_PREFIX => {
                                    let out = prefix.split().freeze();
                                    held = None;
                                    out
                                }
                                None => Bytes::new(),
                            }
                        }
                    }
                }
            };
            if !out.is_empty() {
                if let Some(left) = unsent.as_mut() {
                    *left = left.saturating_sub(out.len() as u64);
                }
                session.write_response_body(out, false).await?;
            }
        }
        let rest = match (rewriter.as_mut(), held.as_mut()) {
            (Some(w), _) => w.finish(),
            // Not a result (an error): as it came.
            (None, Some(prefix)) => prefix.split().freeze(),
            (None, None) => Bytes::new(),
        };
        session.write_response_body(rest, true).await?;
        Ok(true)
    }
    .await;
    // Whatever ended the relay, the reply seen so far tells how the call ended (a
    // result that arrived before the upstream or the client went away still counts).
    if ctx.call_outcome.is_none() {
        ctx.call_outcome = watch.outcome();
    }
    relayed
}

/// A small JSON reply, read whole before its head goes out (at most
/// [`MAX_CHECKED_REPLY`] bytes, each read within the call's timeout) and relayed only
/// if it is the response to this call: one that is not JSON, or answers another
/// request id, would leave the client with bytes it cannot use or waiting for an
/// answer that never comes. It gets the error of a call without a reply instead.
async fn relay_checked(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    call: &ToolCall,
    head: ResponseHeader,
    mut body: pool::PooledBody,
) -> Result<bool> {
    let mut whole = BytesMut::new();
    let read = loop {
        match tokio::time::timeout(read_within(call, ctx.started()), body.frame()).await {
            Err(_) => break Err(UpstreamError::Timeout),
            Ok(None) => break Ok(whole.freeze()),
            Ok(Some(Err(e))) => break Err(UpstreamError::Protocol(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Ok(chunk) = frame.into_data() {
                    whole.extend_from_slice(&chunk);
                }
            }
        }
    };
    let checked = read.and_then(|reply| {
        answers(&reply, &call.request_id)
            .map(|()| reply)
            .map_err(|why| UpstreamError::Protocol(why.into()))
    });
    match checked {
        Ok(reply) => {
            let mut watch = ReplyWatch::default();
            watch.body(&reply);
            ctx.call_outcome = watch.outcome();
            session.write_response_header(Box::new(head)).await?;
            session.write_response_body(reply, true).await?;
            Ok(true)
        }
        Err(why) => {
            let error = unanswered(ctx, call, why);
            respond::json(session, 200, &[], error).await
        }
    }
}

/// How long the next read of a call's reply may wait: the server's silence limit,
/// less once the call, sent at `since`, nears its whole time.
fn read_within(call: &ToolCall, since: Instant) -> Duration {
    let left = (since + call.server.max_call).saturating_duration_since(Instant::now());
    call.server.call_timeout.min(left)
}

/// Whether `reply` is a JSON-RPC response to the request whose id is `request_id`
/// (an error without an id, as a server that could not read the request sends it,
/// counts); what it is instead.
fn answers(reply: &[u8], request_id: &str) -> std::result::Result<(), &'static str> {
    let message: jsonrpc::Message =
        serde_json::from_slice(reply).map_err(|_| "the reply is not JSON")?;
    if message.method.is_some() || (message.result.is_none() && message.error.is_none()) {
        return Err("the reply is not a JSON-RPC response");
    }
    match message.id {
        Some(id) if same_id(id, request_id) => Ok(()),
        None if message.error.is_some() => Ok(()),
        Some(id) if id.get() == "null" && message.error.is_some() => Ok(()),
        _ => Err(ANOTHER_REQUEST),
    }
}

/// What a reply that answers another request id is told apart by.
const ANOTHER_REQUEST: &str = "the response is to another request";

/// Whether the JSON-RPC id `id` is the request's (raw JSON, written either way).
fn same_id(id: &serde_json::value::RawValue, request_id: &str) -> bool {
    id.get() == request_id || jsonrpc::canonical_id(id.get()) == jsonrpc::canonical_id(request_id)
}

fn call_workspace(ctx: &RequestCtx) -> String {
    ctx.workspace.clone().unwrap_or_default()
}

/// The upstream's event stream ended, broke off or stalled before it carried the
/// call's response: the client's stream gets the JSON-RPC error a call that got no
/// reply gets, and ends cleanly (its connection stays usable). What the rewriter
/// holds of an unfinished event is dropped.
async fn ended_unanswered(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    call: &ToolCall,
    why: UpstreamError,
) -> Result<bool> {
    let error = unanswered(ctx, call, why);
    session.write_response_body(event(&error), true).await?;
    Ok(true)
}

/// A call the upstream did not answer usably: noted for its breaker, and the error
/// its client gets.
fn unanswered(ctx: &mut RequestCtx, call: &ToolCall, why: UpstreamError) -> Bytes {
    ctx.outcome = Outcome::UpstreamError;
    ctx.call_outcome = Some(CallOutcome::UpstreamUnavailable);
    let error = failure::unavailable(&call.request_id, &call.server.slug, &why);
    ctx.relay_failure = Some(why);
    error
}

/// The upstream's reply broke off after its head was relayed: the client's reply
/// cannot be completed, so its connection goes.
fn broke_off(ctx: &mut RequestCtx, call: &ToolCall, why: UpstreamError) -> Result<bool> {
    ctx.outcome = Outcome::UpstreamError;
    let said = format!("upstream {} reply broke off: {why}", call.server.slug);
    ctx.relay_failure = Some(why);
    Error::e_explain(ErrorType::ReadError, said)
}

/// Relays a legacy SSE upstream's call: plain JSON when the upstream said nothing
/// else, else an event stream carrying what it said (progress, requests for the
/// client) and then the response.
async fn relay_messages(
    shared: &Shared,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    relay: &Relay<'_>,
    call: &ToolCall,
    answer: impl std::future::Future<Output = Result<String, UpstreamError>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> Result<bool> {
    tokio::pin!(answer);
    let mut streaming = false;
    let mut outcome = None;
    loop {
        let data = match outcome {
            None => tokio::select! {
                done = &mut answer => {
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
            shared
                .catalogs
                .invalidate(&call_workspace(ctx), relay.server);
        }
        if !streaming {
            let mut head = ResponseHeader::build_no_case(200, Some(3))?;
            head.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
            head.insert_header(header::CACHE_CONTROL, "no-cache")?;
            // Chunked, so the client's connection outlives the reply.
            head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            session.write_response_header(Box::new(head)).await?;
            streaming = true;
        }
        session
            .write_response_body(event(out.json.as_bytes()), false)
            .await?;
    }
    let outcome = outcome.expect("the loop ends only once the call has");
    ctx.call_outcome = Some(answer_outcome(&outcome));
    let body = match outcome {
        Ok(response) if relay.complete_results => {
            modern::complete_response(Bytes::from(response), None, false)
        }
        Ok(response) => Bytes::from(response),
        Err(e) => {
            let (status, word, body) = failed(call, &e, relay.complete_results);
            ctx.outcome = word;
            if !streaming {
                return respond::json(session, status, &[], body).await;
            }
            body
        }
    };
    if !streaming {
        return respond::json(session, 200, &[], body).await;
    }
    session.write_response_body(event(&body), true).await?;
    Ok(true)
}

/// One message as an SSE event of a call's reply stream.
fn event(json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// Forwards a routed call for a legacy client, whose answer goes to its stream: what
/// the upstream says during the call goes to `on_message` as it said it; returns the
/// response.
pub async fn to_messages(
    shared: &Arc<Shared>,
    rt: &crate::config::runtime::Runtime,
    env: &SessionEnvelope,
    call: &ToolCall,
    on_message: &mut (dyn FnMut(&str) + Send),
) -> Result<String, UpstreamError> {
    let since = Instant::now();
    // A legacy client's headers are its own business with the gateway: none are
    // passed on.
    let (reply, _in_flight) = shared
        .upstreams
        .call(rt, env, call, &HeaderMap::new())
        .await?;
    match reply {
        CallReply::Done(body) => String::from_utf8(body.to_vec())
            .map_err(|_| UpstreamError::Protocol("reply is not UTF-8".into())),
        CallReply::Legacy(conn) => {
            shared
                .upstreams
                .call_legacy(rt, env, call, conn, on_message)
                .await
        }
        CallReply::Http(reply) => {
            let read = read_messages(call, reply, since, on_message).await;
            shared
                .upstreams
                .relayed(&env.workspace, &call.server, read.as_ref().err());
            read
        }
    }
}

/// Reads a Streamable HTTP reply until the response to the call: every other message
/// on an event stream goes to `on_message` first.
async fn read_messages(
    call: &ToolCall,
    reply: pool::Reply,
    since: Instant,
    on_message: &mut (dyn FnMut(&str) + Send),
) -> Result<String, UpstreamError> {
    let status = reply.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(UpstreamError::Status(status));
    }
    let is_sse = reply
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"));
    let mut body = reply.into_body();
    let mut next = async move || -> Result<Option<Bytes>, UpstreamError> {
        loop {
            match tokio::time::timeout(read_within(call, since), body.frame()).await {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(UpstreamError::Protocol(e.to_string())),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    };
    if !is_sse {
        let mut all = BytesMut::new();
        while let Some(chunk) = next().await? {
            all.extend_from_slice(&chunk);
        }
        return String::from_utf8(all.to_vec())
            .map_err(|_| UpstreamError::Protocol("reply is not UTF-8".into()));
    }
    let want: Value = serde_json::from_str(&call.request_id)
        .map_err(|_| UpstreamError::Protocol("request id is not JSON".into()))?;
    let mut splitter = SseSplitter::default();
    while let Some(chunk) = next().await? {
        splitter.push(&chunk);
        while let Some(event) = splitter.next_event() {
            let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if message.get("method").is_none() && message.get("id") == Some(&want) {
                return Ok(event.data);
            }
            on_message(&event.data);
        }
    }
    Err(UpstreamError::Protocol(
        "event stream ended without a response".into(),
    ))
}
