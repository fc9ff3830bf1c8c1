//! How an upstream's failure reads to the client: the one wording of each JSON-RPC
//! error the gateway writes in an upstream's name, whichever path found it.

use bytes::Bytes;
use gatehouse_mcp::jsonrpc::{self, INTERNAL_ERROR};

use crate::upstream::error::UpstreamError;

/// JSON-RPC code for "session not found" (as the reference SDKs use it).
pub const SESSION_NOT_FOUND: i64 = -32001;

/// The error a client gets when an upstream forgot the session the envelope names.
pub fn session_gone(request_id: &str, server: &str) -> Bytes {
    jsonrpc::error(
        request_id,
        SESSION_NOT_FOUND,
        &format!("Session not found: MCP server {server:?} ended its session; re-initialize"),
    )
}

/// The error a client gets when an upstream could not answer its call.
pub fn unavailable(request_id: &str, server: &str, e: &UpstreamError) -> Bytes {
    let message = match e {
        UpstreamError::Timeout => format!("MCP server {server:?} did not answer in time"),
        // These say what the server is ("is busy: ...", "is failing ...").
        UpstreamError::Busy { .. } | UpstreamError::CircuitOpen { .. } => {
            format!("MCP server {server:?} {e}")
        }
        e => format!("MCP server {server:?} is unavailable: {e}"),
    };
    jsonrpc::error(request_id, INTERNAL_ERROR, &message)
}
