//! The snapshot: everything a proxy needs to serve every workspace.
//!
//! The same type is read from a file by a standalone proxy and pushed by the control
//! plane, so it carries secrets and session keys; [`Secret`] keeps them out of `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One complete, versioned configuration of the data plane.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Monotonic version; the control plane increments it on every change.
    #[serde(default)]
    pub version: u64,
    /// Keys for the client-facing session envelope. The first one seals new sessions;
    /// all of them open existing ones (rotation).
    #[serde(default)]
    pub session_keys: Vec<SessionKey>,
    /// Origins (`scheme://host[:port]`) a browser-based client may call from, besides
    /// loopback origins and the gateway's own origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub workspaces: Vec<Workspace>,
}

/// A 256-bit AEAD key, base64 (standard alphabet) in the file.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionKey {
    pub id: String,
    pub key: Secret,
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest JSON-RPC request body accepted, in bytes.
    #[serde(default = "Limits::default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long `initialize` waits for each upstream, in milliseconds.
    #[serde(default = "Limits::default_initialize_timeout_ms")]
    pub initialize_timeout_ms: u64,
    /// Let skills reach link-local and cloud-metadata addresses (169.254.0.0/16,
    /// fe80::/10, ...). Off unless the operator turns it on.
    #[serde(default)]
    pub skills_allow_link_local: bool,
    /// How many proxies share every rate budget and stream cap: each proxy enforces
    /// this share of it, so that behind a balancer that spreads requests evenly the
    /// limits hold for the whole fleet without a shared counter.
    #[serde(default = "Limits::default_proxy_share")]
    pub proxy_share: u32,
    /// How long a client event stream (GET, legacy SSE, `subscriptions/listen`) may
    /// stay open, in seconds; then the gateway ends it cleanly and the client
    /// reconnects (a Streamable HTTP client resumes with `Last-Event-ID`).
    #[serde(default = "Limits::default_max_stream_seconds")]
    pub max_stream_seconds: u64,
    /// How long a client may take to send a request head, waiting for it included
    /// (an idle kept-alive connection is closed after it), in milliseconds: a client
    /// that trickles its head byte by byte (slowloris) holds a connection no longer.
    #[serde(default = "Limits::default_request_head_timeout_ms")]
    pub request_head_timeout_ms: u64,
    /// How long one write of an answer may wait for a client that does not read it,
    /// in milliseconds: a client that stops reading (slow read) holds its connection,
    /// and what the gateway buffered for it, no longer.
    #[serde(default = "Limits::default_slow_read_timeout_ms")]
    pub slow_read_timeout_ms: u64,
    /// Client connections one proxy holds open at once, idle kept-alive ones and
    /// event streams included; one more is answered 503 and closed.
    #[serde(default = "Limits::default_max_connections")]
    pub max_connections: u32,
}

impl Limits {
    pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

    fn default_max_body_bytes() -> usize {
        Self::DEFAULT_MAX_BODY_BYTES
    }
    fn default_initialize_timeout_ms() -> u64 {
        10_000
    }
    fn default_proxy_share() -> u32 {
        1
    }
    fn default_max_stream_seconds() -> u64 {
        24 * 60 * 60
    }
    fn default_request_head_timeout_ms() -> u64 {
        60_000
    }
    fn default_slow_read_timeout_ms() -> u64 {
        60_000
    }
    fn default_max_connections() -> u32 {
        10_000
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: Self::default_max_body_bytes(),
            initialize_timeout_ms: Self::default_initialize_timeout_ms(),
            skills_allow_link_local: false,
            proxy_share: Self::default_proxy_share(),
            max_stream_seconds: Self::default_max_stream_seconds(),
            request_head_timeout_ms: Self::default_request_head_timeout_ms(),
            slow_read_timeout_ms: Self::default_slow_read_timeout_ms(),
            max_connections: Self::default_max_connections(),
        }
    }
}

