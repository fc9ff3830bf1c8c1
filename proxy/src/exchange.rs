//! One exchange with one upstream on behalf of one client session: find (or lazily
//! open) the upstream session, send, time it, and reopen a lazily opened session once
//! if the upstream forgot it. Everything the gateway asks upstreams for itself — lists,
//! prompts, resources, completions, forwarded notifications and answers — goes
//! through here, whatever transport the upstream speaks.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::dispatch::ToolCall;
use crate::envelope::SessionEnvelope;
use crate::runtime::{Runtime, ServerRt};
use crate::state::GatewayState;
use crate::upstream::{SessionRef, UpstreamError};

/// Sends a request and returns its `result`.
pub async fn ask(
    state: &GatewayState,
    rt: &Runtime,
    env: &SessionEnvelope,
    server: &ServerRt,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, UpstreamError> {
    for _attempt in 0..2 {
        let session = state.session_for(rt, env, server).await?;
        let started = Instant::now();
        let result = if server.is_legacy_sse() {
            state
                .legacy_upstream(env, server)
                .await?
                .call(method, params.clone(), timeout)
                .await
        } else {
            state
                .upstream
                .call(
                    server,
                    Some(SessionRef {
                        session_id: session.session_id.as_deref(),
                        protocol_version: &session.protocol_version,
                    }),
                    method,
                    params.clone(),
                    timeout,
                )
                .await
                .map(|(result, _)| result)
        };
        observe(state, env, server, started, &result);
        match result {
            // A lazily opened session, or a legacy SSE one (this replica's own), is
            // reopened; an envelope session cannot be: the client must re-initialize.
            Err(UpstreamError::SessionGone)
                if server.is_legacy_sse() || state.forget_lazy_session(env.sid, &server.slug) =>
            {
                continue
            }
            other => return other,
        }
    }
    Err(UpstreamError::SessionGone)
}

/// Sends a notification or a response; the upstream accepts it without a reply.
pub async fn tell(
    state: &GatewayState,
    rt: &Runtime,
    env: &SessionEnvelope,
    server: &ServerRt,
    body: Bytes,
) -> Result<(), UpstreamError> {
    let timeout = Duration::from_millis(rt.limits.initialize_timeout_ms);
    let session = state.session_for(rt, env, server).await?;
    if server.is_legacy_sse() {
        return state
            .legacy_upstream(env, server)
            .await?
            .send(body, timeout)
            .await;
    }
    let sent = state
        .upstream
        .send(
            server,
            SessionRef {
                session_id: session.session_id.as_deref(),
                protocol_version: &session.protocol_version,
            },
            body,
            timeout,
        )
        .await;
    if matches!(sent, Err(UpstreamError::SessionGone)) {
        state.forget_lazy_session(env.sid, &server.slug);
    }
    sent
}

/// Sends a routed `tools/call` over the side client instead of Pingora's proxy path
/// (to a legacy SSE upstream, or for a legacy SSE client whose answer goes to its
/// stream). Whatever the upstream says while the call runs goes to `on_message`, as
/// the upstream said it; returns the response. Never retried: the tool may have run.
pub async fn call_tool(
    state: &GatewayState,
    env: &SessionEnvelope,
    call: &ToolCall,
    on_message: &mut (dyn FnMut(&str) + Send),
) -> Result<String, UpstreamError> {
    let server = &call.server;
    let started = Instant::now();
    let result = if server.is_legacy_sse() {
        let progress_token = serde_json::from_slice::<Value>(&call.body)
            .ok()
            .and_then(|m| m.pointer("/params/_meta/progressToken").cloned());
        let mut outcome = Err(UpstreamError::SessionGone);
        // "Session gone" here means the server refused the POST (the call did not
        // run): one retry on a fresh session is safe.
        for _attempt in 0..2 {
            outcome = match state.legacy_upstream(env, server).await {
                Ok(conn) => {
                    conn.call_streaming(
                        call.body.clone(),
                        &call.request_id,
                        progress_token.clone(),
                        server.call_timeout,
                        on_message,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if !matches!(outcome, Err(UpstreamError::SessionGone)) {
                break;
            }
        }
        outcome
    } else {
        state
            .upstream
            .call_streaming(
                server,
                SessionRef {
                    session_id: call.upstream.session_id.as_deref(),
                    protocol_version: &call.upstream.protocol_version,
                },
                call.body.clone(),
                &call.request_id,
                on_message,
            )
            .await
    };
    observe(state, env, server, started, &result);
    if matches!(result, Err(UpstreamError::SessionGone)) {
        state.forget_lazy_session(env.sid, &server.slug);
    }
    result
}

fn observe<T>(
    state: &GatewayState,
    env: &SessionEnvelope,
    server: &ServerRt,
    started: Instant,
    result: &Result<T, UpstreamError>,
) {
    state
        .metrics
        .upstream_seconds
        .with_label_values(&[&env.workspace, &server.slug])
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = result {
        if !matches!(e, UpstreamError::Rpc { .. }) {
            state
                .metrics
                .upstream_errors
                .with_label_values(&[&env.workspace, &server.slug, e.kind()])
                .inc();
        }
    }
}
