//! The Pingora request path. `request_filter` authenticates, reads the JSON-RPC body
//! and either answers itself (`initialize`, `ping`, `tools/list`, errors) or chooses an
//! upstream for a `tools/call`; the remaining phases carry that call through Pingora's
//! pooled proxy path with the rewritten body and the server's own credentials.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_config::audit::CallOutcome;
use http::{header, HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use crate::audit::{CallRecord, ReplyWatch};
use crate::jsonrpc;
use crate::live::InFlight;
use crate::relay::{MessageKind, Relay, SseRewriter};
use crate::respond::{self, Endpoint};
use crate::runtime::{Runtime, ServerRt};
use crate::state::GatewayState;
use crate::upstream::{SESSION_HEADER, VERSION_HEADER};

/// The data plane service.
pub struct Gateway {
    pub state: Arc<GatewayState>,
}

/// Per-request state, from the first filter to `logging`.
pub struct RequestCtx {
    started: Instant,
    /// Set once the caller is authenticated, so unauthenticated callers cannot mint
    /// metric labels.
    pub(crate) workspace: Option<String>,
    pub(crate) method: &'static str,
    pub(crate) outcome: &'static str,
    pub(crate) forward: Option<Forward>,
    /// `streamable_http` or `sse` (the legacy transport).
    pub(crate) transport: &'static str,
    /// The audit record of a routed call, closed in `logging`.
    pub(crate) call: Option<CallRecord>,
    /// How that call ended, once known.
    pub(crate) call_outcome: Option<CallOutcome>,
    /// False when the gateway refused the call itself (unknown tool, bad params).
    pub(crate) call_routed: bool,
}

impl RequestCtx {
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Notes how a call answered with `body` by the gateway (not relayed) ended;
    /// `outcome` is the request's outcome word.
    pub(crate) fn answered_call(&mut self, outcome: &str, body: &[u8]) {
        if self.call.is_none() {
            return;
        }
        let (ended, routed) = crate::audit::answered(outcome, body);
        self.call_outcome = Some(ended);
        self.call_routed = routed;
    }
}

/// A `tools/call` on its way through the proxy path.
pub struct Forward {
    pub(crate) server: Arc<ServerRt>,
    /// The request body with the tool name rewritten.
    pub(crate) body: Bytes,
    pub(crate) session_id: Option<HeaderValue>,
    pub(crate) protocol_version: HeaderValue,
    /// The client's JSON-RPC id (raw JSON), for errors written in its name.
    pub(crate) request_id: String,
    pub(crate) client_sid: [u8; 16],
    /// The config the call was routed under (its keys seal relayed request ids).
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) sent_at: Option<Instant>,
    pub(crate) session_gone: bool,
    /// Set when the reply is an event stream: its messages are rewritten for the
    /// client (server-to-client request ids, log tags, resource URIs).
    pub(crate) rewriter: Option<SseRewriter>,
    /// Learns how the call ended from the reply as it passes.
    pub(crate) watch: ReplyWatch,
    /// Keeps the call findable by `notifications/cancelled` while it runs.
    pub(crate) _in_flight: InFlight,
}

