//! State shared by every request of one proxy process: the current runtime (swapped
//! atomically on config change) and caches any replica can rebuild on its own — tool
//! lists, merged catalogs, and upstream sessions opened after a client initialized.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use gatehouse_config::Snapshot;
use serde_json::Value;

use crate::audit::AuditSink;
use crate::auth::TokenUsage;
use crate::catalog::{listed_servers, ToolCatalog, ToolList};
use crate::envelope::{SessionEnvelope, UpstreamSession};
use crate::metrics::Metrics;
use crate::runtime::{Runtime, ServerRt, WorkspaceRt};
use crate::upstream::{UpstreamClient, UpstreamError};

/// Upper bound on upstream sessions opened lazily (for servers added after a client
/// initialized); beyond it the cache is emptied and sessions are reopened on demand.
const MAX_LAZY_SESSIONS: usize = 100_000;

/// A server's tool list, valid while the server's fingerprint is unchanged.
struct CachedTools {
    fingerprint: [u8; 16],
    tools: ToolList,
}

pub struct GatewayState {
    runtime: ArcSwap<Runtime>,
    generation: AtomicU64,
    pub upstream: UpstreamClient,
    pub metrics: Metrics,
    catalogs: DashMap<String, Arc<ToolCatalog>>,
    /// Held while a workspace's catalog is built, so concurrent cold `tools/list`s
    /// (and the fetch started after `initialize`) wait for one fan-out instead of each
    /// making their own. The warm path never touches it.
    catalog_builds: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// (workspace, server) -> the upstream's tool list.
    server_tools: DashMap<(String, String), CachedTools>,
    /// (client session, server) -> an upstream session the envelope does not hold.
    lazy_sessions: DashMap<([u8; 16], String), UpstreamSession>,
    /// When each token was last used here, reported to the control plane.
    pub usage: TokenUsage,
    /// Where finished calls are recorded (see [`crate::audit`]).
    pub audit: AuditSink,
}

impl GatewayState {
    pub fn new(snapshot: &Snapshot) -> anyhow::Result<GatewayState> {
        Self::with_audit(snapshot, AuditSink::disabled())
    }

    /// A state whose finished calls go to `audit`.
    pub fn with_audit(snapshot: &Snapshot, audit: AuditSink) -> anyhow::Result<GatewayState> {
        let usage = TokenUsage::default();
        let runtime = Runtime::compile_with(snapshot, 1, &usage)?;
        let metrics = Metrics::new();
        metrics.config_version.set(snapshot.version as i64);
        metrics.config_updated.set(unix_now() as i64);
        Ok(GatewayState {
            usage,
            audit,
            runtime: ArcSwap::from_pointee(runtime),
            generation: AtomicU64::new(1),
            upstream: UpstreamClient::new(),
            metrics,
            catalogs: DashMap::new(),
            catalog_builds: DashMap::new(),
            server_tools: DashMap::new(),
            lazy_sessions: DashMap::new(),
        })
    }

    /// The runtime for one request: load once, use throughout.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Compiles and installs a new snapshot. Requests in flight keep the runtime they
    /// loaded; caches of servers whose config did not change survive.
    pub fn install(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let runtime = Runtime::compile_with(snapshot, generation, &self.usage)?;
        let configured: std::collections::HashSet<&str> = snapshot
            .workspaces
            .iter()
            .flat_map(|w| w.tokens.iter().map(|t| t.id.as_str()))
            .collect();
        self.usage.retain(|id| configured.contains(id));
        self.server_tools.retain(|(ws, server), cached| {
            runtime
                .workspaces
                .get(ws)
                .and_then(|w| w.server(server))
                .is_some_and(|s| s.fingerprint == cached.fingerprint)
        });
        self.catalogs
            .retain(|ws, _| runtime.workspaces.contains_key(ws));
        self.catalog_builds
            .retain(|ws, _| runtime.workspaces.contains_key(ws));
        self.runtime.store(Arc::new(runtime));
        self.metrics.config_version.set(snapshot.version as i64);
        self.metrics.config_updated.set(unix_now() as i64);
        Ok(())
    }

