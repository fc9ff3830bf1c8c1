//! The Pingora request path, read top to bottom. Every request is answered from
//! `request_filter`; Pingora is the server (listeners, HTTP/1.1, the phases), and a
//! routed call's upstream leg is the gateway's own (`client::forward`):
//!
//! 1. **auth** — the path names a workspace endpoint, the origin is allowed, the bearer
//!    token is valid for that workspace (`config::auth`);
//! 2. **route** — the endpoint and method choose a client transport;
//! 3. **dispatch** — the transport reads the message and the session room answers it
//!    or routes it (`client::streamable`, `client::legacy`, `session::dispatch`);
//! 4. **forward** and **relay** — a routed call is sent to its upstream and the reply
//!    relayed as it arrives (`client::forward`, `upstream::upstreams`);
//! 5. **log** — `logging` counts the request and closes its audit record.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_config::audit::CallOutcome;
use gatehouse_mcp::outcome::{Outcome, Transport};
use http::{header, HeaderValue, Method};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use crate::client::request::{Caller, RequestCtx};
use crate::client::respond::{self, Endpoint};
use crate::client::{legacy, streamable};
use crate::config::current::unix_now;
use crate::shared::Shared;
use crate::upstream::http::SESSION_HEADER;

/// The data plane service.
pub struct Gateway {
    pub state: Arc<Shared>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// Runs first, for every request, and answers it: auth, route, then the client
    /// transport. Always `Ok(true)` (answered) or an error.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Auth.
        let rt = self.state.config.load();
        let req = session.req_header();
        let Some((slug, endpoint)) = respond::route(req.uri.path()) else {
            ctx.outcome = Outcome::NotFound;
            return respond::refuse(session, 404, "not found").await;
        };
        let slug = slug.to_string();
        if let Some(origin) = req.headers.get(header::ORIGIN) {
            if !respond::origin_allowed(origin.as_bytes(), &rt.allowed_origins) {
                ctx.outcome = Outcome::ForbiddenOrigin;
                return respond::refuse(session, 403, "origin not allowed").await;
            }
        }
        let auth = rt.tokens.authenticate(
            req.headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            &slug,
            unix_now(),
        );
        let (token, ws) = match auth
            .ok()
            .and_then(|t| rt.workspaces.get(&slug).map(|ws| (t, ws.clone())))
        {
            Some(found) => found,
            None => {
                let reason = auth.err().map_or("unknown", |f| f.as_label());
                self.state
                    .metrics
                    .auth_failures
                    .with_label_values(&[reason])
                    .inc();
                ctx.outcome = Outcome::Unauthorized;
                return respond::unauthorized(session).await;
            }
        };
        ctx.workspace = Some(slug);
        let caller = Caller {
            rt: &rt,
            ws: &ws,
            token,
        };
        // Route to a client transport, which dispatches, forwards and relays.
        let method = session.req_header().method.clone();
        let has_session = session.req_header().headers.contains_key(SESSION_HEADER);
        let state = &self.state;
        match (endpoint, method) {
            (Endpoint::Messages, Method::POST) => {
                ctx.transport = Transport::LegacySse;
                legacy::message(state, session, ctx, &caller).await
            }
            (Endpoint::Sse, Method::GET) if !has_session => {
                ctx.transport = Transport::LegacySse;
                legacy::open(state, session, ctx, &caller).await
            }
            (Endpoint::Mcp | Endpoint::Sse, Method::POST) => {
                streamable::post(state, session, ctx, &caller).await
            }
            (Endpoint::Mcp | Endpoint::Sse, Method::DELETE) => {
                streamable::delete(state, session, ctx, &caller).await
            }
            (Endpoint::Mcp | Endpoint::Sse, Method::GET) => {
                streamable::get(state, session, ctx, &caller).await
            }
            (endpoint, _) => {
                ctx.outcome = Outcome::MethodNotAllowed;
                session.set_keepalive(None);
                let allow = match endpoint {
                    Endpoint::Messages => "POST",
                    _ => "GET, POST, DELETE",
                };
                respond::json(
                    session,
                    405,
                    &[(header::ALLOW, allow)],
                    Bytes::from_static(br#"{"error":"method not allowed"}"#),
                )
                .await
            }
        }
    }

    /// Never reached: `request_filter` answers every request.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "every request is answered by the gateway",
        )
    }

    /// A request that failed with an error before its answer was written: Pingora's
    /// own mapping (nothing is written to a client whose connection already failed).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.outcome == Outcome::Ok {
            ctx.outcome = Outcome::Error;
        }
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (_, ErrorSource::Upstream) => 502,
            (
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => 0,
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        if code > 0 && session.response_written().is_none() {
            let _ = session.respond_error(code).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client that hung up before its answer is its own business, not an error of
    /// the gateway's: not logged as one.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        e.etype() == &ErrorType::ConnectionClosed && e.esource() == &ErrorSource::Downstream
    }

    /// Log: counts the request and closes the audit record of a routed call.
    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let ws = ctx.workspace.as_deref().unwrap_or("");
        self.state
            .metrics
            .requests
            .with_label_values(&[
                ws,
                ctx.transport.as_label(),
                ctx.method.as_label(),
                ctx.outcome.as_label(),
            ])
            .inc();
        if let Some(call) = ctx.call.take() {
            // A relayed reply that ended before its response (the upstream or the
            // client went away) counts as the upstream's failure.
            let outcome = ctx.call_outcome.unwrap_or(CallOutcome::UpstreamUnavailable);
            call.finish(
                outcome,
                ctx.call_routed,
                &self.state.audit,
                &self.state.metrics,
            );
        }
        tracing::debug!(
            workspace = ws,
            method = ctx.method.as_label(),
            outcome = ctx.outcome.as_label(),
            elapsed_us = ctx.started().elapsed().as_micros() as u64,
            "request"
        );
    }
}