/// A named collection of MCP servers behind one gateway URL, `/ws/<slug>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    pub slug: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub servers: Vec<McpServer>,
    #[serde(default)]
    pub tokens: Vec<WorkspaceToken>,
    /// Its budgets; none unless set.
    #[serde(default, skip_serializing_if = "WorkspaceLimits::is_unlimited")]
    pub limits: WorkspaceLimits,
}

/// A rate budget. Each kind is off while its field is absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, whatever their method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// How many requests may come at once on top of that rate; one second's worth
    /// (at least 1) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// `tools/call` requests per minute, a minute's worth at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls_per_minute: Option<u32>,
    /// New sessions (`initialize` requests) per minute, a minute's worth at once:
    /// what bounds the upstream sessions a token makes the gateway open (sessions are
    /// sealed envelopes the client holds, so there is no table of open ones to cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_per_minute: Option<u32>,
}

impl RateLimit {
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_second.is_none()
            && self.tool_calls_per_minute.is_none()
            && self.sessions_per_minute.is_none()
    }

    /// Each field of `self`, or `fallback`'s where `self` has none.
    pub fn or(&self, fallback: &RateLimit) -> RateLimit {
        RateLimit {
            requests_per_second: self.requests_per_second.or(fallback.requests_per_second),
            burst: self.burst.or(fallback.burst),
            tool_calls_per_minute: self
                .tool_calls_per_minute
                .or(fallback.tool_calls_per_minute),
            sessions_per_minute: self.sessions_per_minute.or(fallback.sessions_per_minute),
        }
    }

    /// What is wrong with this budget, field by field (`requests_per_second: ...`).
    /// A zero would refuse everything, which revoking the token says more plainly.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(rps) = self.requests_per_second {
            if !(rps.is_finite() && rps > 0.0) {
                out.push((
                    "requests_per_second",
                    format!("{rps} is not a positive number of requests per second"),
                ));
            }
        }
        if self.burst == Some(0) {
            out.push(("burst", "must be at least 1".into()));
        }
        if self.tool_calls_per_minute == Some(0) {
            out.push((
                "tool_calls_per_minute",
                "must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        if self.sessions_per_minute == Some(0) {
            out.push((
                "sessions_per_minute",
                "must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        out
    }

    /// The burst of the request rate: as set, or one second's worth.
    pub fn request_burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| {
            self.requests_per_second
                .map_or(1, |rps| rps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
        })
    }
}

/// What a workspace allows: the whole workspace together, each token (unless the token
/// has its own), and the event streams a token may hold open.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceLimits {
    #[serde(default, skip_serializing_if = "RateLimit::is_unlimited")]
    pub workspace: RateLimit,
    #[serde(default, skip_serializing_if = "RateLimit::is_unlimited")]
    pub per_token: RateLimit,
    /// Event streams (GET streams, legacy SSE streams, `subscriptions/listen`) one
    /// token may hold open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams_per_token: Option<u32>,
}

impl WorkspaceLimits {
    /// What is wrong with these limits, as (field path, problem).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (at, rate) in [
            ("workspace", &self.workspace),
            ("per_token", &self.per_token),
        ] {
            out.extend(
                rate.problems()
                    .into_iter()
                    .map(|(f, p)| (format!("{at}.{f}"), p)),
            );
        }
        if self.streams_per_token == Some(0) {
            out.push((
                "streams_per_token".into(),
                "must be at least 1 (leave it out for no cap)".into(),
            ));
        }
        out
    }

    pub fn is_unlimited(&self) -> bool {
        self.workspace.is_unlimited()
            && self.per_token.is_unlimited()
            && self.streams_per_token.is_none()
    }
}

/// How the gateway talks to an upstream.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Streamable HTTP (MCP 2025-03-26 and later): `url` is the server's MCP endpoint.
    #[default]
    StreamableHttp,
    /// Legacy HTTP+SSE (MCP 2024-11-05): `url` is the server's SSE endpoint; the
    /// gateway POSTs to the `endpoint` URL the stream announces.
    Sse,
    /// A skill: declarative HTTP tools (`tools`) the gateway executes itself; `url`
    /// is unused.
    Skill,
}

