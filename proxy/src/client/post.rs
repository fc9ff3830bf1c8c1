//! A POST to a workspace's MCP endpoint, before it is known which era it speaks: the
//! checks both eras share (`Accept`, the body within its limit, one JSON-RPC message),
//! then the era picks the transport — [`streamable`] for `initialize` and the messages
//! of a session, [`stateless`] for a request of the stateless 2026-07-28 era. Both
//! eras are served on the same URL at once, as the spec allows.

use std::sync::Arc;

use gatehouse_mcp::jsonrpc::{self, Parsed};
use gatehouse_mcp::modern::{self, Era, RequestParams};
use gatehouse_mcp::outcome::Outcome;
use http::{header, HeaderValue};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;

use crate::client::request::{over_call_budget, read_body, Caller, RequestCtx};
use crate::client::{respond, stateless, streamable};
use crate::shared::Shared;
use crate::upstream::http::{SESSION_HEADER, VERSION_HEADER};

/// One POSTed JSON-RPC message, handed to the transport of its era.
pub async fn post(
    shared: &Arc<Shared>,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    caller: &Caller<'_>,
) -> Result<bool> {
    let headers = &session.req_header().headers;
    let accept = headers.get(header::ACCEPT).map(HeaderValue::as_bytes);
    let as_event = respond::prefers_event_stream(accept);
    if !respond::accepts_mcp_replies(accept) {
        ctx.outcome = Outcome::NotAcceptable;
        return respond::refuse(
            session,
            406,
            "Accept must list application/json and text/event-stream",
        )
        .await;
    }
    let max = caller.rt.limits.max_body_bytes;
    let Some(body) = read_body(session, max).await? else {
        ctx.outcome = Outcome::TooLarge;
        let msg = format!("request body exceeds the limit of {max} bytes");
        return respond::refuse(session, 413, &msg).await;
    };
    let parsed = match jsonrpc::parse(&body) {
        Ok(p) => p,
        Err(rejection) => {
            ctx.outcome = Outcome::BadRequest;
            let err = jsonrpc::error("null", rejection.code(), &rejection.to_string());
            return respond::json(session, 400, &[], err).await;
        }
    };
    if let Parsed::Request(msg) = &parsed {
        if let Some(answered) = over_call_budget(shared, session, ctx, caller, msg).await {
            return answered;
        }
    }
    // A session's message is of the session era whatever it carries: its params are
    // not read here. Otherwise one pass finds `_meta` (and the name `Mcp-Name`
    // mirrors, kept for the stateless transport).
    let headers = &session.req_header().headers;
    let read = (!headers.contains_key(SESSION_HEADER)).then(|| {
        let params = match &parsed {
            Parsed::Request(m) | Parsed::Notification(m) => m.params,
            Parsed::Response(_) => None,
        };
        RequestParams::read(params)
    });
    let era = match &read {
        None => Era::Legacy,
        Some(read) => {
            let method = match &parsed {
                Parsed::Request(m) | Parsed::Notification(m) => m.method.as_deref(),
                Parsed::Response(_) => None,
            };
            modern::era_of(
                method.unwrap_or_default(),
                read.version(),
                headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()),
                false,
            )
        }
    };
    match era {
        Era::Legacy => {
            streamable::message(shared, session, ctx, caller, &body, parsed, as_event).await
        }
        Era::Modern => {
            let posted = stateless::Posted {
                body: &body,
                parsed,
                read: read.expect("a modern message has no session"),
            };
            stateless::message(shared, session, ctx, caller, posted, as_event).await
        }
    }
}
