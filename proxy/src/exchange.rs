//! One exchange with one upstream on behalf of one client session: find (or lazily
//! open) the upstream session, send, time it, and reopen a lazily opened session once
//! if the upstream forgot it. Everything the gateway asks upstreams for itself — lists,
//! prompts, resources, completions, forwarded notifications and answers — goes
//! through here, whatever transport the upstream speaks.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

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
            Err(UpstreamError::SessionGone) if state.forget_lazy_session(env.sid, &server.slug) => {
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
