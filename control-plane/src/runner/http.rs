//! The runner's Streamable HTTP side: `POST /run/<workspace>/<server>` with the
//! runner token. The runner speaks the session era without sessions: `initialize`
//! is answered from the process's own InitializeResult (the process is initialized
//! once, by the runner) and no `Mcp-Session-Id` is issued; `server/discover` is
//! refused, so proxies use `initialize`. A request's reply is an event stream when
//! the caller accepts one (messages the process sends during the call, then the
//! response), JSON otherwise. GET opens the server's stream of what it says outside
//! any call (list changes, logging), with keep-alive comments; it has no event ids
//! and replays nothing.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

use super::calls::{Call, Relayed};
use super::{HostedKey, Runner};

pub fn router(runner: Arc<Runner>) -> Router {
    Router::new()
        .route(
            "/run/{ws}/{server}",
            post(message).get(stream).delete(no_session),
        )
        // Proxies accept client bodies up to `limits.max_body_bytes` (4 MiB by
        // default) and may grow one a little (a rewritten name); axum's default
        // (2 MiB) would refuse what they pass on.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(runner)
}

/// Largest message the runner takes from a proxy.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

fn authorised(runner: &Runner, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| runner.token_matches(t.trim()))
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "the runner accepts only the runner token"})),
    )
        .into_response()
}

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn stream(
    State(runner): State<Arc<Runner>>,
    Path((workspace, server)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&runner, &headers) {
        return refused();
    }
    if !accepts_event_stream(&headers) {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let key = HostedKey { workspace, server };
    let Some(slot) = runner.slot(&key) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no hosted server {key}")})),
        )
            .into_response();
    };
    let notices = tokio_stream::wrappers::BroadcastStream::new(slot.notices())
        // A reader too slow to keep up misses what it lagged behind on.
        .filter_map(|notice| async move { notice.ok() })
        .map(|notice| {
            Ok::<_, std::convert::Infallible>(
                Event::default().event("message").data(notice.to_string()),
            )
        });
    Sse::new(notices)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn no_session(State(runner): State<Arc<Runner>>, headers: HeaderMap) -> Response {
    if !authorised(&runner, &headers) {
        return refused();
    }
    StatusCode::METHOD_NOT_ALLOWED.into_response()
}

async fn message(
    State(runner): State<Arc<Runner>>,
    Path((workspace, server)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorised(&runner, &headers) {
        return refused();
    }
    let message: Value = match serde_json::from_slice(&body) {
        Ok(m @ Value::Object(_)) => m,
        Ok(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "one JSON-RPC message (an object) per request; batches are not accepted",
            )
        }
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32700,
                &format!("not JSON: {e}"),
            )
        }
    };
    let key = HostedKey { workspace, server };
    let Some(slot) = runner.slot(&key) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no hosted server {key}")})),
        )
            .into_response();
    };
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = message.get("id").cloned();
    match (method.as_deref(), id) {
        (Some("server/discover"), Some(id)) => rpc_error(
            StatusCode::OK,
            id,
            -32601,
            "the runner speaks MCP with initialize; server/discover is not offered",
        ),
        (Some("ping"), Some(id)) => {
            Json(json!({"jsonrpc": "2.0", "id": id, "result": {}})).into_response()
        }
        (Some("initialize"), Some(id)) => {
            match slot.process(runner.start_timeout(), runner.metrics()).await {
                Ok(process) => {
                    Json(json!({"jsonrpc": "2.0", "id": id, "result": process.initialize_result()}))
                        .into_response()
                }
                Err(e) => rpc_error(StatusCode::OK, id, -32603, &e.to_string()),
            }
        }
        (Some(_), Some(id)) => {
            let process = match slot.process(runner.start_timeout(), runner.metrics()).await {
                Ok(process) => process,
                Err(e) => return rpc_error(StatusCode::OK, id, -32603, &e.to_string()),
            };
            let call = process.call(message);
            if accepts_event_stream(&headers) {
                event_stream(call)
            } else {
                let mut call = call;
                Json(call.response().await).into_response()
            }
        }
        (Some("notifications/initialized"), None) => StatusCode::ACCEPTED.into_response(),
        (Some(_), None) => {
            if let Some(process) = slot.running() {
                process.notify(message);
            }
            StatusCode::ACCEPTED.into_response()
        }
        (None, Some(_)) => {
            if let Some(process) = slot.running() {
                process.answer(message);
            }
            StatusCode::ACCEPTED.into_response()
        }
        (None, None) => rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            "not a JSON-RPC request, notification or response",
        ),
    }
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The call's messages as server-sent events, ending after the response.
fn event_stream(call: Call) -> Response {
    let events = futures::stream::unfold(call, |mut call| async move {
        let message = match call.next().await? {
            Relayed::Message(m) | Relayed::Response(m) => m,
        };
        let event = Bytes::from(format!("event: message\ndata: {message}\n\n"));
        Some((Ok::<_, std::convert::Infallible>(event), call))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .expect("valid response")
}
