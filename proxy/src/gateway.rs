//! The request path, read top to bottom. Pingora is the server (listeners, HTTP/1.1
//! framing, keep-alive); the gateway is its HTTP application, and answers every
//! request itself: a routed call's upstream leg is the gateway's own
//! (`client::forward`), so none of Pingora's proxy machinery runs per request.
//!
//! 1. **read** — the request head (`Gateway::process_new_http`);
//! 2. **auth** — the path names a workspace endpoint, the origin is allowed, the bearer
//!    token is valid for that workspace (`config::auth`);
//! 3. **route** — the endpoint and method choose a client transport;
//! 4. **dispatch** — the transport reads the message and the session room answers it
//!    or routes it (`client::streamable`, `client::legacy`, `session::dispatch`);
//! 5. **forward** and **relay** — a routed call is sent to its upstream and the reply
//!    relayed as it arrives (`client::forward`, `upstream::upstreams`);
//! 6. **log** — `log` counts the request and closes its audit record; the connection
//!    is handed back for the client's next request when the answer ended cleanly.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_config::audit::CallOutcome;
use gatehouse_mcp::outcome::{Outcome, Transport};
use http::{header, HeaderValue, Method};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::{ErrorSource, ErrorType};

use crate::client::request::{self, Caller, RequestCtx};
use crate::client::respond::{self, Endpoint};
use crate::client::{legacy, post, streamable};
use crate::config::current::unix_now;
use crate::limits;
use crate::shared::Shared;
use crate::upstream::http::SESSION_HEADER;

/// The data plane service: Pingora's HTTP application for the client listener.
pub struct Gateway {
    state: Arc<Shared>,
}

#[async_trait]
impl HttpServerApp for Gateway {
    /// Runs for each request of a client connection, once its previous answer ended:
    /// reads the head, answers the request, logs it, and hands the connection back
    /// for the next one when the answer ended cleanly.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let (head_timeout, write_timeout) = {
            let limits = &self.state.config.load().limits;
            (
                Duration::from_millis(limits.request_head_timeout_ms),
                Duration::from_millis(limits.slow_read_timeout_ms),
            )
        };
        if !read_head(&mut session, shutdown, head_timeout).await {
            return None;
        }
        // A client that stops reading its answer loses its connection.
        session.set_write_timeout(Some(write_timeout));
        if *shutdown.borrow() {
            // Closed after this answer rather than kept for a next request.
            session.set_keepalive(None);
        }
        let mut ctx = RequestCtx::default();
        let answered = self.answer(&mut session, &mut ctx).await;
        let reusable = match answered {
            Ok(_) => true,
            Err(e) => {
                self.failed(&mut session, &mut ctx, &e).await;
                false
            }
        };
        self.log(&mut ctx);
        if !reusable {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        session
            .finish()
            .await
            .ok()
            .flatten()
            .map(|stream| ReusedHttpStream::from_reusable_stream(stream, settings))
    }
}

impl Gateway {
    pub fn new(state: Arc<Shared>) -> Gateway {
        Gateway { state }
    }

    /// Auth, route, then the client transport. `Ok` once the answer is written;
    /// an error when it could not be (`failed` decides what the client gets).
    async fn answer(&self, session: &mut ServerSession, ctx: &mut RequestCtx) -> Result<bool> {
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
        if let Err(refusal) = limits::admit_request(token.budget.as_deref(), ws.budget.as_deref()) {
            return request::over_budget(&self.state, session, ctx, "null", &refusal).await;
        }
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
                post::post(state, session, ctx, &caller).await
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

    /// A request that failed with an error before its answer was written: the status
    /// it maps to, unless the client's own connection failed (nothing can reach it).
    /// A client that hung up is its own business, not the gateway's error.
    async fn failed(&self, session: &mut ServerSession, ctx: &mut RequestCtx, e: &Error) {
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
        let client_left = (e.etype() == &ErrorType::ConnectionClosed
            && e.esource() == &ErrorSource::Downstream)
            || hung_up_while_written(e);
        if !client_left {
            tracing::error!(
                status = code,
                request = %session.request_summary(),
                "request failed: {e}"
            );
        }
    }

    /// Log: counts the request and closes the audit record of a routed call.
    fn log(&self, ctx: &mut RequestCtx) {
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

/// Read: waits for the next request head, at most `deadline` in all (so a head sent
/// a byte at a time cannot hold the connection, nor can an idle one). `false` when
/// there is none to answer: the client closed the connection, sent a malformed head
/// (answered 400), took too long, or the server began shutting down while the
/// connection was idle.
async fn read_head(
    session: &mut ServerSession,
    shutdown: &ShutdownWatch,
    deadline: Duration,
) -> bool {
    let mut shutdown = shutdown.clone();
    let shutting_down = async move {
        // A server whose watch is gone is not shutting down through it.
        if shutdown.wait_for(|down| *down).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let read = tokio::select! {
        biased;
        read = tokio::time::timeout(deadline, session.read_request()) => match read {
            Ok(read) => read,
            Err(_) => {
                tracing::debug!("no complete request head within {deadline:?}: closing");
                session.shutdown().await;
                return false;
            }
        },
        () = shutting_down => return false,
    };
    match read {
        Ok(more) => more,
        Err(e) => {
            if e.etype() == &ErrorType::InvalidHTTPHeader {
                tracing::debug!(error = %e, "malformed request head");
                let _ = session.respond_error(400).await;
            } else {
                tracing::debug!(error = %e, "client connection failed before a request");
            }
            session.shutdown().await;
            false
        }
    }
}

/// A write to the client that failed because the client closed its connection
/// (a benchmark's or an editor's connection dropped mid-answer): pingora reports it
/// as a `WriteError` whose cause is the socket's broken pipe or reset.
fn hung_up_while_written(e: &Error) -> bool {
    if e.etype() != &ErrorType::WriteError {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e
        .cause
        .as_deref()
        .map(|c| c as &(dyn std::error::Error + 'static));
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
        }
        cause = c.source();
    }
    false
}
