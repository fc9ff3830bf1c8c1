//! Each MCP message of an open client session: requests are answered here or
//! routed (`tools/call`, for the transport to forward), notifications and client
//! responses go to the upstreams they concern. Each function returns a [`Reply`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_config::naming::{exposed_name, split_exposed};
use gatehouse_config::policy::CompiledScope;
use gatehouse_config::Naming;
use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::jsonrpc::{self, Message, INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND};
use gatehouse_mcp::outcome::Outcome;
use gatehouse_mcp::relay;
use gatehouse_mcp::uris;
use serde_json::{json, Value};

use crate::config::runtime::{Runtime, ServerRt, WorkspaceRt};
use crate::live::live;
use crate::session::failure;
use crate::session::lists::{ListError, ListKind, Lister};
use crate::session::tools::Catalogs;
use crate::upstream::error::UpstreamError;
use crate::upstream::upstreams::{ToolCall, Upstreams};

/// JSON-RPC code for an unknown resource (MCP's "Resource not found").
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// The workspace a message is served in, under one config generation, and what it
/// may use to answer: the upstreams and the tool catalogs.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub upstreams: &'a Upstreams,
    pub catalogs: &'a Catalogs,
    pub rt: &'a Runtime,
    pub ws: &'a WorkspaceRt,
    /// `params.name` of the request, when its transport has already found it (the
    /// stateless era reads it to check `Mcp-Name`); read here otherwise.
    pub name: Option<&'a serde_json::value::RawValue>,
    /// The tools the caller's token may see and call, when it is limited to some.
    pub tools: Option<&'a CompiledScope>,
}

impl<'a> Scope<'a> {
    fn lister(self, env: &'a SessionEnvelope) -> Lister<'a> {
        Lister {
            upstreams: self.upstreams,
            rt: self.rt,
            ws: self.ws,
            env,
        }
    }
}

/// What to answer.
pub enum Reply {
    /// A JSON-RPC response. `session_gone` asks Streamable HTTP for a 404.
    Response {
        body: Bytes,
        outcome: Outcome,
        session_gone: bool,
    },
    /// Nothing to answer (a notification or a response): 202.
    Accepted { outcome: Outcome },
    /// A routed `tools/call`, for the transport to forward.
    ToolCall(ToolCall),
}

impl Reply {
    fn ok(body: Bytes) -> Reply {
        Reply::Response {
            body,
            outcome: Outcome::Ok,
            session_gone: false,
        }
    }

    fn result(id: &serde_json::value::RawValue, result: &Value) -> Reply {
        Reply::ok(jsonrpc::result(
            id,
            &serde_json::to_vec(result).expect("json"),
        ))
    }

    pub fn error(id: &str, code: i64, message: &str, outcome: Outcome) -> Reply {
        Reply::Response {
            body: jsonrpc::error(id, code, message),
            outcome,
            session_gone: false,
        }
    }

    fn session_gone(id: &str, server: &str) -> Reply {
        Reply::Response {
            body: failure::session_gone(id, server),
            outcome: Outcome::SessionNotFound,
            session_gone: true,
        }
    }

