//! The snapshot compiled for the request path: token index, workspaces by slug, each
//! server with its headers rendered, policy compiled and address resolved. Built once per
//! config change, read lock-free by every request through an `ArcSwap`.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_config::naming::exposed_name;
use gatehouse_config::policy::CompiledPolicy;
use gatehouse_config::template::HeaderTemplate;
use gatehouse_config::{Limits, McpServer, Naming, Snapshot, ToolOverride, Transport};
use gatehouse_mcp::uris;
use http::{HeaderName, HeaderValue, Uri};
use sha2::{Digest, Sha256};

use gatehouse_mcp::envelope::SessionKeys;

use crate::config::auth::{TokenIndex, TokenUsage};
use crate::limits::{Budget, Schedules};
use crate::skill::{SkillClient, SkillRt};

/// Where a request goes: the upstream's address, and its TLS server name for HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls_name: Option<Arc<str>>,
}

/// Everything a request needs, for one config generation.
pub struct Runtime {
    /// Local counter, bumped on every successful load: caches key on it.
    pub generation: u64,
    /// The snapshot's own version (set by the control plane or the file).
    pub version: u64,
    pub workspaces: HashMap<String, Arc<WorkspaceRt>>,
    pub tokens: TokenIndex,
    pub keys: SessionKeys,
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    /// The HTTP client skills use (its address guard follows `limits`).
    pub skills: SkillClient,
}

pub struct WorkspaceRt {
    pub slug: String,
    /// The whole workspace's rate budget, if it has one.
    pub budget: Option<Arc<Budget>>,
    /// Sorted by slug, so merged lists have a deterministic order.
    pub servers: Vec<Arc<ServerRt>>,
}

impl WorkspaceRt {
    pub fn server(&self, slug: &str) -> Option<&Arc<ServerRt>> {
        self.servers
            .binary_search_by(|s| s.slug.as_str().cmp(slug))
            .ok()
            .map(|i| &self.servers[i])
    }

    /// The server whose names reach clients unprefixed, if one does (validation allows
    /// one per workspace): what a prompt name or resource URI that names no prefixed
    /// server routes to.
    pub fn bare_server(&self) -> Option<&Arc<ServerRt>> {
        self.servers.iter().find(|s| s.naming == Naming::Bare)
    }

    /// The servers whose tools, prompts and resources a client sees: the enabled
    /// ones, skills included.
    pub fn listed_servers(&self) -> impl Iterator<Item = &Arc<ServerRt>> {
        self.servers.iter().filter(|s| s.enabled)
    }
}

/// An upstream MCP server as the request path uses it. Holds rendered secrets, so it
/// deliberately has no `Debug`.
pub struct ServerRt {
    pub slug: String,
    /// The Streamable HTTP endpoint, or the SSE endpoint of a legacy server.
    pub url: String,
    pub transport: Transport,
    /// How its tool and prompt names and resource URIs reach clients.
    pub naming: Naming,
    /// Path and query of the upstream endpoint, sent as the request target.
    pub path: Uri,
    /// `Host` header value.
    pub authority: HeaderValue,
    /// Headers rendered from templates, secrets filled in, marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Why this server cannot be used (a missing secret, an unresolvable host).
    pub unavailable: Option<String>,
    pub enabled: bool,
    pub policy: CompiledPolicy,
    /// How some of its tools are shaped for clients, by upstream name.
    pub overrides: BTreeMap<String, ToolOverride>,
    /// The longest the upstream may stay silent while a call is in flight (idle).
    pub call_timeout: Duration,
    /// The longest connecting to it may take.
    pub connect_timeout: Duration,
    /// The longest a routed call waits for its reply's head, connecting included.
    pub first_byte_timeout: Duration,
    /// The longest a routed call takes in all, its reply included.
    pub max_call: Duration,
    /// Routed calls sent at once (0: no cap), and how many more may wait.
    pub max_in_flight: u32,
    pub max_queued: u32,
    /// Changes whenever anything that could change the server's tool list changes.
    pub fingerprint: [u8; 16],
    /// Where routed calls connect; `None` when the server is unavailable.
    pub target: Option<Target>,
    /// A skill's tools, which the gateway runs itself; `None` for MCP servers.
    pub skill: Option<Arc<SkillRt>>,
    /// Set once the server answered a GET with 405: it offers no server-to-client
    /// stream, so client streams stop asking it (one request, connection and task
    /// per client stream saved). Lives as long as this config: a config change asks
    /// again once.
    no_get_stream: AtomicBool,
}

