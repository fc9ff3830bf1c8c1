//! The legacy HTTP+SSE server transport (MCP 2024-11-05) around the harness's rmcp
//! handler, for upstreams built with [`UpstreamBuilder::legacy_sse`]
//! (crate::UpstreamBuilder::legacy_sse). rmcp 3.9 ships no SSE server, so this module
//! is only the transport's framing — `GET /sse`, the `endpoint` event, `POST
//! /message?sessionId=...` answered 202, responses on the stream — over rmcp's own
//! sink/stream transport: everything MCP about the server is still rmcp's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures::channel::mpsc;
use futures::StreamExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::ServiceExt;

use crate::upstream::{lock, Echo};

/// Live sessions: `sessionId` -> the way into the rmcp service.
pub(crate) type Sessions = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ClientJsonRpcMessage>>>>;

pub(crate) fn router(handler: Echo, sessions: Sessions) -> Router {
    Router::new()
        .route("/sse", get(open))
        .route("/message", post(message))
        .with_state((handler, sessions))
}

/// Forgets a session when its stream's body is dropped (the client went away).
struct Registration {
    id: String,
    sessions: Sessions,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.sessions).remove(&self.id);
    }
}

async fn open(State((handler, sessions)): State<(Echo, Sessions)>) -> Response {
    let id = crate::config::random_base62(16);
    let (to_server, from_client) = mpsc::unbounded::<ClientJsonRpcMessage>();
    let (to_client, from_server) = mpsc::unbounded::<ServerJsonRpcMessage>();
    lock(&sessions).insert(id.clone(), to_server);
    tokio::spawn(async move {
        if let Ok(running) = handler.serve((to_client, from_client)).await {
            let _ = running.waiting().await;
        }
    });
    let endpoint = format!("event: endpoint\ndata: /message?sessionId={id}\n\n");
    let registration = Registration { id, sessions };
    let events = futures::stream::once(async move { Bytes::from(endpoint) })
        .chain(from_server.map(|message| {
            let json = serde_json::to_string(&message).unwrap_or_default();
            Bytes::from(format!("event: message\ndata: {json}\n\n"))
        }))
        .map(move |bytes| {
            let _ = &registration;
            Ok::<_, Infallible>(bytes)
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_default()
}

async fn message(
    State((_, sessions)): State<(Echo, Sessions)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> StatusCode {
    let Some(tx) = query
        .get("sessionId")
        .and_then(|id| lock(&sessions).get(id).cloned())
    else {
        return StatusCode::NOT_FOUND;
    };
    let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    match tx.unbounded_send(message) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::NOT_FOUND,
    }
}