    fn upstream_failure(id: &str, server: &str, e: UpstreamError) -> Reply {
        match e {
            UpstreamError::SessionGone => Reply::session_gone(id, server),
            // The upstream's own protocol error reaches the client as it was.
            UpstreamError::Rpc {
                code,
                message,
                data: Some(data),
            } => Reply::Response {
                body: gatehouse_mcp::modern::error_with_data(id, code, &message, &data),
                outcome: Outcome::UpstreamError,
                session_gone: false,
            },
            UpstreamError::Rpc { code, message, .. } => {
                Reply::error(id, code, &message, Outcome::UpstreamError)
            }
            e => Reply::Response {
                body: failure::unavailable(id, server, &e),
                outcome: Outcome::UpstreamUnavailable,
                session_gone: false,
            },
        }
    }
}

/// A client request in an open session.
pub async fn request(
    scope: Scope<'_>,
    env: &SessionEnvelope,
    body: &Bytes,
    msg: &Message<'_>,
) -> Reply {
    let rid = msg.id.expect("a request has an id");
    let id = rid.get();
    let method = msg.method.as_deref().unwrap_or_default();
    let not_an_object = || {
        Reply::error(
            id,
            INVALID_PARAMS,
            "Invalid params: params must be an object",
            Outcome::InvalidParams,
        )
    };
    // The params are valid JSON already (a raw value): its first byte tells an object.
    let raw_params = msg.params.map(|p| p.get());
    if raw_params.is_some_and(|p| !p.trim_start().starts_with('{')) {
        return not_an_object();
    }
    // The busiest methods never need the params as a tree: a tools/call reads the
    // name it routes on and splices, and its arguments may run to megabytes.
    match method {
        "ping" => return Reply::ok(jsonrpc::result(rid, b"{}")),
        "tools/list" => {
            return match scope
                .catalogs
                .catalog(scope.upstreams, scope.rt, scope.ws, env)
                .await
            {
                Ok(catalog) => Reply::ok(jsonrpc::result(rid, &catalog.rendered_in(scope.tools))),
                Err(_) => Reply::session_gone(id, "an upstream"),
            }
        }
        "tools/call" => return tool_call(scope, env, body, msg).await,
        _ => {}
    }
    let params: Value = match raw_params.map(serde_json::from_str) {
        None => json!({}),
        Some(Ok(p)) => p,
        Some(Err(_)) => return not_an_object(),
    };
    let lister = scope.lister(env);
    match method {
        "prompts/list" | "resources/list" | "resources/templates/list" => {
            let kind = match method {
                "prompts/list" => ListKind::Prompts,
                "resources/list" => ListKind::Resources,
                _ => ListKind::Templates,
            };
            let cursor = params.get("cursor").and_then(Value::as_str);
            match lister.page(kind, cursor).await {
                Ok(result) => Reply::result(rid, &result),
                Err(ListError::BadCursor(e)) => {
                    Reply::error(id, INVALID_PARAMS, &e.to_string(), Outcome::InvalidParams)
                }
                Err(ListError::SessionGone(server)) => Reply::session_gone(id, &server),
            }
        }
        "prompts/get" => {
            let Some(name) = params.get("name").and_then(Value::as_str) else {
                return Reply::error(
                    id,
                    INVALID_PARAMS,
                    "Invalid params: prompts/get needs a string \"name\"",
                    Outcome::InvalidParams,
                );
            };
            let (server, original) = match route_prompt(&lister, name).await {
                Ok(Some(found)) => found,
                Ok(None) => {
                    return Reply::error(
                        id,
                        INVALID_PARAMS,
                        &format!("Unknown prompt: {name}"),
                        Outcome::UnknownPrompt,
                    )
                }
                Err(e) => return Reply::upstream_failure(id, &slug_of(name), e),
            };
            let mut params = params.clone();
            params["name"] = Value::String(original);
            forward(scope, env, &server, rid, method, params, |result| {
                if let Some(Value::Array(messages)) = result.get_mut("messages") {
                    for m in messages {
                        if let Some(content) = m.get_mut("content") {
                            expose_content_uris(&server, content);
                        }
                    }
                }
            })
            .await
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let Some(uri) = params.get("uri").and_then(Value::as_str) else {
                return Reply::error(
                    id,
                    INVALID_PARAMS,
                    &format!("Invalid params: {method} needs a string \"uri\""),
                    Outcome::InvalidParams,
                );
            };
            let Some((server, original)) = route_uri(scope.ws, uri) else {
                return Reply::error(
                    id,
                    RESOURCE_NOT_FOUND,
                    &format!("Resource not found: {uri}"),
                    Outcome::UnknownResource,
                );
            };
            let mut params = params.clone();
            params["uri"] = Value::String(original);
            forward(scope, env, &server, rid, method, params, |result| {
                if let Some(Value::Array(contents)) = result.get_mut("contents") {
                    for c in contents {
                        expose_uri_field(&server, c, "uri");
                    }
                }
            })
            .await
        }
        "completion/complete" => {
            let mut params = params.clone();
            let target = match params.pointer("/ref/type").and_then(Value::as_str) {
                Some("ref/prompt") => {
                    let name = params
                        .pointer("/ref/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    match route_prompt(&lister, &name).await {
                        Ok(Some((server, original))) => {
                            params["ref"]["name"] = Value::String(original);
                            Some(server)
                        }
                        Ok(None) => None,
                        Err(e) => return Reply::upstream_failure(id, &slug_of(&name), e),
                    }
                }
                Some("ref/resource") => {
                    let uri = params
                        .pointer("/ref/uri")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    route_uri(scope.ws, uri).map(|(server, original)| {
                        params["ref"]["uri"] = Value::String(original);
                        server
                    })
                }
                _ => None,
            };
            let Some(server) = target else {
                return Reply::error(
                    id,
                    INVALID_PARAMS,
                    "Invalid params: completion/complete needs a ref to a prompt or resource template of this workspace",
                    Outcome::InvalidParams,
                );
            };
            forward(scope, env, &server, rid, method, params, |_| {}).await
        }
        "logging/setLevel" => {
            set_level(scope, env, params).await;
            Reply::ok(jsonrpc::result(rid, b"{}"))
        }
        _ => Reply::error(
            id,
            METHOD_NOT_FOUND,
            &format!("Method not found: {method}"),
            Outcome::MethodNotFound,
        ),
    }
}

/// Sends one request to one server and relays its result, adjusted by `expose`.
async fn forward(
    scope: Scope<'_>,
    env: &SessionEnvelope,
    server: &ServerRt,
    rid: &serde_json::value::RawValue,
    method: &str,
    params: Value,
    expose: impl FnOnce(&mut Value),
) -> Reply {
    match scope
        .upstreams
        .ask(scope.rt, env, server, method, params, server.call_timeout)
        .await
    {
        Ok(mut result) => {
            expose(&mut result);
            Reply::result(rid, &result)
        }
        Err(e) => Reply::upstream_failure(rid.get(), &server.slug, e),
    }
}

/// `logging/setLevel` applies to every server of the session that logs.
async fn set_level(scope: Scope<'_>, env: &SessionEnvelope, params: Value) {
    let servers = scope.ws.servers.iter().filter(|s| {
        s.enabled
            && s.usable()
            && live()
                .capabilities(&scope.ws.slug, &s.slug, s.fingerprint)
                .is_none_or(|c| c.get("logging").is_some())
    });
    let timeout = Duration::from_millis(scope.rt.limits.initialize_timeout_ms);
    let sets = servers.map(|server| {
        let params = params.clone();
        async move {
            if let Err(e) = scope
                .upstreams
                .ask(scope.rt, env, server, "logging/setLevel", params, timeout)
                .await
            {
                tracing::debug!(server = %server.slug, error = %e, "logging/setLevel not applied");
            }
        }
    });
    futures::future::join_all(sets).await;
}

fn slug_of(name: &str) -> String {
    split_exposed(name)
        .map_or("an upstream", |(s, _)| s)
        .to_string()
}

/// Whether `rest` has the shape of a name shortened by [`exposed_name`]
/// (`<readable>-<8 hex>`).
fn looks_shortened(rest: &str) -> bool {
    let b = rest.as_bytes();
    b.len() > 9
        && b[b.len() - 9] == b'-'
        && b[b.len() - 8..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// The server and upstream name behind an exposed prompt name: `<server>__<name>`
/// of a prefixed server, or else the name as the workspace's bare server has it. A
/// name the gateway shortened is looked up in the server's prompt list.
async fn route_prompt(
    lister: &Lister<'_>,
    exposed: &str,
) -> Result<Option<(Arc<ServerRt>, String)>, UpstreamError> {
    let prefixed = split_exposed(exposed).and_then(|(slug, rest)| {
        lister
            .ws
            .server(slug)
            .filter(|s| s.usable() && s.naming == Naming::Prefixed)
            .map(|s| (s.clone(), slug, rest))
    });
    let Some((server, slug, rest)) = prefixed else {
        return Ok(lister
            .ws
            .bare_server()
            .filter(|s| s.usable())
            .map(|s| (s.clone(), exposed.to_string())));
    };
    let direct = exposed_name(slug, rest) == exposed;
    if direct && !looks_shortened(rest) {
        return Ok(Some((server, rest.to_string())));
    }
    let prompts = lister.all_of(&server, ListKind::Prompts).await?;
    let found = prompts
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .find(|name| exposed_name(slug, name) == exposed)
        .map(str::to_string);
    Ok(match found {
        Some(name) => Some((server, name)),
        None if direct => Some((server, rest.to_string())),
        None => None,
    })
}

/// The server and upstream URI behind an exposed resource URI: `gatehouse://<server>/`
/// of a prefixed server, or else the URI as the workspace's bare server has it.
pub fn route_uri(ws: &WorkspaceRt, uri: &str) -> Option<(Arc<ServerRt>, String)> {
    let prefixed = uris::route(uri).and_then(|(slug, original)| {
        ws.server(slug)
            .filter(|s| s.usable() && s.naming == Naming::Prefixed)
            .map(|s| (s.clone(), original.to_string()))
    });
    prefixed.or_else(|| {
        ws.bare_server()
            .filter(|s| s.usable())
            .map(|s| (s.clone(), uri.to_string()))
    })
}

fn expose_uri_field(server: &ServerRt, value: &mut Value, field: &str) {
    if let Some(slot) = value.get_mut(field) {
        if let Some(text) = slot.as_str() {
            *slot = Value::String(server.expose_uri(text));
        }
    }
}

/// Resource URIs inside a content block (an embedded resource or a resource link).
pub fn expose_content_uris(server: &ServerRt, content: &mut Value) {
    match content.get("type").and_then(Value::as_str) {
        Some("resource") => {
            if let Some(resource) = content.get_mut("resource") {
                expose_uri_field(server, resource, "uri");
            }
        }
        Some("resource_link") => expose_uri_field(server, content, "uri"),
        _ => {}
    }
}

/// Routes a `tools/call` by its exposed name.
async fn tool_call(
    scope: Scope<'_>,
    env: &SessionEnvelope,
    body: &Bytes,
    msg: &Message<'_>,
) -> Reply {
    let id = jsonrpc::raw_id(msg.id);
    let name = match scope.name {
        Some(raw) => jsonrpc::tool_name_at(body, raw),
        None => msg.params.and_then(|p| jsonrpc::tool_name(body, p)),
    };
    let Some(name) = name else {
        return Reply::error(
            id,
            INVALID_PARAMS,
            "Invalid params: tools/call needs a string \"name\"",
            Outcome::InvalidParams,
        );
    };
    let catalog = match scope
        .catalogs
        .catalog(scope.upstreams, scope.rt, scope.ws, env)
        .await
    {
        Ok(c) => c,
        Err(_) => return Reply::session_gone(id, "an upstream"),
    };
    // Unknown server, unknown tool, a tool hidden by policy and one outside the
    // token's scope are indistinguishable.
    let Some((route, server)) = catalog
        .route_in(&name.name, scope.tools)
        .and_then(|r| scope.ws.server(&r.server).map(|s| (r, s.clone())))
    else {
        // A token limited to some tools calls only those the catalog lists.
        let unlisted = scope
            .tools
            .is_none()
            .then(|| unlisted_bare_call(scope.ws, &name.name))
            .flatten();
        if let Some(server) = unlisted {
            return Reply::ToolCall(ToolCall {
                body: body.clone(),
                upstream_name: name.name.to_string(),
                server,
                request_id: id.to_string(),
                retry_safe: false,
            });
        }
        return Reply::error(
            id,
            INVALID_PARAMS,
            &format!("Unknown tool: {}", name.name),
            Outcome::UnknownTool,
        );
    };
    if server.skill.is_some() {
        if let Some(why) = &server.unavailable {
            return Reply::error(
                id,
                INTERNAL_ERROR,
                &format!("skill {:?} is not usable: {why}", server.slug),
                Outcome::UpstreamUnavailable,
            );
        }
    }
    let upstream_body = match &route.fixed {
        Some(fixed) => match jsonrpc::with_fixed_arguments(body, &route.upstream_name, fixed) {
            Some(b) => b,
            None => return not_an_object_call(id),
        },
        None => jsonrpc::splice_name(body, name.span.clone(), &route.upstream_name),
    };
    Reply::ToolCall(ToolCall {
        body: upstream_body,
        upstream_name: route.upstream_name.clone(),
        server,
        request_id: id.to_string(),
        retry_safe: route.retry_safe,
    })
}

/// A `tools/call` whose params are not an object (only a call with fixed arguments
/// reads them whole).
fn not_an_object_call(id: &str) -> Reply {
    Reply::error(
        id,
        INVALID_PARAMS,
        "Invalid params: params must be an object",
        Outcome::InvalidParams,
    )
}

/// The bare server a `tools/call` of a name not in the catalog goes to, as it is: a
/// server fronted transparently answers for names it did not list (a tool it adds
/// later, one it lists only to some clients) in its own words. Only when its policy
/// hides nothing — a name the catalog does not know could be one the policy hides —
/// and the name is not another server's (`<server>__...`).
fn unlisted_bare_call(ws: &WorkspaceRt, name: &str) -> Option<Arc<ServerRt>> {
    let server = ws.bare_server()?;
    let prefixed = split_exposed(name).is_some_and(|(slug, _)| {
        ws.server(slug)
            .is_some_and(|s| s.naming == Naming::Prefixed)
    });
    (server.usable() && server.skill.is_none() && server.policy.is_open() && !prefixed)
        .then(|| server.clone())
}

/// A client notification in an open session.
pub async fn notification(
    scope: Scope<'_>,
    env: &SessionEnvelope,
    body: &Bytes,
    msg: &Message<'_>,
) -> Reply {
    let method = msg.method.as_deref().unwrap_or_default();
    let targets: Vec<Arc<ServerRt>> = match method {
        // The request ids a client cancels are its own, forwarded unchanged on
        // `tools/call`: the upstream it went to is known on the replica carrying it.
        // Elsewhere every upstream of the session is told; an upstream ignores ids it
        // does not know.
        "notifications/cancelled" => {
            let owner = msg
                .params
                .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                .and_then(|p| p.get("requestId").map(Value::to_string))
                .and_then(|rid| live().owner_of(env.sid, &rid))
                .and_then(|slug| scope.ws.server(&slug).cloned());
            match owner {
                Some(server) => vec![server],
                None => session_servers(scope),
            }
        }
        "notifications/roots/list_changed" | "notifications/progress" => session_servers(scope),
        // `initialized` was sent to each upstream when its session was opened.
        _ => Vec::new(),
    };
    let sends = targets.iter().map(|server| async move {
        if let Err(e) =
            scope.upstreams.tell(scope.rt, env, server, body.clone()).await
        {
            tracing::debug!(server = %server.slug, method, error = %e, "notification not delivered");
        }
    });
    futures::future::join_all(sends).await;
    Reply::Accepted {
        outcome: Outcome::Ok,
    }
}

/// Servers of the session that can be told something.
fn session_servers(scope: Scope<'_>) -> Vec<Arc<ServerRt>> {
    scope
        .ws
        .servers
        .iter()
        .filter(|s| s.enabled && s.usable())
        .cloned()
        .collect()
}

/// A client's response to a server-to-client request: back to the server that asked,
/// with the id it used. Ids the gateway did not issue to this session are dropped.
pub async fn response(
    scope: Scope<'_>,
    env: &SessionEnvelope,
    msg: &Message<'_>,
    body: &Bytes,
) -> Reply {
    let id = msg.id.map(|i| i.get()).unwrap_or("null");
    let target = serde_json::from_str::<String>(id)
        .ok()
        .and_then(|text| relay::open_id(&scope.rt.keys, env.sid, &text));
    let Some(target) = target else {
        tracing::info!(workspace = %scope.ws.slug, id = %id.chars().take(80).collect::<String>(), "ignoring a client response to an id the gateway never issued");
        return Reply::Accepted {
            outcome: Outcome::UnknownResponse,
        };
    };
    let Some(server) = scope
        .ws
        .server(&target.server)
        .filter(|s| s.usable())
        .cloned()
    else {
        tracing::info!(workspace = %scope.ws.slug, server = %target.server, "dropping a client response: its server is gone");
        return Reply::Accepted {
            outcome: Outcome::UnknownResponse,
        };
    };
    let mut message: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Reply::Accepted {
                outcome: Outcome::BadRequest,
            }
        }
    };
    message["id"] = serde_json::from_str(&target.original_id).unwrap_or(Value::Null);
    let body = Bytes::from(message.to_string());
    match scope.upstreams.tell(scope.rt, env, &server, body).await {
        Ok(()) => Reply::Accepted {
            outcome: Outcome::Ok,
        },
        Err(e) => {
            tracing::warn!(server = %server.slug, error = %e, "client response not delivered");
            Reply::Accepted {
                outcome: Outcome::UpstreamError,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortened_names_are_recognised() {
        let long = "x".repeat(100);
        let exposed = exposed_name("srv", &long);
        let (_, rest) = split_exposed(&exposed).unwrap();
        assert!(looks_shortened(rest));
        assert!(!looks_shortened("summarize"));
        assert!(!looks_shortened("v-1"));
    }
}