impl ServerRt {
    /// The name a client sees for the server's tool or prompt `name`.
    pub fn expose_name(&self, name: &str) -> String {
        match self.naming {
            Naming::Prefixed => exposed_name(&self.slug, name),
            Naming::Bare => name.to_string(),
        }
    }

    /// The URI (or URI template) a client sees for the server's `uri`.
    pub fn expose_uri(&self, uri: &str) -> String {
        match self.naming {
            Naming::Prefixed => uris::expose(&self.slug, uri),
            Naming::Bare => uri.to_string(),
        }
    }

    /// Whether the server speaks the legacy HTTP+SSE transport.
    pub fn is_legacy_sse(&self) -> bool {
        self.transport == Transport::Sse
    }
    /// Whether this is an upstream MCP server requests can be sent to (skills are
    /// run by the gateway, never sent anywhere as MCP).
    pub fn usable(&self) -> bool {
        self.enabled && self.unavailable.is_none() && self.skill.is_none()
    }
    /// False once the server said it has no GET stream.
    pub fn may_offer_get_stream(&self) -> bool {
        !self.no_get_stream.load(Ordering::Relaxed)
    }
    /// Records that the server has no GET stream (it answered 405).
    pub fn mark_no_get_stream(&self) {
        self.no_get_stream.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Compiles a validated snapshot. Resolves upstream host names (blocking), so call it
    /// off the request path.
    pub fn compile(snapshot: &Snapshot, generation: u64) -> anyhow::Result<Runtime> {
        Self::compile_with(
            snapshot,
            generation,
            &TokenUsage::default(),
            &Schedules::default(),
        )
    }

    /// [`Runtime::compile`], with token last-used clocks kept in `usage` and budgets
    /// scheduled in `schedules` (both outlive generations).
    pub fn compile_with(
        snapshot: &Snapshot,
        generation: u64,
        usage: &TokenUsage,
        schedules: &Schedules,
    ) -> anyhow::Result<Runtime> {
        let mut workspaces = HashMap::with_capacity(snapshot.workspaces.len());
        for ws in &snapshot.workspaces {
            let mut servers: Vec<Arc<ServerRt>> = ws
                .servers
                .iter()
                .map(|s| match s.transport {
                    Transport::Skill => compile_skill(s).map(Arc::new),
                    _ => compile_server(s).map(Arc::new),
                })
                .collect::<anyhow::Result<_>>()?;
            servers.sort_by(|a, b| a.slug.cmp(&b.slug));
            workspaces.insert(
                ws.slug.clone(),
                Arc::new(WorkspaceRt {
                    slug: ws.slug.clone(),
                    budget: schedules.workspace(snapshot, ws),
                    servers,
                }),
            );
        }
        Ok(Runtime {
            generation,
            version: snapshot.version,
            workspaces,
            tokens: TokenIndex::build_with(snapshot, usage, schedules)?,
            keys: SessionKeys::from_config(&snapshot.session_keys)?,
            allowed_origins: snapshot
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            limits: snapshot.limits.clone(),
            skills: SkillClient::new(snapshot.limits.skills_allow_link_local),
        })
    }
}

/// A skill: no upstream to reach, its tools compiled. Unavailable (with the reason)
/// while a secret its templates use is not set.
fn compile_skill(server: &McpServer) -> anyhow::Result<ServerRt> {
    let skill = SkillRt::compile(&server.tools, &server.secrets)
        .map_err(|e| anyhow::anyhow!("skill {}: {e:#}", server.slug))?;
    let mut missing = std::collections::BTreeSet::new();
    for tool in &server.tools {
        let req = &tool.request;
        let mut texts: Vec<String> = vec![req.url.clone()];
        texts.extend(req.headers.values().cloned());
        if let Some(body) = &req.body {
            texts.push(body.to_string());
        }
        for text in texts {
            if let Ok(t) = HeaderTemplate::parse_skill(&text) {
                missing.extend(
                    t.secret_names()
                        .filter(|n| !server.secrets.contains_key(*n))
                        .map(str::to_string),
                );
            }
        }
    }
    let unavailable = (!missing.is_empty()).then(|| {
        let names: Vec<String> = missing.into_iter().collect();
        format!("secret {} is not set", names.join(", "))
    });
    let mut fingerprint = Sha256::new();
    fingerprint.update(serde_json::to_vec(&server.tools)?);
    fingerprint.update(format!("{:?}", server.policy).as_bytes());
    let digest = fingerprint.finalize();
    Ok(ServerRt {
        slug: server.slug.clone(),
        url: String::new(),
        transport: server.transport,
        naming: Naming::Prefixed,
        path: Uri::from_static("/"),
        authority: HeaderValue::from_static("skill"),
        headers: Vec::new(),
        unavailable,
        enabled: server.enabled,
        policy: CompiledPolicy::compile(&server.policy)?,
        overrides: server.overrides.clone(),
        call_timeout: Duration::from_millis(120_000),
        connect_timeout: Duration::from_millis(McpServer::default_connect_timeout_ms()),
        first_byte_timeout: Duration::from_millis(120_000),
        max_call: Duration::from_millis(120_000),
        // The gateway runs a skill's tools itself: no upstream to protect.
        max_in_flight: 0,
        max_queued: 0,
        fingerprint: digest[..16].try_into().expect("16 bytes"),
        target: None,
        skill: Some(Arc::new(skill)),
        no_get_stream: AtomicBool::new(false),
    })
}

fn compile_server(server: &McpServer) -> anyhow::Result<ServerRt> {
    let url = url::Url::parse(&server.url)?;
    let tls = url.scheme() == "https";
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("{}: URL has no host", server.slug))?
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };

    let mut unavailable = None;
    let mut headers = Vec::with_capacity(server.headers.len());
    let mut fingerprint = Sha256::new();
    fingerprint.update(server.url.as_bytes());
    fingerprint.update(format!("{:?} {:?}", server.transport, server.naming).as_bytes());
    for (name, template) in &server.headers {
        let rendered = HeaderTemplate::parse(template)
            .map_err(anyhow::Error::from)
            .and_then(|t| t.render(&server.secrets).map_err(anyhow::Error::from));
        match rendered {
            Ok(value) => {
                fingerprint.update(name.as_bytes());
                fingerprint.update([0]);
                fingerprint.update(value.as_bytes());
                fingerprint.update([0]);
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    anyhow::anyhow!(
                        "server {}: header {name} is not a valid header value once rendered",
                        server.slug
                    )
                })?;
                value.set_sensitive(true);
                headers.push((HeaderName::from_bytes(name.as_bytes())?, value));
            }
            Err(e) => unavailable = Some(format!("header {name}: {e}")),
        }
    }
    fingerprint.update(format!("{:?}", server.policy).as_bytes());

    let addr: Option<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(mut addrs) => addrs.next(),
        Err(_) => None,
    };
    if addr.is_none() && unavailable.is_none() {
        unavailable = Some(format!("cannot resolve host {host}"));
    }
    let call_timeout = Duration::from_millis(server.call_timeout_ms);
    let max_call = Duration::from_millis(server.max_call_ms);
    let target = addr.map(|addr| Target {
        addr,
        tls_name: tls.then(|| host.as_str().into()),
    });
    let digest = fingerprint.finalize();
    Ok(ServerRt {
        slug: server.slug.clone(),
        url: server.url.clone(),
        transport: server.transport,
        naming: server.naming,
        path: path_and_query.parse()?,
        authority: HeaderValue::from_str(&authority)?,
        headers,
        unavailable,
        enabled: server.enabled,
        policy: CompiledPolicy::compile(&server.policy)?,
        overrides: server.overrides.clone(),
        call_timeout,
        connect_timeout: Duration::from_millis(server.connect_timeout_ms),
        first_byte_timeout: server
            .first_byte_timeout_ms
            .map_or(call_timeout, Duration::from_millis)
            .min(max_call),
        max_call,
        max_in_flight: server.max_in_flight,
        max_queued: server.max_queued,
        fingerprint: digest[..16].try_into().expect("16 bytes"),
        target,
        skill: None,
        no_get_stream: AtomicBool::new(false),
    })
}