/// Headers of the client's request that must not reach an upstream: its credentials,
/// its session with the gateway, and framing the gateway recomputes.
static STRIPPED_HEADERS: [HeaderName; 8] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::ORIGIN,
    SESSION_HEADER,
    VERSION_HEADER,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("last-event-id"),
];

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            workspace: None,
            method: "-",
            outcome: "ok",
            forward: None,
            transport: crate::audit::STREAMABLE_HTTP,
            call: None,
            call_outcome: None,
            call_routed: true,
        }
    }

    /// Runs first, for every request: routing, origin check, token auth, then the
    /// method handlers. `Ok(true)` means the gateway answered itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = self.state.runtime();
        let req = session.req_header();
        let Some((slug, endpoint)) = respond::route(req.uri.path()) else {
            ctx.outcome = "not_found";
            return respond::refuse(session, 404, "not found").await;
        };
        let slug = slug.to_string();
        if let Some(origin) = req.headers.get(header::ORIGIN) {
            if !respond::origin_allowed(origin.as_bytes(), &rt.allowed_origins) {
                ctx.outcome = "forbidden_origin";
                return respond::refuse(session, 403, "origin not allowed").await;
            }
        }
        let auth = rt.tokens.authenticate(
            req.headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            &slug,
            crate::state::unix_now(),
        );
        let (token, ws) = match auth
            .ok()
            .and_then(|t| rt.workspaces.get(&slug).map(|ws| (t, ws.clone())))
        {
            Some(found) => found,
            None => {
                let reason = auth.err().map_or("unknown", |f| f.reason());
                self.state
                    .metrics
                    .auth_failures
                    .with_label_values(&[reason])
                    .inc();
                ctx.outcome = "unauthorized";
                return respond::unauthorized(session).await;
            }
        };
        ctx.workspace = Some(slug);
        let caller = crate::handlers::Caller {
            rt: &rt,
            ws: &ws,
            token,
        };
        let method = session.req_header().method.clone();
        let has_session = session.req_header().headers.contains_key(SESSION_HEADER);
        match (endpoint, method) {
            (Endpoint::Messages, Method::POST) => {
                ctx.transport = crate::audit::LEGACY_SSE;
                crate::legacy::message(self, session, ctx, &caller).await
            }
            (Endpoint::Sse, Method::GET) if !has_session => {
                ctx.transport = crate::audit::LEGACY_SSE;
                crate::legacy::open(self, session, ctx, &caller).await
            }
            (Endpoint::Mcp | Endpoint::Sse, Method::POST) => {
                crate::handlers::post(self, session, ctx, &caller).await
            }
            (Endpoint::Mcp | Endpoint::Sse, Method::DELETE) => {
                crate::handlers::delete(self, session, ctx, &caller).await
            }
            (Endpoint::Mcp | Endpoint::Sse, Method::GET) => {
                crate::handlers::get(self, session, ctx, &caller).await
            }
            (endpoint, _) => {
                ctx.outcome = "method_not_allowed";
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

    /// Runs only for a forwarded `tools/call`: the upstream chosen in `request_filter`.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.forward
            .as_ref()
            .and_then(|f| f.server.peer())
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))
    }

    /// Points the request at the upstream's endpoint, swaps the client's credentials
    /// for the server's, and sets the upstream session.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(f) = ctx.forward.as_mut() else {
            return Ok(());
        };
        upstream.set_uri(f.server.path.clone());
        for name in &STRIPPED_HEADERS {
            upstream.remove_header(name);
        }
        upstream.insert_header(header::HOST, f.server.authority.clone())?;
        upstream.insert_header(header::CONTENT_LENGTH, f.body.len())?;
        upstream.insert_header(VERSION_HEADER, f.protocol_version.clone())?;
        if let Some(id) = &f.session_id {
            upstream.insert_header(SESSION_HEADER, id.clone())?;
        }
        for (name, value) in &f.server.headers {
            upstream.insert_header(name.clone(), value.clone())?;
        }
        f.sent_at = Some(Instant::now());
        Ok(())
    }

    /// Pingora replays the buffered client body here; the rewritten one goes instead.
    /// Called again on a retry over a fresh connection, so the body is cloned, not taken.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(f), Some(_)) = (ctx.forward.as_ref(), body.as_ref()) {
            *body = Some(f.body.clone());
        }
        Ok(())
    }

    /// Hides the upstream's session id from the client and turns "upstream session
    /// gone" into the 404 that makes the client re-initialize.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(f) = ctx.forward.as_mut() else {
            return Ok(());
        };
        if let (Some(sent), Some(ws)) = (f.sent_at, ctx.workspace.as_deref()) {
            self.state
                .metrics
                .upstream_seconds
                .with_label_values(&[ws, &f.server.slug])
                .observe(sent.elapsed().as_secs_f64());
        }
        resp.remove_header(&SESSION_HEADER);
        let status = resp.status.as_u16();
        if f.session_id.is_some() && matches!(status, 400 | 404) {
            f.session_gone = true;
            ctx.call_outcome = Some(CallOutcome::UpstreamUnavailable);
            self.state.forget_lazy_session(f.client_sid, &f.server.slug);
            resp.set_status(404)?;
            resp.remove_header(&header::CONTENT_LENGTH);
            resp.insert_header(header::CONTENT_TYPE, "application/json")?;
            ctx.outcome = "session_not_found";
        } else if !(200..300).contains(&status) {
            ctx.outcome = "upstream_error";
            ctx.call_outcome = Some(crate::audit::status_outcome(status));
        } else if resp
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"))
        {
            f.rewriter = Some(SseRewriter::default());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(f) = ctx.forward.as_mut() else {
            return Ok(None);
        };
        if f.session_gone {
            // Replace the upstream's body with ours, once.
            *body = (!f.body.is_empty()).then(|| session_gone_body(&f.request_id, &f.server.slug));
            f.body = Bytes::new();
            return Ok(None);
        }
        let Some(rewriter) = f.rewriter.as_mut() else {
            if let Some(chunk) = body.as_ref() {
                f.watch.body(chunk);
            }
            return Ok(None);
        };
        let relay = Relay {
            keys: &f.runtime.keys,
            sid: f.client_sid,
            server: &f.server.slug,
        };
        let mut list_changed = false;
        let watch = &mut f.watch;
        let mut out = match body.as_ref() {
            Some(chunk) => rewriter.push(chunk, &relay, &mut |kind, json| {
                list_changed |= kind == MessageKind::ToolsChanged;
                watch.message(kind, json);
            }),
            None => Bytes::new(),
        };
        if end_of_stream {
            let rest = rewriter.finish();
            if !rest.is_empty() {
                let mut all = bytes::BytesMut::from(&out[..]);
                all.extend_from_slice(&rest);
                out = all.freeze();
            }
        }
        *body = (!out.is_empty()).then_some(out);
        if let (true, Some(ws)) = (list_changed, ctx.workspace.as_deref()) {
            self.state.invalidate_tools(ws, &f.server.slug);
        }
        Ok(None)
    }

    /// A forwarded call whose upstream could not be reached gets a JSON-RPC error in
    /// the client's session, not a bare 502.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let kind = match e.etype() {
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::ConnectProxyFailure => "connect",
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
            _ => "proxy",
        };
        if let (Some(f), None) = (ctx.forward.as_ref(), session.response_written()) {
            let ws = ctx.workspace.as_deref().unwrap_or("");
            self.state
                .metrics
                .upstream_errors
                .with_label_values(&[ws, &f.server.slug, kind])
                .inc();
            let what = if kind == "timeout" {
                "did not answer in time"
            } else {
                "is unavailable"
            };
            let body = jsonrpc::error(
                &f.request_id,
                jsonrpc::INTERNAL_ERROR,
                &format!("MCP server {:?} {what}", f.server.slug),
            );
            ctx.outcome = "upstream_unavailable";
            ctx.call_outcome = Some(CallOutcome::UpstreamUnavailable);
            let written = respond::json(session, 200, &[], body).await.is_ok();
            return FailToProxy {
                error_code: 502,
                can_reuse_downstream: written,
            };
        }
        // Anything else: Pingora's own mapping (nothing is written to a client whose
        // connection already failed).
        ctx.outcome = "error";
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

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let ws = ctx.workspace.as_deref().unwrap_or("");
        self.state
            .metrics
            .requests
            .with_label_values(&[ws, ctx.transport, ctx.method, ctx.outcome])
            .inc();
        if let Some(call) = ctx.call.take() {
            // A relayed reply that ended before its response (the upstream or the
            // client went away) counts as the upstream's failure.
            let outcome = ctx
                .call_outcome
                .or_else(|| ctx.forward.as_ref().and_then(|f| f.watch.outcome()))
                .unwrap_or(CallOutcome::UpstreamUnavailable);
            call.finish(
                outcome,
                ctx.call_routed,
                &self.state.audit,
                &self.state.metrics,
            );
        }
        tracing::debug!(
            workspace = ws,
            method = ctx.method,
            outcome = ctx.outcome,
            elapsed_us = ctx.started.elapsed().as_micros() as u64,
            "request"
        );
    }
}

/// The error a client gets when an upstream forgot the session the envelope names.
pub fn session_gone_body(request_id: &str, server: &str) -> Bytes {
    jsonrpc::error(
        request_id,
        crate::handlers::SESSION_NOT_FOUND,
        &format!("Session not found: MCP server {server:?} ended its session; re-initialize"),
    )
}