/// How a server's tools, prompts and resource URIs are named to clients.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// `<server>__<tool>` and `<server>__<prompt>`, resource URIs as
    /// `gatehouse://<server>/<uri>`: many servers share a workspace without clashes.
    #[default]
    Prefixed,
    /// Exactly as the server names them: the gateway fronts the server transparently.
    /// At most one server of a workspace; a tool whose name another server's
    /// prefixed tool already has is left out.
    Bare,
}

impl Naming {
    pub fn is_prefixed(&self) -> bool {
        *self == Naming::Prefixed
    }
}

/// An MCP server installed in a workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Namespace of its tools: `<slug>__<tool>`. Never contains `_`.
    pub slug: String,
    /// The upstream's MCP endpoint, e.g. `http://127.0.0.1:9000/mcp`.
    pub url: String,
    #[serde(default)]
    pub transport: Transport,
    /// How its names reach clients.
    #[serde(default, skip_serializing_if = "Naming::is_prefixed")]
    pub naming: Naming,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Headers sent on every upstream request; values may reference
    /// `{{secrets.NAME}}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Secret values for this (workspace, server), referenced by the header templates.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    pub policy: ToolPolicy,
    /// Upper bound on one read from the upstream while a call is in flight, in ms:
    /// the longest it may stay silent mid-reply (idle).
    #[serde(default = "McpServer::default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// How long connecting to the upstream may take, in ms.
    #[serde(default = "McpServer::default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long a call may wait for the reply's head, connecting included, in ms;
    /// `call_timeout_ms` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u64>,
    /// How long a call may take in all, a reply stream that keeps sending but never
    /// answers included, in ms.
    #[serde(default = "McpServer::default_max_call_ms")]
    pub max_call_ms: u64,
    /// Routed `tools/call`s one proxy sends this server at once (0: no cap).
    #[serde(default = "McpServer::default_max_in_flight")]
    pub max_in_flight: u32,
    /// Calls past `max_in_flight` that wait for one to finish (at most the call
    /// timeout); a call past both is refused at once with a JSON-RPC error.
    #[serde(default = "McpServer::default_max_queued")]
    pub max_queued: u32,
    /// The tools of a skill (transport `skill`); empty for MCP servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<SkillTool>,
    /// How some of its tools are shaped for clients, by the upstream's tool name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, ToolOverride>,
}

/// One upstream tool as the workspace shows it: applied to `tools/list`, reversed on
/// `tools/call`, so the upstream sees its own name and its own schema satisfied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    /// The name clients see in place of the upstream's (still prefixed
    /// `<server>__` where the server's names are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replaces the description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Appended to the (upstream's or replaced) description, after a blank line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_description: Option<String>,
    /// Arguments set to a fixed value on every call: left out of the schema clients
    /// see, and whatever a client sends for them is replaced.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fixed_arguments: serde_json::Map<String, serde_json::Value>,
    /// Annotations set over the upstream's (`readOnlyHint`, `destructiveHint`, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub annotations: serde_json::Map<String, serde_json::Value>,
}

impl McpServer {
    pub fn default_call_timeout_ms() -> u64 {
        300_000
    }

    pub fn default_connect_timeout_ms() -> u64 {
        5_000
    }

    pub fn default_max_call_ms() -> u64 {
        60 * 60 * 1000
    }

    pub fn default_max_in_flight() -> u32 {
        256
    }

    pub fn default_max_queued() -> u32 {
        1024
    }
}

/// How a server is protected from the gateway and the gateway from the server: its
/// timeouts and its cap on calls in flight, as an operator sets them (the control
/// plane stores this; what is absent takes [`McpServer`]'s default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
}

impl ServerLimits {
    /// The longest timeout accepted: a day.
    pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

