//! `initialize`: opens a session with every enabled upstream in parallel and answers
//! as the gateway — the union of what the upstreams can do, their instructions, and
//! the upstream sessions sealed into the client's envelope.

use std::time::Duration;

use bytes::Bytes;
use gatehouse_mcp::capabilities::merged_capabilities;
use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::jsonrpc::{self, Message, INTERNAL_ERROR, INVALID_PARAMS};
use gatehouse_mcp::outcome::Outcome;
use gatehouse_mcp::versions;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::current::unix_now;
use crate::live::live;
use crate::session::dispatch::{Reply, Scope};

#[derive(Deserialize)]
struct InitializeParams {
    #[serde(rename = "protocolVersion")]
    protocol_version: Option<String>,
    #[serde(default)]
    capabilities: Value,
    #[serde(rename = "clientInfo", default)]
    client_info: Value,
}

/// A client session opened by `initialize`.
pub struct Opened {
    pub envelope: SessionEnvelope,
    /// The `initialize` response.
    pub body: Bytes,
}

/// Opens a session with every enabled upstream in parallel and answers as the
/// gateway: the union of what the upstreams can do, their instructions, and the
/// upstream sessions sealed into the envelope.
pub async fn initialize(
    scope: Scope<'_>,
    token_id: &str,
    msg: &Message<'_>,
) -> Result<Opened, Reply> {
    let id = jsonrpc::raw_id(msg.id);
    let params: InitializeParams = match msg.params.map(|p| serde_json::from_str(p.get())) {
        Some(Ok(p)) => p,
        _ => {
            return Err(Reply::error(
                id,
                INVALID_PARAMS,
                "Invalid params: initialize needs protocolVersion, capabilities and clientInfo",
                Outcome::InvalidParams,
            ))
        }
    };
    let version = versions::negotiate(params.protocol_version.as_deref());
    let client_init =
        json!({"capabilities": params.capabilities, "clientInfo": params.client_info});
    let mut envelope = SessionEnvelope {
        sid: [0u8; 16],
        issued_at: unix_now(),
        workspace: scope.ws.slug.clone(),
        token_id: token_id.to_string(),
        client_version: version.to_string(),
        client_init: client_init.to_string(),
        upstreams: Vec::new(),
    };
    rand::thread_rng().fill_bytes(&mut envelope.sid);

    let timeout = Duration::from_millis(scope.rt.limits.initialize_timeout_ms);
    // Skills are run by the gateway: there is no session to open with them.
    let servers: Vec<_> = scope
        .ws
        .servers
        .iter()
        .filter(|s| s.enabled && s.skill.is_none())
        .collect();
    let opened = futures::future::join_all(
        servers
            .iter()
            .map(|server| scope.upstreams.open(&envelope, server, timeout)),
    )
    .await;

    let mut instructions = Vec::new();
    let mut failures = Vec::new();
    let mut capabilities = Vec::new();
    let mut reachable = 0;
    for (server, result) in servers.iter().zip(opened) {
        match result {
            Ok(opened) => {
                let init = opened.init;
                reachable += 1;
                if let Some(text) = init.instructions {
                    instructions.push(format!("## {}\n{}", server.slug, text.trim()));
                }
                live().remember_capabilities(
                    &scope.ws.slug,
                    &server.slug,
                    server.fingerprint,
                    init.capabilities.clone(),
                );
                capabilities.push(init.capabilities);
                // A legacy SSE session is held by this replica, never sealed.
                envelope.upstreams.extend(opened.sealed);
            }
            Err(e) => {
                // Counted by `Upstreams::open`.
                tracing::warn!(workspace = %scope.ws.slug, server = %server.slug, error = %e, "upstream initialize failed; serving the others");
                failures.push(format!("{}: {e}", server.slug));
            }
        }
    }
    if reachable == 0 && !servers.is_empty() {
        return Err(Reply::error(
            id,
            INTERNAL_ERROR,
            &format!(
                "No MCP server of this workspace could be initialized ({})",
                failures.join("; ")
            ),
            Outcome::UpstreamUnavailable,
        ));
    }
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": merged_capabilities(&capabilities),
        "serverInfo": {"name": "gatehouse", "title": "Gatehouse", "version": env!("CARGO_PKG_VERSION")},
    });
    if !instructions.is_empty() {
        result["instructions"] = Value::String(instructions.join("\n\n"));
    }
    let body = jsonrpc::result(
        msg.id.expect("request"),
        &serde_json::to_vec(&result).expect("json"),
    );
    Ok(Opened { envelope, body })
}