    /// Forgets a server's cached tool list (it said its list changed); the next
    /// `tools/list` of the workspace fetches it again.
    pub fn invalidate_tools(&self, workspace: &str, server: &str) {
        self.server_tools
            .remove(&(workspace.to_string(), server.to_string()));
        self.catalogs.remove(workspace);
    }

    /// The upstream session to use for `server` in this client session: the one
    /// sealed in the envelope, or one opened (and cached) now.
    pub async fn session_for(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
    ) -> Result<UpstreamSession, UpstreamError> {
        if let Some(s) = env.upstream(&server.slug) {
            return Ok(s.clone());
        }
        if server.is_legacy_sse() {
            // The session is a connection held by this replica (upstream_sse.rs).
            let conn = self.legacy_upstream(env, server).await?;
            return Ok(UpstreamSession {
                server: server.slug.clone(),
                session_id: None,
                protocol_version: conn
                    .protocol_version
                    .get()
                    .cloned()
                    .unwrap_or_else(|| env.client_version.clone()),
            });
        }
        let key = (env.sid, server.slug.clone());
        if let Some(s) = self.lazy_sessions.get(&key) {
            return Ok(s.clone());
        }
        let client_init: Value = serde_json::from_str(&env.client_init)
            .map_err(|_| UpstreamError::Protocol("client init parameters are corrupt".into()))?;
        let opened = self
            .upstream
            .initialize(
                server,
                &env.client_version,
                &client_init,
                Duration::from_millis(rt.limits.initialize_timeout_ms),
            )
            .await?;
        let session = UpstreamSession {
            server: server.slug.clone(),
            session_id: opened.session_id,
            protocol_version: opened.protocol_version,
        };
        if self.lazy_sessions.len() >= MAX_LAZY_SESSIONS {
            self.lazy_sessions.clear();
        }
        self.lazy_sessions.insert(key, session.clone());
        Ok(session)
    }

    /// Takes over upstream sessions as lazily opened ones, so one an upstream forgets
    /// is reopened instead of ending the client session (legacy SSE clients, whose
    /// session lives as long as their stream on this replica).
    pub fn adopt_lazy_sessions(&self, sid: [u8; 16], sessions: Vec<UpstreamSession>) {
        if self.lazy_sessions.len() + sessions.len() >= MAX_LAZY_SESSIONS {
            self.lazy_sessions.clear();
        }
        for s in sessions {
            self.lazy_sessions.insert((sid, s.server.clone()), s);
        }
    }

    /// Drops a lazily opened session the upstream no longer knows. Returns whether
    /// there was one (an envelope session cannot be replaced: the client must
    /// re-initialize).
    pub fn forget_lazy_session(&self, sid: [u8; 16], server: &str) -> bool {
        self.lazy_sessions
            .remove(&(sid, server.to_string()))
            .is_some()
    }

    /// Forgets every lazily opened session of a client session (on DELETE).
    pub fn end_client_session(&self, env: &SessionEnvelope) -> Vec<UpstreamSession> {
        let mut ended: Vec<UpstreamSession> = env.upstreams.clone();
        for server in self
            .lazy_sessions
            .iter()
            .filter(|e| e.key().0 == env.sid)
            .map(|e| e.key().1.clone())
            .collect::<Vec<_>>()
        {
            if let Some((_, s)) = self.lazy_sessions.remove(&(env.sid, server)) {
                ended.push(s);
            }
        }
        ended
    }