    pub fn is_default(&self) -> bool {
        *self == ServerLimits::default()
    }

    /// What is wrong with these limits, as (field, problem).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (field, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("call_timeout_ms", self.call_timeout_ms),
            ("max_call_ms", self.max_call_ms),
        ] {
            if let Some(ms) = ms.filter(|ms| *ms == 0 || *ms > Self::MAX_TIMEOUT_MS) {
                out.push((
                    field,
                    format!(
                        "{ms} must be between 1 and {} ms (a day)",
                        Self::MAX_TIMEOUT_MS
                    ),
                ));
            }
        }
        out
    }

    /// Sets these limits on `server`, each absent one to its default.
    pub fn apply(&self, server: &mut McpServer) {
        server.connect_timeout_ms = self
            .connect_timeout_ms
            .unwrap_or_else(McpServer::default_connect_timeout_ms);
        server.first_byte_timeout_ms = self.first_byte_timeout_ms;
        server.call_timeout_ms = self
            .call_timeout_ms
            .unwrap_or_else(McpServer::default_call_timeout_ms);
        server.max_call_ms = self
            .max_call_ms
            .unwrap_or_else(McpServer::default_max_call_ms);
        server.max_in_flight = self
            .max_in_flight
            .unwrap_or_else(McpServer::default_max_in_flight);
        server.max_queued = self
            .max_queued
            .unwrap_or_else(McpServer::default_max_queued);
    }
}

fn default_true() -> bool {
    true
}

/// A declarative HTTP tool of a skill, executed by the gateway: arguments are checked
/// against `input_schema`, then one HTTP request is made and its answer becomes the
/// tool result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SkillTool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema (an object schema) the arguments must satisfy.
    pub input_schema: serde_json::Value,
    /// Annotated `readOnlyHint: true` (read-only policies expose only these).
    #[serde(default)]
    pub read_only: bool,
    pub request: SkillRequest,
    #[serde(default)]
    pub response: SkillResponse,
}

/// The HTTP request a skill tool makes. Templates may use `{{args.NAME}}` and
/// `{{secrets.NAME}}`; in the URL, argument values are percent-encoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SkillRequest {
    #[serde(default = "SkillRequest::default_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body. A string that is exactly `{{args.NAME}}` becomes that argument's
    /// JSON value; placeholders inside other strings are interpolated as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(default = "SkillRequest::default_timeout_ms")]
    pub timeout_ms: u64,
}

impl SkillRequest {
    fn default_method() -> String {
        "GET".into()
    }
    fn default_timeout_ms() -> u64 {
        10_000
    }
}

/// How a skill tool's HTTP answer becomes its result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SkillResponse {
    /// JSON pointer (RFC 6901) selecting the part of a JSON answer to return; the
    /// whole body when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

/// Which upstream tools a workspace exposes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// Globs on the upstream's tool name; when non-empty a tool must match one.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Globs on the upstream's tool name; a match hides the tool.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Expose only tools annotated `readOnlyHint: true`.
    #[serde(default)]
    pub read_only: bool,
}

/// A bearer token of a workspace, stored only as the SHA-256 of the token text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceToken {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Lowercase hex SHA-256 of the full token (`mwt_...`).
    pub sha256: String,
    /// Unix seconds after which the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
    /// This token's own budget, field by field over the workspace's `per_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RateLimit>,
    /// The tools this token may see and call; every tool of the workspace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<TokenScope>,
}

/// A token's subset of its workspace's tools. A tool outside it is, to the token,
/// a tool that does not exist: not listed, and a call gets "Unknown tool".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenScope {
    /// Globs over exposed names (`github__list_*`); when non-empty a tool must match
    /// one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Only tools annotated `readOnlyHint: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl TokenScope {
    /// Whether it limits nothing.
    pub fn is_everything(&self) -> bool {
        self.tools.is_empty() && !self.read_only
    }
}

/// A value that must never be printed: `Debug` and `Display` redact it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The plain value, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