    /// The workspace's merged tool catalog, from cache when fresh. Fetches only the
    /// servers whose lists are not cached, in parallel.
    pub async fn catalog(
        &self,
        rt: &Runtime,
        ws: &WorkspaceRt,
        env: &SessionEnvelope,
    ) -> Result<Arc<ToolCatalog>, UpstreamError> {
        if let Some(c) = self.fresh_catalog(rt, ws) {
            return Ok(c);
        }
        let build = self
            .catalog_builds
            .entry(ws.slug.clone())
            .or_default()
            .clone();
        let _building = build.lock().await;
        // Built by whoever held the lock before us?
        if let Some(c) = self.fresh_catalog(rt, ws) {
            return Ok(c);
        }
        let fetches = listed_servers(ws).map(|server| async move {
            let key = (ws.slug.clone(), server.slug.clone());
            if let Some(entry) = self.server_tools.get(&key) {
                if entry.fingerprint == server.fingerprint {
                    return Ok((server.clone(), Some(entry.tools.clone())));
                }
            }
            match self.fetch_tools(rt, ws, env, server).await {
                Ok(tools) => {
                    let tools = Arc::new(tools);
                    self.server_tools.insert(
                        key,
                        CachedTools {
                            fingerprint: server.fingerprint,
                            tools: tools.clone(),
                        },
                    );
                    Ok((server.clone(), Some(tools)))
                }
                // The client's own upstream session is gone: it must re-initialize.
                Err(UpstreamError::SessionGone) => Err(UpstreamError::SessionGone),
                // Counted in the upstream error metrics by `exchange::ask`.
                Err(e) => {
                    tracing::warn!(workspace = %ws.slug, server = %server.slug, error = %e, "tools/list from upstream failed");
                    Ok((server.clone(), None))
                }
            }
        });
        let lists = futures::future::try_join_all(fetches).await?;
        let catalog = Arc::new(ToolCatalog::build(rt.generation, &lists));
        self.catalogs.insert(ws.slug.clone(), catalog.clone());
        Ok(catalog)
    }

    fn fresh_catalog(&self, rt: &Runtime, ws: &WorkspaceRt) -> Option<Arc<ToolCatalog>> {
        self.catalogs
            .get(&ws.slug)
            .filter(|c| c.is_fresh(rt.generation))
            .map(|c| c.clone())
    }

    /// Starts building the workspace's catalog in the background when it is not
    /// fresh, with a session just initialized: a client lists tools right after
    /// `initialize`, and the upstream fan-out then runs during its
    /// `notifications/initialized` round trip instead of after it.
    pub fn prefetch_catalog(
        self: &Arc<Self>,
        rt: Arc<Runtime>,
        ws: Arc<WorkspaceRt>,
        env: SessionEnvelope,
    ) {
        if self.fresh_catalog(&rt, &ws).is_some() {
            return;
        }
        let state = self.clone();
        tokio::spawn(async move {
            // Failures are logged and counted by `catalog` itself; the client's own
            // tools/list tries again.
            let _ = state.catalog(&rt, &ws, &env).await;
        });
    }

    /// Every tool of one upstream, following `nextCursor` to the end, over whatever
    /// transport it speaks.
    async fn fetch_tools(
        &self,
        rt: &Runtime,
        _ws: &WorkspaceRt,
        env: &SessionEnvelope,
        server: &ServerRt,
    ) -> Result<Vec<Value>, UpstreamError> {
        // A skill's tools are in its config: nothing to ask.
        if let Some(skill) = &server.skill {
            return Ok(skill.tool_list());
        }
        let timeout = Duration::from_millis(rt.limits.initialize_timeout_ms);
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        // A bound on pages protects against an upstream that never stops paging.
        for _ in 0..1000 {
            let params = match &cursor {
                Some(c) => serde_json::json!({ "cursor": c }),
                None => serde_json::json!({}),
            };
            let mut result =
                crate::exchange::ask(self, rt, env, server, "tools/list", params, timeout).await?;
            match result.get_mut("tools").map(Value::take) {
                Some(Value::Array(page)) => tools.extend(page),
                _ => return Err(UpstreamError::Protocol("tools/list without tools".into())),
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            if cursor.is_none() {
                return Ok(tools);
            }
        }
        Err(UpstreamError::Protocol(
            "tools/list paged more than 1000 times".into(),
        ))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
